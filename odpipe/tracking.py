"""MLflow run handling: one run per pipeline execution, shared by train and evaluate.

``train`` creates the run and leaves its id in a small JSON file among its outputs;
``evaluate`` logs into that run. When only ``evaluate`` reran with different evaluate params
(a new pipeline execution over the same model), it opens a new run linked to the training run
instead of overwriting what the first evaluation recorded.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

MAX_BATCH = 100  # MLflow's limit on params per log_batch call
TRAIN_RUN_TAG = "odpipe.train_run_id"
DVC_EXP_TAG = "dvc.exp_name"
DATA_VERSION_TAG = "odpipe.data_version"  # digest of the train/val/test TFRecords the model saw


def resolve_tracking_uri(configured: str, root: Path) -> str:
    """``MLFLOW_TRACKING_URI`` wins; a relative sqlite path is taken from the project root,
    so every stage (and the MLflow UI started there) sees the same store.

    Queued DVC experiments run in temporary copies of the repo, where a relative store would
    vanish with the copy; DVC then sets ``DVC_ROOT`` to the real project, which we use instead.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        base = Path(os.environ.get("DVC_ROOT") or root)
        return prefix + str((base / uri[len(prefix) :]).resolve())
    return uri


def flatten(params: Mapping, prefix: str = "") -> dict[str, str]:
    """Nested params as MLflow's flat ``a.b.c`` strings."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def git_commit(root: Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def run_tags(root: Path) -> dict[str, str]:
    """Commit and, under ``dvc exp run``, the experiment's name (DVC sets DVC_EXP_NAME)."""
    tags = {}
    if commit := git_commit(root):
        tags["mlflow.source.git.commit"] = commit
    if exp_name := os.environ.get("DVC_EXP_NAME"):
        tags[DVC_EXP_TAG] = exp_name
    return tags


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, str]) -> None:
    items = [Param(k, v) for k, v in sorted(params.items())]
    for start in range(0, len(items), MAX_BATCH):
        client.log_batch(run_id, params=items[start : start + MAX_BATCH])


def log_metrics(client: MlflowClient, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    timestamp = int(time.time() * 1000)
    items = [Metric(k, float(v), timestamp, step) for k, v in sorted(metrics.items())]
    for start in range(0, len(items), MAX_BATCH):
        client.log_batch(run_id, metrics=items[start : start + MAX_BATCH])


def create_run(
    client: MlflowClient,
    experiment_name: str,
    root: Path,
    params: Mapping[str, str],
    extra_tags: Mapping[str, str] | None = None,
) -> str:
    """A new run in ``experiment_name`` (created if needed), named after the DVC experiment."""
    experiment = client.get_experiment_by_name(experiment_name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(experiment_name)
    tags = {**run_tags(root), **(extra_tags or {})}
    run = client.create_run(experiment_id, tags=tags, run_name=os.environ.get("DVC_EXP_NAME"))
    log_params(client, run.info.run_id, params)
    return run.info.run_id


def write_run_file(path: Path, run_id: str, tracking_uri: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"run_id": run_id, "tracking_uri": tracking_uri}, indent=2) + "\n")


def read_run_id(path: Path) -> str:
    return json.loads(path.read_text())["run_id"]


def _conflicts(logged: Mapping[str, str], params: Mapping[str, str]) -> bool:
    return any(key in logged and logged[key] != value for key, value in params.items())


def run_for_evaluation(
    client: MlflowClient, train_run_id: str, params: Mapping[str, str], experiment_name: str, root: Path
) -> str:
    """The training run when it can take these params; else a new run linked to it."""
    try:
        train_run = client.get_run(train_run_id)
    except MlflowException:
        train_run = None
    if train_run is not None and not _conflicts(train_run.data.params, params):
        log_params(client, train_run_id, {k: v for k, v in params.items() if k not in train_run.data.params})
        return train_run_id
    inherited = {} if train_run is None else {k: v for k, v in train_run.data.params.items() if k not in params}
    return create_run(client, experiment_name, root, {**inherited, **params}, {TRAIN_RUN_TAG: train_run_id})


def log_artifacts(client: MlflowClient, run_id: str, paths: Iterable[Path]) -> None:
    """Files at the top of the run's artifacts, folders under their own name."""
    for path in paths:
        if path.is_dir():
            client.log_artifacts(run_id, str(path), path.name)
        else:
            client.log_artifact(run_id, str(path))


@contextmanager
def run_status(client: MlflowClient, run_id: str) -> Iterator[None]:
    """Mark the run FINISHED when the block succeeds and FAILED when it raises, so the UI
    never shows a crashed stage as still running."""
    try:
        yield
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")


def register_model(client: MlflowClient, run_id: str, export_dir: Path, name: str, metrics: Mapping[str, float]) -> str:
    """Log the exported model folder to the run and register it as a new version of ``name``
    in the Model Registry, its metrics as tags; returns the version."""
    client.log_artifacts(run_id, str(export_dir), "model")
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name)
    source = f"{client.get_run(run_id).info.artifact_uri}/model"
    tags = {key: f"{value:.4f}" for key, value in metrics.items()}
    return client.create_model_version(name, source=source, run_id=run_id, tags=tags).version
