from __future__ import annotations

import io
from dataclasses import asdict, replace
from pathlib import Path

from PIL import Image

from odpipe.annotations import read_voc
from odpipe.synthetic import SyntheticSpec, generate, render_image


def test_images_are_deterministic_and_do_not_depend_on_the_count(spec) -> None:
    more = replace(spec, num_images=spec.num_images * 2)
    for index in range(spec.num_images):
        assert render_image(spec, index) == render_image(more, index)
    assert render_image(spec, 0) != render_image(replace(spec, seed=spec.seed + 1), 0)


def test_generated_folder_looks_like_labelimg_output(spec, tmp_path: Path) -> None:
    images = generate(spec, tmp_path)
    assert len(images) == spec.num_images
    seen_labels = set()
    for image_path in images:
        annotation = read_voc(image_path.with_suffix(".xml"))
        with Image.open(image_path) as image:
            assert image.format == "JPEG"
            assert image.size == (annotation.width, annotation.height)
        assert annotation.filename == image_path.name
        assert spec.min_objects <= len(annotation.boxes) <= spec.max_objects
        for box in annotation.boxes:
            assert 0 <= box.xmin < box.xmax <= annotation.width
            assert 0 <= box.ymin < box.ymax <= annotation.height
            seen_labels.add(box.label)
    assert seen_labels == set(spec.classes)


def test_object_sizes_span_small_to_large(spec) -> None:
    fractions = []
    for index in range(40):
        _, annotation = render_image(spec, index)
        short = min(annotation.width, annotation.height)
        fractions += [max(b.xmax - b.xmin, b.ymax - b.ymin) / short for b in annotation.boxes]
    assert min(fractions) < 0.2 and max(fractions) > 0.4


def test_jpeg_quality_is_a_setting_that_defaults_to_the_built_in_data(spec) -> None:
    assert SyntheticSpec.from_config({**asdict(spec), "jpeg_quality": 75}).jpeg_quality == 75
    assert SyntheticSpec.from_config({k: v for k, v in asdict(spec).items() if k != "jpeg_quality"}) == spec
    default, annotation = render_image(spec, 0)
    assert render_image(replace(spec, jpeg_quality=90), 0) == (default, annotation)  # the built-in data as it was
    smaller, same_annotation = render_image(replace(spec, jpeg_quality=50), 0)
    assert same_annotation == annotation and len(smaller) < len(default)
    with Image.open(io.BytesIO(smaller)) as low, Image.open(io.BytesIO(default)) as high:
        # libjpeg scales its quantisation tables with the quality: the coarser steps are larger.
        assert sum(low.quantization[0]) > sum(high.quantization[0])


def test_workers_draw_the_same_files(spec, tmp_path: Path) -> None:
    one = [p.read_bytes() for p in generate(spec, tmp_path / "one")]
    two = [p.read_bytes() for p in generate(spec, tmp_path / "two", workers=2)]
    assert one == two
    assert [read_voc(p) for p in sorted((tmp_path / "one").glob("*.xml"))] == [
        read_voc(p) for p in sorted((tmp_path / "two").glob("*.xml"))
    ]
