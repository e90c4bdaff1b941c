"""The train stage as real processes: interrupted and resumed, diverging, on two replicas and two
workers, with a failing MLflow store. Each test trains with its own `train.seed`, which names
its own work folder, on one shared smoke project whose data stages ran once."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from odpipe.core.files import read_csv
from odpipe.core.runtime import PARAMS_FILE, compose_params, load_params
from odpipe.detect.backbones import code_digest
from odpipe.devtools.project import copy_project, python_env, run_dvc
from odpipe.devtools.servers import free_port
from odpipe.engine.checkpoints import TRAIN_WORK_ENV, checkpoint_step, latest
from odpipe.engine.mlflow_runs import RESUMED_AT_TAG, RESUMED_FROM_TAG, read_run_id
from tests.conftest import ROOT

STEPS = 40  # four loops of 10 steps, evaluated on val every 20


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A smoke project with everything before `train` reproduced."""
    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    work = copy_project(ROOT, tmp_path_factory.mktemp("train") / "project")
    compose_params(work, ["experiment=smoke", f"train.num_steps={STEPS}", "train.eval_every=20"], work / PARAMS_FILE)
    run_dvc(work, "repro", "tfrecord", "pipeline_config", timeout=900)
    yield work
    mp.undo()


def _train(project: Path, *overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "stages/train.py", *overrides],
        cwd=project,
        env=env or python_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )


def _work_folder(project: Path, seed: int) -> Path | None:
    """The work folder of the training with this seed (its inputs.json says), if it exists."""
    root = Path(os.environ.get(TRAIN_WORK_ENV) or project / load_params(project).paths.train_work)
    for inputs in root.glob("*/inputs.json") if root.exists() else []:
        if json.loads(inputs.read_text())["seed"] == str(seed):
            return inputs.parent
    return None


