"""PR curves, F1 against threshold and the val-chosen threshold; pycocotools is the reference."""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from odpipe.detect.curves import (
    THRESHOLDS,
    best_and_worst,
    best_threshold,
    f1_curve,
    image_scores,
    match,
    pr_curves,
    threshold_report,
)
from odpipe.detect.evaluate import Detection, coco_detections, coco_ground_truth
from odpipe.detect.records import ImageBoxes

CATEGORIES = {1: "circle", 2: "square"}


def _image(
    name: str, boxes: list[tuple], labels: list[int], crowd: tuple[int, ...] = (), difficult: tuple[int, ...] = ()
) -> ImageBoxes:
    texts = tuple(CATEGORIES[i] for i in labels)
    return ImageBoxes(name, 200, 200, tuple(boxes), tuple(labels), texts, difficult=difficult, crowd=crowd)


def _random_scene(
    rng: np.random.Generator, count: int, ignored: float = 0.0
) -> tuple[list[ImageBoxes], list[list[Detection]]]:
    """Images with a few boxes each, and noisy detections: shifted copies, misses, false alarms;
    a share ``ignored`` of the boxes are crowds or difficult objects, half and half."""
    records, detections = [], []
    for n in range(count):
        boxes, labels, found = [], [], []
        for _ in range(rng.integers(1, 5)):
            x, y = rng.uniform(0, 140, 2)
            w, h = rng.uniform(20, 60, 2)
            box, label = (x, y, x + w, y + h), int(rng.integers(1, 3))
            boxes.append(box)
            labels.append(label)
            if rng.random() < 0.8:  # found, a little off, sometimes as the wrong class
                dx, dy = rng.normal(0, 6, 2)
                wrong = rng.random() < 0.15
                found.append(
                    Detection(
                        3 - label if wrong else label, float(rng.random()), x + dx, y + dy, x + w + dx, y + h + dy
                    )
                )
        for _ in range(rng.integers(0, 3)):  # false alarms
            x, y = rng.uniform(0, 160, 2)
            found.append(Detection(int(rng.integers(1, 3)), float(rng.random()), x, y, x + 30, y + 30))
        flags = rng.random(len(boxes)) < ignored
        crowd = flags & (rng.random(len(boxes)) < 0.5)
        records.append(_image(f"{n}.jpg", boxes, labels, tuple(map(int, crowd)), tuple(map(int, flags & ~crowd))))
        detections.append(found)
    return records, detections


