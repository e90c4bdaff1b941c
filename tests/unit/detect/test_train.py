"""The pieces of resumable training: schedule checks, the journal, checkpoint files, devices,
shuffled shards and MLflow logging that survives its store."""

from __future__ import annotations

import json
import logging
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from mlflow.tracking import MlflowClient

from odpipe.data.records import auto_num_shards, shuffled
from odpipe.detect.records import ImageBoxes
from odpipe.detect.train import Schedule, TrainingDiverged, check_finite, check_val_data, val_metrics
from odpipe.engine.checkpoints import checkpoint_step, copy_checkpoint, latest, publishing
from odpipe.engine.distribute import Cluster, check_batch, check_shards
from odpipe.engine.journal import Journal
from odpipe.engine.mlflow_runs import RunLogger, artifact_location, ensure_experiment, open_client


def test_schedule_refuses_what_train_loop_would_get_wrong() -> None:
    with pytest.raises(ValueError, match="multiple of train.steps_per_loop"):
        Schedule(num_steps=105, steps_per_loop=10, eval_every=20, patience=None)
    with pytest.raises(ValueError, match="train.eval_every \\(25\\) must be a positive multiple"):
        Schedule(num_steps=100, steps_per_loop=10, eval_every=25, patience=None)
    with pytest.raises(ValueError, match="need val evaluations"):
        Schedule(num_steps=100, steps_per_loop=10, eval_every=None, patience=None, keep="best")
    with pytest.raises(ValueError, match="train.keep"):
        Schedule(num_steps=100, steps_per_loop=10, eval_every=20, patience=None, keep="newest")
    schedule = Schedule(num_steps=100, steps_per_loop=10, eval_every=30, patience=2)
    assert [s for s in range(0, 101, 10) if schedule.evaluates_at(s)] == [30, 60, 90, 100]


def test_evaluating_while_training_needs_val_examples(tmp_path: Path) -> None:
    schedule = Schedule(num_steps=100, steps_per_loop=10, eval_every=50, patience=None)
    empty = tmp_path / "val-00000-of-00001.tfrecord"
    tf.io.TFRecordWriter(str(empty)).close()
    with pytest.raises(ValueError, match="no val examples in .*train.eval_every=null and train.keep=last"):
        check_val_data([str(tmp_path / "val-*")], schedule)
    check_val_data([str(tmp_path / "val-*")], Schedule(100, 10, None, None, keep="last"))
    with tf.io.TFRecordWriter(str(empty)) as writer:
        writer.write(b"an example")
    check_val_data([str(tmp_path / "val-*")], schedule)


def _row(step: int, loss: float) -> dict:
    return {"step": step, "loss/total_loss": loss}


def test_a_nan_loss_is_named_with_its_step() -> None:
    check_finite([_row(10, 2.0), _row(20, 1.5)])
    with pytest.raises(TrainingDiverged, match="is nan at step 30; the last finite loss was at step 20"):
        check_finite([_row(10, 2.0), _row(20, 1.5), _row(30, float("nan"))])
    with pytest.raises(TrainingDiverged, match="is inf at step 10"):
        check_finite([_row(10, float("inf"))])


def _checkpoint(folder: Path, step: int) -> str:
    """A checkpoint laid out as train_loop's: Checkpoint(step=..., model=...)."""
    return tf.train.Checkpoint(step=tf.Variable(step, dtype=tf.int64), model=tf.Module()).save(str(folder / "ckpt"))


def test_journal_forgets_what_came_after_the_checkpoint_it_resumes_from(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path, 0)
    for step in (10, 20, 30):
        journal.add_losses(step, {"loss/total_loss": 1.0 / step})
    assert journal.add_val(20, {"val/map": 0.4}, _checkpoint(tmp_path, 20))
    # Killed after step 30 was logged but before it was checkpointed: steps 30+ train again.
    resumed = Journal.open(tmp_path, 20)
    assert [r["step"] for r in resumed.losses] == [10, 20] and [r["step"] for r in resumed.val] == [20]
    assert resumed.best["step"] == 20 and checkpoint_step(str(tmp_path / resumed.best["checkpoint"])) == 20
    reader = Journal.open(tmp_path, 10, writable=False)  # a non-chief worker reads, never writes
    reader.add_losses(20, {"loss/total_loss": 0.1})
    assert [r["step"] for r in Journal.open(tmp_path, 20).losses] == [10, 20]


def test_the_time_spent_training_adds_up_over_resumed_runs(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path, 0)
    journal.add_losses(10, {"loss/total_loss": 1.0}, elapsed=30.0)
    journal.add_val(10, {"val/map": 0.1}, _checkpoint(tmp_path, 10), elapsed=42.5)
    journal.add_losses(20, {"loss/total_loss": 0.5}, elapsed=70.0)  # logged, then killed before its checkpoint
    assert Journal.open(tmp_path, 10).elapsed == 42.5  # a resumed run's budget starts from here
    assert Journal.open(tmp_path, 0).elapsed == 0.0
    budget = Schedule(num_steps=100, steps_per_loop=10, eval_every=10, patience=None, max_minutes=0.7)
    assert not budget.out_of_time(41.9) and budget.out_of_time(42.0)
    assert not Schedule(num_steps=100, steps_per_loop=10, eval_every=10, patience=None).out_of_time(1e9)
    with pytest.raises(ValueError, match="max_minutes"):
        Schedule(num_steps=100, steps_per_loop=10, eval_every=10, patience=None, max_minutes=0)


