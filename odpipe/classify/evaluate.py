"""The exported classifier over a split: each image read from its file and classified through the
export's serving signature, one at a time (its latency is what a caller of the served model
waits), its probabilities kept for :mod:`odpipe.classify.metrics`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from odpipe.classify.clean import ClassRow
from odpipe.classify.export import Classifier, decode_resized
from odpipe.classify.gradcam import grad_cam
from odpipe.engine.latency import latency_summary


@dataclass(frozen=True)
class SplitPredictions:
    """What a pass over a split leaves: true ids, probabilities (images x classes), latencies."""

    truth: np.ndarray
    probabilities: np.ndarray
    seconds: tuple[float, ...]

    def speed(self) -> dict[str, float]:
        return latency_summary(self.seconds)


def predict_rows(classifier: Classifier, rows: Sequence[ClassRow], images: Path) -> SplitPredictions:
    """Classify every row's image (timed, one at a time); memory holds one image at a time."""
    probabilities, seconds = [], []
    for row in rows:
        encoded = (images / row.image).read_bytes()
        start = time.perf_counter()
        probabilities.append(classifier.predict([encoded])[0])
        seconds.append(time.perf_counter() - start)
    truth = np.asarray([row.label for row in rows], dtype=np.int64)
    shape = (len(rows), len(classifier.names))
    return SplitPredictions(truth, np.asarray(probabilities, dtype=np.float64).reshape(shape), tuple(seconds))


def across_classes(rows: Sequence[ClassRow], count: int) -> list[ClassRow]:
    """Up to ``count`` rows taking each class in turn (the first of each class, then the second...),
    so that a handful of examples shows every class rather than the first class's images."""
    by_class: dict[int, list[ClassRow]] = {}
    for row in rows:
        by_class.setdefault(row.label, []).append(row)
    queues = [by_class[label] for label in sorted(by_class)]
    picked = [queue[i] for i in range(max(map(len, queues), default=0)) for queue in queues if i < len(queue)]
    return picked[:count]


def explained(
    model: tf.keras.Model, rows: Sequence[ClassRow], images: Path, image_size: int, names: Sequence[str]
) -> list[tuple[bytes, np.ndarray, str]]:
    """Grad-CAM of each row's image for the class the model predicts, as the report draws it:
    (encoded image, heat map, caption naming the true and the predicted class)."""
    encoded = [(images / row.image).read_bytes() for row in rows]
    if not encoded:
        return []
    pixels = tf.stack([decode_resized(tf.constant(data), image_size) for data in encoded])
    probabilities = tf.cast(model(pixels, training=False), tf.float32).numpy()
    predicted = probabilities.argmax(-1)
    heat = grad_cam(model, pixels, [int(p) for p in predicted])
    return [
        (
            data,
            heat[i],
            f"true {names[row.label]} / predicted {names[predicted[i]]} {probabilities[i, predicted[i]]:.2f}",
        )
        for i, (data, row) in enumerate(zip(encoded, rows, strict=True))
    ]
