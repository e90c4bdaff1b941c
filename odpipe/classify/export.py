"""Export a trained classifier as a SavedModel that takes encoded images.

The folder holds ``saved_model/`` and, beside it, ``classes.json`` (the class names in id order
and the input size), so that it can be copied anywhere and still be used. The SavedModel carries
the whole inference: decoding (JPEG, PNG, BMP, GIF's first frame), the resize to the model's
square input exactly as training resized (bilinear, aspect not kept, as Keras'
``image_dataset_from_directory`` does) and the model's own pixel scaling. Its signature
``serving_default`` takes a batch of encoded images (a string vector) and returns, per image,
``class_id`` (int32), ``class_name`` (string) and ``probabilities`` (float32, one per class).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from odpipe.core.files import write_json
from odpipe.engine.export_folder import CLASSES_FILE, SAVED_MODEL_DIR, read_classes


def decode_resized(encoded: tf.Tensor, size: int) -> tf.Tensor:
    """An encoded image as the model's input: (size, size, 3) float32 of 0-255 values. Training,
    validation and the export all go through here, so they see the same pixels."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    return tf.image.resize(image, (size, size))


class ClassifierModule(tf.Module):
    """The Keras model with decoding and resizing around it, as the SavedModel's signature."""

    def __init__(self, model: tf.keras.Model, image_size: int, names: Sequence[str]) -> None:
        super().__init__(name="classifier")
        self.model = model
        self.image_size = image_size
        self.names = tf.constant(list(names))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serving_default(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        pixels = tf.map_fn(
            lambda encoded: decode_resized(encoded, self.image_size),
            images,
            fn_output_signature=tf.TensorSpec([self.image_size, self.image_size, 3], tf.float32),
        )
        probabilities = tf.cast(self.model(pixels, training=False), tf.float32)
        class_id = tf.argmax(probabilities, -1, output_type=tf.int32)
        return {"class_id": class_id, "class_name": tf.gather(self.names, class_id), "probabilities": probabilities}


def export_classifier(model: tf.keras.Model, out_dir: Path, image_size: int, names: Sequence[str]) -> None:
    """Write ``out_dir``/saved_model and ``out_dir``/classes.json (see the module docstring)."""
    num_classes = int(model.output_shape[-1])
    if len(names) != num_classes:
        raise ValueError(f"{out_dir}: the model has {num_classes} classes, given {len(names)} names")
    module = ClassifierModule(model, image_size, names)
    tf.saved_model.save(module, str(out_dir / SAVED_MODEL_DIR), signatures={"serving_default": module.serving_default})
    write_json({"names": list(names), "image_size": image_size}, out_dir / CLASSES_FILE)


@dataclass
class Classifier:
    """An exported classifier, loaded: encoded images in, probabilities out."""

    saved_model: Any  # what tf.saved_model.load returns; it owns the variables the signature reads
    names: list[str]
    image_size: int

    def predict(self, encoded: Sequence[bytes]) -> np.ndarray:
        """(len(encoded), classes) probabilities of encoded images (JPEG, PNG, BMP or GIF)."""
        outputs = self.saved_model.signatures["serving_default"](images=tf.constant(list(encoded), tf.string))
        return outputs["probabilities"].numpy()


def is_classifier(export_dir: Path) -> bool:
    """Whether ``export_dir`` holds what :func:`export_classifier` writes (its classes.json says so)."""
    classes = Path(export_dir) / CLASSES_FILE
    return classes.is_file() and "image_size" in json.loads(classes.read_text())


def load_classifier(export_dir: Path) -> Classifier:
    """The folder :func:`export_classifier` wrote."""
    classes = read_classes(export_dir, "a classifier")
    if "image_size" not in classes:
        raise ValueError(f"{Path(export_dir) / CLASSES_FILE}: no image_size; is {export_dir} a classifier export?")
    saved_model = tf.saved_model.load(str(Path(export_dir) / SAVED_MODEL_DIR))
    return Classifier(saved_model, list(classes["names"]), int(classes["image_size"]))
