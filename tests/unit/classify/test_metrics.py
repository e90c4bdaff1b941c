from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

from odpipe.classify.metrics import (
    classification_metrics,
    confident_mistakes,
    flat_metrics,
    per_class_markdown,
    per_class_rows,
)

NAMES = ("cat", "dog", "fox", "owl", "bee", "elk", "yak", "gnu")
NEVER_PREDICTED, NEVER_TRUE = 6, 7


def _random_split(seed: int = 0, images: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Random predictions over ``NAMES`` where one class (yak) is never the most probable and
    another (gnu) is never the truth, so that zero_division decides their precision or recall."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, NEVER_TRUE, size=images)
    logits = rng.normal(size=(images, len(NAMES)))
    logits[np.arange(images), truth] += 1.5  # better than chance, so that every score is informative
    logits[:, NEVER_PREDICTED] -= 10
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return truth, probabilities


def test_the_scores_equal_scikit_learns() -> None:
    truth, probabilities = _random_split()
    predicted = probabilities.argmax(axis=1)
    assert NEVER_PREDICTED not in predicted and NEVER_TRUE in predicted  # the case the test is about
    labels = list(range(len(NAMES)))
    metrics = classification_metrics(truth, probabilities, NAMES)

    assert metrics["top1"] == pytest.approx(accuracy_score(truth, predicted), abs=1e-9)
    assert metrics["top5"] == pytest.approx(top_k_accuracy_score(truth, probabilities, k=5, labels=labels), abs=1e-9)
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, labels=labels, zero_division=0)
    per_class = metrics["per_class"]
    assert list(per_class) == list(NAMES)
    for score, want in (("precision", precision), ("recall", recall), ("f1", f1), ("support", support)):
        np.testing.assert_allclose([per_class[name][score] for name in NAMES], want, rtol=0, atol=1e-9)
    assert per_class["yak"]["precision"] == 0 and per_class["gnu"]["recall"] == 0
    for average in ("macro", "weighted"):
        want = precision_recall_fscore_support(truth, predicted, labels=labels, average=average, zero_division=0)
        got = [metrics[f"{average}_{score}"] for score in ("precision", "recall", "f1")]
        np.testing.assert_allclose(got, want[:3], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(metrics["confusion"], confusion_matrix(truth, predicted, labels=labels))
    assert metrics["num_images"] == len(truth)


def _reference_ece(truth: np.ndarray, probabilities: np.ndarray, bins: int = 15) -> float:
    """The ECE image by image: each image adds |accuracy - confidence| of its bin divided by
    the bin's size, so the sum weighs each bin by its share of the images."""
    confidence, right = probabilities.max(axis=1), probabilities.argmax(axis=1) == truth
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        members = (confidence > lo) & (confidence <= hi)
        for _ in np.flatnonzero(members):
            total += abs(right[members].mean() - confidence[members].mean()) / len(truth)
    return total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_ece_equals_a_direct_computation(seed: int) -> None:
    truth, probabilities = _random_split(seed)
    metrics = classification_metrics(truth, probabilities, NAMES)
    assert metrics["ece"] == pytest.approx(_reference_ece(truth, probabilities), abs=1e-9)
    bins = metrics["reliability"]
    assert len(bins) == 15 and sum(b["count"] for b in bins) == len(truth)


def test_the_ece_of_four_images_worked_by_hand() -> None:
    """Top-1 confidences 0.9 (right), 0.8 (wrong), 0.75 (right), 0.55 (right). Bins are (lo, hi]
    of width 1/15: 0.55 is alone in (8/15, 9/15], |1 - 0.55| = 0.45; 0.8 sits on the upper edge of
    (11/15, 12/15], so it shares that bin with 0.75: |0.5 - 0.775| = 0.275; 0.9 is alone in
    (13/15, 14/15], |1 - 0.9| = 0.1. ECE = (0.45 + 2 * 0.275 + 0.1) / 4 = 0.275 (0.4 had 0.8 gone
    up a bin)."""
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.75, 0.25], [0.45, 0.55]])
    truth = np.array([0, 0, 0, 1])
    metrics = classification_metrics(truth, probabilities, ["a", "b"])
    assert metrics["ece"] == pytest.approx(0.275, abs=1e-12)
    filled = [b for b in metrics["reliability"] if b["count"]]
    columns = [[b[key] for b in filled] for key in ("count", "accuracy", "confidence", "lo", "hi")]
    want = [[1, 2, 1], [1.0, 0.5, 1.0], [0.55, 0.775, 0.9], [8 / 15, 11 / 15, 13 / 15], [9 / 15, 12 / 15, 14 / 15]]
    np.testing.assert_allclose(columns, want, rtol=0, atol=1e-12)
    assert all(np.isnan(b["accuracy"]) for b in metrics["reliability"] if not b["count"])


