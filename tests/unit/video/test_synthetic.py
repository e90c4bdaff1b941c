from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from odpipe.video.io import VideoError
from odpipe.video.metrics import MOT_COLUMNS, read_mot
from odpipe.video.synthetic import (
    HOVER_REACH,
    SWING_REACH,
    TRUTH_BAND,
    Line,
    Truth,
    VideoSpec,
    crossing,
    ground_truth,
    render_video,
    write_truth,
)

SHORT = VideoSpec(num_frames=120, num_objects=6, seed=4)
LINE_Y = 150  # the default line, drawn left to right: moving down is in


def _decoded(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def _digest(frames: list[np.ndarray]) -> str:
    return hashlib.sha256(b"".join(frame.tobytes() for frame in frames)).hexdigest()


def _rows_by_id(truth: Truth) -> dict[int, list[dict]]:
    by_id = defaultdict(list)
    for row in truth.rows:
        by_id[row["id"]].append(row)
    return by_id


def _anchor_offset(row: dict) -> float:
    """The bottom-centre anchor's distance below the default line (positive: the ``in`` side)."""
    return row["y"] + row["h"] - LINE_Y


def _recount(truth: Truth, classes: tuple[str, ...]) -> dict:
    """Counts in each mode from the visible boxes of each id: ``net`` from the first and last,
    ``every`` from each move across the line beyond the band, frame by frame. Fair because every
    scripted crossing happens in view and every object enters and leaves through the frame's edges."""
    counts = {mode: {"in": dict.fromkeys(classes, 0), "out": dict.fromkeys(classes, 0)} for mode in ("net", "every")}
    for rows in _rows_by_id(truth).values():
        offsets = [_anchor_offset(row) for row in rows]
        label = classes[rows[0]["class"] - 1]
        if offsets[0] < 0 < offsets[-1]:
            counts["net"]["in"][label] += 1
        elif offsets[-1] < 0 < offsets[0]:
            counts["net"]["out"][label] += 1
        sides = [1 if o > TRUTH_BAND else -1 for o in offsets if abs(o) > TRUTH_BAND]
        for before, after in zip(sides, sides[1:], strict=False):
            if before != after:
                counts["every"]["in" if after > 0 else "out"][label] += 1
    return {mode: {"middle": per_line} for mode, per_line in counts.items()}


@pytest.fixture(scope="module")
def short_video(tmp_path_factory) -> tuple[Path, Truth]:
    path = tmp_path_factory.mktemp("video") / "short.mp4"
    return path, render_video(SHORT, path)


def test_video_reads_back_whole_at_the_spec_size(short_video) -> None:
    path, truth = short_video
    frames = _decoded(path)
    assert len(frames) == SHORT.num_frames
    assert {frame.shape for frame in frames} == {(SHORT.height, SHORT.width, 3)}
    assert cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FPS) == pytest.approx(SHORT.fps)
    assert truth == ground_truth(SHORT)  # the truth does not depend on drawing


def test_ground_truth_rows_are_mot_boxes_inside_the_frame(short_video) -> None:
    _, truth = short_video
    assert truth.rows and all(tuple(row) == MOT_COLUMNS for row in truth.rows)
    for row in truth.rows:
        assert 1 <= row["frame"] <= SHORT.num_frames and row["conf"] == 1
        assert 0 <= row["x"] and row["x"] + row["w"] <= SHORT.width and row["w"] > 0
        assert 0 <= row["y"] and row["y"] + row["h"] <= SHORT.height and row["h"] > 0
        assert 1 <= row["class"] <= len(SHORT.classes) and 0 <= row["visibility"] <= 1
    by_id = _rows_by_id(truth)
    assert sorted(by_id) == list(range(1, SHORT.num_objects + 1)) == sorted(truth.roles)
    for rows in by_id.values():
        frames = [row["frame"] for row in rows]
        assert frames == list(range(frames[0], frames[-1] + 1))  # in view once, no gaps
        assert len({row["class"] for row in rows}) == 1


