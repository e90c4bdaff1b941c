"""The real `dvc repro` of the whole DAG on a tiny configuration, in a copy of the repo."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from odpipe.core.files import read_csv, read_jsonl
from odpipe.core.manifest import sha256_file
from odpipe.core.runtime import PARAMS_FILE, compose_config, compose_params, load_params
from odpipe.data.annotations import read_voc
from odpipe.data.records import shard_pattern
from odpipe.data.splitting import SPLITS
from odpipe.data.synthetic import SyntheticSpec, generate
from odpipe.detect.detectors import load_detector
from odpipe.detect.evaluate import COCO_STATS, detect
from odpipe.detect.formats import read_dataset
from odpipe.detect.label_map import read_label_map
from odpipe.detect.records import read_examples
from odpipe.devtools.project import experiments, run_dvc
from odpipe.engine.mlflow_runs import (
    DVC_EXP_REF_TAG,
    DVC_EXP_TAG,
    SPLIT_TAG,
    TRAIN_RUN_TAG,
    read_run_id,
)
from odpipe.video.metrics import read_mot
from tests.conftest import ROOT

SMOKE = ["experiment=smoke"]


def _ran(proc) -> set[str]:
    return set(re.findall(r"Running stage '([\w-]+)'", proc.stdout))


def _repro(work: Path, overrides: list[str]) -> set[str]:
    compose_params(work, SMOKE + overrides, work / PARAMS_FILE)
    return _ran(run_dvc(work, "repro", timeout=1200))


@pytest.fixture(scope="module")
def project(smoke_project: Path) -> Iterator[Path]:
    """A copy of the repo after one full `dvc repro` of the smoke configuration (the session's,
    which these tests go on to change), with no tracking URI from the environment."""
    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield smoke_project
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
        annotations = list(read_jsonl(project / paths.clean_split / f"{split}.jsonl"))
        assert len(annotations) == len({r["filename"] for r in rows})
        by_image: dict[str, list] = {}
        for row in rows:
            by_image.setdefault(row["filename"], []).append(row)
        examples = list(read_examples(shard_pattern(project / paths.tfrecord, split)))
        decoded = [e for e in examples if "#aug" not in e["filename"].decode()]
        assert len(decoded) == len(by_image) > 0
        # The default recipe's mosaic copies: train only, the policy's number per image.
        copies = load_params(project).augment.copies if split == "train" else 0
        assert len(examples) == len(decoded) * (1 + copies)
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
    assert {"ap/circle", "ap/square", "ap/triangle"} <= set(metrics)
    assert 0 < metrics["latency_ms_p50"] <= metrics["latency_ms_p90"] <= metrics["latency_ms_p99"]
    assert 0.05 <= metrics["threshold"] < 1 and {"val_f1", "precision", "recall", "f1"} <= set(metrics)
    test_classes = {r["class"] for r in read_csv(project / paths.convert / "test.csv") if r["class"]}
    assert {p.stem for p in (project / paths.pr_curves).glob("*.csv")} == test_classes
    assert {p.name for p in (project / paths.samples).iterdir()} == {"best.jpg", "worst.jpg"}
    assert metrics["images_per_second"] > 0

    # The exported checkpoint is the best of those evaluated on val, and evaluate says which.
    selection = json.loads((project / paths.train_selection).read_text())
    val_rows = read_csv(project / paths.val_plot)
    assert [int(r["step"]) for r in val_rows] == [10, 20]
    best = max(val_rows, key=lambda r: (float(r["val/map"]), -int(r["step"])))
    assert selection["keep"] == "best" and selection["step"] == int(best["step"])
    assert metrics["exported_step"] == selection["step"]
    assert metrics["exported_val_map"] == pytest.approx(float(best["val/map"]))

    pairs = json.loads((project / paths.confusion).read_text())
    test_boxes = sum(1 for row in read_csv(project / paths.convert / "test.csv") if row["class"])
    assert sum(p["actual"] != "background" for p in pairs) == test_boxes
    assert {p["predicted"] for p in pairs} | {p["actual"] for p in pairs} <= {*classes.values(), "background"}
    plots = json.loads(run_dvc(project, "plots", "show", "--json").stdout)["data"]
    assert any("confusion" in name for name in plots) and any("train_losses" in name for name in plots)
    assert "val_metrics" in plots
    assert any("augment_preview" in name for name in plots) and "f1_threshold" in plots
    assert any("pr_curves" in name for name in plots) and any("samples/worst.jpg" in name for name in plots)


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
    assert {"clean_split.json", "clean_split.md", "clean_split_samples.jpg", "augment_preview.jpg"} <= artifacts
    assert "source.json" in artifacts  # where the base model came from
    assert {"f1_threshold.csv", "pr_curves", "samples"} <= artifacts
    plot_rows = read_csv(project / params.paths.train_plot)
    assert [int(r["step"]) for r in plot_rows] == [m.step for m in history]


def _changed_stages(project: Path) -> set[str]:
    """Detection's stages DVC would rerun (bare `dvc status` lists every pipeline's: segment's too)."""
    return set(json.loads(run_dvc(project, "status", "--json", "dvc.yaml").stdout))


