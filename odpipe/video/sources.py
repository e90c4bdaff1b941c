"""Where the ``track`` stage's video comes from: the built-in synthetic one (with its ground
truth), a user's video file or folder of frames (with or without ground truth), or none.

The ``video`` stage copies or renders it into one folder, so that DVC versions the video the
metrics were measured on, as ``ingest`` does for images."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from odpipe.core.files import write_json
from odpipe.data.synthetic import SHAPES
from odpipe.video.counting import MODES
from odpipe.video.io import DEFAULT_FPS
from odpipe.video.synthetic import VideoSpec, render_video, write_truth

VIDEO_NAME = "video.mp4"  # the built-in video; a user's keeps its own name
GROUND_TRUTH_NAME = "gt.csv"
COUNTS_NAME = "counts.json"
SOURCE_NAME = "source.json"
SOURCES = ("synthetic", "local", "none")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedVideo:
    video: Path  # a video file or a folder of frames
    fps: float  # of a folder of frames, or of a video whose header has none
    ground_truth: Path | None  # MOTChallenge boxes, when known
    counts: Path | None  # true counts per line, direction and class (and mode: true_counts), when known


def _copy(src: Path, dst: Path, what: str) -> None:
    """A copy, not a link: DVC makes its cache read-only, and a hard link would make the
    user's own file read-only with it."""
    if not src.exists():
        raise FileNotFoundError(f"video.{what} {src}: no such file or folder")
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)


def true_counts(path: Path, mode: str) -> dict[str, dict]:
    """True counts by counting mode: a file of ``{line: {"in": {class: n}, "out": {class: n}}}``
    holds those of ``mode`` (the one configured), one of ``{"net": {line: ...}, "every": ...}``
    each mode's it names. Said early, by file, when it is neither."""
    counts = json.loads(path.read_text())
    by_mode = counts if counts and set(counts) <= set(MODES) else {mode: counts}
    for per_line in by_mode.values():
        for name, directions in per_line.items():
            if not isinstance(directions, dict) or set(directions) != {"in", "out"}:
                raise ValueError(f"{path}: {name!r} must map 'in' and 'out' to counts per class")
    return by_mode


def prepare(video: Mapping, classes: Sequence[str], dst: Path) -> None:
    """Fill the empty folder ``dst`` from the configured source and describe it in source.json."""
    source = video["source"]
    described: dict = {"source": source}
    if source == "synthetic" and not (classes and set(classes) <= set(SHAPES)):
        # The built-in video shows the built-in shapes: a model of dates and figs (or of classes
        # the data names, unknown here) has nothing to find in it. Not an error: the dataset
        # changed, the video setting stayed the default.
        log.warning(
            "video=synthetic shows the built-in shapes %s, not dataset.classes %s: nothing to track "
            "(point video=local at a video of yours)",
            sorted(SHAPES),
            list(classes),
        )
        described = {"source": "none", "reason": "dataset.classes are not the built-in shapes"}
    elif source == "synthetic":
        spec = VideoSpec.from_config({**video, "classes": list(classes)})
        truth = render_video(spec, dst / VIDEO_NAME)
        write_truth(truth, dst / GROUND_TRUTH_NAME, dst / COUNTS_NAME)
        described.update(video=VIDEO_NAME, fps=spec.fps, ground_truth=GROUND_TRUTH_NAME, counts=COUNTS_NAME)
    elif source == "local":
        path = Path(str(video["path"])).expanduser()
        _copy(path, dst / path.name, "path")
        described.update(video=path.name, fps=video.get("fps") or DEFAULT_FPS, ground_truth=None, counts=None)
        if video.get("ground_truth"):
            _copy(Path(str(video["ground_truth"])).expanduser(), dst / GROUND_TRUTH_NAME, "ground_truth")
            described["ground_truth"] = GROUND_TRUTH_NAME
        if video.get("counts"):
            _copy(Path(str(video["counts"])).expanduser(), dst / COUNTS_NAME, "counts")
            true_counts(dst / COUNTS_NAME, MODES[0])
            described["counts"] = COUNTS_NAME
    elif source != "none":
        raise ValueError(f"video.source {source!r} is not supported; use one of {list(SOURCES)}")
    write_json(described, dst / SOURCE_NAME)


def load(folder: Path) -> PreparedVideo | None:
    """The prepared video, or None when the configured source is ``none``."""
    described = json.loads((folder / SOURCE_NAME).read_text())
    if described["source"] == "none":
        return None

    def optional(key: str) -> Path | None:
        return folder / described[key] if described.get(key) else None

    fps = float(described["fps"])
    return PreparedVideo(folder / described["video"], fps, optional("ground_truth"), optional("counts"))
