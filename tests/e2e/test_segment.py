"""The segment task end to end: its own pipeline (segment/dvc.yaml) run by a real `dvc exp run`
on the smoke settings in a copy of the repo, every report it leaves, MLflow and the registry,
the metrics on the model's real outputs, `odpipe predict` and the served model, and a train
stage killed and resumed."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from mlflow.tracking import MlflowClient
from PIL import Image

from odpipe.core.files import read_csv, read_jsonl
from odpipe.core.runtime import PARAMS_FILE, TASK_FOLDERS, load_params
from odpipe.devtools.project import experiments, stage_names
from odpipe.engine.mlflow_runs import global_tracking_uri, read_run_id
from odpipe.segment.clean import read_rows
from odpipe.segment.export import load_segmenter
from odpipe.segment.metrics import confusion, segmentation_metrics
from tests.conftest import kill_after_first_epoch_then_resume, task_fixtures
from tests.helpers.models import logged_before_the_move

SEGMENT = TASK_FOLDERS["segment"]


# The pipeline run once, with a gate every model passes (so the registry is exercised), logging to
# a team's MLflow server on PostgreSQL at the same moment as the other pipelines (tests.helpers.team);
# then these tests read it.
server, project = task_fixtures("segment")


def _folder(project: Path) -> Path:
    return project / SEGMENT


def test_every_stage_leaves_its_reports(project: Path) -> None:
    folder = _folder(project)
    paths = load_params(folder).paths
    report = json.loads((folder / paths.evaluate_report).read_text())
    for key in ("aAcc", "mIoU", "mAcc", "mDice", "latency_ms_p50", "images_per_second", "gate_passed"):
        assert key in report, key
    assert 0.0 <= report["mIoU"] <= 1.0 and report["gate_passed"] == 1
    classes = json.loads((folder / paths.classes).read_text())["names"]
    assert classes == ["background", "circle", "square", "triangle"]
    per_class = read_csv(folder / paths.per_class)
    assert [row["class"] for row in per_class] == classes
    cells = json.loads((folder / paths.confusion).read_text())
    assert len(cells) == len(classes) ** 2
    for name in ("worst.jpg", "confusion.png"):
        assert (folder / paths.samples / name).stat().st_size > 0
    for path in (paths.clean_split_markdown, paths.clean_split_grid, paths.augment_preview, paths.per_class_markdown):
        assert (folder / path).stat().st_size > 0
    clean = json.loads((folder / paths.clean_split_report).read_text())
    assert clean["format"] == "voc" and clean["kept"] + clean["dropped"] == clean["images_in"]
    val = read_csv(folder / paths.val_plot)
    assert [int(r["step"]) for r in val] == [1, 2]  # val mIoU after each epoch
    assert all(0.0 <= float(r["val/mIoU"]) <= 1.0 for r in val)


def test_mlflow_run_and_registry_hold_the_segmenter(project: Path, server: str) -> None:
    folder = _folder(project)
    paths = load_params(folder).paths
    client = MlflowClient(server)
    run = client.get_run(read_run_id(folder / paths.mlflow_run))
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/mIoU")] == [1, 2]
    assert "mIoU" in run.data.metrics and run.data.params["model.architecture"] == "deeplabv3plus"
    (version,) = client.search_model_versions("name='odpipe-segmenter'")
    assert float(version.tags["mIoU"]) == pytest.approx(run.data.metrics["mIoU"], abs=1e-4)

    image = next((folder / paths.clean_images).rglob("*.jpg"))
    encoded = image.read_bytes()
    with global_tracking_uri(client.tracking_uri):
        model = mlflow.pyfunc.load_model(f"models:/odpipe-segmenter/{version.version}")
    answer = model.predict(pd.DataFrame({"image": [base64.b64encode(encoded).decode()]}))
    served = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["mask_png"][0]))))
    expected, _ = load_segmenter(folder / paths.export).predict(encoded)
    np.testing.assert_array_equal(served, expected)


def test_a_segmenter_registered_before_the_move_still_loads(project: Path, server: str, tmp_path: Path) -> None:
    """A version logged by 0.1 names ``odpipe.seg_serving.SegmenterModel``: it loads and segments
    as the export does."""
    folder = _folder(project)
    paths = load_params(folder).paths
    uri = server
    (version,) = MlflowClient(uri).search_model_versions("name='odpipe-segmenter'")
    old = logged_before_the_move(uri, "odpipe-segmenter", version.version, "segmenter", tmp_path)
    model = mlflow.pyfunc.load_model(str(old))
    assert type(model.unwrap_python_model()).__module__ == "odpipe.segment.serve"
    encoded = next((folder / paths.clean_images).rglob("*.jpg")).read_bytes()
    answer = model.predict(pd.DataFrame({"image": [base64.b64encode(encoded).decode()]}))
    served = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["mask_png"][0]))))
    np.testing.assert_array_equal(served, load_segmenter(folder / paths.export).predict(encoded)[0])


def test_metrics_on_the_models_real_outputs_match_keras_mean_iou(project: Path) -> None:
    """evaluate.json's mIoU equals a direct computation on the exported model's outputs over
    the test split, and Keras' MeanIoU(ignore_class=255) on the same outputs (to 1e-6)."""
    folder = _folder(project)
    paths = load_params(folder).paths
    segmenter = load_segmenter(folder / paths.export)
    rows = read_rows(folder / paths.clean_split / "test.csv")
    names = segmenter.names
    keras = tf.keras.metrics.MeanIoU(num_classes=len(names), ignore_class=255)
    total = np.zeros((len(names), len(names)), dtype=np.int64)
    for row in rows:
        truth = np.asarray(Image.open(folder / paths.clean_masks / row.mask))
        predicted, probabilities = segmenter.predict((folder / paths.clean_images / row.image).read_bytes())
        assert predicted.shape == truth.shape == probabilities.shape[:2]
        total += confusion(truth, predicted, len(names))
        keras.update_state(truth, predicted)
    ours = segmentation_metrics(total, names)["mIoU"]
    assert ours == pytest.approx(float(keras.result()), abs=1e-6)
    report = json.loads((folder / paths.evaluate_report).read_text())
    assert report["mIoU"] == pytest.approx(ours, abs=1e-9)


