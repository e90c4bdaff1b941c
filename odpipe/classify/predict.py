"""``odpipe predict`` with a classifier export (its ``classes.json`` holds an ``image_size``): for
each image its top-k classes with their probabilities, one CSV row per image (``classification.csv``:
file, class_1, probability_1, ... class_k, probability_k; k is at most 5)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import UnidentifiedImageError

from odpipe.classify.export import Classifier, load_classifier
from odpipe.classify.metrics import TOP_K
from odpipe.classify.serve import top_k
from odpipe.core.images import readable_bytes

BATCH = 32  # images per call of the SavedModel


def _readable(path: Path) -> bytes | str:
    """The image's bytes as training read such a file, or why it cannot be read."""
    try:
        return readable_bytes(path.read_bytes())
    except UnidentifiedImageError:
        return f"{path}: cannot read the image (not an image format Pillow recognises)"
    except (OSError, SyntaxError, ValueError) as err:
        return f"{path}: cannot read the image ({err})"


def _scores(classifier: Classifier, batch: Sequence[tuple[Path, bytes]]) -> list[np.ndarray | str]:
    """Each image's probabilities, in one call; an image TensorFlow cannot decode fails the call,
    so then each is tried alone and the failing ones are named."""
    try:
        return list(classifier.predict([data for _, data in batch]))
    except tf.errors.InvalidArgumentError:
        if len(batch) == 1:
            return [f"{batch[0][0]}: TensorFlow cannot decode the image"]
        return [result for one in batch for result in _scores(classifier, [one])]


def predict_classes(model_dir: Path, images: Sequence[Path]) -> tuple[list[dict], list[str], list[str]]:
    """Rows (file, top-k classes and probabilities) of every image, the errors of those that
    could not be read, and the CSV's columns."""
    classifier = load_classifier(model_dir)
    k = min(TOP_K, len(classifier.names))
    columns = ["file"] + [f"{kind}_{rank}" for rank in range(1, k + 1) for kind in ("class", "probability")]
    rows: list[dict] = []
    errors: list[str] = []
    readable = []
    for path in images:
        data = _readable(path)
        if isinstance(data, str):
            errors.append(data)
        else:
            readable.append((path, data))
    for start in range(0, len(readable), BATCH):
        batch = readable[start : start + BATCH]
        for (path, _), scores in zip(batch, _scores(classifier, batch), strict=True):
            if isinstance(scores, str):
                errors.append(scores)
                continue
            row = {"file": str(path)}
            for rank, (name, probability) in enumerate(top_k(scores, classifier.names, k), start=1):
                row |= {f"class_{rank}": name, f"probability_{rank}": round(probability, 6)}
            rows.append(row)
    return rows, errors, columns
