"""Training with the OD API's own ``model_lib_v2.train_loop``, made to survive real runs.

``train_loop`` has no callbacks: it reports through TensorBoard event files and calls its
``CheckpointManager.save()`` between loops of ``steps_per_loop`` steps. That save is where
odpipe steps in, in the training thread, with the loop between two steps:

- before the checkpoint is written, the step's losses are read from the event files (to MLflow,
  the plots file and the progress line) and a loss that turned NaN stops training, so a
  diverged checkpoint is never saved;
- after it, every ``eval_every`` steps, the checkpoint is scored on the val split with the OD
  API's ``eager_eval_loop`` (its COCO evaluator is pycocotools' COCOeval, as in ``evaluate``);
  the best one is copied aside, and ``patience`` evaluations without improvement stop training.

Everything needed to continue (losses, val metrics, the best checkpoint) is journaled in the
work folder next to the checkpoints, so a killed run resumes where its last checkpoint was.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from object_detection import inputs, model_lib_v2
from object_detection.builders import model_builder
from object_detection.utils import config_util
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from odpipe.detect import tfcompat  # noqa: F401  (tf-slim bridge for the OD API)
from odpipe.engine.checkpoints import checkpoint_step, latest
from odpipe.engine.journal import ELAPSED, Journal, Outcome, interrupt_requests

ScalarCallback = Callable[[int, dict[str, float]], None]
KEEP = ("best", "last")
LOSS = "loss/total_loss"
EVAL_SECONDS = "val/seconds"
# eager_eval_loop's keys -> ours (the same names as evaluate's, under val/).
VAL_METRICS = {
    "DetectionBoxes_Precision/mAP": "val/map",
    "DetectionBoxes_Precision/mAP@.50IOU": "val/map_50",
    "DetectionBoxes_Precision/mAP@.75IOU": "val/map_75",
}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class _Stop(Exception):
    """Raised from the checkpoint hook to end train_loop before num_steps, for ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


STOP_REASONS = ("num_steps", "patience", "budget")


@dataclass(frozen=True)
class Schedule:
    """When to log, checkpoint, evaluate and stop, in steps."""

    num_steps: int
    steps_per_loop: int
    eval_every: int | None  # None: no val evaluation
    patience: int | None  # None: never stop early
    keep: str = "best"
    checkpoint_max_to_keep: int = 3
    max_minutes: float | None = None  # wall-clock budget, val evaluations included; None: num_steps decides

    def __post_init__(self) -> None:
        if self.steps_per_loop < 1 or self.num_steps < 1 or self.num_steps % self.steps_per_loop:
            raise ValueError(
                f"train.num_steps ({self.num_steps}) must be a positive multiple of "
                f"train.steps_per_loop ({self.steps_per_loop})"
            )
        if self.eval_every is not None and (self.eval_every < 1 or self.eval_every % self.steps_per_loop):
            raise ValueError(
                f"train.eval_every ({self.eval_every}) must be a positive multiple of train.steps_per_loop "
                f"({self.steps_per_loop}): checkpoints, which are evaluated, are written once per loop"
            )
        if self.keep not in KEEP:
            raise ValueError(f"train.keep must be one of {', '.join(KEEP)}, got {self.keep!r}")
        if self.eval_every is None and (self.keep == "best" or self.patience is not None):
            raise ValueError("train.keep=best and train.patience need val evaluations: set train.eval_every")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"train.patience must be null or >= 1, got {self.patience}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"train.max_minutes must be null or > 0, got {self.max_minutes}")

    def out_of_time(self, elapsed: float) -> bool:
        """The budget is spent: stop at this checkpoint (checked once per loop, so a run ends at
        most one loop and one evaluation past its budget)."""
        return self.max_minutes is not None and elapsed >= 60 * self.max_minutes

    def evaluates_at(self, step: int) -> bool:
        return self.eval_every is not None and step > 0 and (step % self.eval_every == 0 or step == self.num_steps)


