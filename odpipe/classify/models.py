"""Classification networks (``model.architecture`` of task=classify), built from tf.keras layers.

Every model takes float32 pixel values in 0-255, shape ``(batch, size, size, 3)``, and scales
them itself, so that training, export and serving all feed plain pixels. Every model ends with a
Dense layer named ``logits`` and a float32 softmax named ``probabilities`` (also under the
``mixed_float16`` policy: float16 would round small probabilities to 0 and make the cross-entropy
infinite); Grad-CAM reads the logits.

Layers are one flat graph (MobileNetV2's built on the model's own input tensor, not nested as a
sub-model), so that the last convolution is a layer of the model itself for Grad-CAM, and a
pretrained backbone can be frozen layer by layer (:func:`set_phase`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from odpipe.engine.keras_models import Architectures, build_from, mobilenet_v2

CLASSIFY_MODELS = "model=mobilenetv2_classifier or model=course_cnn"  # the choices, for a wrong model's error
LOGITS = "logits"
PROBABILITIES = "probabilities"
HEAD = ("pool", "dropout", LOGITS, PROBABILITIES)  # what trains while a pretrained backbone is frozen

# The CNN course's baseline: Conv2D (3x3, ReLU) + MaxPooling (2x2) blocks, flattened into a
# ReLU dense layer with dropout, then the classifier.
COURSE_CNN_DEFAULTS: Mapping[str, Any] = {"filters": (32, 64, 128, 128), "dense_units": 512, "dropout": 0.5}
MOBILENET_DEFAULTS: Mapping[str, Any] = {"weights": None, "alpha": 1.0, "dropout": 0.2, "freeze_epochs": 3}


def _classifier(features: tf.Tensor, num_classes: int) -> tf.Tensor:
    logits = tf.keras.layers.Dense(num_classes, name=LOGITS)(features)
    return tf.keras.layers.Activation("softmax", dtype="float32", name=PROBABILITIES)(logits)


def build_course_cnn(
    num_classes: int, image_size: int, filters: tuple[int, ...], dense_units: int, dropout: float
) -> tf.keras.Model:
    pixels = tf.keras.Input((image_size, image_size, 3), name="pixels")
    x = tf.keras.layers.Rescaling(1 / 255)(pixels)
    for i, count in enumerate(filters):
        x = tf.keras.layers.Conv2D(count, 3, activation="relu", name=f"conv{i + 1}")(x)
        x = tf.keras.layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = tf.keras.layers.Flatten()(x)
    x = tf.keras.layers.Dropout(dropout)(x)
    x = tf.keras.layers.Dense(dense_units, activation="relu", name="dense")(x)
    return tf.keras.Model(pixels, _classifier(x, num_classes), name="course_cnn")


def build_mobilenetv2(
    num_classes: int, image_size: int, weights: str | None, alpha: float, dropout: float
) -> tf.keras.Model:
    """MobileNetV2 (global average pooled) with dropout and the classifier. ``weights``: None
    (random, offline), "imagenet" (Keras downloads them) or a file of the backbone's weights."""
    pixels = tf.keras.Input((image_size, image_size, 3), name="pixels")
    scaled = tf.keras.layers.Rescaling(1 / 127.5, offset=-1, name="scale")(pixels)  # MobileNetV2 wants [-1, 1]
    backbone = mobilenet_v2(weights, alpha, input_tensor=scaled)
    features = tf.keras.layers.GlobalAveragePooling2D(name="pool")(backbone.output)
    x = tf.keras.layers.Dropout(dropout, name="dropout")(features)
    return tf.keras.Model(pixels, _classifier(x, num_classes), name="mobilenetv2_classifier")


def architectures(image_size: int) -> Architectures:
    """The architectures, each with its defaults, built for square inputs of ``image_size``."""
    return {
        "course_cnn": (
            COURSE_CNN_DEFAULTS,
            lambda n, o: build_course_cnn(
                n, image_size, tuple(o["filters"]), int(o["dense_units"]), float(o["dropout"])
            ),
        ),
        "mobilenetv2": (
            MOBILENET_DEFAULTS,
            lambda n, o: build_mobilenetv2(n, image_size, o["weights"], float(o["alpha"]), float(o["dropout"])),
        ),
    }


def build_model(architecture: str, num_classes: int, image_size: int, options: Mapping[str, Any]) -> tf.keras.Model:
    """The classification network ``architecture`` with ``options`` (see
    :func:`odpipe.engine.keras_models.build_from`), for ``image_size`` square inputs."""
    return build_from(architectures(image_size), architecture, num_classes, options)


def freeze_epochs(options: Mapping[str, Any]) -> int:
    """Epochs with the backbone frozen: only a pretrained backbone is (a random one must learn)."""
    if options.get("weights") is None:
        return 0
    return int(options.get("freeze_epochs", MOBILENET_DEFAULTS["freeze_epochs"]))


def set_phase(model: tf.keras.Model, frozen: bool) -> None:
    """Frozen: only the head (:data:`HEAD`) trains. Fine-tuning: every layer but a pretrained
    backbone's BatchNormalization, whose ImageNet statistics a small dataset's batches would
    only disturb (the usual Keras fine-tuning practice). Recompile afterwards."""
    for layer in model.layers:
        if layer.name in HEAD:
            layer.trainable = True
        else:
            layer.trainable = not frozen and not isinstance(layer, tf.keras.layers.BatchNormalization)
