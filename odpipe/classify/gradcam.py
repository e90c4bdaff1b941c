"""Grad-CAM (Selvaraju et al., 2017): where in an image a classifier found the evidence for a
class, from the gradient of that class's score with respect to a convolutional feature map.

Each channel of the feature map is weighted by the spatial mean of the score's gradient with
respect to it; the heat map is the ReLU of the weighted sum of the channels (only what speaks
*for* the class), divided by its maximum so that every image's map spans 0..1. A map with no
positive evidence stays all zero rather than being divided by zero.

The score is the class's logit, before the softmax, as in the paper: the softmax's gradient
vanishes once the model is confident and mixes in every other class's score. A classifier built
here ends with a Dense layer named :data:`LOGITS_LAYER` then the softmax; a model without that
layer is taken to output scores itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

LOGITS_LAYER = "logits"

Forward = Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]  # images -> (feature map, class scores)


def _outer_tensors(layer: tf.keras.layers.Layer) -> tuple[tf.Tensor, tf.Tensor]:
    """The layer's input and output in the graph of the model that holds it. A sub-model's own
    ``output`` is that of its inner graph, disconnected from the outer model's inputs; its call in
    the outer graph is its inbound node, which must be one for the tensors to be unambiguous."""
    if len(layer.inbound_nodes) != 1:
        raise ValueError(f"layer {layer.name!r} is called {len(layer.inbound_nodes)} times; Grad-CAM needs it once")
    return layer.get_input_at(0), layer.get_output_at(0)


def _scores(model: tf.keras.Model) -> tf.Tensor:
    """The class scores in the model's graph: the logits layer's output, else the model's."""
    names = {layer.name for layer in model.layers}
    scores = _outer_tensors(model.get_layer(LOGITS_LAYER))[1] if LOGITS_LAYER in names else model.outputs[0]
    if scores.shape.rank != 2:
        raise ValueError(f"model {model.name!r}: class scores have shape {scores.shape}, want (batch, classes)")
    return scores


def _is_feature_map(layer: tf.keras.layers.Layer) -> bool:
    return not isinstance(layer, tf.keras.layers.InputLayer) and _outer_tensors(layer)[1].shape.rank == 4


def _find_layer(model: tf.keras.Model, name: str | None) -> tuple[tf.keras.layers.Layer, tf.keras.Model | None]:
    """The feature layer and the sub-model that holds it (None for the model's own graph).

    Walking back from the output: the layer named ``name``, or by default the first whose output
    is a 4-D map. That is the last convolutional map, the usual choice: the deepest features, the
    most about classes, that still say where. A sub-model met on the way is searched too (its last
    map, e.g. in a Keras application built with pooling, whose own output is not a map); the
    sub-models of a sub-model are not.
    """

    def wanted(layer: tf.keras.layers.Layer) -> bool:
        return layer.name == name if name else _is_feature_map(layer)

    for layer in reversed(model.layers):
        if wanted(layer):
            return layer, None
        inner = [found for found in layer.layers if wanted(found)] if isinstance(layer, tf.keras.Model) else []
        if inner:
            return inner[-1], layer
    what = f"layer named {name!r}" if name else "layer with a 4-D output"
    raise ValueError(f"model {model.name!r} has no {what} in its graph or its sub-models' graphs")


def _forward(model: tf.keras.Model, scores: tf.Tensor, layer: str | None) -> Forward:
    """A function of the images giving the feature map and the class scores from one pass, so that
    the scores' gradient reaches the map. A map inside a sub-model is reached by running the model
    in three parts: up to the sub-model, the sub-model (answering its map too), and the rest."""
    found, holder = _find_layer(model, layer)
    if holder is None:
        whole = tf.keras.Model(model.inputs, [_outer_tensors(found)[1], scores])
        return lambda images: whole(images, training=False)
    if len(holder.outputs) != 1:
        raise ValueError(f"sub-model {holder.name!r} has {len(holder.outputs)} outputs; Grad-CAM inside it needs one")
    holder_in, holder_out = _outer_tensors(holder)
    before = tf.keras.Model(model.inputs, holder_in)
    inside = tf.keras.Model(holder.inputs, [found.output, holder.outputs[0]])
    after = tf.keras.Model(holder_out, scores)

    def forward(images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        features, holder_output = inside(before(images, training=False), training=False)
        return features, after(holder_output, training=False)

    return forward


def grad_cam(
    model: tf.keras.Model, images: tf.Tensor, class_ids: Sequence[int], layer: str | None = None
) -> np.ndarray:
    """Heat maps ``(N, h, w)`` in 0..1 at the feature map's size (``h``, ``w``), of class
    ``class_ids[i]`` in ``images[i]`` (``(N, H, W, 3)`` float32, what the model takes), on the
    feature layer named ``layer`` (searched in the model's graph, then in its sub-models'), by
    default the last map (see :func:`_find_layer`)."""
    scores = _scores(model)
    ids = np.asarray(class_ids, dtype=np.int32).reshape(-1)
    if len(ids) != images.shape[0]:
        raise ValueError(f"{len(ids)} class ids for {images.shape[0]} images")
    if ((ids < 0) | (ids >= scores.shape[-1])).any():
        raise ValueError(f"class ids {ids.tolist()} outside 0..{scores.shape[-1] - 1}")
    forward = _forward(model, scores, layer)
    with tf.GradientTape() as tape:
        features, class_scores = forward(images)
        # Images are independent (inference mode), so the gradient of the sum is each image's own.
        chosen = tf.reduce_sum(tf.gather(tf.cast(class_scores, tf.float32), ids, batch_dims=1))
    gradients = tape.gradient(chosen, features)
    if gradients is None:
        raise ValueError(f"model {model.name!r}: the class scores do not depend on layer {layer!r}")
    weights = tf.reduce_mean(tf.cast(gradients, tf.float32), axis=(1, 2), keepdims=True)
    heat = tf.nn.relu(tf.reduce_sum(weights * tf.cast(features, tf.float32), axis=-1)).numpy()
    peak = heat.max(axis=(1, 2), keepdims=True)
    return np.divide(heat, peak, out=np.zeros_like(heat), where=peak > 0)
