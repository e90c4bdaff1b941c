"""Sliding-window inference against numpy references: the windows agree with the whole image where
the model is translation-equivariant, overlaps are averaged, small images are padded and cropped
back, all inside a tf.function of unknown height and width."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from odpipe.segment.models import STRIDE, build_model
from odpipe.segment.tiling import check_tiling, sliding_window_probabilities, window_starts

DYNAMIC_IMAGE = tf.TensorSpec([None, None, 3], tf.float32)


def _softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(-1, keepdims=True))
    return exp / exp.sum(-1, keepdims=True)


def _position_logits(rows: Any, cols: Any, xp: ModuleType = np) -> Any:
    """Three logits that are a function of a pixel's (row, col) only, in numpy or (``xp`` being
    ``tf.experimental.numpy``) in TensorFlow."""
    return xp.stack([xp.sin(rows / 50), xp.cos(cols / 70), rows * cols / 1e6], -1)


def _pointwise_model(windows: tf.Tensor) -> tf.Tensor:
    """A "model" that reads each pixel's position from its first two channels: any window gives,
    at a pixel, what the whole image gives there."""
    return _position_logits(windows[..., 0], windows[..., 1], xp=tf.experimental.numpy)


def _positions_image(height: int, width: int) -> np.ndarray:
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([rows, cols, np.zeros_like(rows)], -1).astype(np.float32)


def test_window_starts_step_by_the_stride_and_end_flush() -> None:
    def starts(side: int, window: int, overlap: float) -> list[int]:
        return window_starts(tf.constant(side), tf.constant(window), overlap).numpy().tolist()

    assert starts(2048, 512, 0.25) == [0, 384, 768, 1152, 1536]
    assert starts(1024, 512, 0.25) == [0, 384, 512]  # the last one flush with the end
    assert starts(1024, 512, 0.0) == [0, 512]
    assert starts(96, 96, 0.5) == [0]
    assert starts(160, 64, 0.9) == [0, 32, 64, 96]  # at least one stride apart
    assert starts(160, 96, 0.5) == [0, 32, 64]  # 48 rounded down to the stride


def test_tiles_of_a_large_image_equal_the_whole_image_in_a_dynamic_graph() -> None:
    """2048x1024 (and 1000x777, not multiples of the stride) in windows of 512 overlapping by a
    quarter, through one traced graph: equal to the numpy softmax of the whole image."""

    @tf.function(input_signature=[DYNAMIC_IMAGE])
    def tiled(image: tf.Tensor) -> tf.Tensor:
        return sliding_window_probabilities(_pointwise_model, image, 3, 512, 0.25)

    for height, width in [(2048, 1024), (1000, 777)]:
        image = _positions_image(height, width)
        expected = _softmax(_position_logits(image[..., 0].astype(np.float64), image[..., 1].astype(np.float64)))
        probabilities = tiled(tf.constant(image)).numpy()
        assert probabilities.shape == (height, width, 3)
        np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    assert tiled.experimental_get_tracing_count() == 1  # one graph served both sizes


def test_overlapping_windows_are_averaged_like_the_numpy_reference() -> None:
    """A "model" whose logits depend on the position inside the window, so overlapping windows
    disagree: each pixel must get the mean of its windows' probabilities. 200x130 pads to
    224x160; 96-pixel windows at half overlap start every 32 pixels."""
    height, width, tile = 200, 130, 96
    batches = []

    def in_window_model(windows: tf.Tensor) -> tf.Tensor:
        batches.append(tuple(windows.shape))
        size = tf.cast(tf.range(tile), tf.float32)
        rows, cols = tf.meshgrid(size * 3, size * 2, indexing="ij")
        logits = _position_logits(rows, cols, xp=tf.experimental.numpy)
        return tf.broadcast_to(logits, [tf.shape(windows)[0], tile, tile, 3])

    probabilities = sliding_window_probabilities(in_window_model, tf.zeros((height, width, 3)), 3, tile, 0.5, 4).numpy()

    sums, counts = np.zeros((224, 160, 3)), np.zeros((224, 160, 1))
    inside = np.arange(tile, dtype=np.float64)
    window = _softmax(_position_logits(*np.meshgrid(inside * 3, inside * 2, indexing="ij")))
    for top in [*range(0, 224 - tile, 32), 224 - tile]:
        for left in [*range(0, 160 - tile, 32), 160 - tile]:
            sums[top : top + tile, left : left + tile] += window
            counts[top : top + tile, left : left + tile] += 1
    np.testing.assert_allclose(probabilities, (sums / counts)[:height, :width], atol=1e-6)
    assert batches == [(4, tile, tile, 3)] * 3 + [(3, tile, tile, 3)]  # 5 x 3 windows, 4 at a time


def test_an_image_within_a_tile_runs_whole_padded_to_the_stride() -> None:
    model = build_model("unet", 3, {"base_filters": 4, "depth": 2})
    image = np.random.default_rng(0).uniform(0, 255, (40, 50, 3)).astype(np.float32)
    # training=False said, not left to Keras' global learning phase, which the OD API's evaluation
    # sets (and leaves set) in this same test process.
    inference = lambda windows: model(windows, training=False)  # noqa: E731
    probabilities = sliding_window_probabilities(inference, tf.constant(image), 3, 64, 0.25).numpy()
    padded = np.zeros((1, 64, 64, 3), np.float32)
    padded[0, :40, :50] = image
    expected = tf.nn.softmax(model(padded, training=False)).numpy()[0, :40, :50]
    assert probabilities.shape == (40, 50, 3)
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)


def test_tiling_settings_are_checked() -> None:
    with pytest.raises(ValueError, match=f"segment.tile_size must be a positive multiple of {STRIDE}, got 100"):
        check_tiling(100, 0.25)
    with pytest.raises(ValueError, match=r"segment.tile_overlap must be in \[0, 1\), got 1.0"):
        check_tiling(96, 1.0)
