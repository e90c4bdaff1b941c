"""TFRecords in the schema the OD API's ``TfExampleDecoder`` reads.

Images are passed through as their original encoded bytes: decoding and re-encoding a JPEG
would lose quality and make the record differ from the file the user labelled.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import TypeVar

import numpy as np
import tensorflow as tf
from object_detection.data_decoders import tf_example_decoder

from odpipe import tfcompat  # noqa: F401  (tf-slim bridge, needed by the decoder)
from odpipe.annotations import Box

IMAGE_FORMATS = {b"\xff\xd8\xff": "jpeg", b"\x89PNG": "png"}
SHARD_BYTES = 100 * 2**20  # TensorFlow's advice: shards of 100 MB or more read efficiently
MIN_SHARDS = 2  # interleaved reading, and a shard of its own for each of two workers

T = TypeVar("T")  # a split's row: detection's ImageBoxes, the Keras tasks' rows


@dataclass(frozen=True)
class ImageBoxes:
    """What one tf.train.Example holds: an image file and its boxes in pixels."""

    filename: str
    width: int
    height: int
    boxes: tuple[tuple[float, float, float, float], ...]  # xmin, ymin, xmax, ymax
    labels: tuple[int, ...]
    texts: tuple[str, ...]
    difficult: tuple[int, ...] = ()
    truncated: tuple[int, ...] = ()
    crowd: tuple[int, ...] = ()  # 1: a COCO crowd region

    def ignored(self) -> tuple[int, ...]:
        """1 for each box evaluation ignores, as COCO does crowds and VOC difficult objects:
        a detection on it is neither a hit nor a false alarm, and missing it costs nothing."""
        flags = zip(self.crowd or (0,) * len(self.boxes), self.difficult or (0,) * len(self.boxes), strict=True)
        return tuple(int(bool(c or d)) for c, d in flags)

    def labelled_boxes(self) -> tuple[Box, ...]:
        """The boxes with their class names, to draw."""
        return tuple(Box(text, *box) for text, box in zip(self.texts, self.boxes, strict=True))


def group_csv_rows(rows: Iterable[dict]) -> list[ImageBoxes]:
    """Collapse the one-row-per-box CSV into one record per image, in order; a row with no
    class is an image without boxes. ``convert`` writes an image's rows together, so rows are
    grouped as they stream by and only the records are kept."""
    records: list[ImageBoxes] = []
    seen: set[str] = set()
    for name, rows_of_image in groupby(rows, key=lambda row: row["filename"]):
        if name in seen:
            raise ValueError(f"the rows of {name} are not together in the CSV")
        seen.add(name)
        group = list(rows_of_image)
        boxes = [r for r in group if r.get("class")]
        records.append(
            ImageBoxes(
                filename=name,
                width=int(group[0]["width"]),
                height=int(group[0]["height"]),
                boxes=tuple((float(r["xmin"]), float(r["ymin"]), float(r["xmax"]), float(r["ymax"])) for r in boxes),
                labels=tuple(int(r["class_id"]) for r in boxes),
                texts=tuple(r["class"] for r in boxes),
                difficult=tuple(int(r.get("difficult") or 0) for r in boxes),
                truncated=tuple(int(r.get("truncated") or 0) for r in boxes),
                crowd=tuple(int(r.get("iscrowd") or 0) for r in boxes),
            )
        )
    return records


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


def make_example(record: ImageBoxes, encoded: bytes) -> tf.train.Example:
    """One Example; box coordinates normalised to [0, 1] as the decoder expects."""
    w, h = float(record.width), float(record.height)
    xmins, ymins, xmaxs, ymaxs = zip(*record.boxes, strict=True) if record.boxes else ((), (), (), ())
    feature = {
        "image/encoded": bytes_feature([encoded]),
        "image/format": bytes_feature([image_format(encoded, record.filename).encode()]),
        "image/filename": bytes_feature([record.filename.encode()]),
        "image/source_id": bytes_feature([record.filename.encode()]),
        "image/key/sha256": bytes_feature([hashlib.sha256(encoded).hexdigest().encode()]),
        "image/height": ints_feature([record.height]),
        "image/width": ints_feature([record.width]),
        "image/object/bbox/xmin": floats_feature([x / w for x in xmins]),
        "image/object/bbox/ymin": floats_feature([y / h for y in ymins]),
        "image/object/bbox/xmax": floats_feature([x / w for x in xmaxs]),
        "image/object/bbox/ymax": floats_feature([y / h for y in ymaxs]),
        "image/object/class/label": ints_feature(list(record.labels)),
        "image/object/class/text": bytes_feature([t.encode() for t in record.texts]),
        "image/object/difficult": ints_feature(list(record.difficult or [0] * len(record.labels))),
        "image/object/truncated": ints_feature(list(record.truncated or [0] * len(record.labels))),
        # The OD API's COCO evaluator (val mAP during training) skips is_crowd boxes: crowds
        # and VOC difficult objects alike, as odpipe's own evaluation does.
        "image/object/is_crowd": ints_feature(list(record.ignored())),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


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


def with_images(records: Iterable[ImageBoxes], image_root: Path) -> Iterator[tuple[ImageBoxes, bytes]]:
    """Each record with its image file's bytes, read lazily."""
    for record in records:
        yield record, (image_root / record.filename).read_bytes()


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


def write_tfrecords(
    examples: Iterable[tuple[ImageBoxes, bytes]], out_dir: Path, split: str, num_shards: int
) -> tuple[list[Path], int]:
    """:func:`write_serialized` of (record, image bytes) pairs."""
    serialized = (make_example(record, encoded).SerializeToString() for record, encoded in examples)
    return write_serialized(serialized, out_dir, split, num_shards)


def read_examples(pattern: str) -> Iterator[dict]:
    """Decode every record of a split with the OD API's own decoder (as training will)."""
    decoder = tf_example_decoder.TfExampleDecoder()
    for path in sorted(tf.io.gfile.glob(pattern)):
        for serialized in tf.data.TFRecordDataset(path):
            yield {key: value.numpy() for key, value in decoder.decode(serialized).items()}
