"""video: the video the track stage runs on, rendered (built-in, with ground truth) or copied."""

from omegaconf import DictConfig

from odpipe.core.files import fresh_dir
from odpipe.core.runtime import stage
from odpipe.video.sources import prepare


@stage("video")
def main(cfg: DictConfig) -> None:
    prepare(cfg.video, cfg.dataset.classes, fresh_dir(cfg.paths.video))


if __name__ == "__main__":
    main()
