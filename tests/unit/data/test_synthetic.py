from __future__ import annotations

import hashlib
import io
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from scipy import ndimage

from odpipe.data.annotations import read_voc
from odpipe.data.index_masks import VOID
from odpipe.data.synthetic import (
    DISTRACTOR_AREA,
    SHAPES,
    Scene,
    Shape,
    SyntheticSpec,
    classification_scene,
    composite,
    coverage,
    draw_scene,
    generate,
    generate_classification,
    generate_segmentation,
    index_mask,
    render_classification,
    render_image,
    render_segmentation,
)
from tests.conftest import ROOT


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


# -- segmentation ---------------------------------------------------------------------------------


def _detection_digest(spec: SyntheticSpec, count: int) -> str:
    digest = hashlib.sha256()
    for index in range(count):
        jpeg, annotation = render_image(spec, index)
        boxes = [(b.label, b.xmin, b.ymin, b.xmax, b.ymax) for b in annotation.boxes]
        digest.update(jpeg + repr([annotation.filename, annotation.width, annotation.height, *boxes]).encode())
    return digest.hexdigest()


def test_detection_images_are_byte_identical_to_before_segmentation() -> None:
    """Digests taken from the module as it was before the renderers shared their drawing (loaded
    from ``git show``): the built-in dataset (conf/dataset/synthetic.yaml) and a spec using every
    shape. They change with the JPEG encoder too, i.e. with a Pillow upgrade."""
    built_in = SyntheticSpec(600, ("circle", "square", "triangle"), 0, 160, 224, 1, 6, 0.12, 0.6, 0.35)
    every_shape = SyntheticSpec(
        12, ("circle", "square", "triangle", "diamond"), 3, 96, 128, 1, 4, 0.15, 0.5, 0.35, jpeg_quality=75
    )
    assert _detection_digest(built_in, 20) == "05a8919f7f71e15c46243ccce9c390110f37906267d234f0424b12f25756dfe7"
    assert _detection_digest(every_shape, 12) == "0583a6f8c3557b23de5e3f16ad2c9c4b513696494d49ffc0d8e7b6ae7360da4c"


def _painted(spec: SyntheticSpec, index: int, void_width: int) -> tuple[Scene, Image.Image, np.ndarray, np.ndarray]:
    """Scene ``index``, its image before JPEG, its class mask and its instance mask (shape ``i``
    as ``i + 1``), all painted with ``void_width``."""
    scene = draw_scene(spec, index)
    coverages = [coverage(shape, scene.background.size, void_width) for shape in scene.shapes]
    numbered = Scene(scene.background, tuple(replace(s, class_id=i + 1) for i, s in enumerate(scene.shapes)))
    return scene, composite(scene, coverages), index_mask(scene, coverages), index_mask(numbered, coverages)


def test_each_labelled_pixel_shows_its_shape_colour_unmixed(spec: SyntheticSpec) -> None:
    blends = 0
    for index in range(6):
        scene, image, classes, shapes = _painted(spec, index, void_width=1)
        pixels, backdrop = np.asarray(image), np.asarray(scene.background)
        assert np.array_equal(pixels[classes == 0], backdrop[classes == 0])
        for number, shape in enumerate(scene.shapes, start=1):
            assert np.all(pixels[shapes == number] == shape.colour)
            assert np.all(classes[shapes == number] == shape.class_id)
            assert spec.classes[shape.class_id - 1] == shape.label
        assert np.array_equal(classes == VOID, shapes == VOID)
        pure = [backdrop] + [np.broadcast_to(s.colour, pixels.shape) for s in scene.shapes]
        blends += np.sum(~np.any([np.all(pixels == p, axis=-1) for p in pure], axis=0) & (classes == VOID))
        jpeg, mask = render_segmentation(spec, index)
        assert np.array_equal(mask, classes)
        assert jpeg == _jpeg_bytes(image, spec.jpeg_quality)
    assert blends > 100  # the void band is where the colours mix


