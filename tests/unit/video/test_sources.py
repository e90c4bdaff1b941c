"""The video stage's sources: the built-in video with its truth, a user's video copied with its
optional truth, and no video at all."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from odpipe.video.metrics import read_mot
from odpipe.video.sources import load, prepare, true_counts

LINES = [{"name": "middle", "start": [0, 150], "end": [320, 150]}]
SHORT = {"source": "synthetic", "num_frames": 120, "num_objects": 6, "lines": LINES, "zones": []}


def test_the_built_in_video_comes_with_its_truth(tmp_path: Path) -> None:
    prepare(SHORT, ["circle", "square", "triangle"], tmp_path)
    video = load(tmp_path)
    assert video is not None and video.video.stat().st_size > 0 and video.fps == 15
    assert read_mot(video.ground_truth) and set(json.loads(video.counts.read_text())) == {"net", "every"}
    assert set(true_counts(video.counts, "every")["every"]) == {"middle"}  # each mode's truth


def test_a_users_true_counts_are_those_of_the_configured_mode(tmp_path: Path) -> None:
    """A file of counts per line is the truth of the mode track counts in; one per mode, of each."""
    per_line = {"middle": {"in": {"circle": 2}, "out": {}}}
    (tmp_path / "mine.json").write_text(json.dumps(per_line))
    assert true_counts(tmp_path / "mine.json", "every") == {"every": per_line}
    (tmp_path / "both.json").write_text(json.dumps({"net": per_line, "every": per_line}))
    assert set(true_counts(tmp_path / "both.json", "every")) == {"net", "every"}


def test_a_dataset_of_other_classes_gets_no_built_in_video(tmp_path: Path) -> None:
    """dataset=local with the video left at its default: nothing to track, not a failure."""
    prepare(SHORT, ["date", "fig"], tmp_path)
    assert load(tmp_path) is None and not (tmp_path / "video.mp4").exists()


def test_a_users_video_is_copied_with_its_optional_truth(tmp_path: Path) -> None:
    built_in = tmp_path / "built_in"
    built_in.mkdir()
    prepare(SHORT, ["circle", "square", "triangle"], built_in)
    mine = tmp_path / "cam1.mp4"
    shutil.copy(built_in / "video.mp4", mine)
    out = tmp_path / "out"
    out.mkdir()
    config = {"source": "local", "path": str(mine), "fps": None, "ground_truth": str(built_in / "gt.csv")}
    prepare({**config, "counts": None, "lines": LINES}, [], out)
    video = load(out)
    assert video.video == out / "cam1.mp4" and video.ground_truth == out / "gt.csv" and video.counts is None
    assert video.video.read_bytes() == mine.read_bytes() and not video.video.samefile(mine)

    for name in ("again", "missing"):
        (tmp_path / name).mkdir()
    bad = tmp_path / "counts.json"
    bad.write_text(json.dumps({"middle": {"in": {"circle": 1}}}))
    with pytest.raises(ValueError, match=r"counts.json: 'middle' must map 'in' and 'out'"):
        prepare({**config, "counts": str(bad)}, [], tmp_path / "again")
    with pytest.raises(FileNotFoundError, match=r"video.path .*nowhere.mp4: no such file"):
        prepare({**config, "path": str(tmp_path / "nowhere.mp4")}, [], tmp_path / "missing")
    with pytest.raises(ValueError, match="video.source 'youtube' is not supported"):
        prepare({"source": "youtube"}, [], tmp_path)
