from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import formatdate
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from odpipe.core.parallel import Workers
from odpipe.core.runtime import load_params
from odpipe.data.records import write_serialized
from odpipe.data.synthetic import SyntheticSpec
from odpipe.detect.augment import split_examples
from odpipe.detect.pipeline_config import PipelineSettings
from odpipe.engine.mlflow_runs import TRACKING_URI_ENV
from tests.helpers.team import TeamRuns, run_at_once

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("circle", "square", "triangle")


# Tests make their own MLflow stores: a user's MLFLOW_TRACKING_URI must never receive their runs.
os.environ.pop(TRACKING_URI_ENV, None)
E2E = ROOT / "tests" / "e2e"
SHARED_FIXTURES = ("team_runs", "smoke_project")  # session fixtures: every test using one runs in one worker
# The e2e groups, longest first (the last run's durations): each worker takes the next group when
# it is free, so the longest start first and no worker is left alone with one at the end.
LONGEST_FIRST = ("smoke_project", "test_finetune", "team_runs", "test_train_stage", "test_detect_formats",
                 "test_mlflow_server", "test_tflite")  # fmt: skip


def e2e_group(item: pytest.Item) -> str | None:
    """The xdist group of an e2e test: the session fixture it shares, else its module."""
    if E2E not in Path(item.fspath).parents:
        return None
    return next((name for name in SHARED_FIXTURES if name in item.fixturenames), Path(item.fspath).stem)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups to schedule them
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests under tests/e2e are marked ``e2e`` (``make test-fast`` leaves them out). Under
    ``pytest -n`` (pytest-xdist, ``--dist loadgroup --no-loadscope-reorder``) each e2e module runs
    whole in one worker, so that its module fixtures (a trained pipeline) are built once, and the
    tests sharing a session fixture run together in one worker, which builds it once; the groups
    come first, longest first, then the unit tests, which spread freely."""
    for item in items:
        if group := e2e_group(item):
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.xdist_group(group))

    def rank(item: pytest.Item) -> int:
        group = e2e_group(item)
        return LONGEST_FIRST.index(group) if group in LONGEST_FIRST else len(LONGEST_FIRST) + (group is None)

    items.sort(key=rank)  # stable: each module's tests keep their order


@pytest.fixture(autouse=True)
def tracking_uri_left_alone() -> Iterator[None]:
    """No test leaves ``MLFLOW_TRACKING_URI`` behind: ``mlflow.set_tracking_uri`` exports it, and
    every later stage of the same worker process would log to that store (use
    ``mlflow_runs.global_tracking_uri``, which puts it back)."""
    before = os.environ.get(TRACKING_URI_ENV)
    yield
    after = os.environ.get(TRACKING_URI_ENV)
    if after != before:
        if before is None:
            del os.environ[TRACKING_URI_ENV]
        else:
            os.environ[TRACKING_URI_ENV] = before
        pytest.fail(f"the test left {TRACKING_URI_ENV}={after!r} behind")


def pipeline_settings(**changes) -> PipelineSettings:
    """Small, valid settings for a pipeline.config in unit tests; ``changes`` override them."""
    values = dict(
        num_classes=5,
        image_size=96,
        batch_size=4,
        num_steps=300,
        learning_rate=0.05,
        warmup_steps=50,
        max_detections=20,
        nms_iou_threshold=0.5,
        label_map_path="lm.pbtxt",
        train_input="tf/train-?????-of-?????.tfrecord",
        eval_input="tf/val-?????-of-?????.tfrecord",
    )
    values.update(changes)
    return PipelineSettings(**values)


def train_split_bytes(records, image_root: Path, policy, out: Path) -> list[list[bytes]]:
    """The train split's TFRecord shards as the tfrecord stage writes them, once with 1 and once
    with 2 worker processes (into ``out/w1`` and ``out/w2``): the bytes of each run's shards."""
    written = []
    for count in (1, 2):
        with Workers(count) as workers:
            serialized = split_examples(records, image_root, policy, order_seed=0, workers=workers)
            paths, _ = write_serialized(serialized, out / f"w{count}", "train", 2)
        written.append([p.read_bytes() for p in paths])
    return written


@pytest.fixture
def spec() -> SyntheticSpec:
    """A small synthetic dataset spec, as the smoke experiment uses."""
    return SyntheticSpec(
        num_images=12,
        classes=CLASSES,
        seed=3,
        min_side=96,
        max_side=128,
        min_objects=1,
        max_objects=4,
        min_object_frac=0.15,
        max_object_frac=0.5,
        max_overlap=0.35,
    )


class RangeHandler(SimpleHTTPRequestHandler):
    """Serves files as real servers do: ``Range: bytes=N-`` (206, or 416 with ``bytes */size``
    past the end), validated by ``If-Range`` against the file's strong ETag and Last-Modified
    (a mismatch: 200 with the whole file). Records each request's Range ("full" without) and
    If-Range. Class settings, reset by ``serve``, shape the replies: ``send_etag`` and
    ``send_last_modified`` turn a validator off, ``honour_if_range`` off ignores If-Range as
    some servers do, and ``cut_after`` drops the connection after that many body bytes, as an
    interrupted transfer."""

    requests: list[str] = []
    if_ranges: list[str | None] = []
    send_etag = True
    send_last_modified = True
    cut_after: int | None = None
    honour_if_range = True

    def log_message(self, *args) -> None:
        pass

    def _validators(self, path: Path, data: bytes) -> dict[str, str]:
        found = {}
        if RangeHandler.send_etag:
            found["ETag"] = f'"{hashlib.sha256(data).hexdigest()[:16]}"'
        if RangeHandler.send_last_modified:
            found["Last-Modified"] = formatdate(path.stat().st_mtime, usegmt=True)
        return found

    def do_GET(self) -> None:
        RangeHandler.requests.append(self.headers.get("Range") or "full")
        RangeHandler.if_ranges.append(self.headers.get("If-Range"))
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        validators = self._validators(path, data)
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        if RangeHandler.honour_if_range and self.headers.get("If-Range") not in (None, *validators.values()):
            start = 0  # the client's bytes are of another version: it gets the whole current one
        if start and start >= len(data):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        for name, value in validators.items():
            self.send_header(name, value)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        self.wfile.write(body if RangeHandler.cut_after is None else body[: RangeHandler.cut_after])


