"""The segment task's records: an Example gives back its image and exact mask, augmented copies
move the mask with the image (nearest neighbour, no new ids), a split's Examples are the same
bytes and order for any number of workers, and training crops cut image and mask together."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from odpipe.core.parallel import Workers
from odpipe.data.augmentation import Policy, build_transform, decode_rgb
from odpipe.data.index_masks import VOID, decode_png, encode_png
from odpipe.data.records import shuffled, write_serialized
from odpipe.segment.clean import Row, mask_name
from odpipe.segment.records import augment_pair, mask_example, parse_example, preview_rows, split_examples
from odpipe.segment.train import pad_crop, split_pairs, train_dataset

H, W = 32, 48
# Rectangles (class, y0, y1, x0, x1), end-exclusive, on background 0, left and right unlike: void
# touches background and class 1, so that any blend of masks (not nearest neighbour) invents ids.
LAYOUT = ((1, 4, 20, 4, 20), (3, 4, 20, 20, 34), (2, 22, 30, 30, 44), (VOID, 20, 30, 2, 14))
COLOURS = {0: (200, 200, 200), 1: (220, 30, 30), 2: (230, 200, 20), 3: (30, 30, 220), VOID: (120, 0, 120)}
IDS = {0, 1, 2, 3, VOID}
# Per channel, inside a flat region: up to two JPEG generations (the stored image, its augmented
# copy) decoded by TensorFlow; any two class colours differ by 170 or more in some channel.
TOLERANCE = 40
MARGIN = 2  # pixels whose neighbourhood this far holds another id (or the edge) are not compared
GEOMETRY = (
    {"name": "HorizontalFlip", "p": 1.0},
    {
        "name": "Affine",
        "scale": [0.8, 1.2],
        "translate_percent": [-0.1, 0.1],
        "rotate": [-15, 15],
        "fill_mask": 255,
        "p": 1.0,
    },
)
POLICY = Policy(copies=2, transforms=GEOMETRY, seed=3)
ORDER_SEED = 7


def layout_mask() -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    for cls, y0, y1, x0, x1 in LAYOUT:
        mask[y0:y1, x0:x1] = cls
    return mask


def painted(mask: np.ndarray) -> np.ndarray:
    """An image whose every pixel is its class's flat colour."""
    table = np.zeros((256, 3), np.uint8)
    for cls, colour in COLOURS.items():
        table[cls] = colour
    return table[mask]


def interior(mask: np.ndarray) -> np.ndarray:
    """Pixels whose whole neighbourhood (``MARGIN`` each side, inside the image) has their id."""
    padded = np.pad(mask.astype(np.int16), MARGIN, constant_values=-1)
    windows = sliding_window_view(padded, (2 * MARGIN + 1, 2 * MARGIN + 1))
    return (windows == mask[..., None, None]).all(axis=(-2, -1))


def colour_agrees(image: np.ndarray, mask: np.ndarray) -> tuple[bool, int]:
    """Whether each interior non-void pixel has its class's colour, and how many were compared."""
    compared = interior(mask) & (mask != VOID)
    expected = painted(mask).astype(int)
    close = (np.abs(image.astype(int) - expected) <= TOLERANCE).all(axis=-1)
    return bool(close[compared].all()), int(compared.sum())


