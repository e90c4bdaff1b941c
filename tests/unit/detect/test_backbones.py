"""Backbone initialisation: the built-in CenterNet MobileNetV2-FPN builds, validates and trains
with no network, at any depth multiplier; ImageNet weights are fetched only when asked for,
inside ``backbone_init("imagenet")``, from Keras' own address (here a real HTTP server on
127.0.0.1 serving a real Keras weights file, or a closed port for a failed download)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from keras.src.applications import mobilenet_v2 as keras_mobilenet_v2
from object_detection import model_lib_v2

from odpipe.core.runtime import compose_config
from odpipe.data.records import shard_pattern
from odpipe.data.synthetic import SyntheticSpec, render_image
from odpipe.detect.backbones import BATCHNORM_MOMENTUM, BackboneDownloadError, backbone_init, check_backbone_init
from odpipe.detect.label_map import class_ids, write_label_map
from odpipe.detect.pipeline_config import (
    PipelineSettings,
    apply_settings,
    architecture,
    build_model,
    load_pipeline,
    validate,
    write_pipeline,
)
from odpipe.detect.records import ImageBoxes, write_tfrecords
from odpipe.devtools.servers import free_port
from tests.conftest import CLASSES, ROOT, RangeHandler, pipeline_settings, serve

CENTERNET = ROOT / "conf" / "model" / "base" / "centernet_mobilenet_v2_fpn_small.config"
SSD = ROOT / "conf" / "model" / "base" / "ssd_mobilenet_v2_small.config"
WEIGHTS_1_0 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


def _settings(**changes) -> PipelineSettings:
    """The built-in model's size: 160 px, batch 16, 6000 steps, the base's own rate."""
    values = dict(num_classes=len(CLASSES), image_size=160, batch_size=16, num_steps=6000, max_detections=100)
    return pipeline_settings(
        **{**values, "learning_rate": None, "warmup_steps": None, "nms_iou_threshold": 0.6, **changes}
    )


def _centernet(**changes):
    return apply_settings(load_pipeline(CENTERNET), _settings(**changes))


def _closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: any fetch from it fails at once."""
    return f"http://127.0.0.1:{free_port()}/"


@pytest.fixture
def keras_home(tmp_path: Path, monkeypatch) -> Path:
    """A fresh ~/.keras (Keras' download cache) and Keras' ImageNet address pointed at a closed
    port: a build that tried to download would fail, and one that did would leave a file here."""
    home = tmp_path / "home"
    (home / ".keras").mkdir(parents=True)  # else Keras caches in /tmp/.keras
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(keras_mobilenet_v2, "BASE_WEIGHT_PATH", _closed_port_url())
    return home / ".keras"


def _backbone_weights(model) -> list[np.ndarray]:
    return [w.numpy() for w in model._feature_extractor.classification_backbone.weights]


def test_the_trap_is_real_keras_itself_would_download(keras_home: Path) -> None:
    """What the OD API's builders ask for at depth multiplier 1.0 fails here: the next test's
    silence is odpipe's doing, not a missing network path."""
    with pytest.raises(Exception, match="URL fetch failure on http://127.0.0.1"):
        tf.keras.applications.MobileNetV2(alpha=1.0, include_top=False, weights="imagenet")


def test_a_full_width_centernet_builds_offline_and_downloads_nothing(keras_home: Path) -> None:
    config = _centernet(depth_multiplier=1.0)
    assert config.model.center_net.feature_extractor.depth_multiplier == 1.0
    validate(config)  # pipeline_config's check, outside any backbone_init block
    with backbone_init("random", config):  # train's default
        build_model(config)
    assert not [p for p in keras_home.rglob("*") if p.is_file()]


def test_the_builtin_centernet_validates_for_three_classes() -> None:
    model_cfg = compose_config(ROOT, ["model=centernet_mobilenet_v2_fpn_small"]).model
    assert (model_cfg.backbone_init, model_cfg.fine_tune, model_cfg.depth_multiplier) == ("random", False, None)
    assert (ROOT / model_cfg.source).resolve() == CENTERNET
    config = _centernet(image_size=model_cfg.image_size, learning_rate=None, warmup_steps=None)
    assert architecture(config) == "center_net"
    center_net = config.model.center_net
    assert center_net.num_classes == 3 and center_net.feature_extractor.type == "mobilenet_v2_fpn"
    assert center_net.feature_extractor.depth_multiplier == 0.5
    assert (
        center_net.image_resizer.fixed_shape_resizer.height,
        center_net.image_resizer.fixed_shape_resizer.width,
    ) == (
        160,
        160,
    )
    cosine = config.train_config.optimizer.adam_optimizer.learning_rate.cosine_decay_learning_rate
    assert cosine.learning_rate_base == pytest.approx(0.005) and cosine.total_steps == 6000
    validate(config)
    # Batch-norm statistics that follow thousands of steps, not the OD API's 300k-step 0.9997.
    backbone = build_model(config)._feature_extractor.classification_backbone
    momenta = {layer.momentum for layer in backbone.layers if type(layer).__name__ == "FreezableBatchNorm"}
    assert momenta == {BATCHNORM_MOMENTUM}


