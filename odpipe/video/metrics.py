"""How good tracks and counts are against ground truth: CLEAR MOT and identity metrics through
``motmetrics`` (the reference implementation MOTChallenge results are compared with), and the
error of each line's counts."""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

import motmetrics
import numpy as np

MIN_IOU = 0.5  # a track's box matches a true box at or above this IoU, as in MOTChallenge
# motmetrics' names, ours: the share of frames tracked right, identity, switches, coverage.
MOT_METRICS = {
    "mota": "mota",
    "idf1": "idf1",
    "idp": "idp",
    "idr": "idr",
    "num_switches": "id_switches",
    "num_fragmentations": "fragmentations",
    "precision": "precision",
    "recall": "recall",
    "mostly_tracked": "mostly_tracked",
    "mostly_lost": "mostly_lost",
    "num_false_positives": "false_positives",
    "num_misses": "misses",
    "num_unique_objects": "true_objects",
}

Boxes = tuple[list[int], list[list[float]]]  # ids and [x, y, w, h] boxes of one frame
# MOTChallenge's ground-truth columns; files carry no header, so MOT tools read them as they are.
MOT_COLUMNS = ("frame", "id", "x", "y", "w", "h", "conf", "class", "visibility")


def write_mot(rows: Iterable[Mapping], path: Path) -> None:
    """Rows keyed by ``MOT_COLUMNS`` as a MOTChallenge file."""
    with Path(path).open("w", newline="") as file:
        csv.writer(file).writerows([row[c] for c in MOT_COLUMNS] for row in rows)


def read_mot(path: Path) -> dict[int, Boxes]:
    """A MOTChallenge file (``frame,id,x,y,w,h,...``, no header) as ids and boxes per frame."""
    frames: dict[int, Boxes] = defaultdict(lambda: ([], []))
    with Path(path).open(newline="") as file:
        for line_number, row in enumerate(csv.reader(file), start=1):
            if not row:
                continue
            try:
                frame, track, x, y, w, h = int(float(row[0])), int(float(row[1])), *map(float, row[2:6])
            except (ValueError, IndexError):
                raise ValueError(f"{path}:{line_number}: not a MOTChallenge row (frame,id,x,y,w,h,...)") from None
            frames[frame][0].append(track)
            frames[frame][1].append([x, y, w, h])
    return dict(frames)


def mot_metrics(truth: Mapping[int, Boxes], tracks: Mapping[int, Boxes], frames: int) -> dict[str, float | None]:
    """MOTA, IDF1, ID switches and the rest over frames 1..``frames``, class-agnostic; ``motp_iou``
    is the mean IoU of matched boxes (motmetrics reports its complement, a distance)."""
    accumulator = motmetrics.MOTAccumulator(auto_id=False)
    empty: Boxes = ([], [])
    for frame in range(1, frames + 1):
        true_ids, true_boxes = truth.get(frame, empty)
        track_ids, track_boxes = tracks.get(frame, empty)
        distances = motmetrics.distances.iou_matrix(true_boxes, track_boxes, max_iou=1 - MIN_IOU)
        accumulator.update(true_ids, track_ids, distances, frameid=frame)
    summary = motmetrics.metrics.create().compute(accumulator, metrics=[*MOT_METRICS, "motp"], name="video")
    values = {ours: float(summary[theirs].iloc[0]) for theirs, ours in MOT_METRICS.items()}
    values["motp_iou"] = 1.0 - float(summary["motp"].iloc[0])
    # Undefined (no tracks, or no truth: precision and the like are 0/0) is None, not NaN, which
    # JSON does not have and which would read as a number in a table of experiments.
    return {k: None if np.isnan(v) else v for k, v in values.items()}


def count_errors(counted: Mapping, truth: Mapping) -> dict[str, float]:
    """Per line (or zone) and direction, counted minus true objects summed over classes, and
    ``count_error``: the sum of absolute differences over all lines, directions and classes
    divided by the true total (0 is exact; 0.05 is 5% off)."""
    errors: dict[str, float] = {}
    wrong = total = 0
    for name, directions in truth.items():
        for direction, per_class in directions.items():
            got = counted.get(name, {}).get(direction, {})
            errors[f"{name}/{direction}/counted"] = sum(got.values())
            errors[f"{name}/{direction}/true"] = sum(per_class.values())
            for cls in set(per_class) | set(got):
                wrong += abs(got.get(cls, 0) - per_class.get(cls, 0))
            total += sum(per_class.values())
    errors["count_error"] = wrong / total if total else float(wrong > 0)
    return errors


def count_report(counted: Mapping[str, Mapping], truth: Mapping[str, Mapping], mode: str) -> dict[str, float]:
    """The count figures of a run: per line and direction and ``count_error`` for the configured
    ``mode`` (the counts the run reports), and ``count_error/<mode>`` for every mode whose truth
    is known (``counted`` and ``truth`` are keyed by mode)."""
    report = count_errors(counted[mode], truth[mode]) if mode in truth else {}
    for name, true in truth.items():
        report[f"count_error/{name}"] = count_errors(counted[name], true)["count_error"]
    return report
