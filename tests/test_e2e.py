"""The real `dvc repro` of the whole DAG on a tiny configuration, in a copy of the repo."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from odpipe.evaluation import COCO_STATS, detect, load_detector
from odpipe.files import read_csv, read_jsonl
from odpipe.label_map import read_label_map
from odpipe.project import copy_project, run_dvc, stage_names
from odpipe.runtime import PARAMS_FILE, compose_params, load_params
from odpipe.splitting import SPLITS
from odpipe.tfrecord import read_examples, shard_pattern
from odpipe.tracking import TRAIN_RUN_TAG, read_run_id

from .conftest import ROOT

SMOKE = ["experiment=smoke"]
DATA_STAGES = {"ingest", "clean_split", "convert", "tfrecord"}


def _ran(proc) -> set[str]:
    return set(re.findall(r"Running stage '([\w-]+)'", proc.stdout))


def _repro(work: Path, overrides: list[str]) -> set[str]:
    compose_params(work, SMOKE + overrides, work / PARAMS_FILE)
    return _ran(run_dvc(work, "repro", timeout=1200))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the repo after one full `dvc repro` of the smoke configuration."""
    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    work = copy_project(ROOT, tmp_path_factory.mktemp("e2e") / "project")
    assert _repro(work, []) == set(stage_names(work))
    yield work
    mp.undo()


def test_every_stage_leaves_valid_outputs(project: Path) -> None:
    paths = load_params(project).paths
    manifest = json.loads((project / paths.manifest).read_text())
    assert manifest["source"]["type"] == "synthetic"
    raw_files = sorted(
        p.relative_to(project / paths.raw).as_posix() for p in (project / paths.raw).rglob("*") if p.is_file()
    )
    assert [f["file"] for f in manifest["files"]] == raw_files == sorted(raw_files)
    assert all(len(f["sha256"]) == 64 and f["bytes"] > 0 for f in manifest["files"])
    assert not (project / "outputs").exists() and not list(project.rglob(".hydra")), "Hydra littered the repo"

    classes = read_label_map(project / paths.label_map)
    assert classes == {1: "circle", 2: "square", 3: "triangle"}
    total = 0
    for split in SPLITS:
        rows = read_csv(project / paths.convert / f"{split}.csv")
        assert len(read_jsonl(project / paths.clean_split / f"{split}.jsonl")) == len({r["filename"] for r in rows})
        by_image: dict[str, list] = {}
        for row in rows:
            by_image.setdefault(row["filename"], []).append(row)
        decoded = list(read_examples(shard_pattern(project / paths.tfrecord, split)))
        assert len(decoded) == len(by_image) > 0
        for example in decoded:
            expected = by_image[example["filename"].decode()]
            w, h = int(expected[0]["width"]), int(expected[0]["height"])
            boxes = np.array(
                [
                    [float(r["ymin"]) / h, float(r["xmin"]) / w, float(r["ymax"]) / h, float(r["xmax"]) / w]
                    for r in expected
                ]
            )
            np.testing.assert_allclose(example["groundtruth_boxes"], boxes, rtol=1e-6)
            assert [classes[c] for c in example["groundtruth_classes"]] == [r["class"] for r in expected]
        total += len(by_image)
    assert total == 36

    export = project / paths.export
    assert (export / "pipeline.config").exists() and (export / "label_map.pbtxt").exists()
    image = next(iter(read_csv(project / paths.convert / "test.csv")))
    detections = detect(load_detector(export), (project / paths.clean_images / image["filename"]).read_bytes())
    assert detections
    for d in detections:
        assert d.class_id in classes and 0 <= d.score <= 1
        assert -1 <= d.xmin <= d.xmax <= int(image["width"]) + 1

    metrics = json.loads((project / paths.evaluate_report).read_text())
    assert set(COCO_STATS) <= set(metrics) and metrics["num_images"] > 0


def test_mlflow_run_holds_step_losses_and_metrics(project: Path) -> None:
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    params = load_params(project)
    run = client.get_run(read_run_id(project / params.paths.mlflow_run))
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "loss/total_loss")
    assert [m.step for m in history] == list(range(10, params.train.num_steps + 1, 10))
    assert all(np.isfinite(m.value) for m in history)
    assert "map" in run.data.metrics and "map_50" in run.data.metrics
    assert run.data.params["train.num_steps"] == str(params.train.num_steps)
    assert run.data.params["evaluate.split"] == "test"
    assert run.data.tags["mlflow.source.git.commit"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"pipeline.config", "label_map.pbtxt", "evaluate.json"} <= artifacts
    plot_rows = read_csv(project / params.paths.train_plot)
    assert [int(r["step"]) for r in plot_rows] == [m.step for m in history]


def test_reruns_follow_the_declared_params(project: Path) -> None:
    assert _repro(project, []) == set(), "nothing changed, nothing should run"

    # Through `dvc exp run -S`, which composes params.yaml from conf/ with Hydra itself.
    proc = run_dvc(project, "exp", "run", "-n", "eval-only", "-S", "experiment=smoke", "-S", "evaluate.min_score=0.01")
    assert _ran(proc) == {"evaluate"}
    assert load_params(project).evaluate.min_score == 0.01
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("odpipe").experiment_id])
    linked = [r for r in runs if TRAIN_RUN_TAG in r.data.tags]
    assert len(linked) == 1
    assert linked[0].data.params["evaluate.min_score"] == "0.01"
    assert linked[0].info.run_name == "eval-only" and linked[0].data.metrics["map"] >= 0

    ran = _repro(project, ["evaluate.min_score=0.01", "train.num_steps=30"])
    assert {"train", "export", "evaluate"} <= ran
    assert not ran & DATA_STAGES