def write_image(pixels: np.ndarray, path: Path) -> None:
    """PNG or JPEG by the suffix; JPEG at the quality augmented copies are written at."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95)


def feature(serialized: bytes, key: str) -> bytes | int:
    value = tf.train.Example.FromString(serialized).features.feature[key]
    return value.bytes_list.value[0] if value.bytes_list.value else value.int64_list.value[0]


# TensorFlow decodes JPEG with its fast integer DCT (as the exported model does): up to ~20 levels from Pillow's.
@pytest.mark.parametrize(("fmt", "tolerance"), [("PNG", 0), ("JPEG", TOLERANCE)])
def test_example_gives_back_image_and_exact_mask(tmp_path: Path, fmt: str, tolerance: int) -> None:
    mask = layout_mask()
    path = tmp_path / f"a.{fmt.lower()}"
    write_image(painted(mask), path)
    encoded = path.read_bytes()
    serialized = mask_example(path.name, encoded, encode_png(mask), W, H).SerializeToString()
    image, parsed = parse_example(tf.constant(serialized))
    assert image.dtype == parsed.dtype == tf.uint8
    np.testing.assert_array_equal(parsed.numpy(), mask)
    np.testing.assert_allclose(image.numpy(), decode_rgb(encoded), rtol=0, atol=tolerance)
    assert feature(serialized, "image/encoded") == encoded
    assert feature(serialized, "image/format") == fmt.lower().encode()
    assert (feature(serialized, "image/width"), feature(serialized, "image/height")) == (W, H)


@pytest.mark.parametrize("copy", [1, 2, 3])
def test_geometry_moves_the_mask_with_the_image(copy: int) -> None:
    mask = layout_mask()
    transform = build_transform(POLICY, boxes=False)
    encoded, mask_png = augment_pair("a.jpg", painted(mask), mask, transform, POLICY.seed, copy)
    image, moved = decode_rgb(encoded), decode_png(mask_png)
    assert image.shape == (H, W, 3) and moved.shape == (H, W)
    assert set(np.unique(moved).tolist()) <= IDS
    agrees, compared = colour_agrees(image, moved)
    assert agrees and compared > H * W // 5
    assert not colour_agrees(image, mask)[0], "the unmoved mask must not fit the moved image"


def test_each_copy_draws_from_its_own_seed() -> None:
    """A copy is the same whatever was drawn before it (another worker, another order)."""
    mask = layout_mask()
    first = build_transform(POLICY, boxes=False)
    in_order = [augment_pair("a.jpg", painted(mask), mask, first, POLICY.seed, c) for c in (1, 2)]
    second = build_transform(POLICY, boxes=False)
    assert augment_pair("a.jpg", painted(mask), mask, second, POLICY.seed, 2) == in_order[1]
    assert in_order[0] != in_order[1]


@pytest.fixture
def rows(tmp_path: Path) -> list[Row]:
    """Three cleaned pairs as clean_split writes them: images as they came, masks as PNGs."""
    rows = []
    for i in range(3):
        mask = np.roll(layout_mask(), 6 * i, axis=1)
        image = f"frames/f{i}.jpg"
        write_image(painted(mask), tmp_path / "images" / image)
        (tmp_path / "masks" / mask_name(image)).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "masks" / mask_name(image)).write_bytes(encode_png(mask))
        classes = tuple(int(c) for c in np.unique(mask) if c != VOID)
        rows.append(Row(image, mask_name(image), W, H, classes))
    return rows


def examples(rows: list[Row], folder: Path, order_seed: int | None, count: int = 1) -> list[bytes]:
    """A split's serialized Examples, as the tfrecord stage writes them, with ``count`` workers."""
    with Workers(count) as workers:
        return list(
            split_examples(
                rows, folder / "images", folder / "masks", policy=POLICY, order_seed=order_seed, workers=workers
            )
        )


def copy_name(image: str, copy: int) -> str:
    return f"{image}#aug{copy}" if copy else image


def test_train_split_is_the_same_for_any_worker_count(rows: list[Row], tmp_path: Path) -> None:
    serialized = examples(rows, tmp_path, ORDER_SEED)
    assert examples(rows, tmp_path, ORDER_SEED, count=2) == serialized
    names = [feature(s, "image/filename").decode() for s in serialized]
    assert names == [copy_name(row.image, copy) for row, copy in shuffled(rows, POLICY.copies, ORDER_SEED)]
    every = [copy_name(row.image, copy) for row in rows for copy in range(POLICY.copies + 1)]
    assert sorted(names) == sorted(every) and names != every
    for row in rows:
        original = serialized[names.index(row.image)]
        assert feature(original, "image/encoded") == (tmp_path / "images" / row.image).read_bytes()
        assert feature(original, "image/segmentation/class/encoded") == (tmp_path / "masks" / row.mask).read_bytes()
        assert (feature(original, "image/width"), feature(original, "image/height")) == (row.width, row.height)
        for copy in range(1, POLICY.copies + 1):
            augmented = serialized[names.index(copy_name(row.image, copy))]
            image, mask = (t.numpy() for t in parse_example(tf.constant(augmented)))
            assert feature(augmented, "image/format") == b"jpeg"
            assert (
                image.shape[:2] == mask.shape == (feature(augmented, "image/height"), feature(augmented, "image/width"))
            )
            assert set(np.unique(mask).tolist()) <= IDS and colour_agrees(image, mask)[0]


