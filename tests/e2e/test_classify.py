"""The classify task end to end: its own pipeline (classify/dvc.yaml) run by a real `dvc exp run`
on the smoke settings in a copy of the repo, every report it leaves, MLflow and the registry,
the metrics against scikit-learn's on the model's real outputs, `odpipe predict` and the served
model, and a train stage killed and resumed."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

from odpipe.classify.clean import read_rows
from odpipe.classify.export import load_classifier
from odpipe.core.files import read_csv, read_jsonl
from odpipe.core.runtime import PARAMS_FILE, TASK_FOLDERS, load_params
from odpipe.devtools.project import experiments, stage_names
from odpipe.engine.mlflow_runs import global_tracking_uri, read_run_id
from tests.conftest import kill_after_first_epoch_then_resume, task_fixtures
from tests.helpers.models import logged_before_the_move

CLASSIFY = TASK_FOLDERS["classify"]
CLASSES = ["circle", "diamond", "hexagon", "square", "star", "triangle"]


# The pipeline run once, with a gate every model passes (so the registry is exercised), logging to
# a team's MLflow server on PostgreSQL at the same moment as the other pipelines (tests.helpers.team);
# then these tests read it.
server, project = task_fixtures("classify")


def _folder(project: Path) -> Path:
    return project / CLASSIFY


def test_every_stage_leaves_its_reports(project: Path) -> None:
    folder = _folder(project)
    paths = load_params(folder).paths
    report = json.loads((folder / paths.evaluate_report).read_text())
    for key in ("top1", "top5", "macro_f1", "weighted_f1", "ece", "latency_ms_p50", "images_per_second", "gate_passed"):
        assert key in report, key
    assert 0.0 <= report["top1"] <= report["top5"] <= 1.0 and report["gate_passed"] == 1
    assert json.loads((folder / paths.classes).read_text())["names"] == CLASSES
    assert [row["class"] for row in read_csv(folder / paths.per_class)] == CLASSES
    assert len(json.loads((folder / paths.confusion).read_text())) == len(CLASSES) ** 2
    bins = read_csv(folder / paths.calibration)
    assert sum(int(b["count"]) for b in bins) == report["num_images"]
    for name in ("confusion.png", "reliability.png", "mistakes.jpg", "gradcam.jpg"):
        assert Image.open(folder / paths.samples / name).size > (0, 0), name
    for path in (paths.clean_split_markdown, paths.clean_split_grid, paths.augment_preview, paths.per_class_markdown):
        assert (folder / path).stat().st_size > 0
    clean = json.loads((folder / paths.clean_split_report).read_text())
    assert clean["layout"] == "folders" and clean["kept"] + clean["dropped"] == clean["images_in"]
    losses = read_csv(folder / paths.train_plot)
    assert [int(r["step"]) for r in losses] == [1, 2] and all(0 <= float(r["accuracy"]) <= 1 for r in losses)
    val = read_csv(folder / paths.val_plot)
    assert [int(r["step"]) for r in val] == [1, 2]  # val top-1 after each epoch
    assert all(0.0 <= float(r["val/top1"]) <= 1.0 and float(r["val/loss"]) > 0 for r in val)


def test_metrics_equal_scikit_learns_on_the_models_real_outputs(project: Path) -> None:
    """evaluate.json against scikit-learn on the exported model's probabilities over the test
    split, each image classified through the export's serving signature."""
    folder = _folder(project)
    paths = load_params(folder).paths
    classifier = load_classifier(folder / paths.export)
    rows = read_rows(folder / paths.clean_split / "test.csv")
    truth = np.array([row.label for row in rows])
    probabilities = classifier.predict([(folder / paths.clean_images / row.image).read_bytes() for row in rows])
    predicted = probabilities.argmax(-1)
    labels = list(range(len(CLASSES)))
    report = json.loads((folder / paths.evaluate_report).read_text())
    assert report["top1"] == pytest.approx(accuracy_score(truth, predicted), abs=1e-9)
    assert report["top5"] == pytest.approx(top_k_accuracy_score(truth, probabilities, k=5, labels=labels), abs=1e-9)
    for average in ("macro", "weighted"):
        _, _, f1, _ = precision_recall_fscore_support(truth, predicted, labels=labels, average=average, zero_division=0)
        assert report[f"{average}_f1"] == pytest.approx(f1, abs=1e-9)
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, labels=labels, zero_division=0)
    per_class = read_csv(folder / paths.per_class)
    for i, row in enumerate(per_class):
        assert float(row["precision"]) == pytest.approx(precision[i], abs=1e-6)
        assert float(row["recall"]) == pytest.approx(recall[i], abs=1e-6)
        assert float(row["f1"]) == pytest.approx(f1[i], abs=1e-6)
        assert int(row["support"]) == support[i]
    expected = confusion_matrix(truth, predicted, labels=labels, normalize="true")
    shares = {(c["actual"], c["predicted"]): c["share"] for c in json.loads((folder / paths.confusion).read_text())}
    for i, true in enumerate(CLASSES):
        for j, guess in enumerate(CLASSES):
            assert shares[(true, guess)] == pytest.approx(np.nan_to_num(expected[i, j]), abs=1e-9)


