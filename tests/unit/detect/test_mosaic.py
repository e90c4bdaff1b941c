"""Mosaic copies: partners are other train images, picked from the copy's seed; boxes stay in
their tile, keep their class, and obey the policy's box filters; the bytes do not depend on
the number of workers."""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from odpipe.core.runtime import compose_config
from odpipe.data.augmentation import Policy, build_transform, decode_rgb
from odpipe.data.records import shard_pattern
from odpipe.detect.augment import PartnerPicker, augment, augment_one, mosaic_of, preview_grid
from odpipe.detect.records import ImageBoxes, read_examples, with_images
from tests.conftest import ROOT, train_split_bytes

CLASSES = ("red", "green", "blue", "yellow", "magenta")
COLOURS = ((230, 40, 40), (40, 200, 40), (40, 40, 230), (230, 230, 40), (200, 40, 200))
SIZES = ((160, 120), (100, 140), (120, 120), (90, 90), (150, 100))  # width, height


def _write(folder: Path, name: str, width: int, height: int, colour: tuple[int, int, int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), colour).save(folder / name)


def _record(name: str, width: int, height: int, boxes: list, class_index: int) -> ImageBoxes:
    """An image whose boxes are all of one class (class ``class_index``, 0-based)."""
    return ImageBoxes(
        name,
        width,
        height,
        tuple(tuple(float(v) for v in box) for box in boxes),
        (class_index + 1,) * len(boxes),
        (CLASSES[class_index],) * len(boxes),
    )


@pytest.fixture
def sources(tmp_path: Path) -> list[ImageBoxes]:
    """Five one-colour images, of five sizes, each with boxes of its own class only."""
    rng = np.random.default_rng(0)
    records = []
    for k, ((width, height), colour) in enumerate(zip(SIZES, COLOURS, strict=True)):
        boxes = []
        for _ in range(3):
            x0, y0 = rng.uniform(0, 0.6) * width, rng.uniform(0, 0.6) * height
            boxes.append((x0, y0, x0 + rng.uniform(0.2, 0.4) * width, y0 + rng.uniform(0.2, 0.4) * height))
        _write(tmp_path / "images", f"img{k}.png", width, height, colour)
        records.append(_record(f"img{k}.png", width, height, boxes, k))
    return records


def _mosaic(target: int = 200, **params) -> dict:
    return {"name": "Mosaic", "target_size": [target, target], "cell_shape": [target, target], "p": 1.0, **params}


def _partners(picker: PartnerPicker, record: ImageBoxes, copy: int, root: Path) -> list:
    return [(p, decode_rgb((root / p.filename).read_bytes())) for p in picker(record, copy)]


def _tile(image: np.ndarray, colour: tuple[int, int, int]) -> tuple[int, int, int, int] | None:
    """Where a one-colour source landed in the output: the bounds of the pixels of its colour."""
    ys, xs = np.nonzero((np.abs(image.astype(int) - colour) < 60).all(axis=2))
    return (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) if len(xs) else None


def test_partners_are_other_images_drawn_from_the_copy_seed(sources) -> None:
    picker = PartnerPicker(sources, 3, seed=0)
    drawn = {(r.filename, c): [p.filename for p in picker(r, c)] for r in sources for c in (1, 2, 3)}
    for (name, _), partners in drawn.items():
        assert len(partners) == len(set(partners)) == 3
        assert name not in partners
    # The same names in any order give the same partners; another seed gives others.
    again = PartnerPicker(random.Random(1).sample(sources, len(sources)), 3, seed=0)
    assert drawn == {(r.filename, c): [p.filename for p in again(r, c)] for r in sources for c in (1, 2, 3)}
    other = PartnerPicker(sources, 3, seed=1)
    assert drawn != {(r.filename, c): [p.filename for p in other(r, c)] for r in sources for c in (1, 2, 3)}
    assert len({tuple(p) for p in drawn.values()}) > 1  # copies do not all get the same partners
    # A smaller split gives what it has, a split of one image none at all.
    assert [p.filename for p in PartnerPicker(sources[:2], 3, 0)(sources[0], 1)] == [sources[1].filename]
    assert PartnerPicker(sources[:1], 3, 0)(sources[0], 1) == ()


def test_a_one_image_split_is_tiled_with_itself(sources, tmp_path: Path) -> None:
    record = sources[2]
    examples = list(with_images([record], tmp_path / "images"))
    policy = Policy(1, (_mosaic(center_range=[0.3, 0.7]),))
    (original, _), (copy, encoded) = augment(examples, policy)
    assert original == record
    assert Image.open(io.BytesIO(encoded)).size == (copy.width, copy.height) == (200, 200)
    assert copy.boxes and set(copy.texts) == {CLASSES[2]}