def check_val_data(patterns: list[str], schedule: Schedule) -> None:
    """Evaluating while training needs val examples: say so before training, not after the
    first loop (eager_eval_loop fails on an empty split with a TypeError)."""
    if schedule.eval_every is None:
        return
    files = [path for pattern in patterns for path in tf.io.gfile.glob(pattern)]
    if not any(True for path in files for _ in tf.data.TFRecordDataset(path).take(1)):
        raise ValueError(
            f"no val examples in {', '.join(patterns)}: evaluating while training needs a val split. "
            "Give val images (clean_split.ratios), or set train.eval_every=null and train.keep=last"
        )


def metric_name(tag: str) -> str:
    """'Loss/total_loss' -> 'loss/total_loss': one spelling in MLflow and the plots file."""
    return tag.lower()


def val_metrics(raw: dict) -> dict[str, float]:
    """eager_eval_loop's dict under our names: COCO mAPs and the val losses."""
    named = {VAL_METRICS[k]: float(v) for k, v in raw.items() if k in VAL_METRICS}
    named.update({f"val/{metric_name(k)}": float(v) for k, v in raw.items() if k.startswith("Loss/")})
    return named


class EventWatcher:
    """Reads new scalar summaries from the event files of a folder, step by step; files that
    were there before (an interrupted run's) are skipped: their steps are in the journal."""

    def __init__(self, folder: Path, callback: ScalarCallback) -> None:
        self.folder = folder
        self.callback = callback
        self._skip = set(folder.glob("events.out.tfevents.*"))
        self._loaders: dict[Path, EventFileLoader] = {}
        self._pending: dict[int, dict[str, float]] = {}

    def poll(self, final: bool = False) -> None:
        """Deliver every complete step: one a later step followed (the summaries of a step are
        written one by one), or every step when ``final`` (train_loop is between loops)."""
        for path in sorted(set(self.folder.glob("events.out.tfevents.*")) - self._skip):
            loader = self._loaders.setdefault(path, EventFileLoader(str(path)))
            for event in loader.Load():
                for value in event.summary.value:
                    scalar = value.simple_value if value.HasField("simple_value") else tf.make_ndarray(value.tensor)
                    if np.ndim(scalar) == 0:
                        self._pending.setdefault(int(event.step), {})[metric_name(value.tag)] = float(scalar)
        ready = sorted(self._pending) if final else sorted(self._pending)[:-1]
        for step in ready:
            self.callback(step, self._pending.pop(step))


def check_finite(rows: list[dict]) -> None:
    """Name the first logged step whose total loss is NaN or infinite, and the last good one."""
    for i, row in enumerate(rows):
        if LOSS in row and not math.isfinite(row[LOSS]):
            last = f"; the last finite loss was at step {rows[i - 1]['step']}" if i else ""
            raise TrainingDiverged(
                f"training diverged: {LOSS} is {row[LOSS]} at step {row['step']}{last}. "
                "Lower train.learning_rate, add warm-up steps or check the data."
            )


class Validator:
    """COCO metrics and losses on the val split (the pipeline's eval input) for one checkpoint
    at a time, the eval model built once. It runs in a thread of its own: the distribution
    strategy, the default summary writer and Keras' learning phase are thread-local in TF, so
    evaluating never touches the training loop's (eager_eval_loop sets the learning phase)."""

    def __init__(self, pipeline_config: Path, summary_dir: Path) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="val")
        self._config_path = pipeline_config
        self._summary_dir = summary_dir
        self._built: tuple | None = None

    def _build(self) -> tuple:
        configs = config_util.get_configs_from_pipeline_file(str(self._config_path))
        configs["eval_config"].num_visualizations = 0  # drawing them crashes on Pillow >= 10
        model = model_builder.build(configs["model"], is_training=False)
        dataset = inputs.eval_input(
            eval_config=configs["eval_config"],
            eval_input_config=configs["eval_input_configs"][0],
            model_config=configs["model"],
            model=model,
        )
        step = tf.Variable(0, dtype=tf.int64)
        writer = tf.summary.create_file_writer(str(self._summary_dir))
        return configs, model, dataset, step, tf.train.Checkpoint(step=step, model=model), writer

    def _evaluate(self, prefix: str) -> dict[str, float]:
        if self._built is None:
            self._built = self._build()
        configs, model, dataset, step, checkpoint, writer = self._built
        checkpoint.restore(prefix).expect_partial()
        # pycocotools prints its whole summary table at every evaluation: ours are logged.
        with writer.as_default(), tf.keras.backend.learning_phase_scope(0), redirect_stdout(io.StringIO()):
            raw = model_lib_v2.eager_eval_loop(model, configs, dataset, global_step=step)
        writer.flush()
        return val_metrics(raw)

    def __call__(self, prefix: str) -> dict[str, float]:
        return self._pool.submit(self._evaluate, prefix).result()

    def close(self) -> None:
        self._pool.shutdown()


