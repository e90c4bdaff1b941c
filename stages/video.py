"""video: the video the track stage runs on, rendered (built-in, with ground truth) or copied."""

from omegaconf import DictConfig

from odpipe.files import fresh_dir
from odpipe.runtime import stage
from odpipe.video_sources import prepare


@stage("video")
def main(cfg: DictConfig) -> None:
    prepare(cfg.video, cfg.dataset.classes, fresh_dir(cfg.paths.video))


if __name__ == "__main__":
    main()
