"""Detect, track and count in a video: ``odpipe track MODEL_DIR SOURCE --out DIR``.

SOURCE is a video file, a folder of frames or a stream URL (anything OpenCV opens). The exported
detector runs on every ``--stride``-th frame (the tracker predicts the frames between), a
tracker (``bytetrack`` or the course's ``centroid``) links the boxes into tracks, and counting
lines and zones turn tracks into events. Written to the output folder:

- ``annotated.mp4``: boxes with track ids, the lines with their ``in`` arrows, live counts;
- ``tracks.csv``: MOTChallenge rows ``frame,id,x,y,w,h,conf,class,visibility`` (no header,
  frames from 1, visibility -1: unknown), which MOT tools and ``motmetrics`` read as they are;
- ``events.csv``: ``frame,time,line,track,class,direction``, one row per counted crossing;
- ``counts.json``: per line or zone, per direction, per class; and the run's speed.
"""

from __future__ import annotations

import argparse
import csv
import functools
import logging
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tensorflow as tf
import yaml
from threadpoolctl import ThreadpoolController
from tqdm import tqdm

from odpipe.core.draw import PALETTE
from odpipe.core.files import write_csv, write_json
from odpipe.detect.detectors import load_detector
from odpipe.detect.evaluate import Detection, class_name, detect_batch
from odpipe.detect.export import LABEL_MAP_NAME
from odpipe.detect.label_map import read_label_map
from odpipe.video.counting import ANCHORS, MODES, Counter, Event, Zone, counters_from_config, in_direction, resolve
from odpipe.video.io import (
    DEFAULT_FPS,
    Frame,
    StreamStalled,
    VideoError,
    VideoSource,
    is_stream,
    open_writer,
    video_name,
)
from odpipe.video.trackers import TRACKERS, Tracked, Tracker, make_tracker

log = logging.getLogger(__name__)

EVENT_COLUMNS = ("frame", "time", "line", "track", "class", "direction", "change")
SAMPLE_FRAMES = 4  # annotated frames kept as pictures: those where the first counts happened


@dataclass(frozen=True)
class TrackSettings:
    """What ``track`` does; mirrors the ``track`` config section (lines and zones come from the
    video's own config, since they are drawn on its scene)."""

    method: str = "bytetrack"
    tracker: Mapping[str, Any] = field(default_factory=dict)  # the chosen method's parameters
    frame_stride: int = 1
    min_score: float = 0.1  # detections below never reach the tracker (BYTE uses those above 0.1)
    anchor: str = "bottom_center"
    margin: float = 6.0
    min_frames: int = 2
    rejoin: float = 5.0  # seconds a track gone mid-picture may be continued by a new one appearing there
    mode: str = "net"  # what a track adds to the counts: net or every (odpipe.video.counting)
    lines: Sequence[Mapping] = ()
    zones: Sequence[Mapping] = ()
    codec: str = "mp4v"
    read_timeout: float = 10.0

    @classmethod
    def from_config(cls, track: Mapping, lines: Sequence[Mapping] = (), zones: Sequence[Mapping] = ()) -> TrackSettings:
        count = track["count"]
        return cls(
            method=track["method"],
            tracker=dict(track[track["method"]]),
            frame_stride=int(track["frame_stride"]),
            min_score=float(track["min_score"]),
            anchor=count["anchor"],
            margin=float(count["margin"]),
            min_frames=int(count["min_frames"]),
            rejoin=float(count["rejoin"]),
            mode=str(count["mode"]),
            lines=list(lines),
            zones=list(zones),
            codec=track["codec"],
            read_timeout=float(track["read_timeout"]),
        )


@dataclass
class TrackResult:
    frames: int = 0
    detected_frames: int = 0
    seconds: float = 0.0  # wall time of the whole loop, decoding and writing included
    tracks: int = 0
    events: list[Event] = field(default_factory=list)
    counts: dict = field(default_factory=dict)  # in the configured mode
    counts_by_mode: dict = field(default_factory=dict)  # every mode's, for the report's count errors
    stream_ended: bool = False  # a stream stopped sending (a stream has no natural end)
    stalled: str | None = None  # why reading stopped early, when it did
    video_fps: float = 0.0

    def summary(self) -> dict:
        return {
            "frames": self.frames,
            "detected_frames": self.detected_frames,
            "duration_s": round(self.frames / self.video_fps, 3) if self.video_fps else 0.0,
            "video_fps": round(self.video_fps, 3),
            "frames_per_second": round(self.frames / self.seconds, 2) if self.seconds else 0.0,
            "tracks": self.tracks,
            "events": len(self.events),
            "stream_ended": self.stream_ended,
            "stalled": self.stalled,
        }


