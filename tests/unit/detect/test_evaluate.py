from __future__ import annotations

import io
from pathlib import Path

import pytest
import tensorflow as tf
from PIL import Image

from odpipe.detect.evaluate import COCO_STATS, Detection, coco_detections, coco_ground_truth, coco_metrics
from odpipe.detect.records import ImageBoxes

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
    from odpipe.engine.gate import quality_gate

    unset = quality_gate(0.2, None, None, None)
    assert unset.passed is None and unset.as_report() == {"gate_passed": None, "gate": unset.reason}
    assert quality_gate(0.5, 0.5, None, None).passed is True
    below = quality_gate(0.3, 0.5, None, None)
    assert below.passed is False and below.as_report()["gate_passed"] == 0
    assert "0.300 < evaluate.min_map 0.5" in below.reason
    # Against the best registered version: by at least min_improvement, with or without min_map.
    assert quality_gate(0.62, None, 0.01, 0.60).passed is True
    assert quality_gate(0.605, 0.5, 0.01, 0.60).passed is False
    assert "0.600 (the best registered version, same split) + evaluate.min_improvement 0.01" in (
        quality_gate(0.605, 0.5, 0.01, 0.60).reason
    )
    assert quality_gate(0.1, None, 0.01, None).passed is True  # nothing registered yet on this split
    assert quality_gate(0.1, 0.5, 0.01, None).passed is False  # but min_map still holds


def test_the_segment_gate_speaks_of_its_own_metric_and_floor() -> None:
    from odpipe.engine.gate import SEGMENT_GATE, quality_gate

    below = quality_gate(0.7, 0.8, None, None, SEGMENT_GATE)
    assert below.passed is False and below.reason == "test mIoU 0.700 < evaluate.min_miou 0.8: not registered"
    assert "evaluate.min_miou" in quality_gate(0.7, None, None, None, SEGMENT_GATE).reason
    assert quality_gate(0.83, 0.8, 0.01, 0.81, SEGMENT_GATE).passed is True


def test_confusion_pairs_have_background_row_and_column() -> None:
    from odpipe.detect.evaluate import confusion_pairs

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


# Image a: a crowd region and a person; image b: a difficult object (VOC) and a plain one.
IGNORING = [
    ImageBoxes("a.jpg", 200, 200, ((0, 0, 100, 100), (120, 120, 180, 190)), (1, 1), ("circle", "circle"), crowd=(1, 0)),
    ImageBoxes(
        "b.jpg", 200, 200, ((10, 10, 60, 60), (100, 20, 160, 90)), (2, 2), ("square", "square"), difficult=(1, 0)
    ),
]


def test_detections_on_ignored_boxes_and_missed_ignored_boxes_cost_nothing() -> None:
    """A detection on a crowd region (even a small one inside it) or on a difficult object is
    neither a hit nor a false alarm, and a missed difficult object is no miss: the plain
    boxes found, the scores are perfect. Counted as ordinary boxes, they would not be."""
    found = [
        [
            Detection(1, 0.95, 0, 0, 100, 100),  # exactly the crowd region, best score
            Detection(1, 0.9, 20, 20, 50, 50),  # inside the crowd region
            Detection(1, 0.8, 120, 120, 180, 190),
        ],
        [Detection(2, 0.8, 100, 20, 160, 90)],  # the difficult square is missed
    ]
    metrics, _ = coco_metrics(coco_ground_truth(IGNORING, CATEGORIES), coco_detections(found))
    assert metrics["map"] == pytest.approx(1.0) and metrics["ar_100"] == pytest.approx(1.0)
    assert metrics["ap/circle"] == metrics["ap/square"] == pytest.approx(1.0)
    counted = [ImageBoxes(r.filename, r.width, r.height, r.boxes, r.labels, r.texts) for r in IGNORING]
    metrics, _ = coco_metrics(coco_ground_truth(counted, CATEGORIES), coco_detections(found))
    assert metrics["ap/circle"] < 1 and metrics["ar_100"] < 1


def test_confusion_pairs_leave_out_ignored_boxes_and_what_they_take() -> None:
    from odpipe.detect.evaluate import confusion_pairs

    found = [
        [Detection(3, 0.9, 0, 0, 100, 100), Detection(1, 0.8, 120, 120, 180, 190)],  # crowd taken by any class
        [Detection(1, 0.7, 0, 150, 30, 190)],  # a false alarm; the difficult square is missed
    ]
    pairs = confusion_pairs(IGNORING, found, CATEGORIES, iou_threshold=0.5, score_threshold=0.5)
    assert sorted((p["actual"], p["predicted"]) for p in pairs) == sorted(
        [("circle", "circle"), ("background", "circle"), ("square", "background")]
    )


