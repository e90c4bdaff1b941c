"""The Keras tasks' training loop (segmentation, classification), made to survive real runs as
detection's training does (:mod:`odpipe.detect.train`):

- the model, optimizer and epoch are checkpointed (``tf.train.CheckpointManager``,
  ``ckpt-<epoch>``) in a work folder outside the stage's outputs after every epoch, so a run
  killed mid-way (or stopped with Ctrl-C) continues from its last epoch;
- after each epoch the task's ``validate`` scores the model on the whole val split, as the
  exported model will be, and the best epoch by the task's metric is kept aside
  (:class:`odpipe.engine.journal.Journal`); ``patience`` epochs without a better one, or
  ``max_minutes``, stop training;
- losses and val metrics go to MLflow and the journal as they come (the task's callbacks), with a
  progress line (rate, time left) every ``PROGRESS_SECONDS``;
- training may run in phases (a frozen pretrained backbone first, then all of it): each phase is
  prepared (trainable flags, recompiled) before its own ``fit``, also when a resume lands in it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from odpipe.engine.checkpoints import checkpoint_step, latest
from odpipe.engine.distribute import check_batch, enable_memory_growth, make_strategy
from odpipe.engine.journal import ELAPSED, Journal, Outcome, ScalarCallback, interrupt_requests

log = logging.getLogger(__name__)
LOSS = "loss"
IMAGES_PER_SECOND = "train/images_per_second"
VAL_SECONDS = "val/seconds"
PROGRESS_SECONDS = 30.0
# Sets the model up for the phase that starts at the given epoch (trainable flags, compile) and
# returns the epoch where that phase ends.
PreparePhase = Callable[[int], int]


@dataclass(frozen=True)
class EpochSchedule:
    """How long to train and when to stop early."""

    epochs: int
    steps_per_epoch: int
    patience: int | None = None
    keep: str = "best"
    max_minutes: float | None = None

    def out_of_time(self, elapsed: float) -> bool:
        return self.max_minutes is not None and elapsed >= 60 * self.max_minutes

    @classmethod
    def from_config(cls, train: Mapping, examples: int) -> EpochSchedule:
        """The ``train`` config's schedule, an epoch being one pass over ``examples`` train
        examples (the last partial batch dropped)."""
        return cls(
            epochs=train["epochs"],
            steps_per_epoch=max(1, examples // train["batch_size"]),
            patience=train["patience"],
            keep=train["keep"],
            max_minutes=train["max_minutes"],
        )


def start_strategy(train: Mapping) -> tf.distribute.Strategy:
    """The configured strategy (GPU memory taken as needed), the batch checked against its
    replicas, and every random seed set: what a Keras task's train stage does before building."""
    enable_memory_growth()
    strategy = make_strategy(train["strategy"], train["devices"])
    check_batch(train["batch_size"], strategy.num_replicas_in_sync)
    seed_everything(train["seed"])
    return strategy


SINGLE_HOST = ("auto", "mirrored")  # strategies whose one process holds the journal, MLflow and outputs


def check_strategy(name: str, task: str) -> None:
    """The Keras tasks train on one machine (any number of its GPUs): several workers would
    each write the journal and the outputs, which only detection's training coordinates yet."""
    if name not in SINGLE_HOST:
        raise ValueError(
            f"train.strategy={name}: the {task} task trains on one machine; use auto or mirrored (its GPUs)"
        )


def check_task_model(model: Mapping, task: str, choices: str) -> None:
    """Refuse another task's model (``-S model=...``), naming the choices."""
    if model.get("task") != task:
        raise ValueError(
            f"model {model.get('name', '?')!r} is not a {task} model: the {task} task takes {choices} "
            f"(conf/model/*.yaml with task: {task})"
        )


class ProgressLog(tf.keras.callbacks.Callback):
    """A progress line at most every ``PROGRESS_SECONDS``: epoch, step, loss, images per
    second and the time left for the run (Keras' own bar is unreadable in a log file)."""

    def __init__(self, schedule: EpochSchedule, batch_size: int, first_epoch: int) -> None:
        super().__init__()
        self.schedule, self.batch_size, self.first = schedule, batch_size, first_epoch
        self.start = self.last = time.monotonic()
        self.epoch = first_epoch
        self.done = 0  # steps trained by this run

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.done += 1
        now = time.monotonic()
        if now - self.last >= PROGRESS_SECONDS:
            self.last = now
            log.info(self.line(batch + 1, (logs or {}).get(LOSS, math.nan)))

    def line(self, step: int, loss: float) -> str:
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.schedule.epochs - self.epoch) * self.schedule.steps_per_epoch - step
        eta = f"{left / rate:.0f}s" if rate > 0 else "?"
        return (
            f"epoch {self.epoch + 1}/{self.schedule.epochs} step {step}/{self.schedule.steps_per_epoch}  "
            f"loss {loss:.4f}  {rate * self.batch_size:.1f} images/s  elapsed {elapsed:.0f}s  eta {eta} (val excluded)"
        )