def test_hover_object_wavers_on_the_line_and_counts_nothing(short_video) -> None:
    _, truth = short_video
    (hover,) = [number for number, role in truth.roles.items() if role == "hover"]
    offsets = np.array([_anchor_offset(row) for row in _rows_by_id(truth)[hover]])
    start_side = np.sign(offsets[0])
    assert np.sign(offsets[-1]) == start_side  # goes back the way it came
    assert (offsets * -start_side).max() <= HOVER_REACH  # never more than 3 px past the line
    assert (offsets * -start_side).max() > 0  # but does cross it
    assert np.sum(np.abs(offsets) <= HOVER_REACH) >= 2 * SHORT.fps  # for 2 s or more
    assert truth.counts == _recount(truth, SHORT.classes)


@pytest.mark.parametrize("seed", range(5))
def test_true_counts_agree_with_the_visible_boxes(seed: int) -> None:
    spec = VideoSpec(seed=seed)
    truth = ground_truth(spec)
    assert truth.counts == _recount(truth, spec.classes)


def test_default_scenario_holds_the_hard_cases() -> None:
    spec = VideoSpec()
    truth = ground_truth(spec)
    counts = truth.counts["net"]["middle"]
    assert sum(counts["in"].values()) >= 5 and sum(counts["out"].values()) >= 4
    assert min(row["visibility"] for row in truth.rows) < 0.7  # someone is hidden behind someone
    assert max(Counter(row["frame"] for row in truth.rows).values()) >= 4
    roles = Counter(truth.roles.values())
    assert roles["hover"] == 1 and roles["stop_and_go"] == 1 and roles["pass"] >= 1
    (stopper,) = [number for number, role in truth.roles.items() if role == "stop_and_go"]
    rows = _rows_by_id(truth)[stopper]
    boxes = [tuple(row[k] for k in "xywh") for row in rows]
    still = max(Counter(boxes).values())
    assert spec.fps <= still <= 2 * spec.fps + 1  # it waits 1-2 s ...
    waiting = Counter(boxes).most_common(1)[0][0]
    first = _anchor_offset(rows[0])
    assert np.sign(waiting[1] + waiting[3] - LINE_Y) == -np.sign(first)  # ... past the line
    for number, role in truth.roles.items():
        if role == "pass":
            offsets = [_anchor_offset(row) for row in _rows_by_id(truth)[number]]
            assert min(offsets) > 0 or max(offsets) < 0  # never crosses


def test_counts_name_every_line_direction_and_class(tmp_path: Path) -> None:
    lines = [{"name": "middle", "start": [0, 150], "end": [320, 150]}, ("left", (100, 0), (100, 240))]
    spec = replace(SHORT, lines=lines, classes=["circle", "square", "triangle", "diamond"])
    truth = ground_truth(spec)
    assert set(truth.counts) == {"net", "every"} and set(truth.counts["net"]) == {"middle", "left"}
    for per_line in truth.counts["every"].values():
        assert set(per_line) == {"in", "out"}
        assert all(set(per_class) == set(spec.classes) for per_class in per_line.values())
    write_truth(truth, tmp_path / "gt.csv", tmp_path / "counts.json")
    written = read_mot(tmp_path / "gt.csv")  # no header: MOT tools read it as it is
    assert sum(len(ids) for ids, _ in written.values()) == len(truth.rows)
    first = truth.rows[0]
    assert first["id"] in written[first["frame"]][0]
    assert (tmp_path / "counts.json").read_text().startswith("{")


def test_crossing_direction_follows_the_line_convention() -> None:
    middle = Line("middle", (0.0, 150.0), (320.0, 150.0))
    down = np.array([[100.0, 0.0], [100.0, 240.0]])
    assert crossing(down, middle) == "in"
    assert crossing(down[::-1], middle) == "out"
    assert crossing(np.array([[100.0, 0.0], [100.0, 152.0], [100.0, 148.0], [100.0, 0.0]]), middle) is None
    assert crossing(down + [400.0, 0.0], middle) is None  # beyond the segment's end
    upward = Line("up", (100.0, 240.0), (100.0, 0.0))  # drawn bottom to top: moving right is in
    assert crossing(np.array([[0.0, 100.0], [320.0, 100.0]]), upward) == "in"


