"""Sliding-window inference: class probabilities for an image of any size, at its own resolution.

Shrinking a large image to the training size would erase the thin and small things segmentation is
for, and running a model on a whole 20-megapixel image does not fit in an accelerator's memory. So
the image is cut into windows of at most ``tile_size`` (the size the model was trained on), the
model runs on a few windows at a time, and each pixel's probabilities are the mean over the windows
that cover it: overlapping windows hide the seams, where a window's border lacks context.

Geometry, per axis. The image is padded at the end to a multiple of :data:`~odpipe.segment.models.STRIDE`
(zeros; cropped away at the end). The window is ``tile_size`` or the padded side if smaller, so an
image within a tile runs whole in one window (padded to the stride only). Windows start every
``step`` pixels, ``step`` the non-overlapping part of the window rounded down to a multiple of the
stride, and the last one ends at the padded side. Every origin is then a multiple of the stride:
a window sees the same pooling grid as the whole image would, so a translation-equivariant model
gives in each window what it would give on the whole image (up to the borders' missing context).

Everything is tensor arithmetic inside one ``tf.while_loop``, so this runs in a ``tf.function`` whose
height and width are unknown until run time (the exported serving signature). Memory is bounded by
``window_batch`` windows plus the image-sized sums of probabilities.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from odpipe.segment.models import STRIDE, padded_size

# Maps a (batch, height, width, 3) float32 batch of windows to (batch, height, width, classes) logits.
LogitsFn = Callable[[tf.Tensor], tf.Tensor]


def check_tiling(tile_size: int, overlap: float) -> None:
    """Refuse settings the windows cannot follow, naming the config keys."""
    if tile_size <= 0 or tile_size % STRIDE:
        raise ValueError(f"segment.tile_size must be a positive multiple of {STRIDE}, got {tile_size}")
    if not 0 <= overlap < 1:
        raise ValueError(f"segment.tile_overlap must be in [0, 1), got {overlap}")


def window_starts(side: tf.Tensor, window: tf.Tensor, overlap: float) -> tf.Tensor:
    """Where windows of ``window`` pixels start along a padded side of ``side`` pixels (both
    multiples of the stride, ``window <= side``): every ``step``, the last one flush with the end."""
    step = tf.maximum(STRIDE, tf.cast(tf.cast(window, tf.float32) * (1 - overlap), tf.int32) // STRIDE * STRIDE)
    count = -(-(side - window) // step) + 1
    return tf.minimum(tf.range(count) * step, side - window)


def _coverage(starts: tf.Tensor, window: tf.Tensor, side: tf.Tensor) -> tf.Tensor:
    """How many windows cover each pixel of the side: a window grid covers a pixel (row, col)
    ``rows[row] * cols[col]`` times, so two vectors stand for the image-sized count."""
    return tf.math.unsorted_segment_sum(
        tf.ones([tf.size(starts) * window]), tf.reshape(starts[:, None] + tf.range(window), [-1]), side
    )


def sliding_window_probabilities(
    logits_fn: LogitsFn,
    image: tf.Tensor,
    num_classes: int,
    tile_size: int,
    overlap: float,
    window_batch: int = 4,
) -> tf.Tensor:
    """Softmax probabilities (height, width, num_classes), float32, of one (height, width, 3)
    float32 image: the mean over the windows covering each pixel (see the module docstring).

    ``logits_fn`` is the model (or anything mapping a batch of windows to logits); it sees windows
    of one size, at most ``window_batch`` at a time.
    """
    check_tiling(tile_size, overlap)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    padded_height, padded_width = padded_size(height, width)
    padded = tf.pad(image, [[0, padded_height - height], [0, padded_width - width], [0, 0]])
    window_height, window_width = tf.minimum(tile_size, padded_height), tf.minimum(tile_size, padded_width)
    rows = window_starts(padded_height, window_height, overlap)
    cols = window_starts(padded_width, window_width, overlap)
    origins = tf.reshape(tf.stack(tf.meshgrid(rows, cols, indexing="ij"), -1), [-1, 2])
    grid = tf.stack(tf.meshgrid(tf.range(window_height), tf.range(window_width), indexing="ij"), -1)

    def add_windows(start: tf.Tensor, sums: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        pixels = origins[start : start + window_batch, None, None, :] + grid  # (windows, h, w, 2)
        probs = tf.nn.softmax(tf.cast(logits_fn(tf.gather_nd(padded, pixels)), tf.float32))
        return start + window_batch, tf.tensor_scatter_nd_add(sums, pixels, probs)

    _, sums = tf.while_loop(
        lambda start, _: start < tf.shape(origins)[0],
        add_windows,
        (tf.constant(0), tf.zeros([padded_height, padded_width, num_classes])),
        parallel_iterations=1,  # one batch of windows at a time: TF's default 10 held ten in memory
    )
    counts = _coverage(rows, window_height, padded_height)[:, None] * _coverage(cols, window_width, padded_width)
    return (sums / counts[..., None])[:height, :width]
