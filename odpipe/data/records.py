"""TFRecord writing every task shares: features, the image format check, shard names and counts,
the seeded order of a split's (row, copy) units and round-robin writing over shards.
The tasks' own schemas (detection's boxes, segmentation's masks, classification's class ids)
build their Examples from these pieces."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import tensorflow as tf

IMAGE_FORMATS = {b"\xff\xd8\xff": "jpeg", b"\x89PNG": "png"}
SHARD_BYTES = 100 * 2**20  # TensorFlow's advice: shards of 100 MB or more read efficiently
MIN_SHARDS = 2  # interleaved reading, and a shard of its own for each of two workers
T = TypeVar("T")  # a split's row: detection's ImageBoxes, the Keras tasks' rows


def image_format(encoded: bytes, name: str) -> str:
    for magic, fmt in IMAGE_FORMATS.items():
        if encoded.startswith(magic):
            return fmt
    raise ValueError(f"{name}: only JPEG and PNG can go into a TFRecord as they are")


def bytes_feature(values: list[bytes]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def floats_feature(values: list[float]) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def ints_feature(values: list[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def shard_paths(out_dir: Path, split: str, num_shards: int) -> list[Path]:
    return [out_dir / f"{split}-{i:05d}-of-{num_shards:05d}.tfrecord" for i in range(num_shards)]


def shard_pattern(out_dir: Path | str, split: str) -> str:
    """The glob the OD API's input reader expands to find every shard of a split."""
    return f"{out_dir}/{split}-?????-of-?????.tfrecord"


def auto_num_shards(num_bytes: int) -> int:
    """Shards for a split of ``num_bytes`` of images: about one per ``SHARD_BYTES``, at least
    ``MIN_SHARDS``."""
    return max(MIN_SHARDS, math.ceil(num_bytes / SHARD_BYTES))


def shuffled(records: Sequence[T], copies: int, seed: int) -> Iterator[tuple[T, int]]:
    """Every (image, copy number) pair, copy 0 being the original, in one seeded random order.

    The OD API shuffles with a buffer of a few thousand examples: written in file-name order
    with the copies beside their original, a large dataset would train on near-sequential,
    near-duplicate batches. A permutation over the whole split fixes that at no cost.
    """
    order = np.random.default_rng(seed).permutation(len(records) * (copies + 1))
    for unit in order:
        yield records[unit // (copies + 1)], int(unit % (copies + 1))


def split_units(rows: Sequence[T], copies: int, order_seed: int | None) -> Iterable[tuple[T, int]]:
    """A split's (row, copy number) units in the order they are written: as they are (copy 0
    each) for val and test; for train (``order_seed`` given) with ``copies`` each, shuffled."""
    return ((row, 0) for row in rows) if order_seed is None else shuffled(rows, copies, order_seed)


def write_serialized(serialized: Iterable[bytes], out_dir: Path, split: str, num_shards: int) -> tuple[list[Path], int]:
    """Round-robin serialized Examples over ``num_shards`` files, so shards are equally
    sized. Returns the shard paths and how many examples they hold."""
    if num_shards < 1:
        raise ValueError(f"tfrecord.num_shards must be >= 1, got {num_shards}")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = shard_paths(out_dir, split, num_shards)
    writers = [tf.io.TFRecordWriter(str(p)) for p in paths]
    count = 0
    try:
        for count, example in enumerate(serialized, start=1):
            writers[(count - 1) % num_shards].write(example)
    finally:
        for writer in writers:
            writer.close()
    return paths, count
