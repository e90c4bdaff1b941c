"""pipeline_config: the model's base pipeline.config with odpipe's settings, validated."""

from pathlib import Path

from omegaconf import DictConfig

from odpipe.label_map import read_label_map
from odpipe.pipeline_config import PipelineSettings, apply_settings, load_pipeline, validate, write_pipeline
from odpipe.runtime import stage
from odpipe.tfrecord import shard_pattern


@stage("pipeline_config")
def main(cfg: DictConfig) -> None:
    settings = PipelineSettings(
        num_classes=len(read_label_map(Path(cfg.paths.label_map))),
        image_size=cfg.model.image_size,
        batch_size=cfg.train.batch_size,
        num_steps=cfg.train.num_steps,
        learning_rate=cfg.train.learning_rate,
        warmup_steps=cfg.train.warmup_steps,
        max_detections=cfg.pipeline_config.max_detections,
        nms_iou_threshold=cfg.pipeline_config.nms_iou_threshold,
        label_map_path=cfg.paths.label_map,
        train_input=shard_pattern(cfg.paths.tfrecord, "train"),
        eval_input=shard_pattern(cfg.paths.tfrecord, "val"),
        fine_tune_checkpoint=cfg.model.fine_tune_checkpoint,
        fine_tune_checkpoint_type=cfg.model.fine_tune_checkpoint_type,
    )
    config = apply_settings(load_pipeline(Path(cfg.model.base_config)), settings)
    validate(config)
    write_pipeline(config, Path(cfg.paths.pipeline_config))


if __name__ == "__main__":
    main()
