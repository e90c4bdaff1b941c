"""Run the exported SavedModel over a split and score it with pycocotools' COCO metrics."""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from odpipe.annotations import Box
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


def class_name(categories: Mapping[int, str], class_id: int) -> str:
    """The class's name; an id missing from the label map keeps its number as its name."""
    return categories.get(class_id, str(class_id))


def as_boxes(detections: Sequence[Detection], categories: Mapping[int, str]) -> list[Box]:
    """Detections as labelled boxes, to draw or to write."""
    return [Box(class_name(categories, d.class_id), d.xmin, d.ymin, d.xmax, d.ymax) for d in detections]


def score_captions(boxes: Sequence[Box], detections: Sequence[Detection]) -> list[str]:
    return [f"{b.label} {d.score:.2f}" for b, d in zip(boxes, detections, strict=True)]


def comparison_row(
    record: ImageBoxes,
    encoded: bytes,
    detections: Sequence[Detection],
    categories: Mapping[int, str],
    threshold: float,
) -> tuple[bytes, tuple[Box, ...], list[Box], list[str]]:
    """One row of ``report.side_by_side``: the image, its boxes, and the detections kept at
    ``threshold`` captioned with their scores."""
    kept = [d for d in detections if d.score >= threshold]
    boxes = as_boxes(kept, categories)
    return encoded, record.labelled_boxes(), boxes, score_captions(boxes, kept)


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


def detect_all(detector, images: Sequence[bytes], min_score: float) -> tuple[list[list[Detection]], dict[str, float]]:
    """Detections of every image, and the speed of the whole call (decode + model + boxes)
    per image on this machine: latency percentiles in ms and images per second. The first
    call traces the graph, so one warm-up call is made first and not counted."""
    if images:
        detect(detector, images[0], min_score)
    detections, seconds = [], []
    for encoded in images:
        start = time.perf_counter()
        detections.append(detect(detector, encoded, min_score))
        seconds.append(time.perf_counter() - start)
    if not seconds:
        return detections, {}
    ms = np.asarray(seconds) * 1000
    speed = {f"latency_ms_p{q}": float(np.percentile(ms, q)) for q in (50, 90, 99)}
    speed["images_per_second"] = float(len(ms) / ms.sum() * 1000)
    return detections, speed


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


def per_class_ap(evaluator: COCOeval, categories: dict[int, str]) -> dict[str, float]:
    """AP@[.5:.95] of each class, from pycocotools' own precision array (area all, 100
    detections), as ``ap/<class>``; -1 for a class without ground truth, as pycocotools does."""
    precision = evaluator.eval["precision"]  # [iou, recall, class, area, max_dets]
    result = {}
    for k, category_id in enumerate(evaluator.params.catIds):
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        result[f"ap/{categories[category_id]}"] = float(values.mean()) if values.size else -1.0
    return result


def coco_metrics(ground_truth: dict, detections: list[dict]) -> tuple[dict[str, float], str]:
    """pycocotools' box metrics, per-class AP and its printed summary table.

    With no detections at all every metric is 0 (pycocotools refuses an empty result list).
    """
    categories = {c["id"]: c["name"] for c in ground_truth["categories"]}
    if not detections:
        zeros = {name: 0.0 for name in COCO_STATS} | {f"ap/{name}": 0.0 for name in categories.values()}
        return zeros, "no detections"
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
    stats |= per_class_ap(evaluator, categories)
    table = "\n".join(line for line in summary.getvalue().splitlines() if line.startswith(" Average"))
    return stats, table


class QualityGateError(RuntimeError):
    """The model is below ``evaluate.min_map``: not good enough to register."""


def check_quality_gate(metrics: Mapping[str, float], min_map: float | None) -> bool:
    """True when a gate is set and passed; raises when it is set and failed; False when unset."""
    if min_map is None:
        return False
    if metrics["map"] < min_map:
        raise QualityGateError(
            f"quality gate failed: test mAP@[.5:.95] {metrics['map']:.3f} < evaluate.min_map {min_map}; "
            "the model is not registered"
        )
    return True


BACKGROUND = "background"


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (xmin, ymin, xmax, ymax) boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def greedy_match(
    record: ImageBoxes, detections: Sequence[Detection], iou_threshold: float, same_class: bool
) -> list[tuple[Detection, int | None]]:
    """Each detection, best score first, with the index of the ground-truth box it takes (None
    for none): the unmatched box of highest IoU at or above ``iou_threshold``, of the
    detection's own class when ``same_class`` (COCO's matching) or of any class (a confusion
    matrix's, which must see a box found as the wrong class)."""
    unmatched = list(range(len(record.boxes)))
    result = []
    for d in sorted(detections, key=lambda d: -d.score):
        box = (d.xmin, d.ymin, d.xmax, d.ymax)
        candidates = [i for i in unmatched if not same_class or record.labels[i] == d.class_id]
        best = max(candidates, key=lambda i: iou(record.boxes[i], box), default=None)
        if best is not None and iou(record.boxes[best], box) >= iou_threshold:
            unmatched.remove(best)
            result.append((d, best))
        else:
            result.append((d, None))
    return result


def confusion_pairs(
    records: Sequence[ImageBoxes],
    detections: Sequence[Sequence[Detection]],
    categories: Mapping[int, str],
    iou_threshold: float,
    score_threshold: float,
) -> list[dict[str, str]]:
    """One ``{actual, predicted}`` pair per ground-truth box and per kept detection.

    Detections at or above ``score_threshold`` are matched greedily, best score first, to
    the unmatched ground-truth box of highest IoU (any class) at or above ``iou_threshold``.
    A missed box pairs with ``background`` as predicted, a false alarm with ``background`` as
    actual: the confusion matrix's background row and column (DVC's confusion template).
    """
    pairs = []
    for record, found in zip(records, detections, strict=True):
        kept = [d for d in found if d.score >= score_threshold]
        matched = greedy_match(record, kept, iou_threshold, same_class=False)
        for d, box in matched:
            actual = BACKGROUND if box is None else categories[record.labels[box]]
            pairs.append({"actual": actual, "predicted": class_name(categories, d.class_id)})
        found_boxes = {box for _, box in matched}
        missed = (i for i in range(len(record.boxes)) if i not in found_boxes)
        pairs += [{"actual": categories[record.labels[i]], "predicted": BACKGROUND} for i in missed]
    return pairs