def test_odpipe_predict_writes_masks_colours_and_overlays(project: Path, tmp_path: Path) -> None:
    folder = _folder(project)
    paths = load_params(folder).paths
    images = sorted((folder / paths.clean_images).rglob("*.jpg"))[:2]
    out = tmp_path / "predicted"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "odpipe.cli",
            "predict",
            str(folder / paths.export),
            *map(str, images),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    segmenter = load_segmenter(folder / paths.export)
    for image in images:
        mask = np.asarray(Image.open(out / "masks" / f"{image.stem}.png"))
        np.testing.assert_array_equal(mask, segmenter.predict(image.read_bytes())[0])
        assert Image.open(out / "colour" / f"{image.stem}.png").size == Image.open(image).size
        assert (out / "overlays" / f"{image.stem}.jpg").exists()
    rows = read_csv(out / "segmentation.csv")
    assert len(rows) == 2 and all(abs(sum(float(r[n]) for n in segmenter.names) - 1) < 1e-3 for r in rows)


def test_dvc_exp_show_lists_the_segment_experiment(project: Path) -> None:
    found = experiments(project, f"{SEGMENT}/{PARAMS_FILE}")
    assert found["gated"]["params"]["evaluate"]["min_miou"] == 0.0
    metrics = found["gated"]["metrics"][f"{SEGMENT}/reports/evaluate.json"]
    assert 0.0 <= metrics["mIoU"] <= 1.0
    assert stage_names(_folder(project)) == ["ingest", "clean_split", "tfrecord", "train", "export", "evaluate"]


def test_train_stage_killed_mid_run_resumes_from_its_last_epoch(project: Path) -> None:
    """SIGKILL after the first epoch's checkpoint; the rerun trains epoch 2 alone (in a new
    MLflow run tagged as the interrupted one's continuation), and its journal holds each epoch once."""
    folder = _folder(project)
    overrides = ["train.epochs=2", "train.seed=7"]
    work = kill_after_first_epoch_then_resume(project, folder, "segment/train.py", overrides)
    assert [r["step"] for r in read_jsonl(work / "val.jsonl")] == [1, 2]
    selection = json.loads((folder / load_params(folder).paths.train_selection).read_text())
    assert selection["last_step"] == 2 and selection["stop"] == "epochs"
