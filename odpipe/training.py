"""Training with the OD API's own ``model_lib_v2.train_loop``, followed as it runs.

``train_loop`` reports only through TensorBoard event files (every ``steps_per_loop`` steps).
A watcher thread reads those files incrementally, the way TensorBoard does, and hands each
step's scalars to a callback: that is how losses reach MLflow, the DVC plots file and the
progress line while training is still going.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf
from object_detection import model_lib_v2
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from odpipe import tfcompat  # noqa: F401  (tf-slim bridge for the OD API)

ScalarCallback = Callable[[int, dict[str, float]], None]


def check_schedule(num_steps: int, steps_per_loop: int) -> None:
    """train_loop runs whole loops of ``steps_per_loop`` steps and checkpoints between them:
    a remainder would silently train extra steps."""
    if steps_per_loop < 1 or num_steps < 1 or num_steps % steps_per_loop:
        raise ValueError(
            f"train.num_steps ({num_steps}) must be a positive multiple of train.steps_per_loop ({steps_per_loop})"
        )


def metric_name(tag: str) -> str:
    """'Loss/total_loss' -> 'loss/total_loss': one spelling in MLflow and the plots file."""
    return tag.lower()


class EventWatcher:
    """Reads new scalar summaries from every event file in a folder, step by step."""

    def __init__(self, folder: Path, callback: ScalarCallback) -> None:
        self.folder = folder
        self.callback = callback
        self._loaders: dict[Path, EventFileLoader] = {}
        self._pending: dict[int, dict[str, float]] = {}

    def poll(self, final: bool = False) -> None:
        """Deliver every complete step; a step is complete once a later step appeared
        (summaries of one step are written one by one), or on the final poll."""
        for path in sorted(self.folder.glob("events.out.tfevents.*")):
            loader = self._loaders.setdefault(path, EventFileLoader(str(path)))
            for event in loader.Load():
                for value in event.summary.value:
                    scalar = value.simple_value if value.HasField("simple_value") else tf.make_ndarray(value.tensor)
                    if np.ndim(scalar) == 0:
                        self._pending.setdefault(int(event.step), {})[metric_name(value.tag)] = float(scalar)
        ready = sorted(self._pending) if final else sorted(self._pending)[:-1]
        for step in ready:
            self.callback(step, self._pending.pop(step))


def train(
    pipeline_config: Path,
    model_dir: Path,
    steps_per_loop: int,
    checkpoint_max_to_keep: int,
    on_scalars: ScalarCallback,
    poll_seconds: float = 2.0,
) -> None:
    """Run ``train_loop`` into ``model_dir``, calling ``on_scalars(step, scalars)`` as it goes.

    A checkpoint is kept after every loop, so the last step is always saved whatever
    ``num_steps`` is (train_loop alone skips it when num_steps is not a multiple of its
    checkpoint interval).
    """
    model_dir.mkdir(parents=True, exist_ok=True)
    watcher = EventWatcher(model_dir / "train", on_scalars)
    done = threading.Event()

    def watch() -> None:
        while not done.wait(poll_seconds):
            watcher.poll()

    thread = threading.Thread(target=watch, name="event-watcher", daemon=True)
    thread.start()
    try:
        model_lib_v2.train_loop(
            pipeline_config_path=str(pipeline_config),
            model_dir=str(model_dir),
            checkpoint_every_n=steps_per_loop,
            checkpoint_max_to_keep=checkpoint_max_to_keep,
            record_summaries=False,  # input-image summaries only: they bloat the events
            num_steps_per_iteration=steps_per_loop,
        )
    finally:
        done.set()
        thread.join()
    watcher.poll(final=True)


class Progress:
    """A one-line progress report per logged step: step, loss, rate and time left."""

    def __init__(self, total_steps: int) -> None:
        self.total = total_steps
        self.start = time.monotonic()

    def line(self, step: int, scalars: dict[str, float]) -> str:
        elapsed = time.monotonic() - self.start
        rate = scalars.get("steps_per_sec", 0.0)
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        return (
            f"step {step}/{self.total} ({100 * step / self.total:.0f}%)  "
            f"loss {scalars.get('loss/total_loss', float('nan')):.3f}  "
            f"lr {scalars.get('learning_rate', float('nan')):.4g}  "
            f"{rate:.1f} steps/s  elapsed {elapsed:.0f}s  eta {eta:.0f}s"
        )