def test_mlflow_run_and_registry_hold_the_classifier(project: Path, server: str) -> None:
    folder = _folder(project)
    paths = load_params(folder).paths
    client = MlflowClient(server)
    run = client.get_run(read_run_id(folder / paths.mlflow_run))
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/top1")] == [1, 2]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "accuracy")] == [1, 2]
    assert "top1" in run.data.metrics and run.data.params["model.architecture"] == "mobilenetv2"
    (version,) = client.search_model_versions("name='odpipe-classifier'")
    assert float(version.tags["top1"]) == pytest.approx(run.data.metrics["top1"], abs=1e-4)

    images = sorted((folder / paths.clean_images).rglob("*.jpg"))[:3]
    encoded = [image.read_bytes() for image in images]
    with global_tracking_uri(client.tracking_uri):
        model = mlflow.pyfunc.load_model(f"models:/odpipe-classifier/{version.version}")
    answer = model.predict(pd.DataFrame({"image": [base64.b64encode(e).decode() for e in encoded]}))
    expected = load_classifier(folder / paths.export).predict(encoded)
    assert list(answer["class_name"]) == [CLASSES[i] for i in expected.argmax(-1)]
    np.testing.assert_allclose(answer["probability"], expected.max(-1), rtol=1e-6)
    assert [len(json.loads(k)) for k in answer["top_k"]] == [5, 5, 5]


def test_a_classifier_registered_before_the_move_still_loads(project: Path, server: str, tmp_path: Path) -> None:
    """A version logged by 0.1 names ``odpipe.cls_serving.ClassifierModel``: it loads and
    classifies as the export does."""
    folder = _folder(project)
    paths = load_params(folder).paths
    uri = server
    (version,) = MlflowClient(uri).search_model_versions("name='odpipe-classifier'")
    old = logged_before_the_move(uri, "odpipe-classifier", version.version, "classifier", tmp_path)
    model = mlflow.pyfunc.load_model(str(old))
    assert type(model.unwrap_python_model()).__module__ == "odpipe.classify.serve"
    encoded = [image.read_bytes() for image in sorted((folder / paths.clean_images).rglob("*.jpg"))[:2]]
    answer = model.predict(pd.DataFrame({"image": [base64.b64encode(e).decode() for e in encoded]}))
    expected = load_classifier(folder / paths.export).predict(encoded)
    np.testing.assert_allclose(answer["probability"], expected.max(-1), rtol=1e-6)


def test_odpipe_predict_writes_the_top_classes_of_each_image(project: Path, tmp_path: Path) -> None:
    folder = _folder(project)
    paths = load_params(folder).paths
    images = sorted((folder / paths.clean_images).rglob("*.jpg"))[:2]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "predicted"
    command = [sys.executable, "-m", "odpipe.cli", "predict", str(folder / paths.export), *map(str, images)]
    proc = subprocess.run([*command, str(broken), "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "broken.jpg: cannot read the image" in proc.stderr
    rows = read_csv(out / "classification.csv")
    assert [Path(r["file"]).name for r in rows] == [i.name for i in images]
    expected = load_classifier(folder / paths.export).predict([i.read_bytes() for i in images])
    for row, probabilities in zip(rows, expected, strict=True):
        assert row["class_1"] == CLASSES[int(probabilities.argmax())]
        ranked = [float(row[f"probability_{k}"]) for k in range(1, 6)]
        assert ranked == sorted(ranked, reverse=True) and ranked[0] == pytest.approx(probabilities.max(), abs=1e-5)


def test_dvc_exp_show_lists_the_classify_experiment(project: Path) -> None:
    found = experiments(project, f"{CLASSIFY}/{PARAMS_FILE}")
    assert found["gated"]["params"]["evaluate"]["min_value"] == 0.0
    assert 0.0 <= found["gated"]["metrics"][f"{CLASSIFY}/reports/evaluate.json"]["top1"] <= 1.0
    assert stage_names(_folder(project)) == ["ingest", "clean_split", "tfrecord", "train", "export", "evaluate"]


def test_train_stage_killed_mid_run_resumes_from_its_last_epoch(project: Path) -> None:
    """SIGKILL after the first epoch's checkpoint; the rerun trains epoch 2 alone, and its journal
    holds each epoch once."""
    folder = _folder(project)
    work = kill_after_first_epoch_then_resume(project, folder, "classify/train.py", ["train.epochs=2", "train.seed=7"])
    assert [r["step"] for r in read_jsonl(work / "val.jsonl")] == [1, 2]
    assert [r["step"] for r in read_jsonl(work / "losses.jsonl")] == [1, 2]
