"""The exported model formats behind one call: decoded images in, the SavedModel's output arrays
out, so that evaluation, prediction, tracking and serving score every format with the same code.

An export folder holds ``saved_model/`` (``exporter_lib_v2``) and, when ``export.formats`` asks
for it, ``tflite/model.tflite`` (see ``odpipe.detect.tflite``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import tensorflow as tf

BATCH_SIZE = 8  # images per model call, for an export that takes a batch of any size
OUTPUTS = ("num_detections", "detection_boxes", "detection_classes", "detection_scores")
# Each format's file or folder inside an export folder.
FORMAT_PATHS = {"saved_model": Path("saved_model"), "tflite": Path("tflite") / "model.tflite"}
# The TFLite graph's outputs, named by the signature runner in the order the OD API's module
# returns them (its output details list them in another order, which is why they are not used).
TFLITE_OUTPUTS = {
    "output_0": "num_detections",
    "output_1": "detection_scores",
    "output_2": "detection_classes",
    "output_3": "detection_boxes",
}
LABEL_ID_OFFSET = 1  # the SavedModel's classes start at 1, as the label map's ids do; TFLite's at 0


class Detector(Protocol):
    """Decoded [height, width, 3] uint8 images of one shape in, ``OUTPUTS`` as numpy arrays out
    (boxes normalised to each image, classes as label-map ids), ``images_per_call`` at most."""

    images_per_call: int

    def __call__(self, images: Sequence[tf.Tensor]) -> dict[str, np.ndarray]: ...


class SavedModelDetector:
    """The OD API's SavedModel. Its ``image_tensor`` input (odpipe's export) is
    ``[1, None, None, 3]`` uint8, one image a call; ``float_image_tensor`` takes a batch of any
    size, sent ``BATCH_SIZE`` at a time."""

    def __init__(self, path: Path) -> None:
        self.model = tf.saved_model.load(str(path))
        spec = self.model.__call__.input_signature[0]
        self.dtype = spec.dtype
        self.images_per_call = BATCH_SIZE if spec.shape[0] is None else 1

    def __call__(self, images: Sequence[tf.Tensor]) -> dict[str, np.ndarray]:
        """The outputs fetched to numpy, which waits for an accelerator to finish, so that timing
        this call times the model."""
        outputs = self.model(tf.cast(tf.stack(images), self.dtype))
        return {key: outputs[key].numpy() for key in OUTPUTS}


def fixed_shape_input(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """A decoded image as a TFLite file's [1, height, width, 3] float input: resized exactly as
    the SavedModel's ``fixed_shape_resizer`` does, TF1's bilinear resize without half-pixel
    centres (TF2's ``tf.image.resize`` samples elsewhere and moves scores by ~0.02)."""
    return tf.compat.v1.image.resize_images(image, size)[tf.newaxis]


class TFLiteDetector:
    """A ``.tflite`` file from ``odpipe.detect.tflite``: a fixed [1, height, width, 3] float input of
    pixel values (the model's own normalisation is inside the graph): each image is resized here
    by ``fixed_shape_input``."""

    images_per_call = 1

    def __init__(self, path: Path, num_threads: int | None = None) -> None:
        interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=num_threads)
        self.runner = interpreter.get_signature_runner()
        (details,) = self.runner.get_input_details().values()
        self.size = tuple(int(n) for n in details["shape"][1:3])

    def __call__(self, images: Sequence[tf.Tensor]) -> dict[str, np.ndarray]:
        (image,) = images
        resized = fixed_shape_input(image, self.size).numpy()
        outputs = {TFLITE_OUTPUTS[key]: value for key, value in self.runner(input=resized).items()}
        outputs["detection_classes"] = outputs["detection_classes"] + LABEL_ID_OFFSET
        # SSD's TFLite post-processing leaves boxes that overhang the image; the SavedModel's
        # clips them to it, and so does this.
        outputs["detection_boxes"] = np.clip(outputs["detection_boxes"], 0.0, 1.0)
        return outputs


def format_size(export_dir: Path, model_format: str) -> int:
    """Bytes of one format's file, or of every file in its folder."""
    path = export_dir / FORMAT_PATHS[model_format]
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def load_detector(export_dir: Path, model_format: str = "saved_model") -> Detector:
    """The detector of one format in an export folder; a format the export lacks is named."""
    if model_format not in FORMAT_PATHS:
        raise ValueError(f"unknown model format {model_format!r}: one of {', '.join(FORMAT_PATHS)}")
    path = export_dir / FORMAT_PATHS[model_format]
    if not path.exists():
        raise FileNotFoundError(f"{path}: the export has no {model_format} model (see export.formats)")
    return SavedModelDetector(path) if model_format == "saved_model" else TFLiteDetector(path)