def test_mlflow_settings_and_report_text_never_retrain(project: Path) -> None:
    """Only what changes the weights reruns train: another MLflow experiment or a reworded
    cleaning report reruns evaluate (which logs them), nothing upstream of it."""
    assert _changed_stages(project) == set()
    compose_params(project, [*SMOKE, "mlflow.experiment_name=renamed"], project / PARAMS_FILE)
    assert _changed_stages(project) == {"evaluate"}
    compose_params(project, SMOKE, project / PARAMS_FILE)
    report = project / load_params(project).paths.clean_split_markdown
    text = report.read_text()
    try:
        report.write_text(text + "\nReviewed by a person.\n")
        changed = _changed_stages(project)
        assert "evaluate" in changed and "train" not in changed, changed
    finally:
        report.write_text(text)
    assert _changed_stages(project) == set()


@pytest.mark.parametrize("helper", ["odpipe/devtools/project.py", "odpipe/devtools/servers.py", "tests/conftest.py"])
def test_editing_a_test_or_benchmark_helper_reruns_no_stage(project: Path, helper: str) -> None:
    """What only tests, benchmarks and make use is no stage's dependency; a module a stage
    imports is (the control: the same edit there reruns the pipeline from its first stage)."""
    assert _changed_stages(project) == set()
    for path, changes in ((helper, False), ("odpipe/core/files.py", True)):
        source = project / path
        text = source.read_text()
        try:
            source.write_text(text + "\n# edited\n")
            assert bool(_changed_stages(project)) == changes, path
        finally:
            source.write_text(text)
    assert _changed_stages(project) == set()


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

    # Another augmentation policy: the train TFRecords and what reads them, nothing else. Out of
    # date: tfrecord, and evaluate (which logs every param); once tfrecord has run, train too
    # (export and track follow the model, which is not retrained here: the tests below use it).
    compose_params(project, [*SMOKE, "evaluate.min_score=0.01", "augment=light"], project / PARAMS_FILE)
    assert _changed_stages(project) == {"tfrecord", "evaluate"}
    assert _ran(run_dvc(project, "repro", "--single-item", "tfrecord")) == {"tfrecord"}
    assert _changed_stages(project) == {"train", "evaluate"}
    train_examples = list(read_examples(shard_pattern(project / load_params(project).paths.tfrecord, "train")))
    assert sum("#aug1" in e["filename"].decode() for e in train_examples) == len(train_examples) // 2
    # Back to the policy the model was trained with: the records run again (or come back from DVC's
    # run cache), the model stands.
    assert _repro(project, ["evaluate.min_score=0.01"]) <= {"tfrecord", "evaluate"}
    assert _changed_stages(project) == set()


