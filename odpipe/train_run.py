"""What every task's train stage does around its training loop: the work folder (locked, emptied
when ``train.resume`` is false, its inputs written for people), the journal as of the checkpoint
it resumes from, the MLflow run (tagged with the data version, and as the continuation of an
interrupted run), and at the end the stage's outputs: the selected checkpoint with
``selection.json`` and the run's id, renamed into place, and the plots files."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from odpipe.checkpoints import empty, exclusive, publishing
from odpipe.files import write_csv, write_json
from odpipe.journal import Journal, Outcome, resume_point, rows_table
from odpipe.runs import (
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
    run_id: str | None
    uri: str


@contextmanager
def train_run(
    work: Path,
    inputs: Mapping[str, str],
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
        run_id = mlflow.start(lambda client: create_run(client, experiment, Path.cwd(), dict(params), tags))
        if restored and previous:
            mlflow.close_interrupted(previous)
        journal.set_run(run_id)
        mlflow.history(journal.losses + journal.val)
        with mlflow.status():
            yield TrainRun(work, restored, first_step, journal, mlflow, run_id, uri)
        mlflow.report()


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
