"""MLflow run handling against a real (sqlite-backed) tracking store."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from odpipe.tracking import TRAIN_RUN_TAG, create_run, flatten, resolve_tracking_uri, run_for_evaluation, run_status


@pytest.fixture
def client(tmp_path: Path, monkeypatch) -> MlflowClient:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    return MlflowClient(resolve_tracking_uri("sqlite:///mlflow.db", tmp_path))


def test_relative_sqlite_is_taken_from_the_project_root_and_env_wins(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert resolve_tracking_uri("sqlite:///x/m.db", tmp_path) == f"sqlite:///{tmp_path}/x/m.db"
    assert resolve_tracking_uri("http://127.0.0.1:5000", tmp_path) == "http://127.0.0.1:5000"
    monkeypatch.setenv("DVC_ROOT", "/srv/project")  # a queued experiment's temporary copy
    assert resolve_tracking_uri("sqlite:///mlflow.db", tmp_path) == "sqlite:////srv/project/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    assert resolve_tracking_uri("sqlite:///mlflow.db", tmp_path) == "http://127.0.0.1:9"


def test_flatten_nested_params() -> None:
    assert flatten({"train": {"lr": 0.1, "sched": {"warmup": 5}}, "x": [1, 2]}) == {
        "train.lr": "0.1",
        "train.sched.warmup": "5",
        "x": "[1, 2]",
    }


def test_evaluate_reuses_the_training_run_then_links_a_new_one(
    client: MlflowClient, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("DVC_EXP_NAME", "exp-abc")
    train_run = create_run(client, "odpipe-test", tmp_path, {"train.lr": "0.1"})
    run = client.get_run(train_run)
    assert run.info.run_name == "exp-abc" and run.data.tags["dvc.exp_name"] == "exp-abc"

    first = run_for_evaluation(client, train_run, {"evaluate.split": "test"}, "odpipe-test", tmp_path)
    assert first == train_run
    assert client.get_run(train_run).data.params["evaluate.split"] == "test"

    second = run_for_evaluation(client, train_run, {"evaluate.split": "val"}, "odpipe-test", tmp_path)
    assert second != train_run
    linked = client.get_run(second)
    assert linked.data.tags[TRAIN_RUN_TAG] == train_run
    assert linked.data.params == {"train.lr": "0.1", "evaluate.split": "val"}


def test_run_status_marks_failures(client: MlflowClient, tmp_path: Path) -> None:
    run_id = create_run(client, "odpipe-test", tmp_path, {})
    with pytest.raises(RuntimeError), run_status(client, run_id):
        raise RuntimeError("boom")
    assert client.get_run(run_id).info.status == "FAILED"