def _coco_precision(records, detections) -> np.ndarray:
    """pycocotools' precision array at IoU 0.5, area all, 100 detections: [recall, class]."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = coco_ground_truth(records, CATEGORIES)
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(coco_detections(detections)), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator.eval["precision"][0, :, :, 0, -1]


@pytest.mark.parametrize(("seed", "ignored"), [(0, 0.0), (1, 0.0), (2, 0.0), (3, 0.3), (4, 0.3)])
def test_pr_curves_equal_pycocotools_precision_at_iou_one_half(seed: int, ignored: float) -> None:
    """Crowds and difficult objects are crowds to pycocotools: the curves ignore them alike."""
    records, detections = _random_scene(np.random.default_rng(seed), 30, ignored)
    matches, num_boxes = match(records, detections, iou_threshold=0.5)
    curves = pr_curves(matches, num_boxes, CATEGORIES)
    reference = _coco_precision(records, detections)
    for k, name in enumerate(CATEGORIES.values()):
        ours = np.array([point["precision"] for point in curves[name]])
        np.testing.assert_allclose(ours, reference[:, k], atol=1e-4)
        assert [point["recall"] for point in curves[name]] == pytest.approx(np.linspace(0, 1, 101))


def test_each_box_is_found_once_and_only_by_its_class() -> None:
    record = _image("a.jpg", [(10, 10, 50, 50)], [1])
    found = [
        Detection(1, 0.9, 10, 10, 50, 50),
        Detection(1, 0.8, 11, 11, 51, 51),  # a duplicate: false positive
        Detection(2, 0.95, 10, 10, 50, 50),  # right place, wrong class: false positive
    ]
    matches, num_boxes = match([record], [found], 0.5)
    assert [(m.class_id, m.score, m.true_positive) for m in matches] == [
        (2, 0.95, False),
        (1, 0.9, True),
        (1, 0.8, False),
    ]
    assert num_boxes == {1: 1}


def _graded() -> tuple[list[ImageBoxes], list[list[Detection]]]:
    """Ten boxes; the detections that find them score 0.6 to 0.95, false alarms 0.3 to 0.5."""
    records = [_image(f"{i}.jpg", [(10, 10, 60, 60)], [1]) for i in range(10)]
    detections = [
        [Detection(1, 0.6 + 0.035 * i, 10, 10, 60, 60), Detection(1, 0.3 + 0.02 * i, 100, 100, 150, 150)]
        for i in range(10)
    ]
    return records, detections


def test_the_best_threshold_drops_the_false_alarms() -> None:
    matches, num_boxes = match(*_graded(), 0.5)
    curve = f1_curve(matches, num_boxes)
    threshold = best_threshold(curve)
    assert 0.48 < threshold <= 0.6  # above every false alarm, below every hit
    assert max(row["f1"] for row in curve) == pytest.approx(1.0)
    low = next(row for row in curve if row["threshold"] == 0.05)
    assert (low["precision"], low["recall"]) == (pytest.approx(0.5), pytest.approx(1.0))


def test_the_threshold_is_chosen_on_val_and_reported_on_test() -> None:
    val = _graded()
    # On test the false alarms score higher than on val: a threshold tuned on test would be
    # higher; the one chosen on val lets them through, and the report says so.
    test_detections = [[hit, Detection(1, 0.65, 100, 100, 150, 150)] for hit, _ in val[1]]
    report = threshold_report(val, (val[0], test_detections), CATEGORIES, 0.5)
    assert report.metrics["val_f1"] == pytest.approx(1.0)
    assert report.metrics["threshold"] <= 0.6
    assert report.metrics["recall"] == pytest.approx(1.0) and report.metrics["precision"] == pytest.approx(0.5)
    assert set(report.pr) == {"circle"}  # no square boxes: no curve
    assert len(report.image_scores) == 10


def test_image_scores_rank_the_best_and_worst_images() -> None:
    records = [_image(f"{i}.jpg", [(10, 10, 60, 60)], [1]) for i in range(4)]
    detections = [
        [Detection(1, 0.9, 10, 10, 60, 60)],  # perfect
        [],  # missed
        [Detection(1, 0.9, 10, 10, 60, 60), Detection(1, 0.9, 100, 100, 150, 150)],  # one false alarm
        [Detection(2, 0.9, 10, 10, 60, 60)],  # wrong class
    ]
    matches, _ = match(records, detections, 0.5)
    scores = image_scores(matches, records, 0.5)
    assert scores == [1.0, 0.0, pytest.approx(2 / 3), 0.0]
    assert best_and_worst(scores, 2) == {"best": [0, 2], "worst": [3, 1]}
    assert best_and_worst(scores[:3], 4) == {"best": [0, 2], "worst": [1]}


def _reference_f1_curve(matches, total: int) -> list[dict[str, float]]:
    """The curve computed the plain way, one threshold at a time."""
    rows = []
    for t in THRESHOLDS:
        kept = [m for m in matches if m.score >= t]
        tp = sum(m.true_positive for m in kept)
        precision = tp / len(kept) if kept else 1.0
        recall = tp / total if total else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"threshold": t, "precision": precision, "recall": recall, "f1": f1})
    return rows


def test_the_curves_equal_those_computed_threshold_by_threshold_and_image_by_image() -> None:
    rng = np.random.default_rng(7)
    records, detections = _random_scene(rng, 1500, ignored=0.1)
    # Scores on the thresholds themselves too, where >= must hold exactly.
    detections = [
        [replace(d, score=THRESHOLDS[i % len(THRESHOLDS)]) if i % 3 == 0 else d for i, d in enumerate(found)]
        for found in detections
    ]
    matches, num_boxes = match(records, detections, 0.5)
    assert len(matches) > 3000
    assert f1_curve(matches, num_boxes) == _reference_f1_curve(matches, sum(num_boxes.values()))
    assert f1_curve([], Counter()) == _reference_f1_curve([], 0)
    for t in (0.05, 0.5):
        kept = [m for m in matches if m.score >= t]
        reference = []
        for image, record in enumerate(records):
            found = sum(m.image == image for m in kept)
            boxes = len(record.boxes) - sum(record.ignored())
            hits = sum(m.true_positive for m in kept if m.image == image)
            reference.append(1.0 if not found and not boxes else 2 * hits / (found + boxes))
        assert image_scores(matches, records, t) == reference


def test_ignored_boxes_are_not_counted_and_what_finds_them_is_left_out() -> None:
    records = [
        _image("a.jpg", [(10, 10, 60, 60), (100, 100, 190, 190)], [1, 1], crowd=(0, 1)),
        _image("b.jpg", [(10, 10, 60, 60)], [2], difficult=(1,)),  # missed: no miss
    ]
    detections = [[Detection(1, 0.9, 10, 10, 60, 60), Detection(1, 0.95, 120, 120, 150, 150)], []]
    matches, num_boxes = match(records, detections, 0.5)
    assert [(m.score, m.true_positive) for m in matches] == [(0.9, True)]
    assert num_boxes == {1: 1}
    assert image_scores(matches, records, 0.5) == [1.0, 1.0]
    lowest = f1_curve(matches, num_boxes)[0]
    assert (lowest["precision"], lowest["recall"], lowest["f1"]) == (1.0, 1.0, 1.0)
