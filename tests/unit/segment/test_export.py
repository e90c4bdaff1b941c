"""The exported segmenter: a tiny untrained U-Net saved and reloaded in this process answers, for
encoded and decoded images of any size, what the in-memory model answers."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from odpipe.engine.export_folder import CLASSES_FILE
from odpipe.segment.export import Segmenter, export_segmenter, load_segmenter
from odpipe.segment.models import build_model
from odpipe.segment.tiling import sliding_window_probabilities

TILE, OVERLAP = 64, 0.25
NAMES = ["background", "road", "car"]
COLORS = [(0, 0, 0), (128, 64, 128), (0, 0, 142)]


@pytest.fixture(scope="module")
def model() -> tf.keras.Model:
    tf.keras.utils.set_random_seed(3)
    return build_model("unet", len(NAMES), {"base_filters": 4, "depth": 2})


@pytest.fixture(scope="module")
def segmenter(model: tf.keras.Model, tmp_path_factory: pytest.TempPathFactory) -> Segmenter:
    out_dir = tmp_path_factory.mktemp("export")
    export_segmenter(model, out_dir, tile_size=TILE, overlap=OVERLAP, class_names=NAMES, colors=COLORS)
    return load_segmenter(out_dir)


def _image(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _encoded(image: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, fmt)
    return buffer.getvalue()


def _in_memory(model: tf.keras.Model, image: np.ndarray) -> np.ndarray:
    # training=False said, not left to Keras' global learning phase, which the OD API's evaluation
    # sets (and leaves set) in this same test process.
    inference = lambda windows: model(windows, training=False)  # noqa: E731
    return sliding_window_probabilities(inference, tf.constant(image, tf.float32), len(NAMES), TILE, OVERLAP).numpy()


@pytest.mark.parametrize("size", [(40, 50), (50, 70), (150, 100)])  # within a tile, one side over, both over
def test_reloaded_predictions_equal_the_in_memory_model(
    segmenter: Segmenter, model: tf.keras.Model, size: tuple[int, int]
) -> None:
    image = _image(*size, seed=sum(size))
    class_map, probabilities = segmenter.predict(_encoded(image, "PNG"))
    assert class_map.shape == size and class_map.dtype == np.int32
    assert probabilities.shape == (*size, len(NAMES)) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, _in_memory(model, image), atol=1e-5)
    np.testing.assert_array_equal(class_map, probabilities.argmax(-1))
    np.testing.assert_allclose(probabilities.sum(-1), 1, atol=1e-5)
    pixels_map, pixels_probabilities = segmenter.predict_pixels(image.astype(np.float32))
    np.testing.assert_array_equal(pixels_map, class_map)
    np.testing.assert_array_equal(pixels_probabilities, probabilities)


def test_an_image_within_a_tile_is_the_model_on_the_padded_image(segmenter: Segmenter, model: tf.keras.Model) -> None:
    image = _image(40, 50, seed=1)
    padded = np.zeros((1, 64, 64, 3), np.float32)
    padded[0, :40, :50] = image
    expected = tf.nn.softmax(model(padded, training=False)).numpy()[0, :40, :50]
    np.testing.assert_allclose(segmenter.predict(_encoded(image, "BMP"))[1], expected, atol=1e-5)


def test_jpeg_decodes_to_the_image_size_and_classes_travel_with_the_model(segmenter: Segmenter) -> None:
    class_map, probabilities = segmenter.predict(_encoded(_image(33, 97, seed=2), "JPEG"))
    assert class_map.shape == (33, 97) and probabilities.shape == (33, 97, 3)
    assert segmenter.names == NAMES and segmenter.colors == COLORS


def test_export_refuses_names_that_do_not_fit_the_model(model: tf.keras.Model, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="the model has 3 classes, given 2 names and 3 colours"):
        export_segmenter(model, tmp_path, tile_size=TILE, overlap=OVERLAP, class_names=NAMES[:2], colors=COLORS)
    with pytest.raises(ValueError, match=f"{tmp_path / CLASSES_FILE}: missing"):
        load_segmenter(tmp_path)
    assert not list(tmp_path.iterdir())  # nothing written