class EpochEnd(tf.keras.callbacks.Callback):
    """What happens after each epoch, inside one ``fit`` call: checkpoint, journal, val, the
    decision to stop. (One ``fit`` per epoch would rebuild the input pipeline each time, and
    tearing down an endless ``tf.data`` pipeline waits for its autotuner: up to 20 s an epoch.)"""

    def __init__(
        self,
        manager: tf.train.CheckpointManager,
        trained: tf.Variable,
        validate: Callable[[], dict[str, float]],
        schedule: EpochSchedule,
        journal: Journal,
        images_per_epoch: int,
        elapsed: Callable[[], float],
        interrupted: threading.Event,
        on_losses: ScalarCallback,
        on_val: ScalarCallback,
    ) -> None:
        super().__init__()
        self.manager, self.trained, self.validate = manager, trained, validate
        self.schedule, self.journal, self.images_per_epoch = schedule, journal, images_per_epoch
        self.elapsed, self.interrupted = elapsed, interrupted
        self.on_losses, self.on_val = on_losses, on_val
        self.stop, self.epoch_start = "epochs", time.monotonic()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_start = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        seconds, done = time.monotonic() - self.epoch_start, epoch + 1
        loss = float((logs or {}).get(LOSS, math.nan))
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"training diverged: the loss of epoch {done} is {loss}; lower train.learning_rate or check the data"
            )
        self.trained.assign(done)
        prefix = self.manager.save(checkpoint_number=done)
        if self.interrupted.is_set():  # this checkpoint is kept: a resume starts from it
            raise KeyboardInterrupt
        losses = {
            # the loss and what the task compiled beside it (classification's train accuracy)
            **{key: float(value) for key, value in (logs or {}).items()},
            LOSS: loss,
            "learning_rate": float(tf.keras.backend.get_value(self.model.optimizer.learning_rate)),
            # training alone (validation excluded): what make bench-segment compares with a bare fit
            IMAGES_PER_SECOND: self.images_per_epoch / seconds,
        }
        self.journal.add_losses(done, losses, self.elapsed())
        self.on_losses(done, losses)
        val_start = time.monotonic()
        metrics = self.validate() | {VAL_SECONDS: time.monotonic() - val_start}  # what validation costs the run
        self.journal.add_val(done, metrics, prefix, self.elapsed())
        self.on_val(done, metrics)
        if self.journal.patience_ran_out(self.schedule.patience):
            self.stop = "patience"
        elif self.schedule.out_of_time(self.elapsed()):
            self.stop = "budget"
        self.model.stop_training = self.stop != "epochs"


def fit_epochs(
    model: tf.keras.Model,
    data: tf.data.Dataset,
    validate: Callable[[], dict[str, float]],
    work: Path,
    schedule: EpochSchedule,
    journal: Journal,
    *,
    batch_size: int,
    on_losses: ScalarCallback,
    on_val: ScalarCallback,
    prepare: PreparePhase | None = None,
) -> Outcome:
    """Train ``model`` (compiled) into ``work``, resuming from its latest checkpoint there;
    each epoch checkpointed, scored on val and journaled (:class:`EpochEnd`). With ``prepare``,
    one ``fit`` per phase, each prepared first (the optimizer must stay the same object: the
    checkpoint holds it); without, one ``fit`` for every epoch."""
    # ``step`` holds the epochs trained, under the name detection's checkpoints give their step,
    # so that the shared checkpoint and journal code reads either.
    trained = tf.Variable(0, dtype=tf.int64, trainable=False)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, step=trained)
    manager = tf.train.CheckpointManager(checkpoint, str(work), max_to_keep=2)
    restored = manager.latest_checkpoint
    if restored:
        checkpoint.restore(restored).expect_partial()
    first = checkpoint_step(restored) if restored else 0
    started, earlier = time.monotonic(), journal.elapsed

    def elapsed() -> float:
        return earlier + time.monotonic() - started

    stop = "epochs"
    if restored and journal.patience_ran_out(schedule.patience):
        stop = "patience"
    elif restored and schedule.out_of_time(earlier):
        stop = "budget"
    if stop == "epochs" and first < schedule.epochs:
        with interrupt_requests() as interrupted:
            end = EpochEnd(
                manager, trained, validate, schedule, journal, schedule.steps_per_epoch * batch_size,
                elapsed, interrupted, on_losses, on_val,
            )  # fmt: skip
            progress = ProgressLog(schedule, batch_size, first)
            start = first
            while start < schedule.epochs and end.stop == "epochs":
                until = prepare(start) if prepare else schedule.epochs
                if not start < until <= schedule.epochs:
                    raise ValueError(f"a training phase starting at epoch {start} must end after it, not at {until}")
                model.fit(
                    data,
                    initial_epoch=start,
                    epochs=until,
                    steps_per_epoch=schedule.steps_per_epoch,
                    callbacks=[progress, end],
                    verbose=0,
                )
                start = int(trained.numpy())
            stop = end.stop
    epoch = int(trained.numpy())  # the last epoch checkpointed: restored, or trained here
    seconds = elapsed() if epoch > first else earlier
    if schedule.keep == "best" and journal.best is not None:
        best = journal.best
        return Outcome(epoch, stop, seconds, str(work / best["checkpoint"]), best["step"], best["metrics"])
    val = next((r for r in journal.val if r["step"] == epoch), {})
    kept = {k: v for k, v in val.items() if k not in ("step", ELAPSED)}
    return Outcome(epoch, stop, seconds, manager.latest_checkpoint, epoch, kept)


def restore_weights(model: tf.keras.Model, folder: Path) -> str:
    """Load the weights of the checkpoint in ``folder`` (the train stage's output) into ``model``."""
    prefix = latest(folder)
    if prefix is None:
        raise FileNotFoundError(f"{folder}: no checkpoint; run the train stage first")
    tf.train.Checkpoint(model=model).restore(prefix).expect_partial()
    return prefix


def seed_everything(seed: int) -> None:
    tf.keras.utils.set_random_seed(seed)
