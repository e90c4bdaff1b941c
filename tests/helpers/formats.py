"""Detection datasets in the formats users bring (COCO JSON, YOLO folders) written from
annotations, and the course's fruits-nuts VOC sample, shared by the format tests."""

from __future__ import annotations

import json
from pathlib import Path

from odpipe.data.annotations import Annotation
from odpipe.detect.label_map import class_ids
from tests.conftest import CLASSES, ROOT

FRUITS = ROOT.parent / "shared" / "datasets" / "fruits-nuts-voc"


def write_coco(annotations: list[Annotation], folder: Path) -> None:
    ids = class_ids(CLASSES)
    data = {"images": [], "annotations": [], "categories": [{"id": i, "name": n} for n, i in ids.items()]}
    for image_id, a in enumerate(annotations, start=7):
        data["images"].append({"id": image_id, "file_name": a.filename, "width": a.width, "height": a.height})
        for b in a.boxes:
            data["annotations"].append(
                {
                    "id": len(data["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": ids[b.label],
                    "iscrowd": 0,
                    "bbox": [b.xmin, b.ymin, b.xmax - b.xmin, b.ymax - b.ymin],
                }
            )
    data["annotations"].append({"id": 999, "image_id": 7, "category_id": 1, "iscrowd": 1, "bbox": [0, 0, 5, 5]})
    (folder / "instances.json").write_text(json.dumps(data))


def write_yolo(annotations: list[Annotation], folder: Path) -> None:
    (folder / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    labels = folder / "labels"
    labels.mkdir()
    for a in annotations:
        lines = [
            f"{CLASSES.index(b.label)} {(b.xmin + b.xmax) / 2 / a.width:.8f} {(b.ymin + b.ymax) / 2 / a.height:.8f} "
            f"{(b.xmax - b.xmin) / a.width:.8f} {(b.ymax - b.ymin) / a.height:.8f}"
            for b in a.boxes
        ]
        (labels / Path(a.filename).with_suffix(".txt").name).write_text("\n".join(lines) + "\n")
