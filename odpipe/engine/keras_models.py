"""What the Keras tasks' model builders share: choosing an architecture by name with its options
checked against its defaults, and Keras' MobileNetV2 made fit to train from scratch."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import tensorflow as tf

# Keys of the ``model`` config group that choose the network rather than shape it.
SELECTION_KEYS = ("task", "architecture")
BATCHNORM_MOMENTUM = 0.99  # Keras' default for a BatchNormalization layer
Builder = Callable[[int, Mapping[str, Any]], tf.keras.Model]
Architectures = Mapping[str, tuple[Mapping[str, Any], Builder]]


def build_from(
    architectures: Architectures, architecture: str, num_classes: int, options: Mapping[str, Any]
) -> tf.keras.Model:
    """The network ``architecture`` of ``architectures`` with ``options`` over its defaults.

    ``options`` may be the whole ``model`` config group: its :data:`SELECTION_KEYS` are skipped,
    any other key the architecture does not know is refused (a typo would otherwise train the
    default silently). Build under the mixed-precision policy wanted: the layers take it then.
    """
    if architecture not in architectures:
        known = ", ".join(architectures)
        raise ValueError(f"model.architecture: unknown {architecture!r}; the architectures are {known}")
    defaults, build = architectures[architecture]
    given = {key: value for key, value in options.items() if key not in SELECTION_KEYS}
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        known = ", ".join(defaults)
        raise ValueError(f"model: {architecture} has no option {', '.join(unknown)}; its options are {known}")
    return build(num_classes, {**defaults, **given})


def mobilenet_v2(weights: str | None, alpha: float, **shape: Any) -> tf.keras.Model:
    """Keras' MobileNetV2 without its classifier (``shape``: ``input_shape`` or ``input_tensor``).
    ``weights``: None (random, offline), "imagenet" (Keras downloads them) or a weights file."""
    backbone = tf.keras.applications.MobileNetV2(include_top=False, weights=weights, alpha=alpha, **shape)
    for layer in backbone.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            # Keras' MobileNetV2 keeps BatchNorm statistics with momentum 0.999 (a window of ~1000
            # steps, for ImageNet's 100k+): from scratch, the inference-mode statistics then lag the
            # weights for thousands of steps and val predictions are garbage while training's are fine.
            layer.momentum = BATCHNORM_MOMENTUM
    return backbone
