"""Segmentation networks: the course's U-Net layout, DeepLabV3+ on MobileNetV2, pixels in and
float32 logits out at the input's size (mixed precision included), clear errors."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tensorflow as tf

from odpipe.segment.models import HIGH_LEVEL_LAYER, LOW_LEVEL_LAYER, STRIDE, build_model, padded_size

TINY_UNET = {"base_filters": 4, "depth": 2}
TINY_DEEPLAB = {"alpha": 0.35}


def _layers(model: tf.keras.Model, kind: type) -> list[tf.keras.layers.Layer]:
    return [layer for layer in model.layers if isinstance(layer, kind)]


@pytest.fixture
def mixed_precision() -> Iterator[None]:
    tf.keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")


def test_padded_size_rounds_each_side_up_to_the_stride() -> None:
    assert STRIDE == 32
    assert padded_size(1, 32) == (32, 32)
    assert padded_size(33, 95) == (64, 96)
    assert padded_size(1024, 2047) == (1024, 2048)


def test_unet_default_is_the_course_layout() -> None:
    """16 filters doubled over 4 levels to a 256-filter bottleneck, two 3x3 convolutions with
    BatchNorm per level, 3x3 stride-2 transposed convolutions, concatenated skips."""
    model = build_model("unet", 3, {})
    convs = [layer for layer in _layers(model, tf.keras.layers.Conv2D) if layer.name != "logits"]
    plain = [layer for layer in convs if not isinstance(layer, tf.keras.layers.Conv2DTranspose)]
    levels = [16, 32, 64, 128, 256, 128, 64, 32, 16]  # down, bottleneck, up
    assert [layer.filters for layer in plain] == [filters for filters in levels for _ in range(2)]
    assert {layer.kernel_size for layer in plain} == {(3, 3)}
    ups = _layers(model, tf.keras.layers.Conv2DTranspose)
    assert [(u.filters, u.kernel_size, u.strides) for u in ups] == [(f, (3, 3), (2, 2)) for f in (128, 64, 32, 16)]
    assert len(_layers(model, tf.keras.layers.Concatenate)) == len(_layers(model, tf.keras.layers.MaxPooling2D)) == 4
    assert len(_layers(model, tf.keras.layers.BatchNormalization)) == len(plain)
    assert {layer.rate for layer in _layers(model, tf.keras.layers.Dropout)} == {0.1}


def test_tiny_unet_gives_float32_logits_at_the_input_size() -> None:
    model = build_model("unet", 5, {**TINY_UNET, "batch_norm": False})
    assert not _layers(model, tf.keras.layers.BatchNormalization)
    assert [u.filters for u in _layers(model, tf.keras.layers.Conv2DTranspose)] == [8, 4]
    logits = model(np.full((2, 64, 96, 3), 255, np.float32))
    assert logits.shape == (2, 64, 96, 5) and logits.dtype == tf.float32
    scaled = tf.keras.Model(model.input, model.layers[1].output)(np.full((1, 32, 32, 3), 255, np.float32))
    np.testing.assert_allclose(scaled, 1.0)  # pixels 0-255 in, scaled inside the model


def test_deeplabv3plus_features_at_strides_4_and_16_and_any_size_in_a_graph() -> None:
    model = build_model("deeplabv3plus", 4, {**TINY_DEEPLAB, "atrous_rates": [2, 3]})
    encoder = model.get_layer("mobilenetv2_encoder")
    assert [t.name.split("/")[0] for t in encoder.outputs] == [LOW_LEVEL_LAYER, HIGH_LEVEL_LAYER]
    low, high = encoder(tf.zeros((1, 64, 96, 3)))
    assert low.shape[1:3] == (16, 24) and high.shape[1:3] == (4, 6)
    depthwise = [layer for layer in _layers(model, tf.keras.layers.DepthwiseConv2D) if layer.dilation_rate != (1, 1)]
    assert [layer.dilation_rate for layer in depthwise] == [(2, 2), (3, 3)]
    scaled = tf.keras.Model(model.input, model.layers[1].output)(np.array([[[[0, 127.5, 255]]]], np.float32))
    np.testing.assert_allclose(scaled[0, 0, 0], [-1, 0, 1])  # MobileNetV2's range
    run = tf.function(model, input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    for size in [(64, 64), (96, 64)]:  # image pooling and upsampling follow the run-time size
        logits = run(tf.random.uniform((1, *size, 3), 0, 255))
        assert logits.shape == (1, *size, 4) and logits.dtype == tf.float32


@pytest.mark.parametrize(("architecture", "options"), [("unet", TINY_UNET), ("deeplabv3plus", TINY_DEEPLAB)])
def test_mixed_precision_computes_in_float16_and_answers_float32(
    mixed_precision: None, architecture: str, options: dict
) -> None:
    model = build_model(architecture, 3, options)
    assert model.get_layer("logits").compute_dtype == "float16"
    logits = model(tf.random.uniform((1, 64, 64, 3), 0, 255))
    assert logits.dtype == tf.float32 and logits.shape == (1, 64, 64, 3)
    assert np.isfinite(logits.numpy()).all()


def test_errors_name_what_is_known() -> None:
    with pytest.raises(ValueError, match="unknown 'segformer'; the architectures are unet, deeplabv3plus"):
        build_model("segformer", 3, {})
    with pytest.raises(ValueError, match="unet has no option alpha; its options are base_filters"):
        build_model("unet", 3, {"alpha": 0.5})
    with pytest.raises(ValueError, match="model.depth must be 1 to 5"):
        build_model("unet", 3, {"depth": 6})
    # The whole model config group is accepted: the keys that choose the network are skipped.
    assert build_model("unet", 3, {**TINY_UNET, "task": "segment", "architecture": "unet"}).name == "unet"


def test_deeplab_batchnorm_statistics_follow_a_from_scratch_run() -> None:
    """Keras' MobileNetV2 averages BatchNorm statistics over ~1000 steps (momentum 0.999): a run
    from scratch evaluated val on statistics thousands of steps behind its weights (val mIoU 0.03
    while training's predictions were right). Every BatchNorm of the model follows at 0.99."""
    model = build_model("deeplabv3plus", 3, {"alpha": 0.35, "head_filters": 16})
    momenta = {layer.momentum for layer in model.submodules if isinstance(layer, tf.keras.layers.BatchNormalization)}
    assert momenta == {0.99}
