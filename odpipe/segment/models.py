"""Segmentation networks (``model.architecture`` of task=segment), built from tf.keras layers.

Every model takes float32 pixel values in 0-255, shape ``(batch, height, width, 3)``, and scales
them itself, so that training, export and serving all feed plain pixels and no caller has to know
which backbone wants which range. Every model returns float32 logits ``(batch, height, width,
num_classes)`` at the input's size, also under the ``mixed_float16`` policy: the softmax (in the
loss, in the sliding window) then runs in float32, where float16 would round small probabilities
to 0 and make the cross-entropy infinite.

Height and width must be multiples of :data:`STRIDE`: the U-Net's transposed convolutions must
land exactly on its skip connections' sizes, and DeepLabV3+'s encoder downsamples five times.
:func:`padded_size` says what to pad to; :mod:`odpipe.segment.tiling` pads and crops back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from odpipe.engine.keras_models import Architectures, build_from, mobilenet_v2

# Every model here accepts sides that are multiples of this (the deepest downsampling, 2**5).
STRIDE = 32

SEGMENT_MODELS = "model=deeplabv3plus or model=unet"  # the choices, for a wrong model's error


# The course's U-Net (the segmentation chapter of the course notes): 16 filters at the first level,
# doubled at each of 4 levels down to a 256-filter bottleneck; two 3x3 convolutions (he_normal,
# BatchNorm, ReLU) per level; 2x2 max pooling then dropout 0.1 on the way down; a 3x3 transposed
# convolution with stride 2, concatenated with the skip, then dropout, on the way up.
UNET_DEFAULTS: Mapping[str, Any] = {"base_filters": 16, "depth": 4, "batch_norm": True, "dropout": 0.1}
# head_filters: the ASPP's and the decoder's channels (the paper's 256; fewer for few classes on a CPU).
DEEPLAB_DEFAULTS: Mapping[str, Any] = {"weights": None, "alpha": 1.0, "atrous_rates": (6, 12, 18), "head_filters": 256}

# MobileNetV2's features DeepLabV3+ reads: the expansion of block 3 (before its stride-2 depthwise
# convolution) is the last stride-4 activation, that of block 13 the last at stride 16.
LOW_LEVEL_LAYER = "block_3_expand_relu"
HIGH_LEVEL_LAYER = "block_13_expand_relu"
LOW_LEVEL_FILTERS = 48


def padded_size(height: int, width: int) -> tuple[int, int]:
    """The smallest size at or above (height, width) whose sides are multiples of :data:`STRIDE`.

    Pure integer arithmetic, so it works as well on scalar int tensors (dynamic sizes in a graph).
    """
    return -(-height // STRIDE) * STRIDE, -(-width // STRIDE) * STRIDE


@tf.keras.utils.register_keras_serializable(package="odpipe")
class ResizeLike(tf.keras.layers.Layer):
    """Bilinear resize of ``inputs[0]`` to the height and width of ``inputs[1]``, known only at run
    time: DeepLabV3+ needs it for image pooling, its decoder and its output, at any input size."""

    def call(self, inputs: list[tf.Tensor]) -> tf.Tensor:
        features, like = inputs
        resized = tf.image.resize(features, tf.shape(like)[1:3], method="bilinear")
        return tf.cast(resized, self.compute_dtype)  # resize answers float32 whatever it is given


def _float32_logits(features: tf.Tensor, num_classes: int) -> tf.Tensor:
    """The 1x1 classifier, its output cast to float32 whatever the layer policy."""
    logits = tf.keras.layers.Conv2D(num_classes, 1, name="logits")(features)
    return tf.keras.layers.Activation("linear", dtype="float32", name="logits_float32")(logits)


def _conv_bn_relu(x: tf.Tensor, filters: int, kernel: int, batch_norm: bool = True, **conv: Any) -> tf.Tensor:
    """Convolution, optional BatchNorm (which makes the convolution's bias redundant), ReLU."""
    x = tf.keras.layers.Conv2D(filters, kernel, padding="same", use_bias=not batch_norm, **conv)(x)
    if batch_norm:
        x = tf.keras.layers.BatchNormalization()(x)
    return tf.keras.layers.ReLU()(x)


def _separable_conv_bn_relu(x: tf.Tensor, filters: int, dilation: int = 1) -> tf.Tensor:
    """A 3x3 depthwise convolution (dilated by ``dilation``) and a 1x1 one, each with BatchNorm
    and ReLU: DeepLabV3+'s separable convolution, used in both its ASPP and its decoder. At
    stride 4 a full 3x3 convolution of 256 channels cost several times the whole encoder."""
    x = tf.keras.layers.DepthwiseConv2D(3, padding="same", dilation_rate=dilation, use_bias=False)(x)
    x = tf.keras.layers.ReLU()(tf.keras.layers.BatchNormalization()(x))
    return _conv_bn_relu(x, filters, 1)


def _unet_block(x: tf.Tensor, filters: int, batch_norm: bool) -> tf.Tensor:
    for _ in range(2):
        x = _conv_bn_relu(x, filters, 3, batch_norm, kernel_initializer="he_normal")
    return x


def build_unet(num_classes: int, base_filters: int, depth: int, batch_norm: bool, dropout: float) -> tf.keras.Model:
    """The course's U-Net with ``depth`` levels down and up (see :data:`UNET_DEFAULTS`)."""
    if not 1 <= depth <= 5:
        raise ValueError(f"model.depth must be 1 to 5 (the input is padded to a multiple of {STRIDE}), got {depth}")
    pixels = tf.keras.Input((None, None, 3), name="pixels")
    x = tf.keras.layers.Rescaling(1 / 255)(pixels)
    skips = []
    for level in range(depth):
        x = _unet_block(x, base_filters * 2**level, batch_norm)
        skips.append(x)
        x = tf.keras.layers.MaxPooling2D(2)(x)
        x = tf.keras.layers.Dropout(dropout)(x)
    x = _unet_block(x, base_filters * 2**depth, batch_norm)
    for level in reversed(range(depth)):
        filters = base_filters * 2**level
        x = tf.keras.layers.Conv2DTranspose(filters, 3, strides=2, padding="same")(x)
        x = tf.keras.layers.Concatenate()([x, skips[level]])
        x = tf.keras.layers.Dropout(dropout)(x)
        x = _unet_block(x, filters, batch_norm)
    return tf.keras.Model(pixels, _float32_logits(x, num_classes), name="unet")


def _aspp(features: tf.Tensor, rates: tuple[int, ...], filters: int) -> tf.Tensor:
    """Atrous spatial pyramid pooling: a 1x1 branch, a separable 3x3 branch per dilation rate and
    image pooling (global average broadcast back by :class:`ResizeLike`, so any size works)."""
    branches = [_conv_bn_relu(features, filters, 1)]
    branches += [_separable_conv_bn_relu(features, filters, rate) for rate in rates]
    pooled = tf.keras.layers.GlobalAveragePooling2D(keepdims=True)(features)
    branches.append(ResizeLike()([_conv_bn_relu(pooled, filters, 1), features]))
    return _conv_bn_relu(tf.keras.layers.Concatenate()(branches), filters, 1)


def build_deeplabv3plus(
    num_classes: int, weights: str | None, alpha: float, atrous_rates: tuple[int, ...], head_filters: int = 256
) -> tf.keras.Model:
    """DeepLabV3+ on Keras' MobileNetV2: ASPP over the stride-16 features, a decoder that joins
    them (upsampled) to the 48-channel projection of the stride-4 ones, bilinear output upsampling.

    ``weights`` is None (random, offline) or "imagenet" (Keras downloads the encoder's weights).
    """
    backbone = mobilenet_v2(weights, alpha, input_shape=(None, None, 3))
    outputs = [backbone.get_layer(name).output for name in (LOW_LEVEL_LAYER, HIGH_LEVEL_LAYER)]
    encoder = tf.keras.Model(backbone.input, outputs, name="mobilenetv2_encoder")
    pixels = tf.keras.Input((None, None, 3), name="pixels")
    low, high = encoder(tf.keras.layers.Rescaling(1 / 127.5, offset=-1)(pixels))  # MobileNetV2 wants [-1, 1]
    x = ResizeLike()([_aspp(high, atrous_rates, head_filters), low])
    x = tf.keras.layers.Concatenate()([x, _conv_bn_relu(low, LOW_LEVEL_FILTERS, 1)])
    for _ in range(2):
        x = _separable_conv_bn_relu(x, head_filters)
    logits = ResizeLike(dtype="float32", name="upsample_logits")([_float32_logits(x, num_classes), pixels])
    return tf.keras.Model(pixels, logits, name="deeplabv3plus")


def _unet(num_classes: int, options: Mapping[str, Any]) -> tf.keras.Model:
    return build_unet(
        num_classes,
        base_filters=int(options["base_filters"]),
        depth=int(options["depth"]),
        batch_norm=bool(options["batch_norm"]),
        dropout=float(options["dropout"]),
    )


def _deeplabv3plus(num_classes: int, options: Mapping[str, Any]) -> tf.keras.Model:
    return build_deeplabv3plus(
        num_classes,
        weights=options["weights"],
        alpha=float(options["alpha"]),
        atrous_rates=tuple(int(rate) for rate in options["atrous_rates"]),
        head_filters=int(options["head_filters"]),
    )


ARCHITECTURES: Architectures = {
    "unet": (UNET_DEFAULTS, _unet),
    "deeplabv3plus": (DEEPLAB_DEFAULTS, _deeplabv3plus),
}


def build_model(architecture: str, num_classes: int, options: Mapping[str, Any]) -> tf.keras.Model:
    """The segmentation network ``architecture`` with ``options`` (see ``keras_models.build_from``)."""
    return build_from(ARCHITECTURES, architecture, num_classes, options)