@contextmanager
def checkpoint_hook(before: Callable[[int], None], after: Callable[[int, str], None]) -> Iterator[None]:
    """Call ``before(step)`` and ``after(step, prefix)`` around each of train_loop's saves.

    train_loop builds its ``tf.compat.v2.train.CheckpointManager`` by that name; for the length
    of the block that name is a subclass whose ``save`` calls us. An exception raised from
    either ends train_loop there.
    """
    namespace = tf.compat.v2.train
    original = namespace.CheckpointManager

    class HookedManager(original):
        def save(self, *args, **kwargs):
            step = int(self._checkpoint.step.numpy())
            before(step)
            prefix = super().save(*args, **kwargs)
            after(step, prefix)
            return prefix

    namespace.CheckpointManager = HookedManager
    try:
        yield
    finally:
        namespace.CheckpointManager = original


def fit(
    pipeline_config: Path,
    work: Path,
    schedule: Schedule,
    strategy: tf.distribute.Strategy,
    journal: Journal,
    *,
    restored: str | None,
    chief: bool,
    on_losses: ScalarCallback | None = None,
    on_val: ScalarCallback | None = None,
    use_tpu: bool = False,
) -> Outcome:
    """Train into ``work`` (resuming from its latest checkpoint), evaluate, keep the best.

    Every worker of a multi-worker run makes the same decisions (losses are all-reduced and the
    weights are in sync, so val metrics agree): all stop at the same step. Only the chief
    records anything; the others evaluate only when patience needs the decision.
    """
    restored_step = checkpoint_step(restored) if restored else 0
    events = Path(model_lib_v2.get_filepath(strategy, str(work / "train")))
    evaluating = schedule.eval_every is not None and (chief or schedule.patience is not None)
    validator = Validator(pipeline_config, work / "eval") if evaluating else None
    started, earlier = time.monotonic(), journal.elapsed

    def elapsed() -> float:
        return earlier + time.monotonic() - started

    def deliver(step: int, scalars: dict[str, float]) -> None:
        journal.add_losses(step, scalars, elapsed())
        if on_losses:
            on_losses(step, scalars)

    watcher = EventWatcher(events, deliver)

    def validate(step: int, prefix: str, forced: bool = False) -> None:
        due = forced or schedule.evaluates_at(step)
        if validator is None or not due or any(r["step"] == step for r in journal.val):
            return
        start = time.monotonic()
        metrics = validator(prefix)
        metrics[EVAL_SECONDS] = time.monotonic() - start  # what validation costs the run
        journal.add_val(step, metrics, prefix, elapsed())
        if on_val:
            on_val(step, metrics)
        if journal.patience_ran_out(schedule.patience):
            raise _Stop("patience")

    saved = [restored_step]  # this worker's own last checkpoint (a non-chief's are temporary)

    def before_save(step: int) -> None:
        if interrupted.is_set():
            raise KeyboardInterrupt
        tf.summary.flush()
        watcher.poll(final=True)
        check_finite(journal.losses)

    def after_save(step: int, prefix: str) -> None:
        saved.append(step)
        if interrupted.is_set():  # this checkpoint is kept: a resume starts from it
            raise KeyboardInterrupt
        # Never at train_loop's step-0 save, made before anything trained.
        out_of_time = all_agree_to_stop(strategy, step > 0 and schedule.out_of_time(elapsed()))
        validate(step, prefix, forced=out_of_time)  # the last checkpoint is a candidate too
        if out_of_time:
            raise _Stop("budget")

    stop = "num_steps"
    if restored is not None and journal.patience_ran_out(schedule.patience):
        stop = "patience"
    elif restored is not None and schedule.out_of_time(earlier):
        stop = "budget"
    try:
        if restored and stop == "num_steps":  # an evaluation the interrupted run did not get to
            validate(restored_step, restored)
        if restored_step < schedule.num_steps and stop == "num_steps":
            with interrupt_requests() as interrupted, checkpoint_hook(before_save, after_save), strategy.scope():
                model_lib_v2.train_loop(
                    pipeline_config_path=str(pipeline_config),
                    model_dir=str(work),
                    use_tpu=use_tpu,
                    checkpoint_every_n=schedule.steps_per_loop,
                    checkpoint_max_to_keep=schedule.checkpoint_max_to_keep,
                    record_summaries=False,  # input-image summaries only: they bloat the events
                    num_steps_per_iteration=schedule.steps_per_loop,
                )
    except _Stop as stopped:
        stop = stopped.reason
    finally:
        if validator is not None:
            validator.close()
        # train_loop removes a non-chief worker's temporary folders only when it ends normally.
        for folder in (work, work / "train"):
            model_lib_v2.clean_temporary_directories(strategy, model_lib_v2.get_filepath(strategy, str(folder)))
    watcher.poll(final=True)
    check_finite(journal.losses)
    last, last_step = (latest(work), saved[-1]) if chief else (None, saved[-1])
    seconds = elapsed() if last_step > restored_step else earlier
    if chief and schedule.keep == "best" and journal.best is not None:
        best = journal.best
        return Outcome(last_step, stop, seconds, str(work / best["checkpoint"]), best["step"], best["metrics"])
    val = next((r for r in journal.val if r["step"] == last_step), {})
    return Outcome(
        last_step, stop, seconds, last, last_step, {k: v for k, v in val.items() if k not in ("step", ELAPSED)}
    )


