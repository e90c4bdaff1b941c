"""Segmentation losses (``train.loss``) and class weights (``train.class_weights``).

Masks are uint8 class ids with :data:`VOID` (255) for pixels nobody labelled (borders, ambiguous
regions): those must not pull the model anywhere, so they are ignored exactly, never counted in a
mean. Keras' own ``class_weight`` argument cannot serve: its keys must be 0 to n-1, so looking up
a 255 fails (and it reads a (batch, height, width) mask as one-hot rows). The weighting is instead
a per-pixel weight inside the loss: the weight of the pixel's class, 0 for void.

Reduction. A batch's cross-entropy is ``sum(w * ce) / sum(w)`` over its pixels (``w`` the pixel
weights), a mean over the labelled pixels that does not depend on how many are void. Under
``tf.distribute`` each replica sees a slice of the global batch with its own share of void pixels,
so a mean of per-replica means would be wrong. :class:`SegmentationLoss` therefore reduces each
replica's pixels to a few sums (:func:`_statistics`), adds them over the replicas in one collective
op, and computes on every replica the loss of the global batch, exactly as on one device; gradients
flow through the replica's own sums only, and the value returned is that loss divided by the number
of replicas (its *share*). The reduction is ``SUM``, which Keras (``model.fit``) divides neither by
the batch size nor by the replicas; the optimizer sums the replicas' gradients, which makes the
global batch's gradient; Keras' logged ``loss`` multiplies a ``SUM`` loss by the replicas and
averages them, which gives the global loss again. In a custom loop, sum the replicas' values
(``strategy.reduce("SUM", ...)``) and their gradients (what ``apply_gradients`` does).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from odpipe.data.index_masks import VOID

LOSSES = ("ce", "dice", "ce+dice")
WEIGHT_METHODS = ("none", "inverse_sqrt", "median_frequency")


def class_weights(pixel_counts: Sequence[int], method: str) -> np.ndarray:
    """A weight per class from the train split's pixel counts (void excluded).

    ``none`` gives 1, ``inverse_sqrt`` 1 / sqrt(f), ``median_frequency`` median(f) / f, where ``f``
    is the class's share of the labelled train pixels (the median over the classes present). A class
    without train pixels gets 0: nothing could have been learned about it, and its weight would be
    infinite. The weights are then scaled so that their mean over the train pixels is 1, so that a
    weighted loss has the magnitude of the unweighted one (the loss divides by the weights' sum, so
    the scale changes nothing else).
    """
    if method not in WEIGHT_METHODS:
        raise ValueError(f"train.class_weights: unknown {method!r}; the methods are {', '.join(WEIGHT_METHODS)}")
    counts = np.asarray(pixel_counts, dtype=np.float64)
    if counts.ndim != 1 or (counts < 0).any() or counts.sum() == 0:
        raise ValueError(f"class_weights: need one non-negative pixel count per class, some above 0, got {counts}")
    present = counts > 0
    share = counts / counts.sum()
    weights = np.zeros_like(share)
    if method == "none":
        weights[present] = 1.0
    elif method == "inverse_sqrt":
        weights[present] = 1 / np.sqrt(share[present])
    else:
        weights[present] = np.median(share[present]) / share[present]
    return (weights / (weights * share).sum()).astype(np.float32)


def _replica_sum(local: tf.Tensor) -> tuple[tf.Tensor, int]:
    """``local`` summed over the replicas in sync (one collective op), and their number.

    The sum's gradient is that of ``local`` alone: each replica differentiates only through its own
    pixels, and the replicas' gradients, summed by the optimizer, make the global batch's gradient.
    (An all-reduce differentiated through would add collectives to the backward pass, whose order
    then differs between replicas and deadlocks or mismatches them.)
    """
    context = tf.distribute.get_replica_context()
    if context is None:  # cross-replica context: the whole global batch is here
        return local, 1
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.stop_gradient(local))
    return local + tf.stop_gradient(total - local), context.num_replicas_in_sync


def _statistics(labels: tf.Tensor, logits: tf.Tensor, valid: tf.Tensor, pixel_weights: tf.Tensor) -> tf.Tensor:
    """What both losses need from a batch, as sums over its pixels, so that the sums of several
    replicas' batches are those of their global batch: the weighted cross-entropy, the weights,
    then per class the soft intersection, the predicted mass and the true pixels (non-void only)."""
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
    mask = tf.cast(valid, tf.float32)[..., None]
    probs = tf.nn.softmax(logits) * mask
    truth = tf.one_hot(labels, tf.shape(logits)[-1]) * mask
    pixels = tf.range(tf.rank(probs) - 1)
    per_class = [tf.reduce_sum(probs * truth, pixels), tf.reduce_sum(probs, pixels), tf.reduce_sum(truth, pixels)]
    return tf.concat([[tf.reduce_sum(ce * pixel_weights), tf.reduce_sum(pixel_weights)], *per_class], 0)


def _dice_loss(per_class: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """1 - soft Dice, averaged over the classes present in the labels (weighted by ``weights``);
    0 when no pixel is labelled."""
    intersection, predicted, true = tf.split(per_class, 3)
    dice = tf.math.divide_no_nan(2 * intersection, predicted + true)
    class_weight = weights * tf.cast(true > 0, tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(class_weight * (1 - dice)), tf.reduce_sum(class_weight))


@tf.keras.utils.register_keras_serializable(package="odpipe")
class SegmentationLoss(tf.keras.losses.Loss):
    """``ce``, ``dice`` or ``ce+dice`` on (labels, logits), void ignored and class ``weights``
    applied per pixel (CE) or per class (Dice's mean over the classes); the reduction is the
    module docstring's.

    ``y_true``: class ids (batch, height, width) or (..., 1), any dtype; ``y_pred``: logits
    (batch, height, width, classes). Returns this replica's share of the global-batch loss.
    """

    def __init__(self, kind: str = "ce", weights: Sequence[float] | None = None, name: str = "segmentation_loss"):
        if kind not in LOSSES:
            raise ValueError(f"train.loss: unknown {kind!r}; the losses are {', '.join(LOSSES)}")
        super().__init__(reduction=tf.keras.losses.Reduction.SUM, name=name)
        self.kind = kind
        self.weights = None if weights is None else [float(w) for w in weights]

    def call(self, y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        logits = tf.cast(y_pred, tf.float32)
        labels = tf.cast(tf.reshape(y_true, tf.shape(logits)[:-1]), tf.int32)
        valid = tf.not_equal(labels, VOID)
        labels = tf.where(valid, labels, 0)  # any class id: the void pixels' terms are masked out
        weights = self._class_weights(logits)
        pixel_weights = tf.where(valid, tf.gather(weights, labels), 0.0)
        stats, replicas = _replica_sum(_statistics(labels, logits, valid, pixel_weights))
        loss = tf.constant(0.0)
        if self.kind in ("ce", "ce+dice"):
            loss += tf.math.divide_no_nan(stats[0], stats[1])
        if self.kind in ("dice", "ce+dice"):
            loss += _dice_loss(stats[2:], weights)
        return loss - tf.stop_gradient(loss) * (1 - 1 / replicas)  # the value: this replica's share

    def _class_weights(self, logits: tf.Tensor) -> tf.Tensor:
        if self.weights is None:
            return tf.ones(tf.shape(logits)[-1:])
        if logits.shape[-1] is not None and logits.shape[-1] != len(self.weights):
            raise ValueError(f"{self.name}: {len(self.weights)} class weights for {logits.shape[-1]} classes")
        return tf.constant(self.weights, tf.float32)

    def get_config(self) -> dict:
        return {"kind": self.kind, "weights": self.weights, "name": self.name}


def make_loss(kind: str, weights: np.ndarray | None = None) -> SegmentationLoss:
    """The ``train.loss`` to compile with; ``weights`` from :func:`class_weights` (None: all 1)."""
    return SegmentationLoss(kind, None if weights is None else weights.tolist())
