"""The segment task's TFRecords: each image's encoded bytes with its index mask as a PNG, under
the keys TensorFlow's own DeepLab records use (``image/segmentation/class/encoded``), and the
train split's augmented copies, the mask moved in lockstep with the image.

Shards, their names, the seeded order of the train split and the workers are every task's
(:mod:`odpipe.data.records`, :mod:`odpipe.core.parallel`): only the Example differs.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path

import albumentations as A
import numpy as np
import tensorflow as tf
from PIL import Image

from odpipe.core.parallel import Workers
from odpipe.data.augmentation import JPEG_QUALITY, Policy, cached_transform, copy_seed, decode_rgb
from odpipe.data.index_masks import decode_png, encode_png
from odpipe.data.records import bytes_feature, image_format, ints_feature, split_units
from odpipe.segment.clean import Row

COUNTS = "counts.json"  # beside the shards: examples per split

FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/filename": tf.io.FixedLenFeature([], tf.string),
    "image/segmentation/class/encoded": tf.io.FixedLenFeature([], tf.string),
}


def mask_example(name: str, encoded: bytes, mask_png: bytes, width: int, height: int) -> tf.train.Example:
    """One Example: the image as stored (JPEG or PNG) and its index mask (a PNG, 255 void)."""
    feature = {
        "image/encoded": bytes_feature([encoded]),
        "image/format": bytes_feature([image_format(encoded, name).encode()]),
        "image/filename": bytes_feature([name.encode()]),
        "image/height": ints_feature([height]),
        "image/width": ints_feature([width]),
        "image/segmentation/class/encoded": bytes_feature([mask_png]),
        "image/segmentation/class/format": bytes_feature([b"png"]),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def augment_pair(
    name: str, image: np.ndarray, mask: np.ndarray, transform: A.Compose, seed: int, copy: int
) -> tuple[bytes, bytes]:
    """One augmented copy: JPEG bytes of the image and PNG bytes of its mask, drawn from the
    copy's own seed (the same for any worker count and reading order)."""
    transform.set_random_seed(copy_seed(seed, name, copy))
    out = transform(image=image, mask=mask)
    buffer = io.BytesIO()
    Image.fromarray(out["image"]).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue(), encode_png(out["mask"])


def example_bytes(unit: tuple[Row, int], images: Path, masks: Path, policy: Policy) -> bytes:
    """One serialized Example: copy 0 is the pair as cleaned, copy n its n-th augmented copy."""
    row, copy = unit
    encoded, mask_png = (images / row.image).read_bytes(), (masks / row.mask).read_bytes()
    name, (width, height) = row.image, (row.width, row.height)
    if copy:
        image, mask = decode_rgb(encoded), decode_png(mask_png)
        encoded, mask_png = augment_pair(
            row.image, image, mask, cached_transform(policy, boxes=False), policy.seed, copy
        )
        name = f"{row.image}#aug{copy}"
        height, width = decode_png(mask_png).shape
    return mask_example(name, encoded, mask_png, width, height).SerializeToString()


def split_examples(
    rows: Sequence[Row], images: Path, masks: Path, *, policy: Policy, order_seed: int | None, workers: Workers
) -> Iterator[bytes]:
    """A split's serialized Examples in the order they are written, each pair read when its
    turn comes; the train split (``order_seed`` given) with the policy's copies, shuffled."""
    build = partial(example_bytes, images=images, masks=masks, policy=policy)
    return workers.map(build, split_units(rows, policy.copies, order_seed), inline=lambda unit: unit[1] == 0)


def parse_example(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """In a ``tf.data`` pipeline: the image (H, W, 3) uint8 and its mask (H, W) uint8."""
    parsed = tf.io.parse_single_example(serialized, FEATURES)
    image = tf.io.decode_image(parsed["image/encoded"], channels=3, expand_animations=False)
    mask = tf.io.decode_png(parsed["image/segmentation/class/encoded"], channels=1)[..., 0]
    return image, mask


def preview_rows(rows: Sequence[Row], images: Path, masks: Path, policy: Policy) -> list[tuple[bytes, bytes]]:
    """What the policy does to the first train pairs, before any training: each pair (image
    bytes, mask PNG) followed by its augmented copies, exactly as the train records hold them."""
    shown = []
    for row in rows:
        encoded, mask_png = (images / row.image).read_bytes(), (masks / row.mask).read_bytes()
        shown.append((encoded, mask_png))
        for copy in range(1, policy.copies + 1):
            image, mask = decode_rgb(encoded), decode_png(mask_png)
            shown.append(augment_pair(row.image, image, mask, cached_transform(policy, boxes=False), policy.seed, copy))
    return shown
