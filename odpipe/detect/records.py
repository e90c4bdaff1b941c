"""TFRecords in the schema the OD API's ``TfExampleDecoder`` reads.

Images are passed through as their original encoded bytes: decoding and re-encoding a JPEG
would lose quality and make the record differ from the file the user labelled.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

import tensorflow as tf
from object_detection.data_decoders import tf_example_decoder

from odpipe.core.boxes import Box
from odpipe.data.records import bytes_feature, floats_feature, image_format, ints_feature, write_serialized
from odpipe.detect import tfcompat  # noqa: F401  (tf-slim bridge, needed by the decoder)


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


def with_images(records: Iterable[ImageBoxes], image_root: Path) -> Iterator[tuple[ImageBoxes, bytes]]:
    """Each record with its image file's bytes, read lazily."""
    for record in records:
        yield record, (image_root / record.filename).read_bytes()


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
