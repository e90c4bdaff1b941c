"""export: the selected checkpoint to a self-contained SavedModel folder."""

from pathlib import Path

from omegaconf import DictConfig

from odpipe.checkpoints import publishing
from odpipe.export import export_model
from odpipe.runtime import stage


@stage("export")
def main(cfg: DictConfig) -> None:
    with publishing(Path(cfg.paths.export)) as out:  # a killed export leaves no half a model
        export_model(
            pipeline_config=Path(cfg.paths.pipeline_config),
            checkpoint_dir=Path(cfg.paths.train),
            label_map=Path(cfg.paths.label_map),
            out_dir=out,
            input_type=cfg.export.input_type,
        )


if __name__ == "__main__":
    main()
