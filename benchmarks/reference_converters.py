"""The converters users write today, which ``benchmarks/data_speed.py`` measures the tfrecord
stage against: not a benchmark, each is run by it as a process of its own, as a user runs such a
script, so that its start-up is a bare script's (only the standard library and the harness's
READY/DONE lines before the converter's own imports).

- seed_002 (the course notes' converter): parse each VOC XML, decode the image and re-encode it,
  write one TFRecord with the OD API's keys;
- seed_001_csv, then seed_001_tfrecord: every XML into one CSV, then pandas group-by filename,
  the raw image bytes into one TFRecord (two processes, as the notes run them);
- io_floor: read every image file and write its bytes to one file.

Each prints READY once its output is open and DONE, with how many images, once it is closed.

Usage: python benchmarks/reference_converters.py NAME SOURCE IMAGES OUT [CLASS ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.children import done, ready, write_floor


def _label_ids(classes: list[str]) -> dict[str, int]:
    return {name: i for i, name in enumerate(classes, start=1)}


def seed_002(xml_dir: Path, image_dir: Path, out: Path, classes: list[str]) -> int:
    """The notes' LabelImg converter: lxml per XML, cv2 decode, tf.io.encode_jpeg, one file."""
    import cv2
    import tensorflow as tf
    from lxml import etree

    ids = _label_ids(classes)

    def feature(kind: str, values: list) -> tf.train.Feature:
        lists = {"bytes": tf.train.BytesList, "float": tf.train.FloatList, "int64": tf.train.Int64List}
        return tf.train.Feature(**{f"{kind}_list": lists[kind](value=values)})

    count = 0
    with tf.io.TFRecordWriter(str(out)) as writer:
        ready()
        for xml in sorted(xml_dir.glob("*.xml")):
            root = etree.parse(str(xml)).getroot()
            filename = root.findtext("filename")
            width, height = int(root.findtext("size/width")), int(root.findtext("size/height"))
            objects = [
                (o.findtext("name"), *(int(float(o.findtext(f"bndbox/{k}"))) for k in ("xmin", "ymin", "xmax", "ymax")))
                for o in root.iter("object")
            ]
            rgb = cv2.cvtColor(cv2.imread(str(image_dir / filename)), cv2.COLOR_BGR2RGB)
            encoded = tf.io.encode_jpeg(rgb).numpy()
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "image/encoded": feature("bytes", [encoded]),
                        "image/filename": feature("bytes", [filename.encode()]),
                        "image/height": feature("int64", [height]),
                        "image/width": feature("int64", [width]),
                        "image/object/bbox/xmin": feature("float", [o[1] / width for o in objects]),
                        "image/object/bbox/ymin": feature("float", [o[2] / height for o in objects]),
                        "image/object/bbox/xmax": feature("float", [o[3] / width for o in objects]),
                        "image/object/bbox/ymax": feature("float", [o[4] / height for o in objects]),
                        "image/object/class/label": feature("int64", [ids[o[0]] for o in objects]),
                        "image/object/class/text": feature("bytes", [o[0].encode() for o in objects]),
                    }
                )
            )
            writer.write(example.SerializeToString())
            count += 1
    return count


def seed_001_csv(xml_dir: Path, _image_dir: Path, out: Path, classes: list[str]) -> int:
    """The notes' first script: every VOC XML (ElementTree) into one CSV, a row per box."""
    import xml.etree.ElementTree as ET

    import pandas as pd

    ids = _label_ids(classes)
    ready()
    columns = ("filename", "width", "height", "xmin", "ymin", "xmax", "ymax", "class", "class_id")
    rows: dict[str, list] = {c: [] for c in columns}
    files = sorted(xml_dir.glob("*.xml"))
    for xml in files:
        root = ET.parse(xml).getroot()
        size = root.find("size")
        for obj in root.iter("object"):
            box = obj.find("bndbox")
            values = (
                root.findtext("filename"),
                int(size.findtext("width")),
                int(size.findtext("height")),
                *(int(float(box.findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax")),
                obj.findtext("name"),
                ids[obj.findtext("name")],
            )
            for column, value in zip(columns, values, strict=True):
                rows[column].append(value)
    pd.DataFrame(rows).to_csv(out, index=False)
    return len(files)


def seed_001_tfrecord(csv: Path, image_dir: Path, out: Path, _classes: list[str]) -> int:
    """The notes' second script: pandas group-by filename, each image's bytes as they are."""
    import io

    import pandas as pd
    import tensorflow as tf
    from object_detection.utils import dataset_util
    from PIL import Image

    count = 0
    with tf.io.TFRecordWriter(str(out)) as writer:
        ready()
        table = pd.read_csv(csv)
        groups = table.groupby("filename")
        for filename in groups.groups:
            rows = groups.get_group(filename)
            with tf.io.gfile.GFile(str(image_dir / filename), "rb") as f:
                encoded = f.read()
            width, height = Image.open(io.BytesIO(encoded)).size
            xmins, ymins, xmaxs, ymaxs, texts, labels = [], [], [], [], [], []
            for _, row in rows.iterrows():
                xmins.append(row["xmin"] / width)
                ymins.append(row["ymin"] / height)
                xmaxs.append(row["xmax"] / width)
                ymaxs.append(row["ymax"] / height)
                texts.append(row["class"].encode())
                labels.append(int(row["class_id"]))
            name = str(filename).encode()
            feature = {
                "image/height": dataset_util.int64_feature(height),
                "image/width": dataset_util.int64_feature(width),
                "image/filename": dataset_util.bytes_feature(name),
                "image/source_id": dataset_util.bytes_feature(name),
                "image/encoded": dataset_util.bytes_feature(encoded),
                "image/format": dataset_util.bytes_feature(b"jpeg"),
                "image/object/bbox/xmin": dataset_util.float_list_feature(xmins),
                "image/object/bbox/xmax": dataset_util.float_list_feature(xmaxs),
                "image/object/bbox/ymin": dataset_util.float_list_feature(ymins),
                "image/object/bbox/ymax": dataset_util.float_list_feature(ymaxs),
                "image/object/class/text": dataset_util.bytes_list_feature(texts),
                "image/object/class/label": dataset_util.int64_list_feature(labels),
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
            count += 1
    return count


def io_floor(_xml_dir: Path, image_dir: Path, out: Path, _classes: list[str]) -> int:
    """The floor: every image file read and its bytes written to one file."""
    files = sorted(image_dir.iterdir())
    write_floor(files, out)
    return len(files)


REFERENCES = {f.__name__: f for f in (seed_002, seed_001_csv, seed_001_tfrecord, io_floor)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=REFERENCES)
    parser.add_argument("source", type=Path, help="VOC XML folder (seed_001_tfrecord: the CSV)")
    parser.add_argument("images", type=Path, help="image folder")
    parser.add_argument("out", type=Path, help="output file")
    parser.add_argument("classes", nargs="*", help="class names, in label map order")
    args = parser.parse_args()
    done(REFERENCES[args.name](args.source, args.images, args.out, args.classes))


if __name__ == "__main__":
    main()