def test_same_seed_same_video_and_other_seed_differs(short_video, tmp_path: Path) -> None:
    path, truth = short_video
    again = render_video(SHORT, tmp_path / "again.mp4")
    assert again == truth
    assert _digest(_decoded(tmp_path / "again.mp4")) == _digest(_decoded(path))
    other = render_video(replace(SHORT, seed=SHORT.seed + 1), tmp_path / "other.mp4")
    assert other.rows != truth.rows
    assert _digest(_decoded(tmp_path / "other.mp4")) != _digest(_decoded(path))


def test_spec_comes_from_the_video_config_group() -> None:
    config = {
        "source": "synthetic",
        "width": 320,
        "height": 240,
        "fps": 15,
        "num_frames": 450,
        "seed": 0,
        "min_size": 36,
        "max_size": 60,
        "num_objects": 14,
        "lines": [{"name": "middle", "start": [0, 150], "end": [320, 150]}],
        "zones": [],
    }
    assert VideoSpec.from_config(config) == VideoSpec()
    with pytest.raises(ValueError, match="pentagon"):
        VideoSpec(classes=("pentagon",))
    with pytest.raises(ValueError, match="too few"):
        ground_truth(replace(SHORT, num_frames=20))


def test_unwritable_video_names_the_path_and_the_codecs_that_work(tmp_path: Path) -> None:
    blocked = tmp_path / "video.mp4"
    blocked.mkdir()
    with pytest.raises(VideoError, match="mp4v") as error:
        render_video(SHORT, blocked)
    assert str(blocked) in str(error.value) and "H.264" in str(error.value)


def _sides(truth: Truth, number: int, band: float = TRUTH_BAND) -> list[int]:
    """The sides of the line an object's visible anchor was on, beyond the band, in order, repeats merged."""
    sides = [int(np.sign(o)) for o in map(_anchor_offset, _rows_by_id(truth)[number]) if abs(o) > band]
    return [side for i, side in enumerate(sides) if i == 0 or side != sides[i - 1]]


def test_default_scenario_holds_the_cases_where_counting_modes_differ() -> None:
    """A hover across the line ending on the far side, a U-turn, a stop on the line, two objects
    crossing side by side in opposite directions; each with its count in each mode."""
    truth = ground_truth(VideoSpec())
    role = {r: [n for n, rr in truth.roles.items() if rr == r] for r in set(truth.roles.values())}
    (hover,), (u_turn,), (stopper,) = role["hover_across"], role["u_turn"], role["stop_on_line"]
    assert len(_sides(truth, hover)) >= 6 and _sides(truth, hover)[0] != _sides(truth, hover)[-1]
    swings = np.abs([_anchor_offset(row) for row in _rows_by_id(truth)[hover]])
    assert max(swings[len(swings) // 3 : 2 * len(swings) // 3]) <= SWING_REACH[1] + 1  # swings stay near the line
    assert len(_sides(truth, u_turn)) == 3  # across and back
    stops = Counter(tuple(row[k] for k in "xywh") for row in _rows_by_id(truth)[stopper])
    ((still, frames),) = stops.most_common(1)
    assert abs(still[1] + still[3] - LINE_Y) <= 1 and frames >= VideoSpec().fps  # 1 s or more on the line
    assert len(_sides(truth, stopper)) == 2
    first, second = (_rows_by_id(truth)[n] for n in role["opposite"])
    assert abs(first[0]["frame"] - second[0]["frame"]) < VideoSpec().fps  # together ...
    assert _sides(truth, role["opposite"][0]) == _sides(truth, role["opposite"][1])[::-1]  # ... opposite ways
    every, net = (sum(sum(d.values()) for d in truth.counts[m]["middle"].values()) for m in ("every", "net"))
    assert every == net + (len(_sides(truth, hover)) - 2) + 2  # the hover's extra crossings, the U-turn's two