def test_top5_is_left_out_with_five_classes_or_fewer() -> None:
    truth, probabilities = _random_split()
    five = probabilities[:, :5] / probabilities[:, :5].sum(axis=1, keepdims=True)
    metrics = classification_metrics(truth % 5, five, NAMES[:5])
    assert "top5" not in metrics and "top5" not in flat_metrics(metrics)
    assert "top5" in flat_metrics(classification_metrics(truth, probabilities, NAMES))


def test_top_k_counts_a_tie_for_the_lower_id_as_the_prediction_does() -> None:
    """Seven classes tied: the prediction is class 0, and the top five are classes 0 to 4."""
    probabilities = np.full((2, 7), 1 / 7)
    metrics = classification_metrics(np.array([4, 5]), probabilities, NAMES[:7])
    assert metrics["top1"] == 0 and metrics["top5"] == 0.5
    assert metrics["confusion"][:, 0].sum() == 2


def test_the_flat_metrics_name_each_class_and_are_json() -> None:
    metrics = classification_metrics(np.array([0, 0, 1]), np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7]]), ["a", "b"])
    assert flat_metrics(metrics) == pytest.approx(
        {
            "top1": 2 / 3,
            "macro_f1": (2 / 3 + 2 / 3) / 2,
            "weighted_f1": 2 / 3,
            "macro_precision": (1 + 1 / 2) / 2,
            "macro_recall": (1 / 2 + 1) / 2,
            "weighted_precision": (2 * 1 + 1 / 2) / 3,
            "weighted_recall": 2 / 3,
            "ece": metrics["ece"],
            "num_images": 3,
            "f1/a": 2 / 3,
            "precision/a": 1.0,
            "recall/a": 0.5,
            "f1/b": 2 / 3,
            "precision/b": 0.5,
            "recall/b": 1.0,
        }
    )
    json.dumps(flat_metrics(metrics), allow_nan=False)


def test_the_per_class_table_shows_percentages_then_the_means() -> None:
    metrics = classification_metrics(np.array([0, 0, 1]), np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7]]), ["a", "b"])
    assert per_class_rows(metrics)[0] == {"class": "a", "precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}
    lines = per_class_markdown(metrics).splitlines()
    assert lines[0] == "| class | precision | recall | F1 | support |"
    assert lines[2:] == [
        "| a | 100.00 | 50.00 | 66.67 | 2 |",
        "| b | 50.00 | 100.00 | 66.67 | 1 |",
        "| *macro* | 75.00 | 75.00 | 66.67 | 3 |",
        "| *weighted* | 83.33 | 66.67 | 66.67 | 3 |",
    ]


@pytest.mark.parametrize(
    ("truth", "probabilities", "message"),
    [
        (np.array([0, 1]), np.array([[2.0, -1.0], [0.5, 0.5]]), "non-negative with rows summing to 1"),
        (np.array([0, 1]), np.array([[0.7, 0.7], [0.5, 0.5]]), "non-negative with rows summing to 1"),
        (np.array([0, 1]), np.array([[0.2, 0.3, 0.5], [0.5, 0.5, 0.0]]), r"shape \(2, 3\), want \(images, 2 classes\)"),
        (np.array([0, 1, 1]), np.array([[0.5, 0.5], [0.5, 0.5]]), "but there are 2 predictions"),
        (np.array([0, 2]), np.array([[0.5, 0.5], [0.5, 0.5]]), r"true class ids \[2\] outside 0..1"),
        (np.array([], int), np.zeros((0, 2)), "no images"),
    ],
)
def test_predictions_that_cannot_be_scored_are_refused(truth, probabilities, message) -> None:
    with pytest.raises(ValueError, match=message):
        classification_metrics(truth, probabilities, ["a", "b"])


def test_confident_mistakes_are_the_most_confident_wrong_predictions_ties_in_order() -> None:
    probabilities = np.array(
        [
            [0.9, 0.1],  # right
            [0.3, 0.7],  # wrong at 0.7
            [0.05, 0.95],  # wrong at 0.95
            [0.7, 0.3],  # wrong at 0.7, after image 1 on the tie
            [0.6, 0.4],  # wrong at 0.6
            [0.2, 0.8],  # right
        ]
    )
    truth = np.array([0, 0, 0, 1, 1, 1])
    assert confident_mistakes(truth, probabilities, 3) == [2, 1, 3]
    assert confident_mistakes(truth, probabilities, 10) == [2, 1, 3, 4]
    assert confident_mistakes(truth[:1], probabilities[:1], 3) == []
