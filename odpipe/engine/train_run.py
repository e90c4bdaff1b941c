"""What every task's train stage does around its training loop: the work folder (locked, emptied
when ``train.resume`` is false, its inputs written for people), the journal as of the checkpoint
it resumes from, the MLflow run (tagged with the data version, and as the continuation of an
interrupted run), and at the end the stage's outputs: the selected checkpoint with
``selection.json`` and the run's id, renamed into place, and the plots files."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from mlflow.tracking import MlflowClient

from odpipe.core.files import write_csv, write_json
from odpipe.core.manifest import sha256_file
from odpipe.engine.checkpoints import empty, exclusive, inputs_digest, publishing, work_folder
from odpipe.engine.journal import Journal, Outcome, ScalarCallback, resume_point, rows_table
from odpipe.engine.mlflow_runs import (
    DATA_VERSION_TAG,
    RESUMED_AT_TAG,
    RESUMED_FROM_TAG,
    RunLogger,
    create_run,
    resolve_tracking_uri,
    write_run_file,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainRun:
    """An open training run: where it resumes from, what it journals, where it logs."""

    work: Path
    restored: str | None  # the checkpoint it continues from (None: fresh)
    first_step: int
    journal: Journal
    mlflow: RunLogger
    uri: str

    @property
    def run_id(self) -> str | None:
        """The MLflow run: None while MLflow could not create it (it is created when it answers)."""
        return self.mlflow.run_id


@contextmanager
def train_run(
    work: Path,
    inputs: Mapping[str, str],
    *,
    resume: bool,
    mlflow_config: Mapping,
    params: Mapping[str, str],
    data_version: str,
    select: str,
    unit: str = "step",
) -> Iterator[TrainRun]:
    """Open ``work`` and its MLflow run (see the module docstring); the run ends FINISHED, or
    FAILED / KILLED with the exception, and the failures of MLflow calls are reported last."""
    with exclusive(work):
        if not resume:
            empty(work)
        write_json(dict(inputs), work / "inputs.json")  # what this folder trains, for people
        restored, first_step = resume_point(work)
        journal = Journal.open(work, first_step, select=select)
        uri = resolve_tracking_uri(mlflow_config["tracking_uri"], Path.cwd())
        mlflow = RunLogger(uri)
        previous = journal.run_id
        tags = {DATA_VERSION_TAG: data_version}
        if restored and previous:
            tags |= {RESUMED_FROM_TAG: previous, RESUMED_AT_TAG: str(first_step)}
            log.info(
                "resuming from %s %d (checkpoint %s); MLflow run %s continues", unit, first_step, restored, previous
            )
        experiment = mlflow_config["experiment_name"]

        def create(client: MlflowClient) -> str:
            created = create_run(client, experiment, Path.cwd(), dict(params), tags)
            journal.set_run(created)  # also when created late: the run a resume continues
            return created

        if mlflow.start(create, backlog=lambda: journal.losses + journal.val) is None:
            journal.set_run(None)
        if restored and previous:
            mlflow.close_interrupted(previous)
        with mlflow.status():
            yield TrainRun(work, restored, first_step, journal, mlflow, uri)
        mlflow.report()


def work_and_inputs(
    train_work: Path, data_version: str, model: Mapping, train: Mapping, code: Sequence[ModuleType], **more: str
) -> tuple[Path, dict[str, str]]:
    """A Keras task's work folder (:func:`odpipe.engine.checkpoints.work_folder`) and the inputs it is
    named after: the data version, the model config, the ``train`` settings given (what changes
    the weights, not how long or where to run), the task's own (``more``) and the digest of the
    ``code`` that builds and trains the model. Same inputs, same folder: a rerun resumes there."""
    inputs = {
        "data": data_version,
        "model": json.dumps(dict(model), sort_keys=True),
        "train": json.dumps(dict(train), sort_keys=True),
        **more,
        "model_code": inputs_digest({m.__name__: sha256_file(Path(m.__file__)) for m in code}),
    }
    return work_folder(train_work, inputs), inputs


def epoch_reporters(run: TrainRun, epochs: int, select: str, label: str) -> tuple[ScalarCallback, ScalarCallback]:
    """The epoch loop's ``on_losses`` and ``on_val``: each to the MLflow run, and after val one
    line with the epoch's loss, its ``select`` metric (``label`` for people) and the best so far."""

    def on_losses(epoch: int, losses: dict[str, float]) -> None:
        run.mlflow.metrics(losses, epoch)

    def on_val(epoch: int, metrics: dict[str, float]) -> None:
        run.mlflow.metrics(metrics, epoch)
        best = run.journal.best or {"step": epoch, "metrics": metrics}
        loss = run.journal.losses[-1]["loss"]
        extra = f"  val loss {metrics['val/loss']:.4f}" if "val/loss" in metrics else ""
        log.info(
            "epoch %d/%d: loss %.4f  val %s %.4f%s  (best %.4f at epoch %d)",
            epoch, epochs, loss, label, metrics.get(select, math.nan), extra, best["metrics"][select], best["step"],
        )  # fmt: skip

    return on_losses, on_val


def publish(run: TrainRun, outcome: Outcome, keep: str, paths: Mapping) -> dict:
    """The stage's outputs: the selected checkpoint alone with ``selection.json`` and the MLflow
    run's id (renamed into place when complete), the losses and val plots files; the ending
    recorded on the run. Returns the selection."""
    selection = outcome.selection(keep)
    log.info("exporting the %s checkpoint: %s", keep, selection)
    with publishing(Path(paths["train"])) as out:
        outcome.copy_to(out)
        write_json(selection, out / Path(paths["train_selection"]).name)
        write_run_file(out / Path(paths["mlflow_run"]).name, run.run_id, run.uri)
    write_csv(*rows_table(run.journal.losses), paths["train_plot"])
    write_csv(*rows_table(run.journal.val), paths["val_plot"])
    run.mlflow.metrics({"train/last_step": outcome.last_step, "train/seconds": outcome.elapsed}, outcome.last_step)
    run.mlflow.tags({"odpipe.selected_step": str(outcome.step), "odpipe.stop": outcome.stop})
    return selection