def _jpeg_bytes(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def test_later_shapes_cover_earlier_ones_as_drawn(spec: SyntheticSpec) -> None:
    overlaps = 0
    for index in range(spec.num_images):
        scene, image, classes, _ = _painted(spec, index, void_width=1)
        hard = [np.asarray(coverage(s, scene.background.size, 0)) == 255 for s in scene.shapes]
        for later in range(len(hard)):
            for earlier in range(later):
                both = hard[earlier] & hard[later] & (classes != VOID)
                overlaps += int(both.sum())
                assert np.all(classes[both] == scene.shapes[later].class_id)
                assert np.all(np.asarray(image)[both] == scene.shapes[later].colour)
    assert overlaps > 50


@pytest.mark.parametrize("void_width", [1, 2])
def test_void_band_is_the_pixels_within_void_width_of_an_outline(spec: SyntheticSpec, void_width: int) -> None:
    """The band is exactly where the hard-edged scene (void_width 0) has another shape, or the
    background, within ``void_width`` pixels; elsewhere the label is the hard-edged one."""
    window = 2 * void_width + 1
    for index in range(6):
        _, _, hard_classes, hard_shapes = _painted(spec, index, void_width=0)
        _, _, classes, _ = _painted(spec, index, void_width)
        outline = ndimage.maximum_filter(hard_shapes, window, mode="nearest") != ndimage.minimum_filter(
            hard_shapes, window, mode="nearest"
        )
        assert np.array_equal(classes == VOID, outline)
        assert np.array_equal(classes[~outline], hard_classes[~outline])


def test_void_width_zero_draws_hard_edges_and_no_void(spec: SyntheticSpec) -> None:
    hard = replace(spec, void_width=0)
    for index in range(6):
        jpeg, mask = render_segmentation(hard, index)
        assert VOID not in mask and set(np.unique(mask)) <= set(range(len(spec.classes) + 1))
        assert jpeg == render_image(spec, index)[0]  # the detection image itself
    assert render_segmentation(spec, 0)[0] != render_image(spec, 0)[0]


def test_void_width_is_a_setting_that_defaults_to_one(spec: SyntheticSpec) -> None:
    config = {k: v for k, v in asdict(spec).items() if k != "void_width"}
    assert SyntheticSpec.from_config(config).void_width == 1
    assert SyntheticSpec.from_config({**config, "void_width": 3}).void_width == 3


def test_segmentation_folder_is_voc_with_palette_masks(spec: SyntheticSpec, tmp_path: Path) -> None:
    images = generate_segmentation(spec, tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in images] == [
        f"JPEGImages/shapes_{i:05d}.jpg" for i in range(spec.num_images)
    ]
    assert sorted(p.name for p in (tmp_path / "SegmentationClass").iterdir()) == [
        f"shapes_{i:05d}.png" for i in range(spec.num_images)
    ]
    seen = set()
    for index, image_path in enumerate(images):
        with (
            Image.open(tmp_path / "SegmentationClass" / f"{image_path.stem}.png") as png,
            Image.open(image_path) as jpg,
        ):
            assert (png.format, png.mode, jpg.format) == ("PNG", "P", "JPEG")
            assert png.size == jpg.size
            palette = png.getpalette()
            mask = np.array(png)
        assert np.array_equal(mask, render_segmentation(spec, index)[1])
        seen |= set(np.unique(mask).tolist())
    assert seen == {0, 1, 2, 3, VOID}
    colours = {i: tuple(palette[3 * i : 3 * i + 3]) for i in (0, 1, 2, 3, 8, VOID)}
    assert colours == {
        0: (0, 0, 0),
        1: (128, 0, 0),
        2: (0, 128, 0),
        3: (128, 128, 0),
        8: (64, 0, 0),
        VOID: (224, 224, 192),
    }


def test_segmentation_files_do_not_depend_on_workers_or_the_count(spec: SyntheticSpec, tmp_path: Path) -> None:
    def files(folder: Path) -> dict[str, bytes]:
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.*"))}

    generate_segmentation(spec, tmp_path / "one")
    generate_segmentation(spec, tmp_path / "two", workers=2)
    generate_segmentation(replace(spec, num_images=spec.num_images + 4), tmp_path / "more")
    one, more = files(tmp_path / "one"), files(tmp_path / "more")
    assert one == files(tmp_path / "two")
    assert len(more) == len(one) + 8 and one.items() <= more.items()
    assert render_segmentation(replace(spec, seed=spec.seed + 1), 0)[0] != render_segmentation(spec, 0)[0]


def test_segmentation_settings_are_checked(spec: SyntheticSpec, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"void_width must be >= 0 pixels, got -1"):
        generate_segmentation(replace(spec, void_width=-1), tmp_path)
    with pytest.raises(ValueError, match=r"no shape named \['background'\]"):
        generate_segmentation(replace(spec, classes=("background", *spec.classes)), tmp_path)


# -- classification -------------------------------------------------------------------------------

SIX = ("circle", "diamond", "hexagon", "square", "star", "triangle")


@pytest.fixture
def six(spec: SyntheticSpec) -> SyntheticSpec:
    return replace(spec, classes=SIX, num_images=24)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_every_shape_touches_all_four_sides_of_its_box(name: str) -> None:
    """So that a detection box drawn around a shape is tight on it."""
    alpha = coverage(Shape(name, 1, (5, 7, 45, 37), (255, 255, 255)), (50, 44), 0)
    assert alpha.getbbox() == (5, 7, 45, 37)


def test_classification_images_are_pure_in_seed_and_index(six: SyntheticSpec, tmp_path: Path) -> None:
    more = replace(six, num_images=six.num_images * 2)
    for index in range(six.num_images):
        assert render_classification(six, index) == render_classification(more, index)
    assert render_classification(six, 0) != render_classification(replace(six, seed=six.seed + 1), 0)
    one = [p.read_bytes() for p in generate_classification(six, tmp_path / "one")]
    two = [p.read_bytes() for p in generate_classification(six, tmp_path / "two", workers=2)]
    assert one == two
    digest = hashlib.sha256()
    pinned = SyntheticSpec(12, SIX, 3, 64, 96, jpeg_quality=75, hard_fraction=0.5)
    for index in range(12):
        jpeg, label = render_classification(pinned, index)
        digest.update(jpeg + label.encode())
    assert digest.hexdigest() == "7e08da8e03e187d637e664040177cb72635a22aa1923998b7c872882d0e23def"


def test_classification_folders_are_balanced_and_named_by_the_dominant_shape(
    six: SyntheticSpec, tmp_path: Path
) -> None:
    images = generate_classification(six, tmp_path)
    assert [p.name for p in images] == [f"shapes_{i:05d}.jpg" for i in range(six.num_images)]
    assert sorted(p.name for p in tmp_path.iterdir()) == list(SIX)
    assert {c: len(list((tmp_path / c).iterdir())) for c in SIX} == {c: 4 for c in SIX}
    distractors = 0
    for index, path in enumerate(images):
        *others, dominant = classification_scene(six, index).shapes
        assert dominant.label == path.parent.name == render_classification(six, index)[1]
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.size == classification_scene(six, index).background.size
        area = _area(dominant.box)
        for other in others:
            assert other.label != dominant.label
            assert _area(other.box) <= DISTRACTOR_AREA[1] * area
        distractors += len(others)
    assert 0 < distractors <= six.max_distractors * six.num_images


def _area(box: tuple[int, int, int, int]) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def test_hard_cases_are_cut_by_the_edge_or_low_in_contrast(six: SyntheticSpec) -> None:
    def cut(scene: Scene) -> bool:
        x0, y0, x1, y1 = scene.shapes[-1].box
        width, height = scene.background.size
        return x0 < 0 or y0 < 0 or x1 > width or y1 > height

    def contrast(scene: Scene) -> float:
        x0, y0, x1, y1 = scene.shapes[-1].box
        under = np.asarray(scene.background)[max(0, y0) : y1, max(0, x0) : x1].reshape(-1, 3).mean(axis=0)
        return float(np.abs(under - scene.shapes[-1].colour).max())

    hard = [classification_scene(replace(six, hard_fraction=1.0), i) for i in range(six.num_images)]
    assert any(cut(scene) for scene in hard)
    assert any(not cut(scene) and contrast(scene) < 30 for scene in hard)
    assert all(cut(scene) or contrast(scene) < 30 for scene in hard)
    easy = [classification_scene(replace(six, hard_fraction=0.0), i) for i in range(six.num_images)]
    assert not any(cut(scene) for scene in easy)


def test_the_classify_config_builds_a_spec(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "conf" / "dataset" / "synthetic_classify.yaml").read_text())
    spec = SyntheticSpec.from_config({**config, "num_images": 6})
    assert generate_classification(spec, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(config["classes"])
    with pytest.raises(ValueError, match="two or more distinct classes"):
        generate_classification(replace(spec, classes=("circle", "circle")), tmp_path)