def test_boxes_stay_inside_the_image_and_their_own_tile_with_their_class(sources, tmp_path: Path) -> None:
    """Each source is one colour and its boxes one class: a box of class k must lie where the
    colour of source k landed. ``cover`` fills each tile with its image, so the colour's bounds
    are the tile's (give or take the JPEG's blur of 2 pixels)."""
    root = tmp_path / "images"
    policy = Policy(1, (_mosaic(center_range=[0.3, 0.7], fit_mode="cover"),))
    transform = build_transform(policy)
    picker = PartnerPicker(sources, 3, policy.seed)
    seen = set()
    for record in sources:
        image = decode_rgb((root / record.filename).read_bytes())
        for copy in (1, 2, 3):
            partners = _partners(picker, record, copy, root)
            out, encoded = augment_one(record, image, transform, policy.seed, copy, partners)
            pixels = decode_rgb(encoded)
            assert (out.width, out.height) == (200, 200) and pixels.shape == (200, 200, 3)
            in_mosaic = {record.texts[0]} | {p.texts[0] for p, _ in partners}
            assert set(out.texts) <= in_mosaic
            assert len(out.boxes) == len(out.labels) == len(out.texts)
            for (x0, y0, x1, y1), label, text in zip(out.boxes, out.labels, out.texts, strict=True):
                assert CLASSES[label - 1] == text
                assert 0 <= x0 < x1 <= 200 and 0 <= y0 < y1 <= 200
                tx0, ty0, tx1, ty1 = _tile(pixels, COLOURS[label - 1])
                assert tx0 - 2 <= x0 and ty0 - 2 <= y0 and x1 <= tx1 + 2 and y1 <= ty1 + 2
            seen.update(out.texts)
    assert seen == set(CLASSES)  # every source's boxes show up somewhere


def _quadrant_source(folder: Path, k: int) -> ImageBoxes:
    """A square image with a box over all of it and a small box in each corner."""
    _write(folder, f"sq{k}.png", 120, 120, COLOURS[k])
    corners = [(6, 6, 30, 30), (90, 6, 114, 30), (6, 90, 30, 114), (90, 90, 114, 114)]
    return _record(f"sq{k}.png", 120, 120, [(0, 0, 120, 120), *corners], k)


def test_boxes_cut_by_a_tile_below_min_visibility_are_dropped(tmp_path: Path) -> None:
    """The centre in the middle cuts the output into four 100x100 tiles, each showing one
    corner of a 200x200-scaled image: a quarter of the box over the whole image, and one
    corner box whole. At ``min_visibility`` 0.5 the big boxes go, at 0.2 they stay, cut to
    their tile; the corner boxes stay either way, one of each source's class."""
    root = tmp_path / "images"
    records = [_quadrant_source(root, k) for k in range(4)]
    image = decode_rgb((root / records[0].filename).read_bytes())
    partners = _partners(PartnerPicker(records, 3, 0), records[0], 1, root)
    spec = _mosaic(center_range=[0.5, 0.5], fit_mode="cover")
    kept = {}
    for min_visibility in (0.5, 0.2):
        transform = build_transform(Policy(1, (spec,), min_visibility=min_visibility))
        kept[min_visibility], _ = augment_one(records[0], image, transform, 0, 1, partners)

    def sizes(record: ImageBoxes) -> list[tuple[str, float, float]]:
        return sorted(
            (t, round(x1 - x0), round(y1 - y0)) for (x0, y0, x1, y1), t in zip(record.boxes, record.texts, strict=True)
        )

    corners = sorted((CLASSES[k], 40, 40) for k in range(4))  # 24 pixels scaled by 200/120
    assert sizes(kept[0.5]) == corners
    assert sizes(kept[0.2]) == sorted(corners + [(CLASSES[k], 100, 100) for k in range(4)])


def test_mosaic_train_records_are_the_same_bytes_for_any_number_of_workers(sources, tmp_path: Path) -> None:
    policy = Policy.from_config(compose_config(ROOT, ["augment=mosaic"]).augment)
    written = train_split_bytes(sources, tmp_path / "images", policy, tmp_path)
    assert written[0] == written[1]
    decoded = list(read_examples(shard_pattern(tmp_path / "w2", "train")))
    assert len(decoded) == len(sources) * (1 + policy.copies)
    copies = [d for d in decoded if b"#aug" in d["filename"]]
    (mosaic,) = [t for t in policy.transforms if t["name"] == "Mosaic"]
    assert all(d["image"].shape[:2] == tuple(mosaic["target_size"]) for d in copies)
    assert all((0 <= d["groundtruth_boxes"]).all() and (d["groundtruth_boxes"] <= 1).all() for d in decoded)
    # The copies written are those of the in-process path (and the preview).
    in_process = {r.filename: r for r, _ in augment(list(with_images(sources, tmp_path / "images")), policy)}
    for d in copies:
        assert list(d["groundtruth_classes"]) == list(in_process[d["filename"].decode()].labels)


def test_the_preview_shows_mosaic_copies(sources, tmp_path: Path) -> None:
    policy = Policy.from_config(compose_config(ROOT, ["augment=mosaic"]).augment)
    grid = preview_grid(sources, tmp_path / "images", policy, list(CLASSES), rows=2)
    assert grid.size == ((1 + policy.copies) * 256, 2 * 256)


@pytest.mark.parametrize("model", ["centernet_mobilenet_v2_fpn_small", "ssd_mobilenet_v2_320x320_coco17_tpu-8"])
def test_the_mosaic_policy_is_made_at_the_models_input_size(model: str) -> None:
    cfg = compose_config(ROOT, [f"model={model}", "augment=mosaic"])
    mosaic = mosaic_of(build_transform(Policy.from_config(cfg.augment)))
    assert tuple(mosaic.target_size) == tuple(mosaic.cell_shape) == (cfg.model.image_size,) * 2


def test_a_mosaic_without_a_model_input_size_is_refused_naming_the_key() -> None:
    cfg = compose_config(ROOT, ["augment=mosaic", "model.image_size=null"])
    with pytest.raises(ValueError, match=r"Mosaic needs a target_size .* model\.image_size, which is null"):
        build_transform(Policy.from_config(cfg.augment))
