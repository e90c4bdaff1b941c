"""MLflow run handling: one run per pipeline execution, shared by train and evaluate.

``train`` creates the run and leaves its id in a small JSON file among its outputs;
``evaluate`` logs into that run. When only ``evaluate`` reran with different evaluate params
(a new pipeline execution over the same model), it opens a new run linked to the training run
instead of overwriting what the first evaluation recorded.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import mlflow
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking import MlflowClient

from odpipe.core.project import project_root

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BATCH = 100  # MLflow's limit on params per log_batch call
TRAIN_RUN_TAG = "odpipe.train_run_id"
DVC_EXP_TAG = "dvc.exp_name"
DVC_EXP_REF_TAG = "dvc.exp_ref"  # the Git ref `dvc exp push` sends: refs/exps/<baseline>/<name>
EXPS_NAMESPACE = "refs/exps"
DATA_VERSION_TAG = "odpipe.data_version"  # digest of the train/val/test TFRecords the model saw
RESUMED_FROM_TAG = "odpipe.resumed_from_run"  # a training run continued after an interruption
RESUMED_AT_TAG = "odpipe.resumed_at_step"
SQLITE = "sqlite:///"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
ARTIFACTS_DIR = "mlruns"  # under the project root, for local stores
# What MLflow accepts in a metric or tag key (mlflow.utils.validation): alphanumerics,
# underscores, dashes, periods, spaces and slashes (colons too, but not on Windows: they are
# made safe here), at most 250 characters, and no path part that is empty, "." or "..".
METRIC_KEY_UNSAFE = re.compile(r"[^\w.\- /]")
MAX_KEY_LENGTH = 250
# A file name: no path separator, not "." or ".."; characters of up to 4 bytes each, within
# the usual 255-byte limit.
FILE_NAME_UNSAFE = re.compile(r"[^\w.\- ]")
MAX_FILE_STEM = 60
DIGEST_LENGTH = 8


def resolve_tracking_uri(configured: str, root: Path) -> str:
    """``MLFLOW_TRACKING_URI`` wins; a relative sqlite path is taken from the project root,
    so every stage (and the MLflow UI started there) sees the same store.

    Queued DVC experiments run in temporary copies of the repo, where a relative store would
    vanish with the copy; DVC then sets ``DVC_ROOT`` to the real project, which we use instead.
    """
    uri = os.environ.get(TRACKING_URI_ENV) or configured
    if uri.startswith(SQLITE) and not uri.startswith(SQLITE + "/"):
        return SQLITE + str((project_root(root) / uri[len(SQLITE) :]).resolve())
    return uri


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialise what must happen once per sqlite store (creating its tables, an experiment, a
    registered model) across processes: two queued experiments starting together on a fresh
    project both try, and the loser fails with "table ... already exists"."""
    if not uri.startswith(SQLITE):
        yield
        return
    lock = Path(uri[len(SQLITE) :] + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_client(uri: str) -> MlflowClient:
    """A client whose store exists: a new sqlite store is created (tables and all, when the
    client is made) by one process at a time."""
    with _store_lock(uri):
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)
    return client


def _already_exists(error: MlflowException) -> bool:
    return error.error_code == ErrorCode.Name(RESOURCE_ALREADY_EXISTS)


def artifact_location(uri: str, root: Path, experiment_name: str) -> str | None:
    """Where a new experiment keeps its artifacts: for a local store, a folder of the project
    (``DVC_ROOT`` in a queued run), never the working folder of whichever process created the
    experiment, which for a queued run is a temporary copy deleted when the queue is done.
    A tracking server decides for itself (None)."""
    if uri.startswith(("http://", "https://", "databricks")):
        return None
    return (project_root(root) / ARTIFACTS_DIR / experiment_name).as_uri()


def ensure_experiment(client: MlflowClient, name: str, root: Path) -> str:
    """The id of experiment ``name``, created once whichever process comes first."""
    uri = client.tracking_uri
    with _store_lock(uri):
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return client.create_experiment(name, artifact_location=artifact_location(uri, root, name))
        except MlflowException as error:  # created meanwhile by another client of a server
            if not _already_exists(error):
                raise
            return client.get_experiment_by_name(name).experiment_id


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


def exp_ref(baseline_rev: str, name: str) -> str:
    """The Git ref of DVC experiment ``name`` run from commit ``baseline_rev``, as DVC names it:
    what `dvc exp push` sends and `git ls-remote` lists, so a run leads to its experiment."""
    return f"{EXPS_NAMESPACE}/{baseline_rev[:2]}/{baseline_rev[2:]}/{name}"


