"""Training a segmentation model: random crops of the train records, the model compiled with
the segmentation losses, and validation as the export segments (every val image at its own size,
in sliding windows) for :func:`odpipe.engine.keras_loop.fit_epochs`' epoch loop.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import tensorflow as tf

from odpipe.data.index_masks import VOID
from odpipe.data.records import shard_pattern
from odpipe.segment.export import SegmenterModule
from odpipe.segment.losses import make_loss
from odpipe.segment.metrics import confusion, flat_metrics, segmentation_metrics
from odpipe.segment.models import build_model
from odpipe.segment.records import parse_example

log = logging.getLogger(__name__)
SELECT = "val/mIoU"  # what "best" means
SHUFFLE_BUFFER = 512  # examples: the records are written in a seeded random order already


def pad_crop(image: tf.Tensor, mask: tf.Tensor, size: int) -> tuple[tf.Tensor, tf.Tensor]:
    """A random ``size`` square of the image and the same square of its mask; a side shorter
    than ``size`` is padded first (image black, mask void: the padding is never learnt)."""
    height = tf.maximum(tf.shape(image)[0], size)
    width = tf.maximum(tf.shape(image)[1], size)
    image = tf.image.pad_to_bounding_box(image, 0, 0, height, width)
    # pad_to_bounding_box pads with 0: pad the complement of the mask, so that the mask gets VOID.
    mask = VOID - tf.image.pad_to_bounding_box(VOID - mask[..., None], 0, 0, height, width)
    stacked = tf.image.random_crop(tf.concat([image, mask], axis=-1), (size, size, 4))
    return tf.cast(stacked[..., :3], tf.float32), stacked[..., 3]


def train_dataset(records: Path, batch_size: int, crop: int, seed: int) -> tf.data.Dataset:
    """Endless batches of random crops from the train shards, read interleaved."""
    files = tf.data.Dataset.list_files(shard_pattern(records, "train"), shuffle=True, seed=seed)
    examples = files.interleave(tf.data.TFRecordDataset, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    pairs = examples.shuffle(SHUFFLE_BUFFER, seed=seed).repeat().map(parse_example, num_parallel_calls=tf.data.AUTOTUNE)
    crops = pairs.map(lambda image, mask: pad_crop(image, mask, crop), num_parallel_calls=tf.data.AUTOTUNE)
    return crops.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def split_pairs(records: Path, split: str) -> tf.data.Dataset:
    """A split's (image, mask) pairs at their own sizes, in file order."""
    files = sorted(tf.io.gfile.glob(shard_pattern(records, split)))
    return tf.data.TFRecordDataset(files).map(parse_example, num_parallel_calls=tf.data.AUTOTUNE)


def score_split(module: SegmenterModule, pairs: tf.data.Dataset, names: list[str]) -> tuple[dict, np.ndarray]:
    """MMSegmentation's metrics over a split (confusion summed over its images) and the
    confusion, each image segmented as the exported model will: whole, or in windows."""
    total = np.zeros((len(names), len(names)), dtype=np.int64)
    for image, mask in pairs:
        predicted = module.segment_pixels(tf.cast(image, tf.float32))["class_map"]
        total += confusion(mask.numpy(), predicted.numpy(), len(names))
    return segmentation_metrics(total, names), total


def val_scores(metrics: dict) -> dict[str, float]:
    """Val metrics as the journal, MLflow and the plots file name them (``val/mIoU`` ...)."""
    return {f"val/{name}": value for name, value in flat_metrics(metrics).items()}


def compiled_model(
    model_cfg: Mapping, num_classes: int, train: Mapping, weights: np.ndarray, total_steps: int
) -> tf.keras.Model:
    """The configured model, compiled with Adam on a cosine decay to 0 over ``total_steps`` and
    the configured loss; built in the caller's strategy scope, under mixed precision when asked
    (the model keeps its logits, and so the softmax, in float32)."""
    if train["mixed_precision"]:
        tf.keras.mixed_precision.set_global_policy("mixed_float16")
    model = build_model(model_cfg["architecture"], num_classes, model_cfg)
    decay = tf.keras.optimizers.schedules.CosineDecay(train["learning_rate"], total_steps)
    model.compile(optimizer=tf.keras.optimizers.Adam(decay), loss=make_loss(train["loss"], weights))
    return model
