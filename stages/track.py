"""track: the exported model over the video: tracks, line counts and an annotated video; scored
against the ground truth when the video has one (MOTA, IDF1, ID switches, count error)."""

import logging
from pathlib import Path

from omegaconf import DictConfig

from odpipe.core.files import fresh_dir, write_json
from odpipe.core.runtime import stage
from odpipe.detect.detectors import load_detector
from odpipe.detect.export import LABEL_MAP_NAME
from odpipe.detect.label_map import read_label_map
from odpipe.video.io import VideoSource
from odpipe.video.metrics import count_report, mot_metrics, read_mot
from odpipe.video.sources import load, true_counts
from odpipe.video.track import TrackSettings, track_video

log = logging.getLogger(__name__)


@stage("track")
def main(cfg: DictConfig) -> None:
    out, samples = fresh_dir(cfg.paths.track), fresh_dir(cfg.paths.track_frames)
    prepared = load(Path(cfg.paths.video))
    if prepared is None:
        log.info("video.source is none: nothing to track")
        write_json({}, cfg.paths.track_report)
        return
    export_dir = Path(cfg.paths.export)
    settings = TrackSettings.from_config(cfg.track, cfg.video.lines, cfg.video.zones)
    result = track_video(
        load_detector(export_dir),
        read_label_map(export_dir / LABEL_MAP_NAME),
        VideoSource(prepared.video, default_fps=prepared.fps, read_timeout=settings.read_timeout),
        settings=settings,
        out_dir=out,
        samples_dir=samples,
    )
    report = result.summary()
    if prepared.ground_truth is not None:
        report |= mot_metrics(read_mot(prepared.ground_truth), read_mot(out / "tracks.csv"), result.frames)
    if prepared.counts is not None:
        report |= count_report(result.counts_by_mode, true_counts(prepared.counts, settings.mode), settings.mode)
    log.info("track: %s", {k: round(v, 3) if isinstance(v, float) else v for k, v in report.items()})
    write_json(report, cfg.paths.track_report)


if __name__ == "__main__":
    main()