def _wait_for_checkpoint(project: Path, seed: int, proc: subprocess.Popen, after: int) -> int:
    """Block until training with ``seed`` has written a checkpoint past step ``after``; its step."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        work = _work_folder(project, seed)
        prefix = latest(work) if work else None
        if prefix and checkpoint_step(prefix) > after:
            return checkpoint_step(prefix)
        time.sleep(0.5)
    raise AssertionError(f"no checkpoint past step {after} in 10 minutes")


def _compose(project: Path, *overrides: str) -> None:
    base = ["experiment=smoke", f"train.num_steps={STEPS}", "train.eval_every=20"]
    compose_params(project, [*base, *overrides], project / PARAMS_FILE)


def _runs(project: Path, seed: int) -> list:
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("odpipe")
    runs = client.search_runs([experiment.experiment_id], f"params.`train.seed` = '{seed}'", order_by=["start_time"])
    return client, runs


def _interrupt(project: Path, seed: int, how: signal.Signals, after: int) -> int:
    """`dvc repro train` hit with ``how`` once it has a checkpoint past step ``after``, in a session
    of its own (Ctrl-C and a lost VM hit the whole process group): it fails and leaves no output;
    returns the step of its last checkpoint, where the next run resumes."""
    proc = subprocess.Popen(
        ["dvc", "repro", "train"],
        cwd=project,
        env=python_env(),
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    at = _wait_for_checkpoint(project, seed, proc, after)
    os.killpg(proc.pid, how)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0, f"{how.name} at step {at}, yet exit status 0:\n{output[-4000:]}"
    assert not (project / load_params(project).paths.train / "checkpoint").exists(), "it left an output behind"
    last = checkpoint_step(latest(_work_folder(project, seed)))
    assert last >= at
    return last


def test_an_interrupted_training_resumes_from_its_checkpoint(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C, and the same machine resumes; then that run is lost with its VM (SIGKILL: nothing of
    it runs on), and another machine resumes, a copy of the project that sees the same checkpoint
    folder (``ODPIPE_TRAIN_WORK``, on NFS, say) and the same MLflow store (a team server's
    stand-in). Each run is tagged as the continuation of the one before; no step is trained or
    logged twice."""
    seed = 11
    store = f"sqlite:///{project / 'mlflow.db'}"
    _compose(project, f"train.seed={seed}", f"mlflow.tracking_uri={store}")
    monkeypatch.setenv(TRAIN_WORK_ENV, str(tmp_path / "shared-train"))
    stopped = _interrupt(project, seed, signal.SIGINT, after=0)
    lost = _interrupt(project, seed, signal.SIGKILL, after=stopped)  # resumed on this machine, then lost
    work = _work_folder(project, seed)
    assert work.parent == tmp_path / "shared-train"

    other = shutil.copytree(project, tmp_path / "other-machine", symlinks=True)  # same commit and data
    rerun = run_dvc(other, "repro", "train", timeout=900)
    assert f"resuming from step {lost}" in rerun.stdout
    trained = [int(s) for s in re.findall(rf"step (\d+)/{STEPS}", rerun.stdout)]
    assert trained and min(trained) == lost + 10, "the resumed run trained steps it had already trained"
    assert checkpoint_step(latest(work)) == STEPS
    paths = load_params(other).paths
    rows = read_csv(other / paths.train_plot)
    assert [int(r["step"]) for r in rows] == [10, 20, 30, 40], "each step once"
    elapsed = [float(r["elapsed_s"]) for r in rows]  # the resumed runs' clock continues the first's
    assert 0 < elapsed[0] and elapsed == sorted(elapsed)
    selection = json.loads((other / paths.train_selection).read_text())
    assert selection["last_step"] == STEPS and selection["step"] in (20, 40) and selection["stop"] == "num_steps"
    assert selection["train_seconds"] >= elapsed[-1]
    assert [int(r["step"]) for r in read_csv(other / paths.val_plot)] == [20, 40]

    client, runs = _runs(project, seed)
    assert [r.info.status for r in runs] == ["KILLED", "KILLED", "FINISHED"]  # the lost one closed by the third
    for before, after, at in zip(runs[:-1], runs[1:], (stopped, lost), strict=True):
        assert after.data.tags[RESUMED_FROM_TAG] == before.info.run_id
        assert after.data.tags[RESUMED_AT_TAG] == str(at)
    assert read_run_id(other / paths.mlflow_run) == runs[-1].info.run_id
    history = client.get_metric_history(runs[-1].info.run_id, "loss/total_loss")
    assert sorted(m.step for m in history) == [10, 20, 30, 40]


def test_a_loss_that_turns_nan_stops_training_naming_the_step(project: Path, tmp_path: Path) -> None:
    _compose(project, "train.seed=13")
    paths = load_params(project).paths
    text = (project / paths.pipeline_config).read_text()
    diverging = tmp_path / "pipeline.config"
    # Adam moves each weight by about the rate: at 1e38 the next forward pass overflows (1e12 did
    # not: CenterNet's ReLU6 and batch norm kept the loss finite).
    diverging.write_text(re.sub(r"learning_rate_base: [\d.e-]+", "learning_rate_base: 1e38", text))
    proc = _train(project, f"paths.pipeline_config={diverging}")
    assert proc.returncode != 0
    found = re.search(r"training diverged: loss/total_loss is (nan|inf) at step (\d+)", proc.stdout + proc.stderr)
    assert found, proc.stdout[-3000:] + proc.stderr[-3000:]
    nan_step = int(found.group(2))
    work = _work_folder(project, 13)
    assert checkpoint_step(latest(work)) < nan_step, "a diverged checkpoint was saved"


def test_a_time_budget_ends_training_at_a_checkpoint_and_keeps_the_best(project: Path) -> None:
    """A budget far shorter than one loop: training stops at the first checkpoint, which is
    evaluated although eval_every has not come, and exported as the best."""
    _compose(project, "train.seed=16", "train.max_minutes=0.001")
    proc = _train(project)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    paths = load_params(project).paths
    selection = json.loads((project / paths.train_selection).read_text())
    assert selection["stop"] == "budget" and selection["stopped_early"]
    assert selection["last_step"] == selection["step"] == 10 and selection["train_seconds"] > 0.06
    (val,) = read_csv(project / paths.val_plot)
    assert int(val["step"]) == 10 and float(val["elapsed_s"]) > 0.06
    client, (run,) = _runs(project, 16)
    assert run.data.metrics["train/last_step"] == 10 and run.data.tags["odpipe.stop"] == "budget"
    # The code that shapes the model names the work folder too: a fix there never resumes the old run.
    assert json.loads((_work_folder(project, 16) / "inputs.json").read_text())["model_code"] == code_digest()


