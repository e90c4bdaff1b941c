"""export: the selected checkpoint to a self-contained SavedModel folder, and to TFLite when
export.formats has it."""

from pathlib import Path

from omegaconf import DictConfig

from odpipe.core.runtime import stage
from odpipe.detect.detectors import FORMAT_PATHS
from odpipe.detect.export import calibration_images, check_formats, export_model
from odpipe.detect.pipeline_config import load_pipeline
from odpipe.detect.tflite import check_supported, export_tflite
from odpipe.engine.checkpoints import publishing


@stage("export")
def main(cfg: DictConfig) -> None:
    check_formats(cfg.export.formats)
    config = load_pipeline(Path(cfg.paths.pipeline_config))
    tflite = "tflite" in cfg.export.formats
    if tflite:
        check_supported(config)  # before the SavedModel's minute of work
    with publishing(Path(cfg.paths.export)) as out:  # a killed export leaves no half a model
        export_model(
            pipeline_config=Path(cfg.paths.pipeline_config),
            checkpoint_dir=Path(cfg.paths.train),
            label_map=Path(cfg.paths.label_map),
            out_dir=out,
            input_type=cfg.export.input_type,
        )
        if tflite:
            export_tflite(
                config,
                checkpoint_dir=out / "checkpoint",
                out_file=out / FORMAT_PATHS["tflite"],
                quantize=cfg.export.tflite.quantize,
                calibration_images=calibration_images(
                    Path(cfg.paths.convert) / "train.csv",
                    Path(cfg.paths.clean_images),
                    cfg.export.tflite.calibration_images,
                ),
            )


if __name__ == "__main__":
    main()