def test_best_checkpoint_and_patience(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path, 0)
    maps = {10: 0.2, 20: 0.5, 30: 0.5, 40: 0.4, 50: 0.45}
    verdicts = []
    for step, value in maps.items():
        verdicts.append(journal.add_val(step, {"val/map": value}, _checkpoint(tmp_path, step)))
        if step == 30:
            assert not journal.patience_ran_out(2) and journal.patience_ran_out(1)
    assert verdicts == [True, True, False, False, False]  # a tie is no improvement
    assert journal.best["step"] == 20 and journal.patience_ran_out(3) and not journal.patience_ran_out(4)
    assert [p.name for p in tmp_path.glob("best-*")] == ["best-20"]
    assert latest(tmp_path / "best-20") == str(tmp_path / journal.best["checkpoint"])


def test_val_metrics_take_our_names() -> None:
    raw = {"DetectionBoxes_Precision/mAP": 0.5, "DetectionBoxes_Precision/mAP@.50IOU": 0.8, "Loss/total_loss": 1.2}
    raw["DetectionBoxes_Recall/AR@1"] = 0.1
    assert val_metrics(raw) == {"val/map": 0.5, "val/map_50": 0.8, "val/loss/total_loss": 1.2}


def test_a_copied_checkpoint_is_the_latest_of_its_folder(tmp_path: Path) -> None:
    prefix = _checkpoint(tmp_path / "work", 40)
    copied = copy_checkpoint(prefix, tmp_path / "out")
    assert latest(tmp_path / "out") == str(copied) and checkpoint_step(str(copied)) == 40


def test_publishing_leaves_nothing_when_interrupted(tmp_path: Path) -> None:
    final = tmp_path / "models" / "export"
    with publishing(final) as out:
        (out / "saved_model.pb").write_bytes(b"v1")
    with pytest.raises(KeyboardInterrupt), publishing(final) as out:
        (out / "saved_model.pb").write_bytes(b"half")
        raise KeyboardInterrupt
    assert (final / "saved_model.pb").read_bytes() == b"v1"
    assert [p.name for p in final.parent.iterdir()] == ["export"]


def test_cluster_from_tf_config(monkeypatch) -> None:
    assert Cluster.from_env("auto") == Cluster(1, True, "chief")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs TF_CONFIG"):
        Cluster.from_env("multi_worker")
    cluster = {"worker": ["a:1", "b:1", "c:1"]}
    for index, chief in ((0, True), (2, False)):
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        assert Cluster.from_env("multi_worker") == Cluster(3, chief, f"worker:{index}")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {**cluster, "chief": ["d:1"]}, "task": {"type": "worker"}}))
    assert Cluster.from_env("multi_worker") == Cluster(4, False, "worker:0")


def test_device_checks_say_what_to_change() -> None:
    check_batch(16, 2)
    with pytest.raises(ValueError, match="global batch.*does not divide by 4 \\(try 8\\)"):
        check_batch(10, 4)
    check_shards(2, 2)
    with pytest.raises(ValueError, match="set tfrecord.num_shards to 3 or more"):
        check_shards(2, 3)


def _records(n: int) -> list[ImageBoxes]:
    return [ImageBoxes(f"{i:04d}.jpg", 10, 10, (), (), ()) for i in range(n)]


def test_training_order_is_a_seeded_permutation_of_every_image_and_copy() -> None:
    records = _records(200)
    order = [(r.filename, c) for r, c in shuffled(records, 2, seed=0)]
    assert sorted(order) == sorted((r.filename, c) for r in records for c in range(3))
    assert order == [(r.filename, c) for r, c in shuffled(records, 2, seed=0)]
    assert order != [(r.filename, c) for r, c in shuffled(records, 2, seed=1)]
    # Far from file-name order, and copies no longer follow their original.
    positions = [int(name[:4]) for name, _ in order]
    assert abs(np.corrcoef(positions, range(len(positions)))[0, 1]) < 0.2
    assert sum(a[0] == b[0] for a, b in zip(order, order[1:], strict=False)) < 10


def test_shard_count_follows_the_data() -> None:
    assert auto_num_shards(0) == 2 and auto_num_shards(150 * 2**20) == 2
    assert auto_num_shards(18 * 2**30) == 185  # COCO train2017's 18 GB


def _create_store(uri: str) -> str:
    return ensure_experiment(open_client(uri), "odpipe", Path("/nowhere"))


def test_a_fresh_store_is_created_once_by_concurrent_processes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        ids = pool.map(_create_store, [uri] * 3)
    assert len(set(ids)) == 1
    experiment = MlflowClient(uri).get_experiment(ids[0])
    assert experiment.artifact_location == (tmp_path / "mlruns" / "odpipe").as_uri()
    assert artifact_location("http://127.0.0.1:5000", tmp_path, "odpipe") is None


def test_run_logger_retries_then_warns_and_goes_on(tmp_path: Path, caplog) -> None:
    logger = RunLogger(f"sqlite:///{tmp_path / 'mlflow.db'}", wait=0.01)
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("database is locked")
        return "ok"

    assert logger.call("flaky", flaky) == "ok" and logger.failures == 0
    with caplog.at_level(logging.WARNING):
        assert logger.call("doomed", lambda: 1 / 0) is None
    assert logger.failures == 1 and "MLflow: doomed failed (division by zero)" in caplog.text