@dataclass
class TrackAndCount:
    """A tracker and a counter fed frame by frame: what ``track_video`` does once the model has
    spoken, kept apart so that ground-truth boxes (tests, benchmarks) can go through it too."""

    tracker: Tracker
    counter: Counter  # in the configured mode: its events and counts are the run's
    width: int
    height: int
    others: tuple[Counter, ...] = ()  # the other modes, fed the same tracks: the report scores each

    @classmethod
    def from_settings(cls, settings: TrackSettings, width: int, height: int) -> TrackAndCount:
        """The configured tracker, and a counter of the configured lines and zones on a frame of
        this size (where relative coordinates become pixels) in each counting mode."""
        counters = [resolve(c, width, height) for c in counters_from_config(settings.lines, settings.zones)]
        by_mode = {
            mode: Counter(
                counters, settings.anchor, settings.margin, settings.min_frames, (width, height), settings.rejoin, mode
            )
            for mode in (settings.mode, *(m for m in MODES if m != settings.mode))
        }
        counter, *others = by_mode.values()
        return cls(make_tracker(settings.method, settings.tracker), counter, width, height, tuple(others))

    @property
    def counts_by_mode(self) -> dict[str, dict]:
        return {c.mode: c.counts for c in (self.counter, *self.others)}

    def step(
        self, index: int, time_s: float, detections: Sequence[Detection] | None
    ) -> tuple[list[Tracked], list[Event]]:
        """Frame ``index``: its detections, or None for a frame the model skipped (the tracker
        predicts it); the tracks to show and the counts confirmed. One BLAS thread: the tracker's
        matrices are a few numbers wide, and OpenBLAS threads, spinning after each call, take the
        cores the detector's next frame needs (measured on 2 cores: tracking and counting added 25%
        to detection's time with them, 7.5% without)."""
        with _blas().limit(limits=1, user_api="blas"):
            if detections is None:
                tracked = self.tracker.predict()
            else:
                tracked = self.tracker.update(*detections_arrays(detections))
        tracked = [t for t in (inside(t, self.width, self.height) for t in tracked) if t is not None]
        removed = self.tracker.removed
        for other in self.others:
            other.update(index, time_s, tracked)
            other.end_tracks(removed)
        events = self.counter.update(index, time_s, tracked) + self.counter.end_tracks(removed)
        return tracked, events

    def finish(self) -> list[Event]:
        """The video ended: counts still pending on tracks that were alive are confirmed."""
        self.tracker.finish()
        for other in self.others:
            other.finish()
        return self.counter.finish()


@functools.cache
def _blas() -> ThreadpoolController:
    """The loaded BLAS libraries, found once (a search of the process's libraries each frame would
    cost more than what it saves)."""
    return ThreadpoolController()


def inside(t: Tracked, width: int, height: int) -> Tracked | None:
    """The box clipped to the frame, as a detector's boxes are (a predicted or smoothed box can
    overhang the edge); None when nothing of it is left in the picture."""
    xmin, xmax = min(max(t.xmin, 0.0), width), min(max(t.xmax, 0.0), width)
    ymin, ymax = min(max(t.ymin, 0.0), height), min(max(t.ymax, 0.0), height)
    if xmax <= xmin or ymax <= ymin:
        return None
    return replace(t, xmin=xmin, ymin=ymin, xmax=xmax, ymax=ymax)


def is_detected(index: int, stride: int) -> bool:
    """Frames 1, 1 + stride, 1 + 2 stride, ... go to the model; the tracker predicts the others."""
    return (index - 1) % stride == 0


def detection_groups(frames: Iterable[Frame], stride: int, per_call: int) -> Iterator[list[Frame]]:
    """Consecutive frames, cut after every ``per_call``-th frame that is detected: each group's
    detected frames go to the model in one call, and its frames are then tracked in order. A
    stream that stalls first hands over the frames it did send."""
    group: list[Frame] = []
    detected = 0
    try:
        for frame in frames:
            group.append(frame)
            if is_detected(frame.index, stride):
                detected += 1
                if detected == per_call:
                    yield group
                    group, detected = [], 0
    except StreamStalled:
        if group:
            yield group
        raise
    if group:
        yield group


