"""What a training run records as it goes, so that a killed run resumes where it was: the
losses and val metrics of each step (or epoch), the best checkpoint kept aside, the MLflow run,
the wall time spent. Task-neutral: detection's OD API loop and segmentation's Keras loop both
checkpoint with ``tf.train.CheckpointManager`` (``ckpt-<step>``) and journal here.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from odpipe.core.files import read_jsonl, write_json, write_jsonl
from odpipe.engine.checkpoints import checkpoint_step, copy_checkpoint, latest

ELAPSED = "elapsed_s"  # training wall time so far, summed over resumed runs: what max_minutes caps
ScalarCallback = Callable[[int, dict[str, float]], None]  # (step or epoch, metrics): where a loop reports them
EARLY_STOPS = ("patience", "budget")  # stop reasons before the planned steps (or epochs) were all trained


@dataclass
class Journal:
    """What a run has recorded so far, kept in the work folder so a resumed run continues it:
    the losses of every logged step, val metrics per evaluation, the best checkpoint.
    A non-chief worker reads it (to make the chief's patience decisions) and writes nothing."""

    folder: Path
    writable: bool = True
    losses: list[dict] = field(default_factory=list)
    val: list[dict] = field(default_factory=list)
    best: dict | None = None
    run_id: str | None = None  # the MLflow run these records went to
    select: str = "val/map"  # what "best" means: the val metric compared (higher is better)

    LOSSES = "losses.jsonl"
    VAL = "val.jsonl"
    BEST = "best.json"
    RUN = "run.json"

    @classmethod
    def open(cls, folder: Path, upto_step: int, writable: bool = True, select: str = "val/map") -> Journal:
        """The journal as of checkpoint ``upto_step``: rows logged after it (by a run killed
        before its next checkpoint) are dropped, since those steps will be trained again."""
        journal = cls(folder, writable, select=select)
        for name, rows in ((cls.LOSSES, journal.losses), (cls.VAL, journal.val)):
            path = folder / name
            if path.exists():
                rows.extend(r for r in read_jsonl(path) if r["step"] <= upto_step)
            if writable:
                write_jsonl(rows, folder / name)
        best, run = folder / cls.BEST, folder / cls.RUN
        if best.exists():
            journal.best = json.loads(best.read_text())
        if run.exists():
            journal.run_id = json.loads(run.read_text())["run_id"]
        return journal

    def set_run(self, run_id: str | None) -> None:
        self.run_id = run_id
        if self.writable:
            write_json({"run_id": run_id}, self.folder / self.RUN)

    def _append(self, name: str, row: dict) -> None:
        if not self.writable:
            return
        with (self.folder / name).open("a") as handle:
            handle.write(json.dumps(row, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    @property
    def elapsed(self) -> float:
        """Training seconds recorded so far, over every run of this folder (a run killed
        between two records loses the time since its last one)."""
        return max((row.get(ELAPSED, 0.0) for row in (*self.losses, *self.val)), default=0.0)

    def add_losses(self, step: int, scalars: dict[str, float], elapsed: float | None = None) -> None:
        self.losses.append({"step": step, **scalars, **_elapsed(elapsed)})
        self._append(self.LOSSES, self.losses[-1])

    def add_val(self, step: int, metrics: dict[str, float], prefix: str, elapsed: float | None = None) -> bool:
        """Record an evaluation; True when it is the new best (kept aside, with its files)."""
        self.val.append({"step": step, **metrics, **_elapsed(elapsed)})
        self._append(self.VAL, self.val[-1])
        if self.best is not None and metrics[self.select] <= self.best["metrics"][self.select]:
            return False
        self.best = {"step": step, "metrics": metrics}
        if self.writable:
            kept = copy_checkpoint(prefix, self.folder / f"best-{step}")
            self.best["checkpoint"] = str(kept.relative_to(self.folder))
            write_json(self.best, self.folder / self.BEST)
            for old in self.folder.glob("best-*"):
                if old.name != f"best-{step}":
                    shutil.rmtree(old)
        return True

    def patience_ran_out(self, patience: int | None) -> bool:
        """``patience`` evaluations in a row without a better ``select`` metric than the best."""
        if patience is None or not self.val:
            return False
        since = sum(row["step"] > self.best["step"] for row in self.val) if self.best else len(self.val)
        return since >= patience


def _elapsed(seconds: float | None) -> dict[str, float]:
    return {} if seconds is None else {ELAPSED: round(seconds, 2)}


@dataclass(frozen=True)
class Outcome:
    """How training ended, and the checkpoint to export."""

    last_step: int
    stop: str  # why training ended: all planned (num_steps or epochs), or one of EARLY_STOPS
    elapsed: float  # training seconds, resumed runs included
    checkpoint: str | None  # prefix of the selected checkpoint (None on a non-chief worker)
    step: int  # its step
    val: dict[str, float]  # its val metrics ({} when not evaluated)

    def selection(self, keep: str) -> dict:
        """What selection.json says: which step was kept and why, with its val metrics
        (``val/map`` as ``val_map``, names DVC and JSON readers take as they are)."""
        val = {name.replace("/", "_"): value for name, value in self.val.items()}
        return {
            "keep": keep,
            "step": self.step,
            "last_step": self.last_step,
            "stopped_early": self.stop in EARLY_STOPS,
            "stop": self.stop,
            "train_seconds": round(self.elapsed, 1),
            **val,
        }

    def copy_to(self, folder: Path) -> None:
        """The selected checkpoint alone, found by ``tf.train.latest_checkpoint(folder)``."""
        copy_checkpoint(self.checkpoint, folder)


@contextmanager
def interrupt_requests() -> Iterator[threading.Event]:
    """Ctrl-C (SIGINT), remembered as well as raised. A KeyboardInterrupt raised while
    TensorFlow runs a training loop can be lost: a run sent SIGINT just after its step-10
    checkpoint trained to its last step and exited 0 (twice in CI). The event lets every
    checkpoint honour the request. Outside the main thread, signals cannot be handled: then
    nothing changes."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return

    def handler(signum, frame) -> None:
        requested.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield requested
    finally:
        signal.signal(signal.SIGINT, previous)


def resume_point(work: Path) -> tuple[str | None, int]:
    """The latest complete checkpoint in the work folder and its step (None, 0 when fresh)."""
    restored = latest(work)
    return restored, checkpoint_step(restored) if restored else 0


def rows_table(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """Rows and their columns (step first) for a CSV plots file."""
    return rows, ["step", *sorted({key for row in rows for key in row} - {"step"})]