def test_a_detection_takes_a_box_that_counts_before_an_ignored_one() -> None:
    """As pycocotools: a detection overlapping a plain box at IoU 0.5 and lying wholly inside
    a crowd region takes the plain box; the next one, finding no free plain box, goes to the
    crowd (left out); ignored boxes may be taken any number of times."""
    from odpipe.detect.evaluate import greedy_match

    record = ImageBoxes(
        "c.jpg", 300, 300, ((0, 0, 200, 200), (50, 50, 110, 150)), (1, 1), ("circle",) * 2, (0, 0), crowd=(1, 0)
    )
    found = [
        Detection(1, 0.9, 50, 50, 110, 100),
        Detection(1, 0.8, 50, 50, 110, 100),
        Detection(1, 0.7, 10, 10, 20, 20),
    ]
    assert greedy_match(record, found, 0.5, same_class=True) == [(found[0], 1)]
    alone = ImageBoxes("d.jpg", 300, 300, ((0, 0, 200, 200),), (1,), ("circle",), crowd=(1,))
    assert greedy_match(alone, found, 0.5, same_class=True) == []
    assert greedy_match(alone, found, 0.5, same_class=False) == []


class _FakeDetector(tf.Module):
    """The OD API export's interface: a batch of images in, one box per image out, its score
    the image's mean brightness (so order can be checked); counts its calls."""

    def __init__(self, batch: int | None) -> None:
        super().__init__()
        self.calls = tf.Variable(0)
        self.__call__ = tf.function(self.detect, input_signature=[tf.TensorSpec([batch, None, None, 3], tf.uint8)])

    def detect(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        self.calls.assign_add(1)
        n = tf.shape(images)[0]
        return {
            "num_detections": tf.ones([n]),
            "detection_boxes": tf.tile([[[0.5, 0.25, 1.0, 0.75]]], [n, 1, 1]),  # ymin, xmin, ymax, xmax
            "detection_classes": tf.ones([n, 1]),
            "detection_scores": tf.reduce_mean(tf.cast(images, tf.float32), axis=[1, 2, 3])[:, None] / 255,
        }


@pytest.fixture(scope="module")
def fake_exports(tmp_path_factory) -> dict[str, Path]:
    """Two SavedModels, loaded as evaluate loads an export: one fixed to a batch of 1 (as the
    OD API's image_tensor export is), one taking any batch."""
    root = tmp_path_factory.mktemp("exports")
    for name, batch in (("fixed", 1), ("free", None)):
        tf.saved_model.save(_FakeDetector(batch), str(root / name / "saved_model"))
    return {name: root / name for name in ("fixed", "free")}


def _png(height: int, width: int, value: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (value,) * 3).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize(("export", "calls"), [("fixed", 6), ("free", 3)])
def test_detect_all_streams_images_in_order_batching_same_sizes_where_the_export_allows(
    fake_exports, export: str, calls: int
) -> None:
    from odpipe.detect.detectors import load_detector
    from odpipe.detect.evaluate import detect_all

    sizes = [(40, 60)] * 3 + [(50, 80)] + [(40, 60)] * 2  # free: batches of 3, 1 and 2
    values = [10, 60, 110, 160, 210, 250]
    detector = load_detector(fake_exports[export])
    images = (_png(h, w, v) for (h, w), v in zip(sizes, values, strict=True))  # read lazily
    detections, speed = detect_all(detector, images, min_score=0.3)
    assert [[round(d.score * 255) for d in found] for found in detections] == [[], [], [110], [160], [210], [250]]
    (h, w), d = sizes[3], detections[3][0]
    assert (d.class_id, d.xmin, d.ymin, d.xmax, d.ymax) == (1, 0.25 * w, 0.5 * h, 0.75 * w, 1.0 * h)
    assert int(detector.model.calls.numpy()) == calls + 1  # and one warm-up call
    assert set(speed) == {"latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "images_per_second"}
    assert 0 < speed["latency_ms_p50"] <= speed["latency_ms_p99"] and speed["images_per_second"] > 0
    assert detect_all(detector, [], 0.0) == ([], {})
