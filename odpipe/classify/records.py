"""The classify task's TFRecords: each image's encoded bytes with its class id and name under the
keys the OD API's schema gives an image-level class (``image/class/label``, ``image/class/text``),
and the train split's augmented copies.

Shards, their names, the seeded order of the train split and the workers are every task's
(:mod:`odpipe.data.records`, :mod:`odpipe.core.parallel`): only the Example differs.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path

import tensorflow as tf
from PIL import Image

from odpipe.classify.clean import ClassRow
from odpipe.core.parallel import Workers
from odpipe.data.augmentation import JPEG_QUALITY, Policy, cached_transform, copy_seed, decode_rgb
from odpipe.data.records import bytes_feature, image_format, ints_feature, split_units

COUNTS = "counts.json"  # beside the shards: examples per split

FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
}


def class_example(name: str, encoded: bytes, label: int, text: str, width: int, height: int) -> tf.train.Example:
    """One Example: the image as stored (JPEG or PNG) and its class."""
    feature = {
        "image/encoded": bytes_feature([encoded]),
        "image/format": bytes_feature([image_format(encoded, name).encode()]),
        "image/filename": bytes_feature([name.encode()]),
        "image/height": ints_feature([height]),
        "image/width": ints_feature([width]),
        "image/class/label": ints_feature([label]),
        "image/class/text": bytes_feature([text.encode()]),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def augment_image(name: str, encoded: bytes, policy: Policy, copy: int) -> tuple[bytes, int, int]:
    """Copy ``copy`` of an image: JPEG bytes, width, height, drawn from the copy's own seed (the
    same for any worker count and reading order)."""
    transform = cached_transform(policy, boxes=False)
    transform.set_random_seed(copy_seed(policy.seed, name, copy))
    out = Image.fromarray(transform(image=decode_rgb(encoded))["image"])
    buffer = io.BytesIO()
    out.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue(), out.width, out.height


def example_bytes(unit: tuple[ClassRow, int], images: Path, names: Sequence[str], policy: Policy) -> bytes:
    """One serialized Example: copy 0 is the image as cleaned, copy n its n-th augmented copy."""
    row, copy = unit
    encoded, name, width, height = (images / row.image).read_bytes(), row.image, row.width, row.height
    if copy:
        encoded, width, height = augment_image(row.image, encoded, policy, copy)
        name = f"{row.image}#aug{copy}"
    return class_example(name, encoded, row.label, names[row.label], width, height).SerializeToString()


def split_examples(
    rows: Sequence[ClassRow],
    images: Path,
    *,
    names: Sequence[str],
    policy: Policy,
    order_seed: int | None,
    workers: Workers,
) -> Iterator[bytes]:
    """A split's serialized Examples in the order they are written, each image read when its
    turn comes; the train split (``order_seed`` given) with the policy's copies, shuffled."""
    build = partial(example_bytes, images=images, names=names, policy=policy)
    return workers.map(build, split_units(rows, policy.copies, order_seed), inline=lambda unit: unit[1] == 0)


def parse_example(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """In a ``tf.data`` pipeline: the image's encoded bytes (decoded by the caller as the export
    decodes: :func:`odpipe.classify.export.decode_resized`) and its class id (int32)."""
    parsed = tf.io.parse_single_example(serialized, FEATURES)
    return parsed["image/encoded"], tf.cast(parsed["image/class/label"], tf.int32)


def preview_images(rows: Sequence[ClassRow], images: Path, policy: Policy) -> list[bytes]:
    """What the policy does to the first train images, before any training: each image followed
    by its augmented copies, exactly as the train records hold them."""
    shown = []
    for row in rows:
        encoded = (images / row.image).read_bytes()
        shown.append(encoded)
        shown.extend(augment_image(row.image, encoded, policy, copy)[0] for copy in range(1, policy.copies + 1))
    return shown