def run_tags(root: Path) -> dict[str, str]:
    """Commit and, under ``dvc exp run``, the experiment's name and Git ref (DVC sets
    DVC_EXP_NAME and DVC_EXP_BASELINE_REV); the other way, evaluate's metrics hold the run id."""
    tags = {}
    if commit := git_commit(root):
        tags["mlflow.source.git.commit"] = commit
    if exp_name := os.environ.get("DVC_EXP_NAME"):
        tags[DVC_EXP_TAG] = exp_name
        if baseline := os.environ.get("DVC_EXP_BASELINE_REV"):
            tags[DVC_EXP_REF_TAG] = exp_ref(baseline, exp_name)
    return tags


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, str]) -> None:
    """Params under keys MLflow accepts: a config key can hold a class name too
    (``dataset.class_map.hard hat (yellow)``)."""
    items = [Param(metric_key(k), v) for k, v in sorted(params.items())]
    for start in range(0, len(items), MAX_BATCH):
        client.log_batch(run_id, params=items[start : start + MAX_BATCH])


def safe_name(name: str, unsafe: re.Pattern[str], limit: int) -> str:
    """``name`` itself where it is safe; else with each ``unsafe`` character as ``_``, each
    path part that is empty, ``.`` or ``..`` as underscores, cut to ``limit``, and a digest of
    the real name appended: two names that clean up alike stay apart, and a name gives the same
    key in every run, so runs stay comparable."""
    parts = unsafe.sub("_", name).split("/")
    cleaned = "/".join("_" * max(len(part), 1) if part in ("", ".", "..") else part for part in parts)
    if cleaned == name and len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:DIGEST_LENGTH]
    return f"{cleaned[: limit - DIGEST_LENGTH - 1]}-{digest}"


def metric_key(name: str) -> str:
    """A key MLflow accepts for ``name`` (see ``safe_name``). Class names come from users'
    label maps (``ap/hard hat (yellow)``, ``ap/c++``) and MLflow rejects such keys, which
    would fail a stage at its very end; only MLflow sees the cleaned key, the reports keep the
    real name."""
    return safe_name(name, METRIC_KEY_UNSAFE, MAX_KEY_LENGTH)


def file_stem(name: str) -> str:
    """A file name (before its suffix) for ``name`` (see ``safe_name``), for the per-class files
    of the reports logged beside the metrics: a class ``a/b`` or ``..`` must not make a path."""
    return safe_name(name, FILE_NAME_UNSAFE, MAX_FILE_STEM)


def as_metrics(values: Mapping[str, float], timestamp: int, step: int) -> list[Metric]:
    """Values as MLflow metrics, keys made safe: every metric odpipe logs goes through here."""
    return [Metric(metric_key(k), float(v), timestamp, step) for k, v in sorted(values.items())]


def numeric(values: Mapping, prefix: str = "") -> dict[str, float]:
    """The numbers of a report (flags and text left out), keys prefixed, ready to log."""
    return {
        f"{prefix}{k}": float(v) for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }


def log_metrics(client: MlflowClient, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    items = as_metrics(metrics, int(time.time() * 1000), step)
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
    experiment_id = ensure_experiment(client, experiment_name, root)
    tags = {**run_tags(root), **(extra_tags or {})}
    run = client.create_run(experiment_id, tags=tags, run_name=os.environ.get("DVC_EXP_NAME"))
    log_params(client, run.info.run_id, params)
    return run.info.run_id


def write_run_file(path: Path, run_id: str | None, tracking_uri: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"run_id": run_id, "tracking_uri": tracking_uri}, indent=2) + "\n")


def read_run_id(path: Path) -> str | None:
    """The run a stage logged into; None when MLflow was unreachable then."""
    return json.loads(path.read_text())["run_id"] if path.exists() else None


def _conflicts(logged: Mapping[str, str], params: Mapping[str, str]) -> bool:
    return any(key in logged and logged[key] != value for key, value in params.items())


def run_for_evaluation(
    client: MlflowClient, train_run_id: str, params: Mapping[str, str], experiment_name: str, root: Path
) -> str:
    """The training run when it can take these params and is in ``experiment_name``; else a
    new run there, linked to it (the MLflow settings changed, or training could not log)."""
    try:
        train_run = client.get_run(train_run_id) if train_run_id else None
    except MlflowException:
        train_run = None
    experiment_id = ensure_experiment(client, experiment_name, root)
    if (
        train_run is not None
        and train_run.info.experiment_id == experiment_id
        and not _conflicts(train_run.data.params, params)
    ):
        log_params(client, train_run_id, {k: v for k, v in params.items() if k not in train_run.data.params})
        return train_run_id
    inherited = {} if train_run is None else {k: v for k, v in train_run.data.params.items() if k not in params}
    links = {TRAIN_RUN_TAG: train_run_id} if train_run_id else {}
    return create_run(client, experiment_name, root, {**inherited, **params}, links)


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