@contextmanager
def serve(root: Path) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving ``root``; yields its base URL."""
    RangeHandler.requests = []
    RangeHandler.if_ranges = []
    RangeHandler.send_etag = RangeHandler.send_last_modified = RangeHandler.honour_if_range = True
    RangeHandler.cut_after = None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def zoo_tarball(out: Path, name: str, pipeline_config: Path, checkpoint: Path, saved_model: Path | None) -> Path:
    """A tarball laid out as the TF2 Detection Zoo's: ``<name>/pipeline.config``,
    ``<name>/checkpoint/ckpt-0.*`` (with its state file) and ``<name>/saved_model/``.
    ``checkpoint`` is a checkpoint prefix such as ``models/train/ckpt-3``."""
    with tarfile.open(out, "w:gz") as tar:
        tar.add(pipeline_config, f"{name}/pipeline.config")
        for part in sorted(checkpoint.parent.glob(f"{checkpoint.name}.*")):
            tar.add(part, f"{name}/checkpoint/ckpt-0{part.suffix}")
        state = b'model_checkpoint_path: "ckpt-0"\nall_model_checkpoint_paths: "ckpt-0"\n'
        info = tarfile.TarInfo(f"{name}/checkpoint/checkpoint")
        info.size = len(state)
        tar.addfile(info, io.BytesIO(state))
        if saved_model is not None:
            tar.add(saved_model, f"{name}/saved_model")
    return out


def kill_after_first_epoch_then_resume(project: Path, folder: Path, script: str, overrides: list[str]) -> Path:
    """A Keras task's train stage (``stages/<script>``, run in its pipeline ``folder``) killed with
    SIGKILL once its first epoch is checkpointed and journaled, then run again to the end; checks
    the rerun said it resumed and returns the run's work folder."""
    from odpipe.devtools.project import python_env

    env = python_env()
    command = [sys.executable, str(project / "stages" / script), *overrides]
    work_root = project / load_params(folder).paths.train_work
    before = set(work_root.iterdir())
    proc = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    # Killed once epoch 1 is checkpointed and journaled (its val row is written after the save).
    while time.monotonic() < deadline and not [
        v for v in work_root.glob("*/val.jsonl") if v.parent not in before and v.stat().st_size
    ]:
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (work,) = set(work_root.iterdir()) - before
    first_run = json.loads((work / "run.json").read_text())["run_id"]
    again = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resuming from epoch" in again.stdout
    assert json.loads((work / "run.json").read_text())["run_id"] != first_run  # a new run, tagged as resumed
    return work


@contextmanager
def team_server(work: Path) -> Iterator[str]:
    """A team's MLflow server, as docs/team.md sets it up: PostgreSQL, two workers, artifacts
    proxied; its URL."""
    from odpipe.devtools.servers import TrackingServer, postgres_cluster

    with postgres_cluster(work) as db, TrackingServer(db, work / "artifacts", work) as server:
        yield server.url


@pytest.fixture(scope="session")
def team_runs(tmp_path_factory) -> Iterator[TeamRuns]:
    """One team server (:func:`team_server`) and what logged to it at the same moment: the
    detection sweep, segmentation's and classification's pipelines (``tests.helpers.team``)."""
    work = tmp_path_factory.mktemp("team")
    with team_server(work) as url:
        yield run_at_once(ROOT, work, url)


def task_fixtures(task: str) -> tuple:
    """A task module's ``server`` (the team's MLflow server) and ``project`` (the copy of the
    repo after the task's `dvc exp run` against it, :func:`team_runs`) module fixtures:
    ``server, project = task_fixtures(...)`` at the top of the module. The tests after it run
    stages against the project's own store."""

    @pytest.fixture(scope="module")
    def server(team_runs: TeamRuns) -> str:
        return team_runs.url

    @pytest.fixture(scope="module")
    def project(team_runs: TeamRuns) -> Path:
        return team_runs.tasks[task]

    return server, project


@pytest.fixture(scope="session")
def smoke_project(tmp_path_factory) -> Iterator[Path]:
    """A copy of the repo after one full `dvc repro` of the detection smoke configuration: the
    trained smoke model that the end-to-end tests (which go on to change it) and the serving
    tests (which register a copy's export) share, so that it is trained once per session."""
    from odpipe.core.runtime import PARAMS_FILE, compose_params
    from odpipe.devtools.project import copy_project, run_dvc, stage_names

    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    work = copy_project(ROOT, tmp_path_factory.mktemp("smoke") / "project")
    compose_params(work, ["experiment=smoke"], work / PARAMS_FILE)
    proc = run_dvc(work, "repro", timeout=1200)
    ran = set(re.findall(r"Running stage '([\w:/.-]+)'", proc.stdout))
    assert ran == set(stage_names(work)), proc.stdout[-3000:]
    yield work
    mp.undo()
