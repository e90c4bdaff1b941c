"""Run the exported SavedModel over a split and score it with pycocotools' COCO metrics."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from odpipe.tfrecord import ImageBoxes

# COCOeval.stats, in its own order, under names that DVC and MLflow both accept.
COCO_STATS = (
    "map",
    "map_50",
    "map_75",
    "map_small",
    "map_medium",
    "map_large",
    "ar_1",
    "ar_10",
    "ar_100",
    "ar_small",
    "ar_medium",
    "ar_large",
)


@dataclass(frozen=True)
class Detection:
    """One predicted box in pixel coordinates of the original image."""

    class_id: int
    score: float
    xmin: float
    ymin: float
    xmax: float
    ymax: float


def load_detector(export_dir: Path):
    return tf.saved_model.load(str(export_dir / "saved_model"))


def detect(detector, encoded: bytes, min_score: float = 0.0) -> list[Detection]:
    """Detections for one encoded image, boxes scaled back to its pixel size."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    height, width = int(image.shape[0]), int(image.shape[1])
    outputs = detector(image[tf.newaxis, ...])
    count = int(outputs["num_detections"][0])
    boxes = outputs["detection_boxes"][0][:count].numpy()
    classes = outputs["detection_classes"][0][:count].numpy().astype(int)
    scores = outputs["detection_scores"][0][:count].numpy()
    return [
        Detection(
            int(c), float(s), float(b[1] * width), float(b[0] * height), float(b[3] * width), float(b[2] * height)
        )
        for b, c, s in zip(boxes, classes, scores, strict=True)
        if s >= min_score
    ]


def _xywh(xmin: float, ymin: float, xmax: float, ymax: float) -> list[float]:
    return [xmin, ymin, xmax - xmin, ymax - ymin]


def coco_ground_truth(records: Sequence[ImageBoxes], categories: dict[int, str]) -> dict:
    images, annotations = [], []
    for image_id, record in enumerate(records, start=1):
        images.append({"id": image_id, "file_name": record.filename, "width": record.width, "height": record.height})
        for box, label in zip(record.boxes, record.labels, strict=True):
            xywh = _xywh(*box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": label,
                    "bbox": xywh,
                    "area": xywh[2] * xywh[3],
                    "iscrowd": 0,
                }
            )
    return {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n} for i, n in sorted(categories.items())],
    }


def coco_detections(detections: Sequence[Sequence[Detection]]) -> list[dict]:
    """Detections of image i (0-based) under COCO image id i + 1, as in coco_ground_truth."""
    return [
        {
            "image_id": image_id,
            "category_id": d.class_id,
            "bbox": _xywh(d.xmin, d.ymin, d.xmax, d.ymax),
            "score": d.score,
        }
        for image_id, image_detections in enumerate(detections, start=1)
        for d in image_detections
    ]


def coco_metrics(ground_truth: dict, detections: list[dict]) -> tuple[dict[str, float], str]:
    """pycocotools' box metrics and its printed summary table.

    With no detections at all every metric is 0 (pycocotools refuses an empty result list).
    """
    if not detections:
        return {name: 0.0 for name in COCO_STATS}, "no detections"
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        gt = COCO()
        gt.dataset = ground_truth
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(detections), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # pycocotools reports -1 where a metric has no ground truth (e.g. no small objects).
    stats = {name: float(value) for name, value in zip(COCO_STATS, np.asarray(evaluator.stats), strict=True)}
    table = "\n".join(line for line in summary.getvalue().splitlines() if line.startswith(" Average"))
    return stats, table
