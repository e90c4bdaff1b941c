"""MLflow run handling against a real (sqlite-backed) tracking store."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from odpipe.engine.mlflow_runs import (
    DVC_EXP_REF_TAG,
    DVC_EXP_TAG,
    SPLIT_TAG,
    TRAIN_RUN_TAG,
    RunLogger,
    create_run,
    file_stem,
    flatten,
    log_metrics,
    metric_key,
    register_version,
    resolve_tracking_uri,
    run_for_evaluation,
    run_status,
    run_tags,
)


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


AWKWARD = ("hard hat (yellow)", "c++", "c**", "a/b", "..", "/x/", "café", "x" * 300)


def test_metric_keys_are_made_safe_only_where_needed_and_stay_distinct() -> None:
    assert metric_key("ap/circle") == "ap/circle" and metric_key("val/map_50") == "val/map_50"
    keys = {metric_key(f"ap/{name}") for name in AWKWARD}
    assert len(keys) == len(AWKWARD)
    assert metric_key("ap/c++") != metric_key("ap/c**")
    assert metric_key("ap/a/b") == "ap/a/b" and metric_key("ap/café") == "ap/café"
    assert all(len(key) <= 250 for key in keys)
    assert metric_key("ap/c++") == metric_key("ap/c++")  # the same key in every run


def test_file_stems_are_file_names_and_stay_distinct() -> None:
    assert file_stem("circle") == "circle" and file_stem("hard hat") == "hard hat"
    stems = {file_stem(name) for name in (*AWKWARD, "a_b")}
    assert len(stems) == len(AWKWARD) + 1
    assert all("/" not in stem and stem not in (".", "..") and len(stem) <= 60 for stem in stems)


def test_metrics_named_after_any_class_reach_mlflow_and_reports_keep_the_names(
    client: MlflowClient, tmp_path: Path
) -> None:
    """MLflow rejects ``ap/c++``; evaluate's report keeps it, MLflow gets a safe key for it."""
    from odpipe.detect.evaluate import Detection, coco_detections, coco_ground_truth, coco_metrics
    from odpipe.detect.records import ImageBoxes

    categories = dict(enumerate(AWKWARD, start=1))
    records = [ImageBoxes(f"{i}.jpg", 100, 100, ((10, 10, 60, 60),), (i,), (n,)) for i, n in categories.items()]
    found = [[Detection(r.labels[0], 0.9, *r.boxes[0])] for r in records]
    report, _ = coco_metrics(coco_ground_truth(records, categories), coco_detections(found))
    assert {f"ap/{name}" for name in AWKWARD} <= set(report)

    run_id = create_run(client, "odpipe-test", tmp_path, {})
    log_metrics(client, run_id, report)
    logged = client.get_run(run_id).data.metrics
    assert len(logged) == len(report)
    assert logged[metric_key("ap/hard hat (yellow)")] == pytest.approx(1.0)
    model = client.create_logged_model(client.get_run(run_id).info.experiment_id, source_run_id=run_id)
    version = register_version(client, "odpipe-model", model.model_id, run_id, report, "split-digest")
    registered = client.get_model_version("odpipe-model", version)
    assert metric_key("ap/c++") in registered.tags and registered.tags[SPLIT_TAG] == "split-digest"
    assert registered.source == f"models:/{model.model_id}" and registered.run_id == run_id


def test_a_run_of_a_dvc_experiment_is_tagged_with_its_git_ref(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The ref DVC gives the experiment (refs/exps/<2 chars of the baseline>/<the rest>/<name>),
    which `dvc exp push` sends and `git ls-remote origin 'refs/exps/*'` lists on the Git remote."""
    assert DVC_EXP_TAG not in run_tags(tmp_path)  # not under `dvc exp run`
    monkeypatch.setenv("DVC_EXP_NAME", "lr-0.03")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "4446c9a0d1f2")
    tags = run_tags(tmp_path)
    assert tags[DVC_EXP_TAG] == "lr-0.03" and tags[DVC_EXP_REF_TAG] == "refs/exps/44/46c9a0d1f2/lr-0.03"


def test_a_refusal_from_the_store_pauses_nothing(tmp_path: Path) -> None:
    """Closing the interrupted run of another store (a training resumed against a new server) is
    refused at once; the artifacts and metrics after it still go (an unreachable store, instead,
    is left alone for a while: tests/e2e/test_mlflow_server.py)."""
    logger = RunLogger(f"sqlite:///{tmp_path / 'mlflow.db'}", wait=0.01)
    run_id = logger.start(lambda client: create_run(client, "odpipe", tmp_path, {}))
    logger.close_interrupted("0" * 32)
    (tmp_path / "pipeline.config").write_text("model {}")
    logger.artifacts([tmp_path / "pipeline.config"])
    logger.metrics({"loss": 1.0}, 10)
    client = MlflowClient(logger.uri)
    assert logger.failures == 1 and [a.path for a in client.list_artifacts(run_id)] == ["pipeline.config"]
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [10]