def test_mirrored_strategy_over_two_logical_cpus(project: Path) -> None:
    """Two replicas in one process, as on a machine with two GPUs: the global batch of 4 is
    split 2 + 2, and training reaches the last step."""
    _compose(project, "train.seed=14")
    launcher = (
        "import runpy, sys, tensorflow as tf\n"
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
        "sys.argv = ['stages/train.py', *sys.argv[1:]]\n"
        "runpy.run_path('stages/train.py', run_name='__main__')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", launcher, "train.strategy=mirrored", "train.devices=[/cpu:0,/cpu:1]"],
        cwd=project,
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "with 2 replica(s)" in proc.stdout
    paths = load_params(project).paths
    assert json.loads((project / paths.train_selection).read_text())["last_step"] == STEPS
    assert [int(r["step"]) for r in read_csv(project / paths.train_plot)] == [10, 20, 30, 40]


def test_multi_worker_strategy_with_two_worker_processes(project: Path) -> None:
    """Two real workers on 127.0.0.1 (TF_CONFIG), each reading its own TFRecord shard, under a
    time budget that ends training at the first checkpoint: both stop there together (each
    worker's own clock never stops it alone), the chief alone records, and the worker's
    temporary checkpoint folders are gone. (A run to `num_steps` is the same loop: the mirrored
    test covers it; one multi-worker run keeps the suite in its budget.)"""
    seed, steps = 17, 10
    _compose(project, f"train.seed={seed}", "train.max_minutes=0.001")
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    procs = [
        subprocess.Popen(
            [sys.executable, "stages/train.py", "train.strategy=multi_worker"],
            cwd=project,
            env=python_env(TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=900)[0] for p in procs]
    finally:  # a worker left waiting for its peer would outlive the test
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    assert f"worker:1 done at step {steps}" in outputs[1]
    paths = load_params(project).paths
    assert json.loads((project / paths.train_selection).read_text())["last_step"] == steps
    work = _work_folder(project, seed)
    assert not list(work.rglob("workertemp*")), "temporary worker folders left behind"
    client, runs = _runs(project, seed)
    (run,) = runs
    logged = sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss/total_loss"))
    assert logged == list(range(10, steps + 1, 10))


def test_multi_worker_needs_a_shard_per_worker(project: Path) -> None:
    """Checked before the strategy starts, which would wait for the other workers forever."""
    tf_config = {
        "cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]},
        "task": {"type": "worker", "index": 0},
    }
    proc = _train(project, "train.strategy=multi_worker", env=python_env(TF_CONFIG=json.dumps(tf_config)))
    assert proc.returncode != 0
    assert "3 workers need at least 3 train TFRecord shards, found 2" in proc.stdout + proc.stderr


class _Failing(BaseHTTPRequestHandler):
    """An MLflow tracking server that is down: every call gets a 503."""

    def _fail(self) -> None:
        self.send_response(503)
        self.end_headers()

    do_GET = do_POST = _fail

    def log_message(self, *args) -> None:
        pass


def test_a_failing_mlflow_store_never_costs_the_model(project: Path) -> None:
    _compose(project, "train.seed=16")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = python_env(
            MLFLOW_TRACKING_URI=f"http://127.0.0.1:{server.server_address[1]}",
            MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        )
        proc = _train(project, env=env)
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "MLflow: creating the run failed" in proc.stdout
    paths = load_params(project).paths
    assert [int(r["step"]) for r in read_csv(project / paths.train_plot)] == [10, 20, 30, 40]
    assert (project / paths.train / "checkpoint").exists()
    assert read_run_id(project / paths.mlflow_run) is None
