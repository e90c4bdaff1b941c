"""export: the trained checkpoint to a self-contained SavedModel folder."""

from pathlib import Path

from omegaconf import DictConfig

from odpipe.export import export_model
from odpipe.files import fresh_dir
from odpipe.runtime import stage


@stage("export")
def main(cfg: DictConfig) -> None:
    export_model(
        pipeline_config=Path(cfg.paths.pipeline_config),
        checkpoint_dir=Path(cfg.paths.train),
        label_map=Path(cfg.paths.label_map),
        out_dir=fresh_dir(cfg.paths.export),
        input_type=cfg.export.input_type,
    )


if __name__ == "__main__":
    main()