def all_agree_to_stop(strategy: tf.distribute.Strategy, stop: bool) -> bool:
    """Whether any worker wants to stop, the same answer on every worker: each one's clock
    decides its own budget, and a worker that stopped alone would leave the others waiting
    forever in their next all-reduce. One replica's process decides alone."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return stop
    votes = strategy.run(lambda: tf.constant(1.0 if stop else 0.0))
    return bool(strategy.reduce(tf.distribute.ReduceOp.SUM, votes, axis=None).numpy() > 0)


class Progress:
    """A one-line progress report per logged step: step, loss, rate and time left, measured
    from this run's own start (a resumed run counts only the steps it trained). With a time
    budget, the time left is the budget's when that ends training first."""

    def __init__(
        self, total_steps: int, first_step: int = 0, max_minutes: float | None = None, spent: float = 0.0
    ) -> None:
        self.total = total_steps
        self.first = first_step
        self.start = time.monotonic()
        self.budget_left = 60 * max_minutes - spent if max_minutes is not None else math.inf

    def line(self, step: int, scalars: dict[str, float]) -> str:
        elapsed = time.monotonic() - self.start
        rate = (step - self.first) / elapsed if elapsed > 0 and step > self.first else 0.0
        eta = min((self.total - step) / rate, max(0.0, self.budget_left - elapsed)) if rate > 0 else float("nan")
        return (
            f"step {step}/{self.total} ({100 * step / self.total:.0f}%)  "
            f"loss {scalars.get(LOSS, float('nan')):.3f}  "
            f"lr {scalars.get('learning_rate', float('nan')):.4g}  "
            f"{rate:.2f} steps/s  elapsed {elapsed:.0f}s  eta {eta:.0f}s"
        )
