"""pipeline_config: the base model's pipeline.config with odpipe's settings (and, with
``pipeline_config.anchors=fit``, anchors fitted to the train boxes), validated (the model builds,
and its fine-tune checkpoint restores) before anything trains."""

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from odpipe.core.files import write_json
from odpipe.core.runtime import stage
from odpipe.data.records import shard_pattern
from odpipe.detect.anchors import read_box_shapes, set_anchors, summary_line
from odpipe.detect.backbones import check_backbone_init
from odpipe.detect.base_model import PIPELINE_CONFIG, checkpoint_prefix
from odpipe.detect.label_map import read_label_map
from odpipe.detect.pipeline_config import PipelineSettings, apply_settings, load_pipeline, validate, write_pipeline

log = logging.getLogger(__name__)


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
    check_backbone_init(config, cfg.model.backbone_init)  # train uses it; refused here, before any work
    shapes = read_box_shapes(Path(cfg.paths.convert) / "train.csv")
    config, anchors = set_anchors(config, shapes, cfg.pipeline_config.anchors, cfg.pipeline_config.anchor_clusters)
    validate(config)
    write_pipeline(config, Path(cfg.paths.pipeline_config))
    write_json(anchors, cfg.paths.anchors)
    log.info("%s (%s)", summary_line(anchors), cfg.paths.anchors)


if __name__ == "__main__":
    main()
