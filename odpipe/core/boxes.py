"""Boxes as every layer sees them: the labelled box record (:class:`Box`, pixels of the stored
image), IoU of every pair at once, how far two labellings agree, and COCO's size buckets, shared
by annotations, cleaning, reports, evaluation and curves."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Coords = Sequence[float]  # xmin, ymin, xmax, ymax in pixels


def iou_matrix(a: Sequence[Coords], b: Sequence[Coords], crowd: Sequence[bool] | None = None) -> np.ndarray:
    """IoU of each box of ``a`` (rows: detections) with each box of ``b`` (columns); 0 where
    they do not overlap. For a ``crowd`` column, pycocotools' crowd rule: intersection over
    the ``a`` box's own area, so that a detection inside a crowd region overlaps it fully
    however large the region."""
    x = np.asarray(a, dtype=float).reshape(-1, 4)
    y = np.asarray(b, dtype=float).reshape(-1, 4)
    low = np.maximum(x[:, None, :2], y[None, :, :2])
    high = np.minimum(x[:, None, 2:], y[None, :, 2:])
    sides = np.clip(high - low, 0, None)
    inter = sides[..., 0] * sides[..., 1]
    area_x = ((x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1]))[:, None]
    area_y = ((y[:, 2] - y[:, 0]) * (y[:, 3] - y[:, 1]))[None, :]
    union = area_x + area_y - inter
    if crowd is not None:
        union = np.where(np.asarray(crowd, dtype=bool)[None, :], area_x, union)
    return np.divide(inter, union, out=np.zeros_like(inter), where=inter > 0)


def agreement(a: Sequence[tuple[str, Coords]], b: Sequence[tuple[str, Coords]]) -> float:
    """How far two labellings of one image agree, from 0 to 1: boxes of the same label are
    paired greedily by IoU, and the IoUs summed over the union of boxes (an unpaired box
    counts 0). 1 means the same boxes; two empty labellings agree fully."""
    if not a and not b:
        return 1.0
    ious = iou_matrix([c for _, c in a], [c for _, c in b])
    same = np.array([[la == lb for lb, _ in b] for la, _ in a], dtype=bool).reshape(ious.shape)
    ious = np.where(same, ious, 0.0)
    total, pairs = 0.0, 0
    while ious.size and ious.max() > 0:
        i, j = np.unravel_index(np.argmax(ious), ious.shape)
        total, pairs = total + float(ious[i, j]), pairs + 1
        ious[i, :], ious[:, j] = 0.0, 0.0
    return total / (len(a) + len(b) - pairs)


# COCO's own size buckets (box area in pixels), so the report and the metrics agree.
SIZE_BUCKETS = (("small", 32**2), ("medium", 96**2), ("large", float("inf")))


def size_bucket(area: float) -> str:
    return next(name for name, upper in SIZE_BUCKETS if area < upper)


@dataclass(frozen=True)
class Box:
    """One labelled object, in pixel coordinates of the image as stored on disk."""

    label: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    difficult: bool = False
    truncated: bool = False
    crowd: bool = False  # COCO iscrowd: a region of many objects, ignored by evaluation, never trained on
