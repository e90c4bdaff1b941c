"""Training a classifier: batches of the train records resized as the export resizes, the model
compiled with a (label-smoothed, class-weighted) cross-entropy, a frozen-then-fine-tuned schedule
for a pretrained backbone, and validation through the export's own preprocessing, for
:func:`odpipe.engine.keras_loop.fit_epochs`' epoch loop."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from odpipe.classify.export import decode_resized
from odpipe.classify.metrics import classification_metrics
from odpipe.classify.models import build_model, freeze_epochs, set_phase
from odpipe.classify.records import parse_example
from odpipe.data.records import shard_pattern
from odpipe.engine.keras_loop import PreparePhase

SELECT = "val/top1"  # what "best" means
VAL_METRICS = ("top1", "top5", "macro_f1", "ece")  # of the val split each epoch, beside its loss
SHUFFLE_BUFFER = 1024  # examples: the records are written in a seeded random order already
CLASS_WEIGHTS = ("none", "balanced")
AUTOTUNE = tf.data.AUTOTUNE


def class_weights(counts: Sequence[int], mode: str) -> np.ndarray:
    """Per-class loss weights from the train split's images per class: ``balanced`` is
    scikit-learn's (n_images / (n_classes * n_class_images)), so the mean weight of an image is 1;
    a class without images gets 0 (it has nothing to weigh)."""
    if mode not in CLASS_WEIGHTS:
        raise ValueError(f"train.class_weights: {mode!r} is not one of {', '.join(CLASS_WEIGHTS)}")
    counts = np.asarray(counts, dtype=np.float64)
    if mode == "none":
        return np.ones(len(counts), dtype=np.float32)
    weights = np.divide(counts.sum(), len(counts) * counts, out=np.zeros_like(counts), where=counts > 0)
    return weights.astype(np.float32)


def train_dataset(
    records: Path, *, batch_size: int, image_size: int, num_classes: int, weights: np.ndarray, seed: int
) -> tf.data.Dataset:
    """Endless batches of (pixels, one-hot label, class weight) from the train shards, read interleaved."""
    table = tf.constant(weights, tf.float32)

    def example(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        encoded, label = parse_example(serialized)
        return decode_resized(encoded, image_size), tf.one_hot(label, num_classes), tf.gather(table, label)

    files = tf.data.Dataset.list_files(shard_pattern(records, "train"), shuffle=True, seed=seed)
    examples = files.interleave(tf.data.TFRecordDataset, num_parallel_calls=AUTOTUNE, deterministic=True)
    parsed = examples.shuffle(SHUFFLE_BUFFER, seed=seed).repeat().map(example, num_parallel_calls=AUTOTUNE)
    return parsed.batch(batch_size, drop_remainder=True).prefetch(AUTOTUNE)


def split_batches(records: Path, split: str, image_size: int, batch_size: int) -> tf.data.Dataset:
    """A split's (pixels, class id) batches in file order, each image decoded and resized as the
    export does (its encoded bytes through :func:`odpipe.classify.export.decode_resized`)."""

    def example(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        encoded, label = parse_example(serialized)
        return decode_resized(encoded, image_size), label

    files = sorted(tf.io.gfile.glob(shard_pattern(records, split)))
    return tf.data.TFRecordDataset(files).map(example, num_parallel_calls=AUTOTUNE).batch(batch_size)


def predict_split(model: tf.keras.Model, batches: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(class ids, probabilities) of every example of ``batches``, the model in inference mode."""
    truth, probabilities = [], []
    for pixels, labels in batches:
        probabilities.append(tf.cast(model(pixels, training=False), tf.float32).numpy())
        truth.append(labels.numpy())
    return np.concatenate(truth), np.concatenate(probabilities)


def val_scores(truth: np.ndarray, probabilities: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """The journal's and MLflow's val metrics (``val/top1`` ...) and the val loss (mean
    cross-entropy, unsmoothed and unweighted: comparable across runs with other settings)."""
    metrics = classification_metrics(truth, probabilities, names)
    picked = {f"val/{key}": float(metrics[key]) for key in VAL_METRICS if key in metrics}
    true_probability = np.clip(probabilities[np.arange(len(truth)), truth], 1e-7, 1.0)
    return picked | {"val/loss": float(-np.log(true_probability).mean())}


def _compile(model: tf.keras.Model, optimizer: tf.keras.optimizers.Optimizer, label_smoothing: float) -> None:
    loss = tf.keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
    model.compile(optimizer=optimizer, loss=loss, metrics=[tf.keras.metrics.CategoricalAccuracy(name="accuracy")])


def compiled_model(
    model_cfg: Mapping, num_classes: int, image_size: int, train: Mapping, total_steps: int
) -> tf.keras.Model:
    """The configured model, compiled with Adam on a cosine decay to 0 over ``total_steps``;
    built in the caller's strategy scope, under mixed precision when asked. The optimizer is
    built on every trainable variable before any is frozen, so that a phase that unfreezes the
    backbone finds its slots (and a checkpoint restores them)."""
    if train["mixed_precision"]:
        tf.keras.mixed_precision.set_global_policy("mixed_float16")
    model = build_model(model_cfg["architecture"], num_classes, image_size, model_cfg)
    optimizer = tf.keras.optimizers.Adam(tf.keras.optimizers.schedules.CosineDecay(train["learning_rate"], total_steps))
    optimizer.build(model.trainable_variables)
    _compile(model, optimizer, float(train["label_smoothing"]))
    return model


def phases(model: tf.keras.Model, model_cfg: Mapping, epochs: int, label_smoothing: float) -> PreparePhase | None:
    """With a pretrained backbone, :func:`odpipe.engine.keras_loop.fit_epochs`' phases: the backbone
    frozen for ``freeze_epochs``, then fine-tuned (recompiled on the same optimizer); else None
    (one phase, as compiled)."""
    frozen_until = min(freeze_epochs(model_cfg), epochs)
    if not frozen_until:
        return None

    def prepare(start: int) -> int:
        frozen = start < frozen_until
        set_phase(model, frozen)
        _compile(model, model.optimizer, label_smoothing)
        return frozen_until if frozen else epochs

    return prepare
