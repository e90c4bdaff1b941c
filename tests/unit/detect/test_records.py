"""TFRecords are read back with the OD API's own decoder and must match the CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from odpipe.core.files import read_csv, write_csv
from odpipe.data.annotations import CSV_COLUMNS, to_csv_rows
from odpipe.data.records import shard_pattern
from odpipe.data.synthetic import generate
from odpipe.detect.clean import ClassRules, CleanPolicy, clean_folder
from odpipe.detect.label_map import class_ids
from odpipe.detect.records import ImageBoxes, group_csv_rows, read_examples, with_images, write_tfrecords
from tests.conftest import CLASSES


@pytest.fixture
def csv_rows(spec, tmp_path: Path) -> list[dict]:
    generate(spec, tmp_path / "raw")
    kept = clean_folder(tmp_path / "raw", tmp_path / "clean", "voc", {}, ClassRules(CLASSES), CleanPolicy())[1].kept
    write_csv(to_csv_rows([s.annotation for s in kept], class_ids(CLASSES)), CSV_COLUMNS, tmp_path / "train.csv")
    return read_csv(tmp_path / "train.csv")


@pytest.mark.parametrize("num_shards", [1, 3])
def test_decoded_records_match_the_csv_and_the_original_bytes(csv_rows, tmp_path: Path, num_shards: int) -> None:
    records = group_csv_rows(csv_rows)
    paths, count = write_tfrecords(with_images(records, tmp_path / "raw"), tmp_path / "tf", "train", num_shards)
    assert count == len(records) and len(paths) == num_shards and all(p.stat().st_size > 0 for p in paths)

    decoded = {ex["filename"].decode(): ex for ex in read_examples(shard_pattern(tmp_path / "tf", "train"))}
    assert set(decoded) == {r.filename for r in records}
    for record in records:
        example = decoded[record.filename]
        expected = np.array(
            [
                [y0 / record.height, x0 / record.width, y1 / record.height, x1 / record.width]
                for x0, y0, x1, y1 in record.boxes
            ]
        )
        np.testing.assert_allclose(example["groundtruth_boxes"], expected, rtol=1e-6)
        assert list(example["groundtruth_classes"]) == list(record.labels)
        assert example["image"].shape == (record.height, record.width, 3)
        assert (0 <= example["groundtruth_boxes"]).all() and (example["groundtruth_boxes"] <= 1).all()


def test_image_bytes_are_passed_through_unchanged(csv_rows, tmp_path: Path) -> None:
    import tensorflow as tf

    records = group_csv_rows(csv_rows)
    write_tfrecords(with_images(records, tmp_path / "raw"), tmp_path / "tf", "train", 1)
    for serialized in tf.data.TFRecordDataset(str(tmp_path / "tf" / "train-00000-of-00001.tfrecord")):
        example = tf.train.Example.FromString(serialized.numpy())
        feature = example.features.feature
        name = feature["image/filename"].bytes_list.value[0].decode()
        assert feature["image/encoded"].bytes_list.value[0] == (tmp_path / "raw" / name).read_bytes()
        assert feature["image/format"].bytes_list.value[0] == b"jpeg"


def test_non_jpeg_png_images_are_refused_by_name(csv_rows, tmp_path: Path) -> None:
    records = group_csv_rows(csv_rows)
    (tmp_path / "raw" / records[0].filename).write_bytes(b"BM not a jpeg")
    with pytest.raises(ValueError, match=records[0].filename):
        write_tfrecords(with_images(records, tmp_path / "raw"), tmp_path / "tf", "train", 1)


def test_difficult_and_truncated_reach_the_decoder(tmp_path: Path) -> None:
    from odpipe.data.synthetic import SyntheticSpec

    spec = SyntheticSpec(1, CLASSES, 0, 64, 64, 2, 2, 0.2, 0.3, 0.0)
    generate(spec, tmp_path / "raw")
    image = next((tmp_path / "raw").glob("*.jpg"))
    record = ImageBoxes(
        image.name, 64, 64, ((1, 1, 20, 20), (30, 30, 60, 60)), (1, 2), ("circle", "square"), (1, 0), (0, 1)
    )
    write_tfrecords(with_images([record], tmp_path / "raw"), tmp_path / "tf", "train", 1)
    (example,) = read_examples(shard_pattern(tmp_path / "tf", "train"))
    assert list(example["groundtruth_difficult"]) == [1, 0]
    # The decoder has no output for truncated; the feature is there for other readers.
    import tensorflow as tf

    (serialized,) = tf.data.TFRecordDataset(str(tmp_path / "tf" / "train-00000-of-00001.tfrecord"))
    feature = tf.train.Example.FromString(serialized.numpy()).features.feature
    assert list(feature["image/object/truncated"].int64_list.value) == [0, 1]
