from __future__ import annotations

from pathlib import Path

import pytest

from odpipe.pipeline_config import PipelineSettings, apply_settings, load_pipeline, validate, write_pipeline

from .conftest import ROOT

BASE = ROOT / "conf" / "model" / "base" / "ssd_mobilenet_v2_small.config"


def _settings(**changes) -> PipelineSettings:
    values = dict(
        num_classes=5,
        image_size=96,
        batch_size=4,
        num_steps=300,
        learning_rate=0.05,
        warmup_steps=50,
        max_detections=20,
        nms_iou_threshold=0.5,
        label_map_path="lm.pbtxt",
        train_input="tf/train-?????-of-?????.tfrecord",
        eval_input="tf/val-?????-of-?????.tfrecord",
    )
    values.update(changes)
    return PipelineSettings(**values)


def test_settings_land_in_the_proto_and_the_model_builds(tmp_path: Path) -> None:
    config = apply_settings(load_pipeline(BASE), _settings())
    validate(config)
    write_pipeline(config, tmp_path / "pipeline.config")
    reread = load_pipeline(tmp_path / "pipeline.config")
    ssd = reread.model.ssd
    assert ssd.num_classes == 5
    assert ssd.image_resizer.fixed_shape_resizer.height == 96
    assert ssd.post_processing.batch_non_max_suppression.max_total_detections == 20
    assert reread.train_config.batch_size == 4 and reread.train_config.num_steps == 300
    cosine = reread.train_config.optimizer.momentum_optimizer.learning_rate.cosine_decay_learning_rate
    assert (cosine.learning_rate_base, cosine.total_steps, cosine.warmup_steps) == (pytest.approx(0.05), 300, 50)
    assert list(reread.train_input_reader.tf_record_input_reader.input_path) == ["tf/train-?????-of-?????.tfrecord"]
    assert reread.eval_input_reader[0].label_map_path == "lm.pbtxt"
    assert not reread.train_config.fine_tune_checkpoint


def test_warmup_never_exceeds_the_run_and_checkpoint_is_set_when_given() -> None:
    config = apply_settings(
        load_pipeline(BASE), _settings(num_steps=20, warmup_steps=300, fine_tune_checkpoint="m/ckpt-0")
    )
    cosine = config.train_config.optimizer.momentum_optimizer.learning_rate.cosine_decay_learning_rate
    assert cosine.warmup_steps == 20
    assert config.train_config.fine_tune_checkpoint == "m/ckpt-0"
    assert config.train_config.fine_tune_checkpoint_type == "detection"


def test_a_broken_base_config_names_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.config"
    broken.write_text("model { ssd { num_classes: three } }")
    with pytest.raises(ValueError, match="broken.config"):
        load_pipeline(broken)
