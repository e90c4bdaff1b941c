"""How good a classifier's predictions are against the true classes, by scikit-learn's
conventions, so that our numbers can be checked against it and set beside published ones.

Everything is computed from the true class id of each image and the model's probabilities
(rows summing to 1). The prediction is the most probable class, the lowest id on a tie, as
``argmax`` picks it. A score whose denominator is zero (precision of a class never predicted,
recall of a class with no true image) is 0, as with scikit-learn's ``zero_division=0``, and the
macro means are over every class named, so a class absent from the split pulls them down rather
than vanishing from them: the same list of classes scores every model. Values are fractions
(0..1); tables show percentages.

Calibration is the expected calibration error (Guo et al., 2017) over :data:`CALIBRATION_BINS`
equal-width bins of the top-1 confidence: a confidence ``c`` goes to the bin ``(lo, hi]`` that
holds it (0 itself, which a distribution over the classes cannot reach, to the first).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CALIBRATION_BINS = 15  # Guo et al.'s number, which most published ECE figures use
TOP_K = 5  # top-5 is reported only with more classes than this (with fewer it is always 1)
SUM_TOLERANCE = 1e-3  # rows of float32 softmax sum to 1 within ~1e-6; logits or scores do not
# The split's scores in the flat metrics (top5 only with more than TOP_K classes).
SPLIT_SCORES = (
    "top1",
    "top5",
    "macro_f1",
    "weighted_f1",
    "macro_precision",
    "macro_recall",
    "weighted_precision",
    "weighted_recall",
    "ece",
    "num_images",
)


def _checked(truth: np.ndarray, probabilities: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The inputs as arrays, refused when they cannot be one split's predictions over ``count``
    classes: logits passed for probabilities would give a meaningless ECE without a word."""
    truth, probabilities = np.asarray(truth), np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[1] != count:
        raise ValueError(f"probabilities have shape {probabilities.shape}, want (images, {count} classes)")
    if truth.shape != probabilities.shape[:1]:
        raise ValueError(f"true classes have shape {truth.shape} but there are {len(probabilities)} predictions")
    if not len(truth):
        raise ValueError("no images to score")
    wrong = (truth < 0) | (truth >= count)
    if wrong.any():
        raise ValueError(f"true class ids {np.unique(truth[wrong])[:5].tolist()} outside 0..{count - 1}")
    if (probabilities < 0).any() or not np.allclose(probabilities.sum(axis=1), 1, rtol=0, atol=SUM_TOLERANCE):
        raise ValueError("probabilities must be non-negative with rows summing to 1 (a softmax's output, not logits)")
    return truth.astype(np.int64), probabilities


def _top_k_hits(truth: np.ndarray, probabilities: np.ndarray, k: int) -> np.ndarray:
    """Whether each image's true class is among its ``k`` most probable, ties ranked by lower id
    as for the prediction, so that top-1 is the accuracy of the prediction."""
    ranked = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return (ranked == truth[:, None]).any(axis=1)


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    numerator, denominator = np.asarray(numerator, np.float64), np.asarray(denominator, np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def _reliability_bins(truth: np.ndarray, probabilities: np.ndarray, bins: int = CALIBRATION_BINS) -> list[dict]:
    """Per equal-width bin ``(lo, hi]`` of top-1 confidence: how many images fell in it, the
    share of them predicted right and their mean confidence (both NaN in an empty bin, which
    has neither). A calibrated model's accuracy equals its confidence in every bin."""
    confidence = probabilities.max(axis=1)
    right = (probabilities.argmax(axis=1) == truth).astype(np.float64)
    edges = np.arange(bins + 1) / bins  # each the double nearest k / bins: 0.8 is 12/15's edge exactly
    # searchsorted(side="left") finds i with edges[i - 1] < c <= edges[i]: bins closed on the right.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        accuracy = np.bincount(index, weights=right, minlength=bins) / counts
        mean_confidence = np.bincount(index, weights=confidence, minlength=bins) / counts
    return [
        {
            "lo": float(edges[i]),
            "hi": float(edges[i + 1]),
            "count": int(counts[i]),
            "accuracy": float(accuracy[i]),
            "confidence": float(mean_confidence[i]),
        }
        for i in range(bins)
    ]


def expected_calibration_error(bins: Sequence[dict]) -> float:
    """The gap between accuracy and confidence in each bin, weighted by the bin's share of the
    images: how far, on average over images, the confidence a model states is from the truth."""
    total = sum(b["count"] for b in bins)
    return float(sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]) / total)


