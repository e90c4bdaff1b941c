from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tensorflow as tf

from odpipe.engine.confusion import normalised_confusion
from odpipe.segment.metrics import (
    VOID,
    confusion,
    flat_metrics,
    image_miou,
    per_class_markdown,
    per_class_rows,
    segmentation_metrics,
)

NAMES = ("background", "road", "car", "person", "bike", "bus")


def _random_split(seed: int = 0, images: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    """Label maps over ``NAMES`` with void pixels: the truth never has bike or bus, the
    prediction has bike (predicted but absent from the truth) and never bus (absent from both)."""
    rng = np.random.default_rng(seed)
    split = []
    for _ in range(images):
        shape = tuple(rng.integers(5, 12, size=2))
        truth = rng.integers(0, 4, size=shape).astype(np.uint8)
        truth[rng.random(shape) < 0.15] = VOID
        pred = np.where(rng.random(shape) < 0.6, truth, rng.integers(0, 5, size=shape)).astype(np.uint8)
        pred[pred == VOID] = 0  # a model predicts classes, never void
        split.append((truth, pred))
    return split


def _split_metrics(split: list[tuple[np.ndarray, np.ndarray]], names=NAMES) -> dict:
    return segmentation_metrics(sum(confusion(t, p, len(names)) for t, p in split), names)


def _reference(split: list[tuple[np.ndarray, np.ndarray]], num_classes: int) -> dict:
    """The same metrics the slow, obvious way: per class boolean masks over every pixel."""
    inter, label, pred = (np.zeros(num_classes) for _ in range(3))
    for truth, prediction in split:
        scored = truth != VOID
        for c in range(num_classes):
            inter[c] += np.sum((truth == c) & (prediction == c) & scored)
            label[c] += np.sum((truth == c) & scored)
            pred[c] += np.sum((prediction == c) & scored)
    union = label + pred - inter
    iou = [inter[c] / union[c] if union[c] else math.nan for c in range(num_classes)]
    acc = [inter[c] / label[c] if label[c] else math.nan for c in range(num_classes)]
    dice = [2 * inter[c] / (label[c] + pred[c]) if union[c] else math.nan for c in range(num_classes)]

    def mean(values: list[float]) -> float:
        defined = [v for v in values if not math.isnan(v)]
        return sum(defined) / len(defined)

    return {"aAcc": inter.sum() / label.sum(), "mIoU": mean(iou), "mAcc": mean(acc), "mDice": mean(dice), "iou": iou}


def test_matches_a_per_class_mask_reference_with_void_and_absent_classes() -> None:
    split = _random_split()
    got, want = _split_metrics(split), _reference(split, len(NAMES))
    for key in ("aAcc", "mIoU", "mAcc", "mDice"):
        assert got[key] == pytest.approx(want[key], abs=1e-12)
    ious = [got["per_class"][name]["IoU"] for name in NAMES]
    np.testing.assert_allclose(ious, want["iou"], rtol=0, atol=1e-12)
    # The split really has the cases the rules are about.
    assert got["per_class"]["bike"]["IoU"] == 0 and math.isnan(got["per_class"]["bike"]["Acc"])
    assert math.isnan(got["per_class"]["bus"]["IoU"])


def test_miou_matches_keras_mean_iou_with_ignore_class() -> None:
    split = _random_split(seed=1)
    keras = tf.keras.metrics.MeanIoU(num_classes=len(NAMES), ignore_class=VOID)
    for truth, pred in split:
        keras.update_state(truth.astype(np.int32), pred.astype(np.int32))
    assert _split_metrics(split)["mIoU"] == pytest.approx(float(keras.result()), abs=1e-6)


def test_void_pixels_count_for_nothing_whatever_is_predicted_there() -> None:
    truth = np.array([[0, 1], [VOID, VOID]])
    right_under_void = confusion(truth, np.array([[0, 1], [0, 1]]), 2)
    wrong_under_void = confusion(truth, np.array([[0, 1], [1, 0]]), 2)
    np.testing.assert_array_equal(right_under_void, wrong_under_void)
    assert right_under_void.sum() == 2
    assert segmentation_metrics(wrong_under_void, ["a", "b"])["mIoU"] == 1.0


def test_a_class_absent_from_truth_and_prediction_is_left_out_of_the_means() -> None:
    truth = np.array([[0, 0, 1, 1]])
    metrics = segmentation_metrics(confusion(truth, truth, 3), ["a", "b", "c"])
    assert math.isnan(metrics["per_class"]["c"]["IoU"])
    assert metrics["mIoU"] == metrics["mAcc"] == metrics["mDice"] == 1.0


def test_a_class_predicted_but_absent_from_truth_scores_zero_and_lowers_miou() -> None:
    truth, pred = np.array([[0, 0, 0, 0]]), np.array([[0, 0, 0, 1]])
    metrics = segmentation_metrics(confusion(truth, pred, 2), ["a", "b"])
    assert metrics["per_class"]["b"]["IoU"] == 0 and metrics["per_class"]["b"]["Dice"] == 0
    assert math.isnan(metrics["per_class"]["b"]["Acc"])
    assert metrics["mIoU"] == pytest.approx((3 / 4 + 0) / 2)
    assert metrics["mAcc"] == pytest.approx(3 / 4)


def test_the_split_is_scored_from_summed_counts_not_a_mean_of_image_scores() -> None:
    small = (np.array([[0, 0, 0, 1]]), np.array([[0, 0, 0, 0]]))  # mIoU (3/4 + 0) / 2
    large = (np.ones((4, 4), int), np.ones((4, 4), int))  # mIoU 1 (class 0 absent)
    summed = _split_metrics([small, large], ["a", "b"])["mIoU"]
    # Summed: a is 3 right of 4 true + 3 predicted, b 16 right of 17 true + 16 predicted.
    assert summed == pytest.approx((3 / 4 + 16 / 17) / 2)
    per_image = (image_miou(*small, 2) + image_miou(*large, 2)) / 2
    assert per_image == pytest.approx((3 / 8 + 1) / 2) and abs(summed - per_image) > 0.1


def test_aacc_is_right_pixels_over_scored_pixels() -> None:
    metrics = segmentation_metrics(np.array([[3, 1], [2, 4]]), ["a", "b"])
    assert metrics["aAcc"] == pytest.approx(7 / 10)
    assert metrics["mAcc"] == pytest.approx((3 / 4 + 4 / 6) / 2)


def test_dice_is_two_iou_over_one_plus_iou_for_each_class() -> None:
    for values in _split_metrics(_random_split(seed=2))["per_class"].values():
        if not math.isnan(values["IoU"]):
            assert values["Dice"] == pytest.approx(2 * values["IoU"] / (1 + values["IoU"]), abs=1e-12)


def test_mismatched_shapes_and_out_of_range_ids_are_refused() -> None:
    with pytest.raises(ValueError, match=r"shape \(2, 2\) but the prediction \(2, 3\)"):
        confusion(np.zeros((2, 2), int), np.zeros((2, 3), int), 2)
    with pytest.raises(ValueError, match=r"truth has class ids \[3\] outside 0..2"):
        confusion(np.array([0, 3, VOID]), np.array([0, 1, 2]), 3)
    with pytest.raises(ValueError, match=r"prediction has class ids \[255\]"):
        confusion(np.array([0, 1]), np.array([0, VOID]), 3)
    with pytest.raises(ValueError, match="3 class names"):
        segmentation_metrics(np.zeros((2, 2), int), ["a", "b", "c"])


def test_an_all_void_image_has_no_miou() -> None:
    assert math.isnan(image_miou(np.full((2, 2), VOID), np.zeros((2, 2), int), 3))


def test_flat_metrics_leave_undefined_values_out_so_json_can_hold_them() -> None:
    metrics = segmentation_metrics(confusion(np.array([0, 0, 0, 0]), np.array([0, 0, 0, 1]), 3), ["a", "b", "c"])
    flat = flat_metrics(metrics)
    assert flat == pytest.approx(
        {"aAcc": 3 / 4, "mIoU": 3 / 8, "mAcc": 3 / 4, "mDice": (6 / 7) / 2, "iou/a": 3 / 4, "iou/b": 0, "acc/a": 3 / 4}
    )
    json.dumps(flat, allow_nan=False)


def test_the_per_class_table_shows_percentages_and_a_dash_for_undefined() -> None:
    metrics = segmentation_metrics(np.array([[3, 1, 0], [0, 0, 0], [0, 0, 0]]), ["road", "car", "bus"])
    assert [row["class"] for row in per_class_rows(metrics)] == ["road", "car", "bus"]
    lines = per_class_markdown(metrics).splitlines()
    assert lines[0] == "| class | IoU | Acc | Dice | pixels |"
    assert lines[2] == "| road | 75.00 | 75.00 | 85.71 | 4 |"
    assert lines[3] == "| car | 0.00 | — | 0.00 | 0 |"
    assert lines[4] == "| bus | — | — | — | 0 |"


def test_normalised_confusion_divides_rows_by_true_pixels_and_keeps_empty_rows_zero() -> None:
    records = normalised_confusion(np.array([[3, 1], [0, 0]]), ["a", "b"])
    shares = {(r["actual"], r["predicted"]): r["share"] for r in records}
    assert shares == {("a", "a"): 0.75, ("a", "b"): 0.25, ("b", "a"): 0.0, ("b", "b"): 0.0}
