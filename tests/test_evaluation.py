from __future__ import annotations

import pytest

from odpipe.evaluation import COCO_STATS, Detection, coco_detections, coco_ground_truth, coco_metrics
from odpipe.tfrecord import ImageBoxes

RECORDS = [
    ImageBoxes("a.jpg", 100, 80, ((10, 10, 50, 40), (60, 20, 90, 70)), (1, 2), ("circle", "square")),
    ImageBoxes("b.jpg", 120, 120, ((5, 5, 100, 100),), (3,), ("triangle",)),
]
CATEGORIES = {1: "circle", 2: "square", 3: "triangle"}


def _perfect() -> list[list[Detection]]:
    return [[Detection(label, 0.9, *box) for box, label in zip(r.boxes, r.labels, strict=True)] for r in RECORDS]


def test_perfect_detections_score_one() -> None:
    metrics, table = coco_metrics(coco_ground_truth(RECORDS, CATEGORIES), coco_detections(_perfect()))
    assert set(metrics) == set(COCO_STATS) | {"ap/circle", "ap/square", "ap/triangle"}
    assert metrics["map"] == pytest.approx(1.0)
    assert metrics["ap/circle"] == metrics["ap/triangle"] == pytest.approx(1.0)
    assert metrics["map_50"] == pytest.approx(1.0)
    assert metrics["ar_100"] == pytest.approx(1.0)
    assert "Average Precision" in table


def test_wrong_class_or_misplaced_boxes_score_low() -> None:
    wrong = [
        [Detection(3 if d.class_id != 3 else 1, d.score, d.xmin, d.ymin, d.xmax, d.ymax) for d in ds]
        for ds in _perfect()
    ]
    metrics, _ = coco_metrics(coco_ground_truth(RECORDS, CATEGORIES), coco_detections(wrong))
    assert metrics["map"] == pytest.approx(0.0)
    shifted = [
        [Detection(d.class_id, d.score, d.xmin + 30, d.ymin, d.xmax + 30, d.ymax) for d in ds] for ds in _perfect()
    ]
    metrics, _ = coco_metrics(coco_ground_truth(RECORDS, CATEGORIES), coco_detections(shifted))
    assert metrics["map_50"] < 0.5


def test_no_detections_at_all_is_zero_not_a_crash() -> None:
    metrics, _ = coco_metrics(coco_ground_truth(RECORDS, CATEGORIES), [])
    assert metrics["map"] == 0.0 and metrics["ar_100"] == 0.0


def test_per_class_ap_averages_to_the_overall_map() -> None:
    """One class found perfectly, one half found: the per-class APs differ, and their mean
    is pycocotools' own mAP."""
    half = [[d for d in ds if d.class_id != 2] for ds in _perfect()]
    metrics, _ = coco_metrics(coco_ground_truth(RECORDS, CATEGORIES), coco_detections(half))
    assert metrics["ap/circle"] == pytest.approx(1.0)
    assert metrics["ap/square"] == pytest.approx(0.0)
    per_class = [metrics[f"ap/{n}"] for n in CATEGORIES.values()]
    assert sum(per_class) / len(per_class) == pytest.approx(metrics["map"])


def test_quality_gate() -> None:
    from odpipe.evaluation import QualityGateError, check_quality_gate

    assert check_quality_gate({"map": 0.2}, None) is False
    assert check_quality_gate({"map": 0.5}, 0.5) is True
    with pytest.raises(QualityGateError, match="0.300 < evaluate.min_map 0.5"):
        check_quality_gate({"map": 0.3}, 0.5)


def test_confusion_pairs_have_background_row_and_column() -> None:
    from odpipe.evaluation import confusion_pairs

    found = [
        [
            Detection(1, 0.9, 10, 10, 50, 40),  # circle found as circle
            Detection(3, 0.8, 60, 20, 90, 70),  # square found as triangle
            Detection(2, 0.7, 0, 60, 20, 79),  # nothing there: a false alarm
            Detection(1, 0.1, 60, 20, 90, 70),  # below the score threshold: ignored
        ],
        [],  # the triangle of image b is missed
    ]
    pairs = confusion_pairs(RECORDS, found, CATEGORIES, iou_threshold=0.5, score_threshold=0.5)
    assert sorted((p["actual"], p["predicted"]) for p in pairs) == sorted(
        [("circle", "circle"), ("square", "triangle"), ("background", "square"), ("triangle", "background")]
    )
