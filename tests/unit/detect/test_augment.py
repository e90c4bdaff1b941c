"""Offline augmentation: boxes follow the image, the output is reproducible, `none` is a no-op."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from odpipe.core.runtime import compose_config
from odpipe.data.annotations import read_voc, to_csv_rows
from odpipe.data.augmentation import Policy, build_transform
from odpipe.data.records import shard_pattern
from odpipe.data.synthetic import generate
from odpipe.detect.augment import augment, augment_one, preview_grid
from odpipe.detect.label_map import class_ids
from odpipe.detect.records import ImageBoxes, group_csv_rows, read_examples, with_images, write_tfrecords
from tests.conftest import CLASSES, ROOT, train_split_bytes


def _policy(name: str) -> Policy:
    """A policy from conf/augment, as the tfrecord stage reads it."""
    return Policy.from_config(compose_config(ROOT, [f"augment={name}"]).augment)


@pytest.fixture
def examples(spec, tmp_path: Path) -> list[tuple[ImageBoxes, bytes]]:
    """The synthetic images with their boxes, as the tfrecord stage gets them."""
    generate(spec, tmp_path / "raw")
    annotations = [read_voc(xml) for xml in sorted((tmp_path / "raw").glob("*.xml"))]
    return list(with_images(group_csv_rows(to_csv_rows(annotations, class_ids(CLASSES))), tmp_path / "raw"))


def _pixels(encoded: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(encoded)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float32)


def test_a_horizontal_flip_mirrors_the_image_and_the_boxes(examples) -> None:
    policy = Policy(copies=1, transforms=({"name": "HorizontalFlip", "p": 1.0},))
    record, encoded = examples[0]
    flipped, flipped_bytes = augment_one(record, _pixels(encoded).astype(np.uint8), build_transform(policy), 0, 1)
    width = record.width
    mirrored = [(width - x1, y0, width - x0, y1) for x0, y0, x1, y1 in record.boxes]
    np.testing.assert_allclose(np.array(flipped.boxes), np.array(mirrored), atol=1e-4)
    assert (flipped.labels, flipped.texts) == (record.labels, record.texts)
    # JPEG is lossy: the mirrored original and the flipped copy agree to a few grey levels.
    assert np.abs(_pixels(flipped_bytes) - _pixels(encoded)[:, ::-1]).mean() < 4


def test_boxes_stay_inside_the_image_and_keep_their_labels(examples) -> None:
    for record, encoded in augment(examples, _policy("heavy")):
        assert (record.width, record.height) == Image.open(io.BytesIO(encoded)).size
        assert len(record.boxes) == len(record.labels) == len(record.texts)
        for (x0, y0, x1, y1), label, text in zip(record.boxes, record.labels, record.texts, strict=True):
            assert 0 <= x0 < x1 <= record.width and 0 <= y0 < y1 <= record.height
            assert CLASSES[label - 1] == text


def test_boxes_cut_below_min_visibility_are_dropped(examples) -> None:
    record, encoded = next((r, e) for r, e in examples if len(r.boxes) >= 2)
    image = _pixels(encoded).astype(np.uint8)
    # Keep only the left half: boxes mostly in the right half must go, the rest stay.
    half = record.width // 2
    policy = Policy(1, ({"name": "Crop", "x_min": 0, "y_min": 0, "x_max": half, "y_max": record.height},), 0.5)
    cropped, _ = augment_one(record, image, build_transform(policy), 0, 1)
    visible = [(min(x1, half) - x0) / (x1 - x0) for x0, _, x1, _ in record.boxes]
    assert cropped.texts == tuple(t for t, v in zip(record.texts, visible, strict=True) if v >= 0.5)
    assert cropped.width == half


def _write(examples, policy: Policy, out: Path) -> bytes:
    paths, _ = write_tfrecords(augment(examples, policy), out, "train", 1)
    return paths[0].read_bytes()


def test_the_same_seed_gives_identical_tfrecords_and_another_seed_does_not(examples, tmp_path: Path) -> None:
    policy = _policy("default")
    first = _write(examples, policy, tmp_path / "a")
    assert _write(examples, policy, tmp_path / "b") == first
    assert _write(examples, replace(policy, seed=policy.seed + 1), tmp_path / "c") != first


def test_copies_are_written_beside_the_originals_and_decode(examples, tmp_path: Path) -> None:
    policy = _policy("default")
    _, count = write_tfrecords(augment(examples, policy), tmp_path / "tf", "train", 1)
    assert count == len(examples) * (1 + policy.copies)
    decoded = list(read_examples(shard_pattern(tmp_path / "tf", "train")))
    names = [d["filename"].decode() for d in decoded]
    assert names[: 1 + policy.copies] == [examples[0][0].filename] + [
        f"{examples[0][0].filename}#aug{i}" for i in range(1, 1 + policy.copies)
    ]
    assert all((0 <= d["groundtruth_boxes"]).all() and (d["groundtruth_boxes"] <= 1).all() for d in decoded)


def test_none_gives_the_unaugmented_set(examples, tmp_path: Path) -> None:
    plain, _ = write_tfrecords(iter(examples), tmp_path / "plain", "train", 1)
    assert _write(examples, _policy("none"), tmp_path / "none") == plain[0].read_bytes()


def test_every_shipped_policy_builds_and_a_bad_one_is_named() -> None:
    for name in ("light", "default", "heavy", "mosaic"):
        build_transform(_policy(name))
    with pytest.raises(ValueError, match="'Fliplr' is not an Albumentations transform"):
        build_transform(Policy(1, ({"name": "Fliplr"},)))
    with pytest.raises(ValueError, match="HorizontalFlip.*'probability' are not valid"):
        build_transform(Policy(1, ({"name": "HorizontalFlip", "probability": 0.5},)))


def test_the_preview_shows_each_image_beside_its_copies(examples, tmp_path: Path) -> None:
    grid = preview_grid([record for record, _ in examples], tmp_path / "raw", _policy("default"), list(CLASSES), rows=2)
    assert grid.size == (3 * 256, 2 * 256)


def test_train_records_are_the_same_bytes_for_any_number_of_workers(examples, tmp_path: Path) -> None:
    """What the tfrecord stage writes for the train split, originals and augmented copies in
    their shuffled order, built in this process and by two worker processes."""
    records = [record for record, _ in examples]
    policy = _policy("default")
    written = train_split_bytes(records, tmp_path / "raw", policy, tmp_path)
    assert written[0] == written[1]
    assert len(list(read_examples(shard_pattern(tmp_path / "w2", "train")))) == len(records) * (1 + policy.copies)