def test_predict_cli_on_files_folders_and_globs(project: Path, tmp_path: Path) -> None:
    paths = load_params(project).paths
    images = sorted((project / paths.clean_images).glob("*.jpg"))[:3]
    folder = tmp_path / "in"
    folder.mkdir()
    for image in images[:2]:
        shutil.copy(image, folder / image.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    png = io.BytesIO()
    Image.open(images[0]).save(png, format="PNG")
    (folder / "cut.png").write_bytes(png.getvalue()[:-20])  # Pillow reads it, TensorFlow refuses it
    out = tmp_path / "out"
    args = [str(project / paths.export), str(folder), str(images[2].parent / images[2].name.replace(".jpg", ".j*g"))]
    proc = subprocess.run(
        [sys.executable, "-m", "odpipe.predict", *args, "--out", str(out), "--min-score", "0", "--max-detections", "5"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1, proc.stderr
    assert "broken.jpg: cannot read the image" in proc.stderr
    assert "cut.png: TensorFlow cannot decode the image" in proc.stderr
    result = json.loads((out / "detections.json").read_text())
    assert len(result["errors"]) == 2
    files = {Path(r["file"]).name for r in result["detections"]}
    assert files == {i.name for i in images}
    per_file = {f: sum(Path(r["file"]).name == f for r in result["detections"]) for f in files}
    assert all(n == 5 for n in per_file.values())
    classes = set(read_label_map(project / paths.label_map).values())
    rows = read_csv(out / "detections.csv")
    assert len(rows) == len(result["detections"]) and {r["class"] for r in rows} <= classes
    assert sorted(p.name for p in (out / "annotated").iterdir()) == sorted(i.name for i in images)


@pytest.mark.parametrize(("fmt", "tolerance"), [("voc", 0.51), ("coco", 0.051)])  # VOC: whole pixels
def test_predict_pre_labels_a_folder_that_ingest_reads_back_with_the_same_boxes(
    project: Path, tmp_path: Path, fmt: str, tolerance: float
) -> None:
    paths = load_params(project).paths
    images = sorted((project / paths.clean_images).glob("*.jpg"))[:3]
    out = tmp_path / "out"
    args = [str(project / paths.export), *map(str, images), "--out", str(out), "--min-score", "0"]
    proc = subprocess.run(
        [sys.executable, "-m", "odpipe.predict", *args, "--max-detections", "4", "--format", fmt],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    predicted: dict[str, list] = {}
    for row in json.loads((out / "detections.json").read_text())["detections"]:
        box = [row["xmin"], row["ymin"], row["xmax"], row["ymax"]]
        predicted.setdefault(Path(row["file"]).name, []).append((row["class"], box))

    index, parsed = read_dataset(out / "labels", "auto", {})  # what dataset=local reads
    assert sorted(index.paths) == sorted(i.name for i in images) and not parsed.issues
    for name, annotation in parsed.annotations.items():
        assert (annotation.width, annotation.height) == Image.open(out / "labels" / name).size
        left = [(b.label, [b.xmin, b.ymin, b.xmax, b.ymax]) for b in annotation.boxes]
        assert len(left) == len(predicted[name]) == 4
        for label, want in predicted[name]:  # each prediction read back once, in any order
            close = (
                i for i, (other, got) in enumerate(left) if other == label and got == pytest.approx(want, abs=tolerance)
            )
            match = next(close, None)
            assert match is not None, f"{name}: {label} {want} not read back in {left}"
            left.pop(match)


def test_track_stage_scores_the_built_in_video(project: Path) -> None:
    params = load_params(project)
    paths, spec = params.paths, params.video
    report = json.loads((project / paths.track_report).read_text())
    assert report["frames"] == spec.num_frames and report["frames_per_second"] > 0
    assert report["tracks"] > 0 and report["stalled"] is None  # smoke takes every box: tracks exist
    assert {"mota", "idf1", "id_switches", "count_error", "middle/in/true", "middle/out/counted"} <= set(report)
    assert {"count_error/net", "count_error/every"} <= set(report)  # each mode scored on the same tracks
    truth = json.loads((project / paths.video / "counts.json").read_text())
    assert report["middle/in/true"] == sum(truth["net"]["middle"]["in"].values())  # net: the default mode
    out = project / paths.track
    for frame, (_, boxes) in read_mot(out / "tracks.csv").items():
        assert 1 <= frame <= spec.num_frames
        for x, y, w, h in boxes:
            assert -2 <= x and -2 <= y and x + w <= spec.width + 2 and y + h <= spec.height + 2
    _agree(out)
    video = cv2.VideoCapture(str(out / "annotated.mp4"))
    frames = 0
    while video.read()[0]:
        frames += 1
    assert frames == spec.num_frames
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    run = client.get_run(read_run_id(project / paths.mlflow_run))
    assert run.data.metrics["track/frames"] == spec.num_frames and "track/idf1" in run.data.metrics
    assert "annotated.mp4" in {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "track")}


def _agree(out: Path) -> None:
    """events.csv's changes sum to counts.json, line by line, direction by direction, class by class."""
    counts = json.loads((out / "counts.json").read_text())["counts"]
    summed: dict = {}
    for event in read_csv(out / "events.csv"):
        key = (event["line"], event["direction"], event["class"])
        summed[key] = summed.get(key, 0) + int(event["change"])
    expected = {(n, d, c): k for n, ds in counts.items() for d, cs in ds.items() for c, k in cs.items() if k}
    assert {key: n for key, n in summed.items() if n} == expected


def test_track_command_on_a_video_and_its_errors(project: Path, tmp_path: Path) -> None:
    paths = load_params(project).paths
    video = project / paths.video / "video.mp4"
    out = tmp_path / "out"
    odpipe = Path(sys.executable).parent / "odpipe"
    args = [str(project / paths.export), str(video), "--out", str(out), "--line", "gate:0,150,320,150"]
    # Every box, whatever its score: the barely trained smoke model's scores vary from run to run.
    lenient = ["--min-score", "0", *(f"--param={p}=0" for p in ("low_score", "high_score", "new_track_score"))]
    proc = subprocess.run([odpipe, "track", *args, *lenient, "--stride", "2"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "counts.json").read_text())
    assert summary["frames"] == load_params(project).video.num_frames and summary["tracks"] > 0
    assert summary["detected_frames"] == (summary["frames"] + 1) // 2
    assert set(summary["counts"]) == {"gate"}
    _agree(out)
    assert read_mot(out / "tracks.csv") and (out / "annotated.mp4").stat().st_size > 0

    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    for source, extra, message in (
        (junk, [], "junk.mp4: OpenCV cannot open this file"),
        (video, ["--codec", "avc1"], "no H.264 encoder"),
    ):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "odpipe.video.track",
                str(project / paths.export),
                str(source),
                "--out",
                str(tmp_path / "bad"),
                *extra,
            ],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


def test_quality_gate_records_its_decision_and_registers_only_what_passes(project: Path) -> None:
    """Below the gate is a result (gate_passed 0, nothing registered, the model logged on the run
    all the same), a failure only when strict; above it a version is registered; with
    min_improvement, only one that beats the best registered version on the same split."""
    paths = load_params(project).paths
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")

    def versions() -> list:
        return client.search_model_versions("name='odpipe-detector'")

    def report() -> dict:
        return json.loads((project / paths.evaluate_report).read_text())

    _repro(project, ["evaluate.min_map=1.01"])
    assert report()["gate_passed"] == 0 and "< evaluate.min_map 1.01" in report()["gate"] and not versions()
    # The evaluation's run: the training run, or one linked to it (this model was evaluated before).
    experiment = client.get_experiment_by_name(load_params(project).mlflow.experiment_name)
    (run,) = client.search_runs([experiment.experiment_id], "tags.`odpipe.gate` LIKE '%< evaluate.min_map 1.01%'")
    trained = read_run_id(project / paths.mlflow_run)
    assert trained in (run.info.run_id, run.data.tags.get(TRAIN_RUN_TAG))
    assert run.data.metrics["gate_passed"] == 0
    (below,) = client.get_run(run.info.run_id).outputs.model_outputs  # logged all the same, for later
    assert {"MLmodel", "artifacts"} <= {a.path for a in client.list_logged_model_artifacts(below.model_id)}
    with pytest.raises(RuntimeError, match=r"quality gate failed \(evaluate.strict_gate\).*< evaluate.min_map 1.01"):
        _repro(project, ["evaluate.min_map=1.01", "evaluate.strict_gate=true"])

    _repro(project, ["evaluate.min_map=0.0"])
    (version,) = versions()
    assert report()["gate_passed"] == 1 and "map" in version.tags and version.tags["odpipe.eval_split_sha256"]
    (logged,) = client.get_run(version.run_id).outputs.model_outputs  # the run page lists it
    assert version.source == f"models:/{logged.model_id}"
    assert {"MLmodel", "artifacts"} <= {a.path for a in client.list_logged_model_artifacts(logged.model_id)}
    # The same model again, asked to beat the registered best by 0.5: no second version.
    _repro(project, ["evaluate.min_map=0.0", "evaluate.min_improvement=0.5"])
    assert report()["gate_passed"] == 0 and "the best registered version" in report()["gate"]
    assert len(versions()) == 1


def test_new_images_are_pre_labelled_corrected_retrained_and_gated(project: Path, tmp_path: Path) -> None:
    """The course's loop as a user runs it: the trained model pre-labels new images, a person
    corrects the labels, they join the labelled folder, the pipeline retrains, and the quality
    gate decides whether a registry version appears. Last in this module: it moves the project
    to dataset=local."""
    paths = load_params(project).paths
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    classes = list(read_label_map(project / paths.label_map).values())
    mine = tmp_path / "mine"  # the user's labelled folder: the built-in images, LabelImg's VOC pairs
    shutil.copytree(project / paths.raw, mine)
    before = len(list(mine.glob("*.jpg")))
    local = [
        *SMOKE,
        "dataset=local",
        f"dataset.path={mine}",
        f"dataset.classes=[{','.join(classes)}]",
        "evaluate.min_map=0.0",
        "evaluate.min_improvement=0.0",
        "video=none",  # tracking is tested above: here it would only add minutes
    ]

    def versions() -> list:
        return sorted(client.search_model_versions("name='odpipe-detector'"), key=lambda v: int(v.version))

    def report() -> dict:
        return json.loads((project / paths.evaluate_report).read_text())

    def exp_run(overrides: list[str], name: str) -> set[str]:
        return _ran(run_dvc(project, "exp", "run", "-n", name, *(f"-S{o}" for o in overrides), timeout=1200))

    # New images, unlabelled, pre-labelled by the current model as LabelImg files.
    spec = SyntheticSpec.from_config(compose_config(ROOT, SMOKE).dataset)
    truth = tmp_path / "truth"
    generate(replace(spec, seed=spec.seed + 1, num_images=12), truth)
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    for image in truth.glob("*.jpg"):
        shutil.copy(image, incoming / f"new_{image.name}")
    prelabel = tmp_path / "prelabel"
    command = [sys.executable, "-m", "odpipe.predict", str(project / paths.export), str(incoming)]
    proc = subprocess.run([*command, "--out", str(prelabel), "--format", "voc", "--min-score", "0"], text=True)
    assert proc.returncode == 0
    labels = prelabel / "labels"
    assert sorted(p.stem for p in labels.glob("*.xml")) == sorted(p.stem for p in incoming.glob("*.jpg"))
    assert all(read_voc(xml).boxes for xml in labels.glob("*.xml")), "every image pre-labelled"
    # A person corrects the boxes (here: the generator's truth), and the folder grows.
    for xml in truth.glob("*.xml"):
        corrected = xml.read_text().replace(f"<filename>{xml.stem}.jpg<", f"<filename>new_{xml.stem}.jpg<")
        (labels / f"new_{xml.name}").write_text(corrected)
    for path in labels.iterdir():
        shutil.copy(path, mine / path.name)

    registered = len(versions())
    assert {"ingest", "clean_split", "train", "evaluate"} <= exp_run(local, "with-new-images")
    manifest = json.loads((project / paths.manifest).read_text())
    assert sum(f["file"].endswith(".jpg") for f in manifest["files"]) == before + 12
    split_report = json.loads((project / paths.clean_split_report).read_text())
    assert sum(split_report["splits"][s]["images"] for s in SPLITS) == before + 12
    # Registered only when allowed: against the best version scored on this same test split,
    # if there is one (the new images may have changed it), else on min_map alone.
    split = sha256_file(project / paths.convert / "test.csv")
    scored_here = [v for v in versions() if v.tags.get(SPLIT_TAG) == split and int(v.version) <= registered]
    gate = report()
    assert len(versions()) == registered + gate["gate_passed"]
    assert ("best registered" in gate["gate"]) == bool(scored_here)
    if gate["gate_passed"]:
        assert versions()[-1].tags[SPLIT_TAG] == split

    # Asked to beat the best registered version on this split by 0.5, the same model is refused:
    # only evaluate reruns, and the experiment is a result with gate_passed 0, not a failure.
    count = len(versions())
    assert exp_run([*local, "evaluate.min_improvement=0.5"], "must-beat") == {"evaluate"}
    assert report()["gate_passed"] == 0 and "+ evaluate.min_improvement 0.5: not registered" in report()["gate"]
    assert len(versions()) == count
    shown = experiments(project)["must-beat"]["metrics"][paths.evaluate_report]
    assert shown["gate_passed"] == 0 and shown["map"] == report()["map"]
    # The experiment names its MLflow run, and the run its experiment's Git ref (what exp push sends).
    run = client.get_run(shown["mlflow_run_id"])
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], cwd=project, capture_output=True)
    assert run.data.tags[DVC_EXP_TAG] == "must-beat" and run.data.tags[DVC_EXP_REF_TAG] in refs.stdout.decode().split()
