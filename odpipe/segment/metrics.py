"""How good label maps are against ground truth, by MMSegmentation's conventions, so that our
numbers can be set beside published ones.

Everything is computed from one confusion matrix summed over the whole split (rows: the true
class, columns: the predicted one): a class's IoU is its pixels predicted right over the pixels
that are it in truth or prediction, over all images at once, not a mean of per-image IoUs, which
would let a tiny image weigh as much as a large one. Void pixels (``VOID`` in the truth) count
for nothing, whatever is predicted there. A class neither in the truth nor predicted has no IoU
(NaN) and is left out of the means; one predicted but absent from the truth scores IoU 0.
Values are fractions (0..1); tables show percentages, as MMSegmentation prints them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from odpipe.data.index_masks import VOID


def confusion(truth: np.ndarray, pred: np.ndarray, num_classes: int, ignore: int = VOID) -> np.ndarray:
    """Pixel counts, int64 ``[C, C]``, rows the true class and columns the predicted one, pixels
    whose truth is ``ignore`` left out; sum it over images to score a split."""
    truth, pred = np.asarray(truth), np.asarray(pred)
    if truth.shape != pred.shape:
        raise ValueError(f"truth has shape {truth.shape} but the prediction {pred.shape}")
    scored = truth != ignore
    truth, pred = truth[scored].astype(np.int64), pred[scored].astype(np.int64)
    # Checked rather than trusted: an id out of range would land in another cell of the matrix.
    for name, labels in (("truth", truth), ("prediction", pred)):
        wrong = (labels < 0) | (labels >= num_classes)
        if wrong.any():
            found = np.unique(labels[wrong])[:5].tolist()
            raise ValueError(f"{name} has class ids {found} outside 0..{num_classes - 1} (void is {ignore})")
    counts = np.bincount(truth * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _per_class(conf: np.ndarray) -> dict[str, np.ndarray]:
    """IoU, Acc and Dice of each class (NaN where undefined, 0/0) and its true pixel count."""
    intersection = np.diag(conf).astype(np.float64)
    area_label, area_pred = conf.sum(axis=1), conf.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "IoU": intersection / (area_label + area_pred - intersection),
            "Acc": intersection / area_label,
            "Dice": 2 * intersection / (area_label + area_pred),
            "pixels": area_label,
        }


def _nanmean(values: np.ndarray) -> float:
    """The mean of the defined values; NaN, without numpy's warning, when there are none."""
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else math.nan


def segmentation_metrics(conf: np.ndarray, names: Sequence[str]) -> dict:
    """aAcc (the share of scored pixels right), mIoU, mAcc and mDice (means over the classes
    that have a value), and each class's IoU, Acc, Dice and true pixel count, from a confusion
    matrix summed over a split."""
    conf = np.asarray(conf)
    if conf.shape != (len(names), len(names)):
        raise ValueError(f"confusion matrix has shape {conf.shape} but there are {len(names)} class names")
    per_class = _per_class(conf)
    scored = conf.sum()
    return {
        "aAcc": float(np.trace(conf) / scored) if scored else math.nan,
        "mIoU": _nanmean(per_class["IoU"]),
        "mAcc": _nanmean(per_class["Acc"]),
        "mDice": _nanmean(per_class["Dice"]),
        "per_class": {
            name: {
                "IoU": float(per_class["IoU"][i]),
                "Acc": float(per_class["Acc"][i]),
                "Dice": float(per_class["Dice"][i]),
                "pixels": int(per_class["pixels"][i]),
            }
            for i, name in enumerate(names)
        },
    }


def flat_metrics(metrics: dict) -> dict[str, float]:
    """The metrics as one flat dict for the DVC metrics file and MLflow; undefined values are
    left out, as JSON has no NaN and MLflow would chart it as a number."""
    flat = {key: metrics[key] for key in ("aAcc", "mIoU", "mAcc", "mDice")}
    for name, values in metrics["per_class"].items():
        flat[f"iou/{name}"] = values["IoU"]
        flat[f"acc/{name}"] = values["Acc"]
    return {key: value for key, value in flat.items() if not math.isnan(value)}


def per_class_rows(metrics: dict) -> list[dict]:
    """One row per class (class, IoU, Acc, Dice, pixels), for a CSV or a table."""
    return [{"class": name, **values} for name, values in metrics["per_class"].items()]


def _percent(value: float) -> str:
    return "—" if math.isnan(value) else f"{100 * value:.2f}"


def per_class_markdown(metrics: dict) -> str:
    """The per-class table in Markdown, in percentages; "—" where a class has no value (absent
    from truth and prediction, or, for Acc, from the truth)."""
    lines = ["| class | IoU | Acc | Dice | pixels |", "|---|---:|---:|---:|---:|"]
    for row in per_class_rows(metrics):
        scores = " | ".join(_percent(row[key]) for key in ("IoU", "Acc", "Dice"))
        lines.append(f"| {row['class']} | {scores} | {row['pixels']} |")
    return "\n".join(lines)


def image_miou(truth: np.ndarray, pred: np.ndarray, num_classes: int) -> float:
    """One image's mIoU, to rank images from worst to best (never to score a split: see the
    module's note); NaN when every pixel is void."""
    return _nanmean(_per_class(confusion(truth, pred, num_classes))["IoU"])