def _per_class(conf: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall and F1 of each class (0 where undefined) and its true image count."""
    hits, support, predicted = np.diag(conf), conf.sum(axis=1), conf.sum(axis=0)
    return {
        "precision": _safe_divide(hits, predicted),
        "recall": _safe_divide(hits, support),
        # 2TP / (2TP + FP + FN), which is 0 rather than undefined when precision alone is.
        "f1": _safe_divide(2 * hits, predicted + support),
        "support": support,
    }


def classification_metrics(truth: np.ndarray, probabilities: np.ndarray, names: Sequence[str]) -> dict:
    """top1 (accuracy), top5 (with more than five classes), macro and support-weighted means of
    precision, recall and F1, the ECE, each class's precision, recall, F1 and true image count,
    the confusion matrix (counts, rows the true class) and the reliability bins."""
    count = len(names)
    truth, probabilities = _checked(truth, probabilities, count)
    predicted = probabilities.argmax(axis=1)
    conf = np.bincount(truth * count + predicted, minlength=count * count).reshape(count, count)
    per_class = _per_class(conf)
    shares = per_class["support"] / len(truth)
    bins = _reliability_bins(truth, probabilities)
    metrics = {"top1": float(_top_k_hits(truth, probabilities, 1).mean())}
    if count > TOP_K:
        metrics["top5"] = float(_top_k_hits(truth, probabilities, TOP_K).mean())
    for score in ("precision", "recall", "f1"):
        metrics[f"macro_{score}"] = float(per_class[score].mean())
        metrics[f"weighted_{score}"] = float(per_class[score] @ shares)
    return {
        **metrics,
        "ece": expected_calibration_error(bins),
        "num_images": len(truth),
        "per_class": {
            name: {
                "precision": float(per_class["precision"][i]),
                "recall": float(per_class["recall"][i]),
                "f1": float(per_class["f1"][i]),
                "support": int(per_class["support"][i]),
            }
            for i, name in enumerate(names)
        },
        "confusion": conf,
        "reliability": bins,
    }


def flat_metrics(metrics: dict) -> dict[str, float]:
    """The scores as one flat dict for the DVC metrics file and MLflow: the split's (top1, top5
    when there is one, macro and weighted means, ece, num_images) and each class's F1, precision
    and recall under ``f1/<class>`` and so on."""
    flat = {key: metrics[key] for key in SPLIT_SCORES if key in metrics}
    for name, values in metrics["per_class"].items():
        for score in ("f1", "precision", "recall"):
            flat[f"{score}/{name}"] = values[score]
    return flat


def per_class_rows(metrics: dict) -> list[dict]:
    """One row per class (class, precision, recall, f1, support), for a CSV or a table."""
    return [{"class": name, **values} for name, values in metrics["per_class"].items()]


def per_class_markdown(metrics: dict) -> str:
    """The per-class table in Markdown, in percentages, closed by the macro and the weighted
    means (their support: every image)."""
    lines = ["| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for row in per_class_rows(metrics):
        scores = " | ".join(f"{100 * row[key]:.2f}" for key in ("precision", "recall", "f1"))
        lines.append(f"| {row['class']} | {scores} | {row['support']} |")
    for mean in ("macro", "weighted"):
        scores = " | ".join(f"{100 * metrics[f'{mean}_{key}']:.2f}" for key in ("precision", "recall", "f1"))
        lines.append(f"| *{mean}* | {scores} | {metrics['num_images']} |")
    return "\n".join(lines)


def confident_mistakes(truth: np.ndarray, probabilities: np.ndarray, k: int) -> list[int]:
    """Indices of the ``k`` wrong predictions made with the highest confidence, most confident
    first (earlier images first on a tie): the ones worth a look, a label error as often as a
    model's."""
    truth, probabilities = np.asarray(truth), np.asarray(probabilities)
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != truth)
    confidence = probabilities[wrong, predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")[:k]].tolist()
