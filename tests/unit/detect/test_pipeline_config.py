from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from odpipe.detect.pipeline_config import (
    CheckpointError,
    apply_settings,
    architecture,
    build_model,
    load_pipeline,
    restore_fine_tune_checkpoint,
    validate,
    write_pipeline,
)
from tests.conftest import ROOT, pipeline_settings

BASE = ROOT / "conf" / "model" / "base" / "ssd_mobilenet_v2_small.config"
CENTERNET_MOBILENET = ROOT / "conf" / "model" / "base" / "centernet_mobilenet_v2_fpn_small.config"
ZOO_LIKE = ROOT / "tests" / "data" / "pipeline_configs"


def test_settings_land_in_the_proto_and_the_model_builds(tmp_path: Path) -> None:
    config = apply_settings(load_pipeline(BASE), pipeline_settings())
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


def test_depth_multiplier_widens_an_ssd_backbone_and_is_refused_elsewhere() -> None:
    config = apply_settings(load_pipeline(BASE), pipeline_settings(depth_multiplier=0.5))
    assert config.model.ssd.feature_extractor.depth_multiplier == pytest.approx(0.5)
    validate(config)
    for name in ("faster_rcnn_resnet50", "centernet_resnet50_fpn_kpts"):  # their builders would ignore it
        with pytest.raises(ValueError, match="SSD and CenterNet MobileNetV2 models only, not this .*resnet"):
            apply_settings(load_pipeline(ZOO_LIKE / f"{name}.config"), pipeline_settings(depth_multiplier=0.5))


def test_depth_multiplier_sets_the_width_of_a_centernet_mobilenet_v2() -> None:
    base = load_pipeline(CENTERNET_MOBILENET)
    widths = {}
    for multiplier in (0.35, 1.0):
        config = apply_settings(base, pipeline_settings(num_classes=3, depth_multiplier=multiplier))
        assert config.model.center_net.feature_extractor.depth_multiplier == pytest.approx(multiplier)
        backbone = build_model(config)._feature_extractor.classification_backbone
        widths[multiplier] = backbone.get_layer("block_16_project").output.shape[-1]
    assert widths == {0.35: 112, 1.0: 320}  # MobileNetV2's last block: 320 channels times the multiplier


