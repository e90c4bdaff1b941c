"""A team's MLflow server as docs/team.md sets it up: `mlflow server` with 2 workers on a real
PostgreSQL database, artifacts proxied, used by several processes at once and restarted
(test_team: a team's pipelines on one such server)."""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from odpipe.devtools.servers import TrackingServer, postgres_cluster, run_together, wait_for_go
from odpipe.engine.mlflow_runs import RunLogger, create_run, ensure_experiment, log_metrics, register_version

ROOT = Path(__file__).resolve().parents[2]  # not tests.conftest's: the clients below import this module
MODEL = "team-detector"
STEPS = 100  # metric values each writer logs, one call each


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    """A PostgreSQL cluster and a 2-worker tracking server on it, artifacts in a folder."""
    work = tmp_path_factory.mktemp("team")
    with postgres_cluster(work) as db, TrackingServer(db, work / "artifacts", work, workers=2) as server:
        yield server


def clients(work: Path, function: str, *argument_lists: list[str]) -> list[dict]:
    """``function`` of this module in one process per argument list, all released at once
    (:func:`run_together`); the JSON each printed last."""
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); from {__name__} import {function}; {function}(*sys.argv[1:])"
    )
    outputs = run_together([[sys.executable, "-c", code, *args] for args in argument_lists], work)
    return [json.loads(out.strip().splitlines()[-1]) for out in outputs]


def register(url: str, experiment_id: str, count: str) -> None:
    """A client: one logged model, then ``count`` versions of it registered as odpipe does."""
    client = MlflowClient(url)
    run_id = client.create_run(experiment_id).info.run_id
    model_id = client.create_logged_model(experiment_id, source_run_id=run_id).model_id
    wait_for_go()
    versions = [register_version(client, MODEL, model_id, run_id, {"map": 0.5}, "split") for _ in range(int(count))]
    print(json.dumps({"versions": versions}))


def write(url: str, experiment_id: str, steps: str) -> None:
    """A client: its own run, ``steps`` values of a metric, one ``log_metric`` call each."""
    client = MlflowClient(url)
    run_id = client.create_run(experiment_id).info.run_id
    wait_for_go()
    start = time.time()
    for step in range(int(steps)):
        client.log_metric(run_id, "loss", 1 / (step + 1), step=step)
    end = time.time()
    client.set_terminated(run_id)
    print(json.dumps({"run_id": run_id, "start": start, "end": end}))


def test_the_store_survives_a_server_restart(team: TrackingServer, tmp_path: Path) -> None:
    client = MlflowClient(team.url)
    run_id = client.create_run(ensure_experiment(client, "restart", tmp_path)).info.run_id
    client.log_param(run_id, "train.num_steps", "3500")
    for step in (100, 200, 300):
        log_metrics(client, run_id, {"loss/total_loss": 1 / step}, step)
    report = tmp_path / "evaluate.json"
    report.write_text('{"map": 0.5}\n')
    client.log_artifact(run_id, str(report))
    client.set_terminated(run_id)

    team.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{team.url}/health", timeout=5)
    team.upgrade()  # as `make mlflow-server` does at each start: a no-op on an up-to-date store
    team.start()

    client = MlflowClient(team.url)  # a new client: nothing cached
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"train.num_steps": "3500"}
    history = client.get_metric_history(run_id, "loss/total_loss")
    assert [(m.step, m.value) for m in history] == [(s, 1 / s) for s in (100, 200, 300)]
    assert [a.path for a in client.list_artifacts(run_id)] == ["evaluate.json"]
    fetched = Path(client.download_artifacts(run_id, "evaluate.json", str(tmp_path / "back")))
    assert fetched.read_text() == report.read_text()
    # Proxied: the server stored the file in its artifacts folder; the client never saw that folder.
    assert [p.read_text() for p in Path(team.artifacts).rglob("evaluate.json")] == [report.read_text()]


def test_versions_registered_from_two_processes_at_once_are_distinct_and_consecutive(
    team: TrackingServer, tmp_path: Path
) -> None:
    client = MlflowClient(team.url)
    experiment_id = ensure_experiment(client, "registry", tmp_path)
    results = clients(tmp_path, "register", [team.url, experiment_id, "3"], [team.url, experiment_id, "3"])
    versions = [int(v) for r in results for v in r["versions"]]
    assert sorted(versions) == list(range(1, 7)), versions
    assert all(r["versions"] == sorted(r["versions"], key=int) for r in results)
    registered = client.search_model_versions(f"name='{MODEL}'")
    assert sorted(int(v.version) for v in registered) == list(range(1, 7))


def test_four_writers_at_once_each_land_every_value(team: TrackingServer, tmp_path: Path) -> None:
    client = MlflowClient(team.url)
    experiment_id = ensure_experiment(client, "writers", tmp_path)
    results = clients(tmp_path, "write", *([team.url, experiment_id, str(STEPS)] for _ in range(4)))
    assert len({r["run_id"] for r in results}) == 4
    assert max(r["start"] for r in results) < min(r["end"] for r in results), "the writers did not overlap"
    for r in results:
        history = client.get_metric_history(r["run_id"], "loss")
        assert sorted(m.step for m in history) == list(range(STEPS))
        assert client.get_run(r["run_id"]).info.status == "FINISHED"


def test_a_training_that_outlives_an_outage_ends_with_a_complete_run(team: TrackingServer, tmp_path: Path) -> None:
    """Logging as the train stage does (RunLogger, the journal's rows as backlog) while the server
    is down at the start and again in the middle: the steps go on (a pause after a failure, not
    minutes of HTTP retries each), the run is created when the server answers, and it ends FINISHED
    holding every step, so the stage's outputs can name it."""
    rows: list[dict] = []
    logger = RunLogger(team.url, wait=0.01, pause=1.0)

    def step(number: int) -> None:
        rows.append({"step": number, "loss": 1 / number})  # journaled first, as train does
        logger.metrics({"loss": 1 / number}, number)

    team.stop()
    started = time.monotonic()
    assert logger.start(lambda c: create_run(c, "outage", tmp_path, {}), backlog=lambda: rows) is None
    step(10)  # within the pause: not even tried
    assert time.monotonic() - started < 30, "an unreachable server stalled the training"
    team.start()
    time.sleep(1.0)
    step(20)  # the run is created now, step 10 sent from the backlog, then 20
    assert logger.run_id
    team.stop()
    step(30)
    step(40)
    team.start()
    time.sleep(1.0)
    logger.terminate("FINISHED")  # the last call: 30 and 40 first
    client = MlflowClient(team.url)
    assert client.get_run(logger.run_id).info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(logger.run_id, "loss")) == [10, 20, 30, 40]
