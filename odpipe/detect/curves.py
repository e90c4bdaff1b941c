"""Where a detector fails and which score threshold to use: per-class precision-recall curves,
F1 against score threshold, the best threshold (chosen on val, reported on test) and a score
per image to find the best and worst test images.

Everything starts from one matching, the way COCO matches at a single IoU: per image and
class, detections best score first take the unmatched ground-truth box of the same class with
the highest IoU at or above the threshold; the rest are false positives, but for those on an
ignored box (a crowd, a VOC difficult object), which are left out as COCO leaves them. Because
matching goes best score first, the detections above any score threshold match exactly as they
would alone, so every curve is read off one sorted list.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from odpipe.detect.evaluate import Detection, greedy_match
from odpipe.detect.records import ImageBoxes

THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.05, 1.0, 0.01))


@dataclass(frozen=True)
class Match:
    """One detection after matching: its class, score, image, and whether it found a box."""

    class_id: int
    score: float
    image: int
    true_positive: bool


def counted_labels(record: ImageBoxes) -> list[int]:
    """The classes of the image's boxes that count: not the ignored ones (crowds, difficult
    objects), which nothing has to find."""
    return [label for label, ignored in zip(record.labels, record.ignored(), strict=True) if not ignored]


def match(
    records: Sequence[ImageBoxes], detections: Sequence[Sequence[Detection]], iou_threshold: float
) -> tuple[list[Match], Counter]:
    """Every detection that counts matched or not, best score first (those on ignored boxes
    are left out, as COCO does); and the count of boxes that count, per class."""
    matches, num_boxes = [], Counter()
    for image, (record, found) in enumerate(zip(records, detections, strict=True)):
        num_boxes.update(counted_labels(record))
        matched = greedy_match(record, found, iou_threshold, same_class=True)
        matches += [Match(d.class_id, d.score, image, box is not None) for d, box in matched]
    return sorted(matches, key=lambda m: -m.score), num_boxes


def counts_at(matches: Sequence[Match], num_boxes: int, thresholds: Sequence[float]) -> list[dict[str, float]]:
    """Precision, recall and F1 of the detections scoring at or above each threshold.

    ``matches`` are sorted best score first, so the detections kept at a threshold are a
    prefix: its length is found by binary search, its hits by a running sum.
    """
    scores = np.asarray([m.score for m in matches], dtype=float)
    hits = np.concatenate([[0], np.cumsum([m.true_positive for m in matches], dtype=int)])
    kept = np.searchsorted(-scores, -np.asarray(thresholds, dtype=float), side="right")
    tp = hits[kept]
    precision = np.divide(tp, kept, out=np.ones(len(kept)), where=kept > 0)
    recall = tp / num_boxes if num_boxes else np.ones(len(kept))
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros(len(kept)), where=total > 0)
    return [
        {"precision": float(p), "recall": float(r), "f1": float(f)}
        for p, r, f in zip(precision, recall, f1, strict=True)
    ]


def f1_curve(matches: Sequence[Match], num_boxes: Counter) -> list[dict[str, float]]:
    """Precision, recall and F1 over all classes at each threshold of ``THRESHOLDS``."""
    counts = counts_at(matches, sum(num_boxes.values()), THRESHOLDS)
    return [{"threshold": t, **c} for t, c in zip(THRESHOLDS, counts, strict=True)]


def best_threshold(curve: Sequence[Mapping[str, float]]) -> float:
    """The threshold of highest F1; of equals, the lowest (it keeps the most detections)."""
    return max(curve, key=lambda row: (row["f1"], -row["threshold"]))["threshold"]


def pr_curves(
    matches: Sequence[Match], num_boxes: Counter, categories: Mapping[int, str], points: int = 101
) -> dict[str, list[dict[str, float]]]:
    """Each class's precision-recall curve, as COCO draws it: precision made monotone (the best
    precision at any higher recall) and read at ``points`` evenly spaced recall levels; 0 past
    the highest recall reached."""
    curves = {}
    levels = np.linspace(0, 1, points)
    for class_id, name in categories.items():
        if not num_boxes[class_id]:
            continue
        hits = np.array([m.true_positive for m in matches if m.class_id == class_id], dtype=float)
        tp = np.cumsum(hits)
        recall = tp / num_boxes[class_id]
        precision = tp / np.arange(1, len(hits) + 1)
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        at = np.searchsorted(recall, levels, side="left")
        curves[name] = [
            {"recall": round(float(r), 4), "precision": round(float(envelope[i]), 4) if i < len(envelope) else 0.0}
            for r, i in zip(levels, at, strict=True)
        ]
    return curves


def image_scores(matches: Sequence[Match], records: Sequence[ImageBoxes], threshold: float) -> list[float]:
    """F1 of each image at ``threshold``: 1 when every box is found and nothing else, 0 when
    none is; an image with nothing to find and nothing found scores 1. Ignored boxes, and the
    detections on them, count for nothing."""
    kept = [m for m in matches if m.score >= threshold]
    images = np.asarray([m.image for m in kept], dtype=int)
    found = np.bincount(images, minlength=len(records))
    tp = np.bincount(images, weights=[m.true_positive for m in kept], minlength=len(records))
    boxes = np.asarray([len(counted_labels(r)) for r in records], dtype=int)
    total = found + boxes
    return np.divide(2 * tp, total, out=np.ones(len(records)), where=total > 0).tolist()


@dataclass(frozen=True)
class ThresholdReport:
    """The score threshold chosen on val and what it gives on the evaluated split."""

    metrics: dict[str, float]  # threshold, val_f1, precision, recall, f1 (the last three on the evaluated split)
    val_curve: list[dict[str, float]]  # F1, precision and recall against threshold, on val
    pr: dict[str, list[dict[str, float]]]  # per-class PR curves on the evaluated split
    image_scores: list[float]  # F1 of each evaluated image at the threshold


def threshold_report(
    val: tuple[Sequence[ImageBoxes], Sequence[Sequence[Detection]]],
    evaluated: tuple[Sequence[ImageBoxes], Sequence[Sequence[Detection]]],
    categories: Mapping[int, str],
    iou_threshold: float,
) -> ThresholdReport:
    """Pick the threshold of best F1 on val, never on the evaluated (test) split, then report
    that split at it: a threshold tuned on test would flatter the model."""
    val_matches, val_boxes = match(*val, iou_threshold)
    val_curve = f1_curve(val_matches, val_boxes)
    threshold = best_threshold(val_curve)
    matches, num_boxes = match(*evaluated, iou_threshold)
    [at] = counts_at(matches, sum(num_boxes.values()), [threshold])
    val_f1 = next(row["f1"] for row in val_curve if row["threshold"] == threshold)
    return ThresholdReport(
        metrics={"threshold": threshold, "val_f1": val_f1, **at},
        val_curve=val_curve,
        pr=pr_curves(matches, num_boxes, categories),
        image_scores=image_scores(matches, evaluated[0], threshold),
    )


def best_and_worst(scores: Sequence[float], count: int) -> dict[str, list[int]]:
    """Indices of the ``count`` best and ``count`` worst images (best first, worst first; ties
    by position), disjoint when there are fewer than ``2 * count`` images."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    best = order[: min(count, (len(order) + 1) // 2)]
    return {"best": best, "worst": [i for i in reversed(order) if i not in best][:count]}