def test_warmup_never_exceeds_the_run_and_checkpoint_is_set_when_given() -> None:
    config = apply_settings(
        load_pipeline(BASE), pipeline_settings(num_steps=20, warmup_steps=300, fine_tune_checkpoint="m/ckpt-0")
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


# Each zoo-shaped config: where its num_classes lives, and the input size its resizer gets.
ARCHITECTURES = {
    "ssd_mobilenet_v2_fpnlite": "ssd",
    "efficientdet_d0": "ssd",
    "faster_rcnn_resnet50": "faster_rcnn",
    "centernet_resnet50_fpn_kpts": "center_net",
}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_each_architecture_is_edited_where_it_keeps_things_and_builds(name: str) -> None:
    base = load_pipeline(ZOO_LIKE / f"{name}.config")
    config = apply_settings(
        base, pipeline_settings(num_classes=3, image_size=256, learning_rate=None, warmup_steps=None)
    )
    arch = architecture(config)
    assert arch == ARCHITECTURES[name]
    model = getattr(config.model, arch)
    assert model.num_classes == 3
    resizer = model.image_resizer
    if resizer.HasField("fixed_shape_resizer"):
        assert (resizer.fixed_shape_resizer.height, resizer.fixed_shape_resizer.width) == (256, 256)
    else:
        assert (resizer.keep_aspect_ratio_resizer.min_dimension, resizer.keep_aspect_ratio_resizer.max_dimension) == (
            256,
            256,
        )
    if arch == "center_net":
        assert model.object_center_params.max_box_predictions == 20
        assert not model.keypoint_estimation_task and not model.keypoint_label_map_path
        assert not config.train_input_reader.num_keypoints and not config.eval_config.keypoint_edge
    else:
        post = model.post_processing if arch == "ssd" else model.second_stage_post_processing
        nms = post.batch_non_max_suppression
        assert (nms.max_total_detections, nms.iou_threshold) == (20, pytest.approx(0.5))
    train = config.train_config
    assert (train.batch_size, train.num_steps, train.use_bfloat16) == (4, 300, False)
    assert not train.fine_tune_checkpoint
    assert list(config.eval_config.metrics_set) == ["coco_detection_metrics"]
    crops = [s for s in train.data_augmentation_options if s.HasField("random_scale_crop_and_pad_to_square")]
    assert all(s.random_scale_crop_and_pad_to_square.output_size == 256 for s in crops)
    validate(config)  # builds the model and runs a blank image through it


def test_the_zoo_schedule_is_scaled_to_the_run() -> None:
    """A 50000-step recipe at batch 128 becomes a 300-step one at batch 4 with the same shape."""
    fpnlite = apply_settings(
        load_pipeline(ZOO_LIKE / "ssd_mobilenet_v2_fpnlite.config"),
        pipeline_settings(learning_rate=None, warmup_steps=None),
    )
    cosine = fpnlite.train_config.optimizer.momentum_optimizer.learning_rate.cosine_decay_learning_rate
    assert cosine.learning_rate_base == pytest.approx(0.08 * 4 / 128)
    assert cosine.warmup_learning_rate <= cosine.learning_rate_base
    assert (cosine.total_steps, cosine.warmup_steps) == (300, 6)  # 1000/50000 of the run

    rcnn = apply_settings(
        load_pipeline(ZOO_LIKE / "faster_rcnn_resnet50.config"), pipeline_settings(learning_rate=0.01)
    )
    manual = rcnn.train_config.optimizer.momentum_optimizer.learning_rate.manual_step_learning_rate
    assert manual.initial_learning_rate == pytest.approx(0.01)
    assert [(p.step, p.learning_rate) for p in manual.schedule] == [
        (180, pytest.approx(0.001)),
        (240, pytest.approx(0.0001)),
    ]

    centernet = apply_settings(
        load_pipeline(ZOO_LIKE / "centernet_resnet50_fpn_kpts.config"), pipeline_settings(learning_rate=None)
    )
    exponential = centernet.train_config.optimizer.adam_optimizer.learning_rate.exponential_decay_learning_rate
    assert exponential.initial_learning_rate == pytest.approx(0.001 * 4 / 128)
    assert exponential.burnin_learning_rate < exponential.initial_learning_rate
    assert (exponential.decay_steps, exponential.burnin_steps) == (60, 6)


def test_online_augmentation_comes_from_config_or_stays_as_in_the_base() -> None:
    base = load_pipeline(BASE)
    kept = apply_settings(base, pipeline_settings())
    assert kept.train_config.data_augmentation_options == base.train_config.data_augmentation_options

    options = ({"random_horizontal_flip": {}}, {"random_adjust_brightness": {"max_delta": 0.3}})
    config = apply_settings(load_pipeline(BASE), pipeline_settings(augmentation=options))
    steps = config.train_config.data_augmentation_options
    assert [s.WhichOneof("preprocessing_step") for s in steps] == ["random_horizontal_flip", "random_adjust_brightness"]
    assert steps[1].random_adjust_brightness.max_delta == pytest.approx(0.3)

    with pytest.raises(ValueError, match="random_flip_sideways"):
        apply_settings(load_pipeline(BASE), pipeline_settings(augmentation=({"random_flip_sideways": {}},)))


@pytest.fixture(scope="module")
def small_ssd_checkpoint(tmp_path_factory) -> tuple[str, list[np.ndarray]]:
    """A checkpoint saved the way train_loop saves one (``model=`` the detection model), and
    its feature extractor's weights."""
    config = apply_settings(load_pipeline(BASE), pipeline_settings(num_classes=3))
    model = build_model(config)
    prefix = tf.train.Checkpoint(model=model).save(str(tmp_path_factory.mktemp("ckpt") / "ckpt"))
    return prefix, [w.numpy() for w in model._feature_extractor.weights]


def test_a_matching_checkpoint_is_restored_into_the_backbone(small_ssd_checkpoint) -> None:
    prefix, saved = small_ssd_checkpoint
    config = apply_settings(load_pipeline(BASE), pipeline_settings(num_classes=7, fine_tune_checkpoint=prefix))
    validate(config)  # other classes: the detection checkpoint's backbone still fits
    model = build_model(config)
    assert not all(np.array_equal(a, w.numpy()) for a, w in zip(saved, model._feature_extractor.weights, strict=True))
    restore_fine_tune_checkpoint(model, config)
    restored = [w.numpy() for w in model._feature_extractor.weights]
    assert all(np.array_equal(a, b) for a, b in zip(saved, restored, strict=True))


def test_a_checkpoint_of_another_architecture_fails_before_training(small_ssd_checkpoint) -> None:
    prefix, _ = small_ssd_checkpoint
    other = load_pipeline(ZOO_LIKE / "ssd_mobilenet_v2_fpnlite.config")
    config = apply_settings(other, pipeline_settings(image_size=128, fine_tune_checkpoint=prefix))
    with pytest.raises(CheckpointError, match=f"{prefix} does not match this ssd model"):
        validate(config)


def test_a_missing_checkpoint_is_named(tmp_path: Path) -> None:
    config = apply_settings(
        load_pipeline(BASE), pipeline_settings(fine_tune_checkpoint=str(tmp_path / "checkpoint/ckpt-0"))
    )
    with pytest.raises(CheckpointError, match="checkpoint/ckpt-0 is missing"):
        validate(config)
