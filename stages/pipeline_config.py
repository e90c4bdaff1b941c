"""pipeline_config: the base model's pipeline.config with odpipe's settings, validated (the model
builds, and its fine-tune checkpoint restores) before anything trains."""

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from odpipe.base_model import PIPELINE_CONFIG, checkpoint_prefix
from odpipe.label_map import read_label_map
from odpipe.pipeline_config import PipelineSettings, apply_settings, load_pipeline, validate, write_pipeline
from odpipe.runtime import stage
from odpipe.tfrecord import shard_pattern


@stage("pipeline_config")
def main(cfg: DictConfig) -> None:
    base = Path(cfg.paths.base_model)
    online = OmegaConf.to_container(cfg.augment.online) if cfg.augment.online is not None else None
    settings = PipelineSettings(
        num_classes=len(read_label_map(Path(cfg.paths.label_map))),
        batch_size=cfg.train.batch_size,
        num_steps=cfg.train.num_steps,
        max_detections=cfg.pipeline_config.max_detections,
        nms_iou_threshold=cfg.pipeline_config.nms_iou_threshold,
        label_map_path=cfg.paths.label_map,
        train_input=shard_pattern(cfg.paths.tfrecord, "train"),
        eval_input=shard_pattern(cfg.paths.tfrecord, "val"),
        image_size=cfg.model.image_size,
        depth_multiplier=cfg.model.depth_multiplier,
        learning_rate=cfg.train.learning_rate,
        warmup_steps=cfg.train.warmup_steps,
        fine_tune_checkpoint=str(checkpoint_prefix(base)) if cfg.model.fine_tune else None,
        fine_tune_checkpoint_type=cfg.model.fine_tune_checkpoint_type,
        augmentation=tuple(online) if online is not None else None,
    )
    config = apply_settings(load_pipeline(base / PIPELINE_CONFIG), settings)
    validate(config)
    write_pipeline(config, Path(cfg.paths.pipeline_config))


if __name__ == "__main__":
    main()