SPLIT_TAG = "odpipe.eval_split_sha256"  # on each registered version: the split its metrics come from


@contextmanager
def global_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's global tracking URI is ``uri`` within the block, for what MLflow reads from there
    and not from a client: ``mlflow.<flavor>.log_model``, and a sqlite registry looking up the
    logged model behind a ``models:/<id>`` source. Put back afterwards, ``MLFLOW_TRACKING_URI``
    included (MLflow sets it for subprocesses, and ``resolve_tracking_uri`` reads it first)."""
    saved = os.environ.get(TRACKING_URI_ENV)
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved)  # None: back to no global URI and no variable


@contextmanager
def active_run(client: MlflowClient, run_id: str) -> Iterator[None]:
    """``run_id`` as MLflow's active run, on the client's store: in MLflow 3 a model is logged
    (a LoggedModel, on the run's page, loadable as ``models:/<id>``) only by
    ``mlflow.<flavor>.log_model``, into the active run. Leaving the block marks the run
    FINISHED, as ``run_status`` does at the end of a stage."""
    with global_tracking_uri(client.tracking_uri), mlflow.start_run(run_id=run_id):
        yield


def register_version(
    client: MlflowClient, name: str, model_id: str, run_id: str, metrics: Mapping[str, float], split_sha256: str
) -> str:
    """Register logged model ``model_id`` (of run ``run_id``) as a new version of ``name`` in
    the Model Registry, its metrics as tags with the digest of the split they were measured on
    (so that versions are compared on the same images only); returns the version."""
    with _store_lock(client.tracking_uri):
        try:
            client.create_registered_model(name)
        except MlflowException as error:
            if not _already_exists(error):
                raise
    tags = {metric_key(key): f"{value:.4f}" for key, value in metrics.items()} | {SPLIT_TAG: split_sha256}
    with global_tracking_uri(client.tracking_uri):
        version = client.create_model_version(
            name, source=f"models:/{model_id}", run_id=run_id, tags=tags, model_id=model_id
        )
    return str(version.version)


def best_registered(client: MlflowClient, name: str, split_sha256: str, metric: str) -> float | None:
    """The highest test ``metric`` (a tag of each version) among the versions of ``name``
    scored on this same split, if any."""
    versions = client.search_model_versions(f"name='{name}'")  # none yet: an empty list
    scores = [float(v.tags[metric]) for v in versions if v.tags.get(SPLIT_TAG) == split_sha256 and metric in v.tags]
    return max(scores, default=None)


# While training logs, an unreachable server must cost seconds, not MLflow's default of 7 HTTP
# retries with exponential backoff (about 4 minutes a call, measured against a closed port).
QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


@contextmanager
def _quick_http() -> Iterator[None]:
    """MLflow's HTTP client with ``QUICK_HTTP``'s limits within the block (a user's own settings
    kept); MLflow reads them at each request."""
    saved = {key: os.environ.get(key) for key in QUICK_HTTP}
    os.environ.update({key: saved[key] or value for key, value in QUICK_HTTP.items()})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                del os.environ[key]
            else:
                os.environ[key] = value


class RunLogger:
    """MLflow logging that never costs a training. Each call is retried (a sqlite store is
    "locked" while a queued neighbour writes), then given up with a warning; then MLflow is left
    alone for ``pause`` seconds, so that a server that is down does not stall every step. The
    next call after the pause tries again: a run that could not be created is created then, and
    what the server missed meanwhile (the ``backlog`` of journal rows) is sent, so a training
    that outlived an outage ends with a complete run that its outputs name."""

    def __init__(self, uri: str, retries: int = 3, wait: float = 0.5, pause: float = 30.0) -> None:
        self.uri = uri
        self.client: MlflowClient | None = None  # connected by start()
        self.run_id: str | None = None
        self.retries = retries
        self.wait = wait
        self.pause = pause
        self.failures = 0
        self._create: Callable[[MlflowClient], str] | None = None
        self._backlog: Callable[[], Iterable[Mapping[str, float]]] = list
        self._retry_at = 0.0  # monotonic time before which MLflow is not called (after a failure)
        self._behind = False  # something was not sent: the backlog goes first when MLflow answers
        self._sent = -1  # the last step sent
        self._replayed: set[tuple[int, str]] = set()  # (step, key) the last backlog sent

    def call(self, what: str, action: Callable[[], T]) -> T | None:
        for attempt in range(self.retries):
            try:
                with _quick_http():
                    return action()
            except Exception as error:  # MLflow raises many kinds: store, HTTP, sqlite
                # The store answered, refusing (a run of another store, a bad value): no use trying
                # again, and no reason to leave a store alone that is there.
                answered = isinstance(error, MlflowException) and 400 <= error.get_http_status_code() < 500
                if attempt + 1 < self.retries and not answered:
                    time.sleep(self.wait * 2**attempt)
                    continue
                self.failures += 1
                if not answered:
                    self._retry_at = time.monotonic() + self.pause
                if self.failures == 1:
                    log.warning(
                        "MLflow: %s failed (%s); training goes on, the records stay in the journal and the "
                        "plots files, and MLflow gets them when it answers again (tried every %.0f s)",
                        what,
                        error,
                        self.pause,
                    )
                return None
        return None

    def start(
        self, create: Callable[[MlflowClient], str], backlog: Callable[[], Iterable[Mapping[str, float]]] = list
    ) -> str | None:
        """Create the run with ``create(client)``; None (and a warning) if MLflow fails, and then
        again later. ``backlog()`` gives the rows (``{"step": s, name: value}``) journaled so far."""
        self._create, self._backlog = create, backlog
        self._behind = True  # the journal so far (a resumed training's steps) is owed to the run
        self._connect()
        return self.run_id

    def _connect(self) -> None:
        def connect_and_create() -> str:
            self.client = self.client or open_client(self.uri)
            return self._create(self.client)

        self.run_id = self.call("creating the run", connect_and_create)

    def _ready(self) -> bool:
        """Whether to call MLflow now: not within a pause after a failure; the run created and
        what it missed sent first, when MLflow answers again. When not, what was to be sent now
        is owed: the backlog goes first next time."""
        if time.monotonic() < self._retry_at:
            self._behind = True
            return False
        if self.run_id is None and self._create is not None:
            self._connect()
        if self.run_id and self._behind:
            self._behind = False
            self._history([r for r in self._backlog() if int(r["step"]) > self._sent])
        ready = self.run_id is not None and time.monotonic() >= self._retry_at
        self._behind = self._behind or not ready
        return ready

    def _send(self, what: str, action: Callable[[], object]) -> bool:
        """Run one MLflow ``action`` when ready; whether it went through (else it is owed)."""
        return self._ready() and self._attempt(what, action)

    def _attempt(self, what: str, action: Callable[[], object]) -> bool:
        """Run one MLflow ``action``, the logger being ready; whether it went through (else it is owed)."""
        sent = self.call(what, lambda: action() or True) is not None
        self._behind = self._behind or not sent
        return sent

    def metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log a step's ``metrics``, but those the backlog just sent (the journal had them)."""
        if not self._ready():
            return
        owed = {key: value for key, value in metrics.items() if (step, key) not in self._replayed}
        if owed and self._attempt(f"logging step {step}", lambda: log_metrics(self.client, self.run_id, owed, step)):
            self._sent = max(self._sent, step)

    def _history(self, rows: list[Mapping[str, float]]) -> None:
        """Rows of ``{"step": s, name: value, ...}`` in as few calls as MLflow allows."""
        stamp = int(time.time() * 1000)
        items = [
            m for r in rows for m in as_metrics({k: v for k, v in r.items() if k != "step"}, stamp, int(r["step"]))
        ]
        for start in range(0, len(items), 1000):
            batch = items[start : start + 1000]
            if (
                self.call("logging history", lambda b=batch: self.client.log_batch(self.run_id, metrics=b) or True)
                is None
            ):
                self._behind = True
                return
        self._sent = max([self._sent, *(int(r["step"]) for r in rows)])
        self._replayed = {(int(r["step"]), key) for r in rows for key in r if key != "step"}

    def tags(self, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self._send(f"tagging {key}", lambda k=key, v=value: self.client.set_tag(self.run_id, k, v))

    def artifacts(self, paths: Iterable[Path]) -> None:
        self._send("logging artifacts", lambda: log_artifacts(self.client, self.run_id, list(paths)))

    def terminate(self, status: str) -> None:
        """End the run (created now, with its backlog, if MLflow is back): always tried, even within
        a pause, since it is the run's last call."""
        self._retry_at = 0.0
        self._send(f"marking the run {status}", lambda: self.client.set_terminated(self.run_id, status))

    @contextmanager
    def status(self) -> Iterator[None]:
        """FINISHED when the block succeeds, KILLED on Ctrl-C, FAILED otherwise."""
        try:
            yield
        except KeyboardInterrupt:
            self.terminate("KILLED")
            raise
        except BaseException:
            self.terminate("FAILED")
            raise
        self.terminate("FINISHED")

    def close_interrupted(self, run_id: str) -> None:
        """A run left RUNNING by a killed process is KILLED (a FAILED one stays FAILED)."""

        def close() -> None:
            if self.client.get_run(run_id).info.status == "RUNNING":
                self.client.set_terminated(run_id, "KILLED")

        if self.client is not None:
            self.call("closing the interrupted run", close)

    def report(self) -> None:
        if self.failures:
            log.warning("MLflow: %d call(s) failed in this run; see the first warning above", self.failures)