def test_imagenet_is_refused_where_it_cannot_apply() -> None:
    with pytest.raises(ValueError, match="must be one of random, imagenet, got 'pretrained'"):
        check_backbone_init(_centernet(), "pretrained")
    ssd = apply_settings(load_pipeline(SSD), _settings())
    with pytest.raises(ValueError, match=r"ssd_mobilenet_v2_keras' backbone .*supported: center_net with mobilenet_v2"):
        check_backbone_init(ssd, "imagenet")
    with pytest.raises(ValueError, match="no ImageNet weights fit depth multiplier 0.5"):
        check_backbone_init(_centernet(), "imagenet")
    with pytest.raises(ValueError, match="fine-tune checkpoint would overwrite"):
        check_backbone_init(_centernet(depth_multiplier=1.0, fine_tune_checkpoint="zoo/ckpt-0"), "imagenet")
    check_backbone_init(ssd, "random")


def test_a_failed_imagenet_download_says_so_and_suggests_random(keras_home: Path) -> None:
    config = _centernet(depth_multiplier=1.0)
    failed = rf"downloading the ImageNet weights http://127.0.0.1:\d+/{re.escape(WEIGHTS_1_0)} failed \(.*\).*"
    with pytest.raises(BackboneDownloadError, match=failed + "or set model.backbone_init=random"):
        with backbone_init("imagenet", config):
            pytest.fail("entered despite the failed download")


def test_imagenet_weights_are_downloaded_once_and_start_only_the_model_built_inside(
    keras_home: Path, tmp_path: Path, monkeypatch
) -> None:
    served = tmp_path / "served"
    served.mkdir()
    reference = tf.keras.applications.MobileNetV2(alpha=1.0, include_top=False, weights=None)
    reference.save_weights(str(served / WEIGHTS_1_0))  # a real Keras weights file, as Keras publishes them
    expected = [w.numpy() for w in reference.weights]
    config = _centernet(depth_multiplier=1.0)
    with serve(served) as url:
        monkeypatch.setattr(keras_mobilenet_v2, "BASE_WEIGHT_PATH", f"{url}/")
        with backbone_init("imagenet", config):
            assert RangeHandler.requests == ["full"]  # fetched on entry, before any build
            pretrained = _backbone_weights(build_model(config))
        assert RangeHandler.requests == ["full"]  # the build read Keras' cache
    assert (keras_home / "models" / WEIGHTS_1_0).is_file()
    assert len(pretrained) == len(expected)
    assert all(np.array_equal(a, b) for a, b in zip(pretrained, expected, strict=True))
    random = _backbone_weights(build_model(config))  # after the block: random again, cache untouched
    assert not all(np.array_equal(a, b) for a, b in zip(random, expected, strict=True))


def _tiny_tfrecords(out: Path, count: int) -> None:
    ids = class_ids(CLASSES)
    spec = SyntheticSpec(count, CLASSES, 5, 96, 128, 1, 3, 0.2, 0.5, 0.3)
    examples = []
    for index in range(count):
        encoded, ann = render_image(spec, index)
        boxes = tuple((b.xmin, b.ymin, b.xmax, b.ymax) for b in ann.boxes)
        labels = tuple(ids[b.label] for b in ann.boxes)
        examples.append(
            (ImageBoxes(ann.filename, ann.width, ann.height, boxes, labels, tuple(b.label for b in ann.boxes)), encoded)
        )
    write_tfrecords(examples, out / "tf", "train", 1)
    write_label_map(CLASSES, out / "label_map.pbtxt")


def test_the_builtin_centernet_trains_a_few_steps_offline(keras_home: Path, tmp_path: Path) -> None:
    """train_loop itself, as the train stage runs it: a few steps from scratch, finite losses."""
    _tiny_tfrecords(tmp_path, 6)
    settings = _settings(
        image_size=96,
        batch_size=2,
        num_steps=4,
        learning_rate=None,
        warmup_steps=None,
        label_map_path=str(tmp_path / "label_map.pbtxt"),
        train_input=shard_pattern(tmp_path / "tf", "train"),
        eval_input=shard_pattern(tmp_path / "tf", "train"),
    )
    config = apply_settings(load_pipeline(CENTERNET), settings)
    write_pipeline(config, tmp_path / "pipeline.config")
    model_dir = tmp_path / "model"
    with backbone_init("random", config):
        model_lib_v2.train_loop(
            pipeline_config_path=str(tmp_path / "pipeline.config"),
            model_dir=str(model_dir),
            checkpoint_every_n=4,
            num_steps_per_iteration=2,
            record_summaries=False,
        )
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(model_dir)))
    assert reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == 4
    losses = [
        float(tf.make_ndarray(value.tensor))
        for events in (model_dir / "train").glob("events.*")
        for event in tf.compat.v1.train.summary_iterator(str(events))
        for value in event.summary.value
        if value.tag == "Loss/total_loss"
    ]
    assert losses and all(np.isfinite(losses))
    assert not [p for p in keras_home.rglob("*") if p.is_file()]