def rgb_tensor(image: np.ndarray) -> tf.Tensor:
    """OpenCV's BGR frame as the RGB image the model was trained on (feeding BGR, as the course
    notes do, swaps red and blue for the model)."""
    return tf.constant(np.ascontiguousarray(image[..., ::-1]))


def detections_arrays(detections: Sequence[Detection]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes = np.array([[d.xmin, d.ymin, d.xmax, d.ymax] for d in detections], dtype=float).reshape(-1, 4)
    scores = np.array([d.score for d in detections], dtype=float)
    classes = np.array([d.class_id for d in detections], dtype=int)
    return boxes, scores, classes


def mot_row(frame: int, t: Tracked) -> list:
    """A track's box as a MOTChallenge row (top-left corner, width, height)."""
    x, y, w, h = t.xmin, t.ymin, t.xmax - t.xmin, t.ymax - t.ymin
    return [frame, t.track_id, round(x, 2), round(y, 2), round(w, 2), round(h, 2), round(t.score, 4), t.class_id, -1]


def _bgr(index: int) -> tuple[int, int, int]:
    r, g, b = PALETTE[index % len(PALETTE)]
    return b, g, r


def draw_frame(
    image: np.ndarray,
    tracks: Sequence[Tracked],
    counters: Sequence,
    counts_text: Sequence[str],
    categories: Mapping[int, str],
) -> None:
    """Boxes with their track ids (thin where predicted, not detected), each counting line with
    an arrow to its ``in`` side, each zone, and the counts so far; drawn in place."""
    for counter in counters:
        if isinstance(counter, Zone):
            polygon = np.round(np.asarray(counter.points)).astype(np.int32)
            _outlined(cv2.polylines, image, [polygon], True)
            label_at = tuple(int(v) for v in polygon[0])
        else:
            start, end = _point(counter.start), _point(counter.end)
            middle = np.add(counter.start, counter.end) / 2
            tip = _point(middle + 18 * np.asarray(in_direction(counter)))
            _outlined(cv2.line, image, start, end)
            _outlined(cv2.arrowedLine, image, _point(middle), tip)
            _text(image, "in", (tip[0] + 3, tip[1] + 3), COUNTER_COLOUR)
            label_at = start
        _text(image, counter.name, (label_at[0] + 3, label_at[1] - 5), COUNTER_COLOUR)
    for t in tracks:
        colour = _bgr(t.track_id)
        corner1, corner2 = (int(t.xmin), int(t.ymin)), (int(t.xmax), int(t.ymax))
        cv2.rectangle(image, corner1, corner2, colour, 2 if t.detected else 1)
        _text(
            image, f"#{t.track_id} {class_name(categories, t.class_id)}", (corner1[0], max(10, corner1[1] - 3)), colour
        )
    for i, text in enumerate(counts_text):
        _text(image, text, (5, 14 + 14 * i), (255, 255, 255))


COUNTER_COLOUR = (0, 255, 255)  # BGR yellow, drawn over black: visible on any background


def _point(xy) -> tuple[int, int]:
    return int(round(xy[0])), int(round(xy[1]))


def _outlined(draw, *args) -> None:
    """``draw(*args, colour, thickness)`` black and wide, then in the counters' colour on top:
    the shape shows on any picture."""
    draw(*args, (0, 0, 0), 4)
    draw(*args, COUNTER_COLOUR, 2)


def _text(image: np.ndarray, text: str, at: tuple[int, int], colour: tuple[int, int, int]) -> None:
    cv2.putText(image, text, at, cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3)
    cv2.putText(image, text, at, cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1)


def named_counts(counts: Mapping, categories: Mapping[int, str]) -> dict:
    """The counter's totals keyed by class name, every class of the label map present (and an
    id the label map lacks under its number, as in events.csv)."""
    return {
        name: {
            direction: {class_name(categories, c): int(per_class.get(c, 0)) for c in sorted({*categories, *per_class})}
            for direction, per_class in directions.items()
        }
        for name, directions in counts.items()
    }


def counts_lines(counts: Mapping) -> list[str]:
    """One line of overlay text per counter: ``middle: in 3  out 1``."""
    return [f"{name}: in {sum(d['in'].values())}  out {sum(d['out'].values())}" for name, d in counts.items()]


def track_video(
    detector,
    categories: Mapping[int, str],
    source: VideoSource,
    *,
    settings: TrackSettings,
    out_dir: Path,
    samples_dir: Path,
    write_video: bool = True,
) -> TrackResult:
    """Run detection, tracking and counting over ``source``; write tracks, events, counts and
    (unless ``write_video`` is false) the annotated video into ``out_dir``, and the annotated
    frames of the first few counts into ``samples_dir``. The source is closed in any case."""
    with source:
        if settings.frame_stride < 1:
            raise ValueError(f"track.frame_stride must be 1 or more, not {settings.frame_stride}")
        out_dir.mkdir(parents=True, exist_ok=True)
        follow = TrackAndCount.from_settings(settings, source.width, source.height)
        counters, counter = follow.counter.counters, follow.counter
        per_call = detector.images_per_call
        writer = None
        if write_video:
            writer = open_writer(
                out_dir / video_name("annotated", settings.codec),
                source.fps,
                source.width,
                source.height,
                settings.codec,
            )
        samples_dir.mkdir(parents=True, exist_ok=True)
        result, seen_ids, samples = TrackResult(video_fps=source.fps), set(), 0
        started = time.perf_counter()
        progress = tqdm(total=source.estimated_frames, unit="frame", desc="track", mininterval=2)
        try:
            with (out_dir / "tracks.csv").open("w", newline="") as tracks_file:
                mot = csv.writer(tracks_file)
                for group in detection_groups(source, settings.frame_stride, per_call):
                    detected = [f for f in group if is_detected(f.index, settings.frame_stride)]
                    images = [rgb_tensor(f.image) for f in detected]
                    found = detect_batch(detector, images, settings.min_score) if images else []
                    by_index = {f.index: d for f, d in zip(detected, found, strict=True)}
                    for frame in group:
                        tracked, events = follow.step(frame.index, frame.time, by_index.get(frame.index))
                        mot.writerows(mot_row(frame.index, t) for t in tracked)
                        seen_ids.update(t.track_id for t in tracked)
                        result.events += events
                        sample = bool(events) and samples < SAMPLE_FRAMES
                        if writer is not None or sample:
                            draw_frame(frame.image, tracked, counters, counts_lines(counter.counts), categories)
                        if writer is not None:
                            writer.write(frame.image)
                        if sample:
                            cv2.imwrite(str(samples_dir / f"frame_{frame.index:06d}.jpg"), frame.image)
                            samples += 1
                        result.frames = frame.index
                        progress.update(1)
                    result.detected_frames += len(detected)
        except StreamStalled as err:  # what was read is still tracked, counted and written
            result.stalled = str(err)
            log.warning("%s", err)
        finally:
            progress.close()
            if writer is not None:
                writer.release()
        result.events += follow.finish()
        result.seconds = time.perf_counter() - started
        result.tracks = len(seen_ids)
        result.counts = named_counts(counter.counts, categories)
        result.counts_by_mode = {mode: named_counts(c, categories) for mode, c in follow.counts_by_mode.items()}
        result.stream_ended = is_stream(source.name) and result.stalled is None
        if result.stream_ended:
            log.warning("%s: the stream ended after %d frames; results cover those frames", source.name, result.frames)
        elif source.estimated_frames and result.frames < 0.9 * source.estimated_frames and not result.stalled:
            log.warning(
                "%s: %d frames decoded where the header announced %d: the file may be truncated or damaged",
                source.name,
                result.frames,
                source.estimated_frames,
            )
        write_csv([event_row(e, categories) for e in result.events], EVENT_COLUMNS, out_dir / "events.csv")
        write_json({"counts": result.counts, **result.summary()}, out_dir / "counts.json")
        return result


def event_row(event: Event, categories: Mapping[int, str]) -> dict:
    return {
        "frame": event.frame,
        "time": round(event.time, 3),
        "line": event.counter,
        "track": event.track_id,
        "class": class_name(categories, event.class_id),
        "direction": event.direction,
        "change": event.change,
    }


def parse_line(text: str) -> dict:
    """``--line name:x1,y1,x2,y2`` as a line's config entry."""
    name, _, coords = text.partition(":")
    values = [float(v) for v in coords.split(",")] if coords else []
    if not name or len(values) != 4:
        raise argparse.ArgumentTypeError(f"{text!r}: a line is NAME:X1,Y1,X2,Y2 in pixels")
    return {"name": name, "start": values[:2], "end": values[2:]}


def parse_zone(text: str) -> dict:
    """``--zone name:x1,y1,x2,y2,x3,y3,...`` as a zone's config entry."""
    name, _, coords = text.partition(":")
    values = [float(v) for v in coords.split(",")] if coords else []
    if not name or len(values) < 6 or len(values) % 2:
        raise argparse.ArgumentTypeError(f"{text!r}: a zone is NAME:X1,Y1,X2,Y2,X3,Y3[,...] in pixels")
    return {"name": name, "points": [values[i : i + 2] for i in range(0, len(values), 2)]}


def parse_param(text: str) -> tuple[str, Any]:
    """``--param key=value``, the value read as YAML (numbers, true/false) like a config file."""
    key, sep, value = text.partition("=")
    if not key or not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: a tracker parameter is KEY=VALUE")
    return key, yaml.safe_load(value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="odpipe track", description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path, help="an exported model folder (models/export)")
    parser.add_argument("source", help="a video file, a folder of frames, or a stream URL")
    parser.add_argument("--out", type=Path, default=Path("tracked"), help="output folder (default: tracked)")
    parser.add_argument("--method", choices=sorted(TRACKERS), default=TrackSettings.method)
    parser.add_argument(
        "--param",
        type=parse_param,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a parameter of the tracker, as in conf/config.yaml's track.<method> (repeatable)",
    )
    parser.add_argument("--stride", type=int, default=1, help="detect every n-th frame; the tracker predicts between")
    parser.add_argument("--min-score", type=float, default=TrackSettings.min_score)
    parser.add_argument("--line", type=parse_line, action="append", default=[], help="NAME:X1,Y1,X2,Y2 (repeatable)")
    parser.add_argument("--zone", type=parse_zone, action="append", default=[], help="NAME:X1,Y1,...,Xn,Yn")
    parser.add_argument(
        "--mode",
        choices=MODES,
        default=TrackSettings.mode,
        help="net: a track counts at most once, where it ended up (default); every: each crossing",
    )
    parser.add_argument("--anchor", choices=ANCHORS, default=TrackSettings.anchor)
    parser.add_argument("--margin", type=float, default=TrackSettings.margin, help="dead band around lines, px")
    parser.add_argument("--min-frames", type=int, default=TrackSettings.min_frames)
    parser.add_argument(
        "--rejoin",
        type=float,
        default=TrackSettings.rejoin,
        help="seconds a track lost mid-picture may be continued by a new id appearing there (0: off)",
    )
    parser.add_argument(
        "--fps", type=float, default=DEFAULT_FPS, help="frame rate of a folder of frames, or of a video without one"
    )
    parser.add_argument(
        "--read-timeout",
        type=float,
        default=TrackSettings.read_timeout,
        help="seconds before a silent stream is reported stalled (exit status 1, what was read is kept)",
    )
    parser.add_argument("--codec", default=TrackSettings.codec, help="fourcc of the annotated video (mp4v, MJPG)")
    parser.add_argument("--no-video", action="store_true", help="skip the annotated video")
    args = parser.parse_args(argv)
    if not (args.model_dir / "saved_model").is_dir():
        parser.error(f"{args.model_dir}: no saved_model/ inside; pass the export stage's folder")
    settings = TrackSettings(
        method=args.method,
        tracker=dict(args.param),
        frame_stride=args.stride,
        min_score=args.min_score,
        anchor=args.anchor,
        margin=args.margin,
        min_frames=args.min_frames,
        rejoin=args.rejoin,
        mode=args.mode,
        lines=args.line,
        zones=args.zone,
        codec=args.codec,
        read_timeout=args.read_timeout,
    )
    try:
        # The model first: a stream opened before TensorFlow's start-up would sit unread meanwhile.
        detector, categories = load_detector(args.model_dir), read_label_map(args.model_dir / LABEL_MAP_NAME)
        source = VideoSource(args.source, default_fps=args.fps, read_timeout=args.read_timeout)
        result = track_video(
            detector,
            categories,
            source,
            settings=settings,
            out_dir=args.out,
            samples_dir=args.out / "frames",
            write_video=not args.no_video,
        )
    except (VideoError, ValueError, OSError, tf.errors.OpError) as err:
        print(f"odpipe track: {err}", file=sys.stderr)
        return 2
    summary = result.summary()
    print(
        f"{summary['frames']} frame(s), {summary['tracks']} track(s), {summary['events']} count(s) at "
        f"{summary['frames_per_second']} frames/s -> {args.out}"
    )
    return 1 if result.stalled else 0


if __name__ == "__main__":
    sys.exit(main())
