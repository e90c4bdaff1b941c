"""Which devices train: the tf.distribute strategy ``train_loop`` runs under, and the checks
that turn the OD API's late, cryptic failures on several devices into early, clear errors.

``model_main_tf2.py`` picks MirroredStrategy, MultiWorkerMirroredStrategy or TPUStrategy and
calls ``train_loop`` inside its scope (``train_loop`` builds everything under
``tf.distribute.get_strategy()``); ``train.strategy`` does the same from conf.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

import tensorflow as tf

STRATEGIES = ("auto", "mirrored", "multi_worker", "tpu")


@dataclass(frozen=True)
class Cluster:
    """This process's place among the training workers (TF_CONFIG), one worker without it."""

    num_workers: int
    is_chief: bool
    task: str

    @classmethod
    def from_env(cls, strategy_name: str) -> Cluster:
        if strategy_name != "multi_worker":
            return cls(1, True, "chief")
        config = json.loads(os.environ.get("TF_CONFIG") or "{}")
        cluster, task = config.get("cluster") or {}, config.get("task") or {}
        if not cluster or not task:
            raise ValueError(
                "train.strategy=multi_worker needs TF_CONFIG, e.g. "
                '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
            )
        workers = len(cluster.get("chief", [])) + len(cluster.get("worker", []))
        kind, index = task.get("type"), int(task.get("index", 0))
        # Without a "chief" entry, worker 0 is the chief (as in tf.distribute).
        chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)
        return cls(workers, chief, f"{kind}:{index}")


def enable_memory_growth() -> None:
    """Allocate GPU memory as needed instead of all of it at start, so that two queued
    experiments (``dvc queue start -j 2``) can share one GPU."""
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)


def make_strategy(name: str, devices: Sequence[str] | None = None) -> tf.distribute.Strategy:
    """``auto``: MirroredStrategy over every GPU when there are several, else the default
    (one device); ``mirrored`` over ``devices`` (default: all GPUs, else the CPU);
    ``multi_worker`` from TF_CONFIG; ``tpu`` from TPU_NAME as model_main_tf2 does it."""
    if name not in STRATEGIES:
        raise ValueError(f"train.strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")
    devices = list(devices) if devices else None
    if name == "auto":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def check_batch(batch_size: int, replicas: int) -> None:
    """The OD API splits the global ``train.batch_size`` evenly over replicas."""
    if batch_size % replicas:
        raise ValueError(
            f"train.batch_size is the global batch, split evenly over the {replicas} replicas in sync: "
            f"{batch_size} does not divide by {replicas} (try {max(replicas, batch_size // replicas * replicas)})"
        )


def check_shards(num_shards: int, num_workers: int) -> None:
    """Every worker reads TFRecord files of its own: with fewer shards than workers, one worker
    hits the end of its data at once and the chief fails much later with an opaque error."""
    if num_shards < num_workers:
        raise ValueError(
            f"{num_workers} workers need at least {num_workers} train TFRecord shards, found {num_shards}: "
            f"set tfrecord.num_shards to {num_workers} or more"
        )
