"""Video tracking: what tracking and counting cost on top of detection, what the frame stride buys,
and how ``bytetrack`` and the course's ``centroid`` tracker score with the same detector.

On the built-in video (rendered from the composed config) and the exported model (``make repro``
first), side by side in one run:
- frames/s of detection alone against detection + tracking + counting on the same decoded
  frames (goal: tracking and counting add <= 10%), best of ``--repeats``;
- the whole ``track_video`` (decoding thread, drawing, writing the annotated video) at frame
  strides 1, 2 and 3: frames/s against stride 1, with MOTA, IDF1 and the count error;
- ``bytetrack`` against ``centroid``: MOTA, IDF1, ID switches, count error.
Usage: python benchmarks/track_speed.py [--model DIR] [--repeats N] [hydra overrides ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from harness.runs import ROOT, exported_model

from odpipe.core.runtime import compose_config
from odpipe.detect.detectors import load_detector
from odpipe.detect.evaluate import detect_batch
from odpipe.detect.export import LABEL_MAP_NAME
from odpipe.detect.label_map import read_label_map
from odpipe.video.io import VideoSource
from odpipe.video.metrics import count_report, mot_metrics, read_mot
from odpipe.video.sources import true_counts
from odpipe.video.synthetic import VideoSpec, render_video, write_truth
from odpipe.video.track import TrackAndCount, TrackSettings, rgb_tensor, track_video


def detect_frames(detector, frames: list, min_score: float) -> tuple[float, list]:
    """Seconds to detect every frame, one model call each, and the detections."""
    start = time.perf_counter()
    found = [detect_batch(detector, [rgb_tensor(f.image)], min_score)[0] for f in frames]
    return time.perf_counter() - start, found


def detect_track_count(detector, frames: list, settings: TrackSettings, width: int, height: int) -> float:
    """Seconds for the same frames with every detection tracked and counted as it comes."""
    follow = TrackAndCount.from_settings(settings, width, height)
    start = time.perf_counter()
    for frame in frames:
        found = detect_batch(detector, [rgb_tensor(frame.image)], settings.min_score)[0]
        follow.step(frame.index, frame.time, found)
    follow.finish()
    return time.perf_counter() - start


def track_count(detections: list, frames: list, settings: TrackSettings, width: int, height: int) -> float:
    """Seconds to track and count detections already made: the cost on its own, free of the
    detector's run-to-run noise, which on a busy machine can exceed the whole cost measured."""
    follow = TrackAndCount.from_settings(settings, width, height)
    start = time.perf_counter()
    for frame, found in zip(frames, detections, strict=True):
        follow.step(frame.index, frame.time, found)
    follow.finish()
    return time.perf_counter() - start


def scored(result, out: Path, truth_dir: Path, mode: str) -> dict[str, float]:
    metrics = mot_metrics(read_mot(truth_dir / "gt.csv"), read_mot(out / "tracks.csv"), result.frames)
    counted = count_report(result.counts_by_mode, true_counts(truth_dir / "counts.json", mode), mode)
    return {**metrics, "count_error": counted["count_error"]}


def shown(value: float | None, spec: str) -> str:
    """A metric in a fixed-width column; undefined ones (no tracks at all) as n/a."""
    width = int(spec.split(".")[0])
    return "n/a".rjust(width) if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="exported model (default: paths.export)")
    parser.add_argument("--repeats", type=int, default=3)
    args, overrides = parser.parse_known_args()
    cfg = compose_config(ROOT, overrides)
    model = exported_model(cfg, args.model)
    detector = load_detector(model)
    categories = read_label_map(model / LABEL_MAP_NAME)
    base = TrackSettings.from_config(cfg.track, cfg.video.lines, cfg.video.zones)
    with tempfile.TemporaryDirectory(prefix="odpipe-track-") as tmp:
        work = Path(tmp)
        spec = VideoSpec.from_config({**cfg.video, "classes": list(cfg.dataset.classes)})
        write_truth(render_video(spec, work / "video.mp4"), work / "gt.csv", work / "counts.json")
        with VideoSource(work / "video.mp4") as source:
            frames = list(source)
        detect_frames(detector, frames[:5], base.min_score)  # graph warm-up, not timed

        alone, full, own = [], [], []
        for _ in range(args.repeats):  # interleaved, so that machine noise hits both alike
            seconds, detections = detect_frames(detector, frames, base.min_score)
            alone.append(seconds)
            full.append(detect_track_count(detector, frames, base, spec.width, spec.height))
            own.append(track_count(detections, frames, base, spec.width, spec.height))
        print(f"{len(frames)} frames {spec.width}x{spec.height}, best of {args.repeats}")
        print(f"  detection alone                {len(frames) / min(alone):7.1f} frames/s")
        print(f"  detection + tracking + counts  {len(frames) / min(full):7.1f} frames/s")
        print(f"  tracking and counting add {min(full) / min(alone) - 1:+.1%} (goal <= +10%)")
        print(
            f"  tracking and counting alone {1000 * min(own) / len(frames):.2f} ms/frame, "
            f"{min(own) / min(alone):.1%} of detection's time"
        )

        print("whole track_video (decoding thread, drawing, annotated video), bytetrack:")
        rows, reference = [], None
        for method, stride in (("bytetrack", 1), ("bytetrack", 2), ("bytetrack", 3), ("centroid", 1)):
            settings = TrackSettings.from_config(
                {**cfg.track, "method": method, "frame_stride": stride}, cfg.video.lines, cfg.video.zones
            )
            out = work / f"{method}-{stride}"
            result = track_video(
                detector,
                categories,
                VideoSource(work / "video.mp4"),
                settings=settings,
                out_dir=out,
                samples_dir=out / "frames",
            )
            fps = result.frames / result.seconds
            reference = reference or fps
            rows.append((method, stride, fps, fps / reference, scored(result, out, work, settings.mode)))
        print(
            f"  {'method':10s} {'stride':>6s} {'frames/s':>9s} {'vs 1':>6s} {'MOTA':>6s} {'IDF1':>6s} "
            f"{'switches':>8s} {'count err':>9s}"
        )
        for method, stride, fps, ratio, m in rows:
            print(
                f"  {method:10s} {stride:6d} {fps:9.1f} {ratio:5.2f}x {shown(m['mota'], '6.3f')} "
                f"{shown(m['idf1'], '6.3f')} {shown(m['id_switches'], '8.0f')} {shown(m['count_error'], '9.1%')}"
            )


if __name__ == "__main__":
    main()
