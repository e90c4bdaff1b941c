"""Export a trained segmentation model as a SavedModel that takes encoded images, any size.

The folder holds ``saved_model/`` and, beside it, ``classes.json`` (the class names and their RGB
colours, in class-id order), so that it can be copied anywhere and still be used. The SavedModel
carries the whole inference: decoding, the model's own pixel scaling, padding to the stride and
the sliding window (:mod:`odpipe.segment.tiling`) at the ``tile_size`` and overlap it was exported with.
Its signatures:

- ``serving_default``: one encoded JPEG, PNG or BMP image (a scalar string) in;
- ``segment_pixels``: one decoded (height, width, 3) float32 image of 0-255 values in, for
  evaluation, which already holds decoded images and must not re-encode them (JPEG would change them).

Both return ``class_map`` (height, width) int32 and ``probabilities`` (height, width, classes)
float32 at the input's size. An image within a tile runs whole (one window); a larger one in windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from odpipe.core.files import write_json
from odpipe.engine.export_folder import CLASSES_FILE, SAVED_MODEL_DIR, read_classes
from odpipe.segment.tiling import check_tiling, sliding_window_probabilities


class SegmenterModule(tf.Module):
    """The Keras model with the inference around it, as the SavedModel's signatures."""

    def __init__(self, model: tf.keras.Model, tile_size: int, overlap: float, window_batch: int = 4) -> None:
        super().__init__(name="segmenter")
        check_tiling(tile_size, overlap)
        self.model = model
        self.num_classes = int(model.output_shape[-1])
        self.tile_size = tile_size
        self.overlap = overlap
        self.window_batch = window_batch

    def _logits(self, windows: tf.Tensor) -> tf.Tensor:
        return self.model(windows, training=False)

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.float32)])
    def segment_pixels(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = sliding_window_probabilities(
            self._logits, image, self.num_classes, self.tile_size, self.overlap, self.window_batch
        )
        return {"class_map": tf.argmax(probabilities, -1, output_type=tf.int32), "probabilities": probabilities}

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def serving_default(self, encoded: tf.Tensor) -> dict[str, tf.Tensor]:
        image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        return self.segment_pixels(tf.cast(image, tf.float32))


def export_segmenter(
    model: tf.keras.Model,
    out_dir: Path,
    *,
    tile_size: int,
    overlap: float,
    class_names: Sequence[str],
    colors: Sequence[Sequence[int]],
) -> None:
    """Write ``out_dir``/saved_model and ``out_dir``/classes.json (see the module docstring)."""
    num_classes = int(model.output_shape[-1])
    if len(class_names) != num_classes or len(colors) != num_classes:
        raise ValueError(
            f"{out_dir}: the model has {num_classes} classes, given {len(class_names)} names and {len(colors)} colours"
        )
    module = SegmenterModule(model, tile_size, overlap)
    signatures = {"serving_default": module.serving_default, "segment_pixels": module.segment_pixels}
    tf.saved_model.save(module, str(out_dir / SAVED_MODEL_DIR), signatures=signatures)
    classes = {"names": list(class_names), "colors": [[int(c) for c in color] for color in colors]}
    write_json(classes, out_dir / CLASSES_FILE)


@dataclass
class Segmenter:
    """An exported segmenter, loaded: numpy in, numpy out."""

    saved_model: Any  # what tf.saved_model.load returns; it owns the variables the signatures read
    names: list[str]
    colors: list[tuple[int, ...]]

    def predict(self, encoded: bytes) -> tuple[np.ndarray, np.ndarray]:
        """(class_map, probabilities) of an encoded image (JPEG, PNG or BMP)."""
        return self._numpy(self.saved_model.signatures["serving_default"](encoded=tf.constant(encoded)))

    def predict_pixels(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(class_map, probabilities) of a decoded (height, width, 3) image of 0-255 values."""
        return self._numpy(self.saved_model.signatures["segment_pixels"](image=tf.constant(image, tf.float32)))

    @staticmethod
    def _numpy(outputs: dict[str, tf.Tensor]) -> tuple[np.ndarray, np.ndarray]:
        return outputs["class_map"].numpy(), outputs["probabilities"].numpy()


def load_segmenter(export_dir: Path) -> Segmenter:
    """The folder :func:`export_segmenter` wrote."""
    classes = read_classes(export_dir, "a segmenter")
    saved_model = tf.saved_model.load(str(Path(export_dir) / SAVED_MODEL_DIR))
    return Segmenter(saved_model, list(classes["names"]), [tuple(color) for color in classes["colors"]])