def test_other_splits_hold_the_pairs_as_they_are_in_order(rows: list[Row], tmp_path: Path) -> None:
    serialized = examples(rows, tmp_path, None)
    assert [feature(s, "image/filename").decode() for s in serialized] == [row.image for row in rows]
    for s, row in zip(serialized, rows, strict=True):
        assert feature(s, "image/encoded") == (tmp_path / "images" / row.image).read_bytes()


def test_preview_shows_the_copies_the_records_hold(rows: list[Row], tmp_path: Path) -> None:
    serialized = {feature(s, "image/filename").decode(): s for s in examples(rows, tmp_path, ORDER_SEED)}
    shown = preview_rows(rows[:2], tmp_path / "images", tmp_path / "masks", POLICY)
    expected = [
        (feature(serialized[name], "image/encoded"), feature(serialized[name], "image/segmentation/class/encoded"))
        for row in rows[:2]
        for name in (copy_name(row.image, copy) for copy in range(POLICY.copies + 1))
    ]
    assert shown == expected


def test_records_read_back_for_training_and_scoring(rows: list[Row], tmp_path: Path) -> None:
    records = tmp_path / "records"
    write_serialized(examples(rows, tmp_path, ORDER_SEED), records, "train", 2)
    write_serialized(examples(rows, tmp_path, None), records, "val", 1)
    pairs = list(split_pairs(records, "val"))
    assert len(pairs) == len(rows)
    for (image, mask), row in zip(pairs, rows, strict=True):
        np.testing.assert_array_equal(mask.numpy(), decode_png((tmp_path / "masks" / row.mask).read_bytes()))
        assert image.shape == (row.height, row.width, 3)
    images, masks = next(iter(train_dataset(records, batch_size=2, crop=40, seed=0)))
    assert images.shape == (2, 40, 40, 3) and images.dtype == tf.float32
    assert masks.shape == (2, 40, 40) and set(np.unique(masks.numpy()).tolist()) <= IDS


def coordinates(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """An image whose pixel (y, x) is (y, x, 7) and a mask of ids computed from y and x (one
    pixel void), so that any window of either says where it was cut."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([y, x, np.full_like(y, 7)], axis=-1).astype(np.uint8)
    mask = ((x + 2 * y) % 5).astype(np.uint8)
    mask[0, 0] = VOID
    return image, mask


def test_pad_crop_pads_a_small_image_black_and_its_mask_void() -> None:
    image, mask = coordinates(5, 7)
    out_image, out_mask = (t.numpy() for t in pad_crop(tf.constant(image), tf.constant(mask), 10))
    assert out_image.dtype == np.float32 and out_image.shape == (10, 10, 3) and out_mask.shape == (10, 10)
    np.testing.assert_array_equal(out_image[:5, :7], image)
    np.testing.assert_array_equal(out_mask[:5, :7], mask)
    assert (out_image[5:] == 0).all() and (out_image[:, 7:] == 0).all()
    assert (out_mask[5:] == VOID).all() and (out_mask[:, 7:] == VOID).all()


def test_pad_crop_cuts_image_and_mask_at_the_same_place() -> None:
    image, mask = coordinates(20, 30)
    origins = set()
    for _ in range(8):
        out_image, out_mask = (t.numpy() for t in pad_crop(tf.constant(image), tf.constant(mask), 12))
        y0, x0 = int(out_image[0, 0, 0]), int(out_image[0, 0, 1])
        np.testing.assert_array_equal(out_image, image[y0 : y0 + 12, x0 : x0 + 12])
        np.testing.assert_array_equal(out_mask, mask[y0 : y0 + 12, x0 : x0 + 12])
        origins.add((y0, x0))
    assert len(origins) > 1, "the crop is drawn at random"


def test_pad_crop_pads_a_short_side_and_crops_the_long_one() -> None:
    image, mask = coordinates(6, 20)
    out_image, out_mask = (t.numpy() for t in pad_crop(tf.constant(image), tf.constant(mask), 10))
    x0 = int(out_image[0, 0, 1])
    np.testing.assert_array_equal(out_image[:6], image[:, x0 : x0 + 10])
    np.testing.assert_array_equal(out_mask[:6], mask[:, x0 : x0 + 10])
    assert (out_image[6:] == 0).all() and (out_mask[6:] == VOID).all()
