"""The real `dvc repro` on small datasets in VOC (real photos, the whole DAG), COCO and YOLO form
(YOLO as a Roboflow export lays it out: split folders and a data.yaml; the data stages only:
training adds nothing a format could change)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from odpipe.core.files import read_jsonl
from odpipe.core.runtime import PARAMS_FILE, compose_params, load_params
from odpipe.data.annotations import read_voc
from odpipe.data.records import shard_pattern
from odpipe.data.splitting import SPLITS
from odpipe.data.synthetic import SyntheticSpec, generate
from odpipe.detect.records import read_examples
from odpipe.devtools.project import copy_project, run_dvc
from tests.conftest import CLASSES, ROOT
from tests.helpers.formats import FRUITS, write_coco, write_yolo

SPEC = SyntheticSpec(24, CLASSES, 5, 96, 128, 1, 4, 0.2, 0.5, 0.35)


def _synthetic_in(fmt: str, folder: Path) -> int:
    """The same small synthetic set, its labels written as ``fmt`` instead of VOC XML;
    returns how many boxes it holds."""
    generate(SPEC, folder / "images")
    annotations = [read_voc(p) for p in sorted((folder / "images").glob("*.xml"))]
    for xml in (folder / "images").glob("*.xml"):
        xml.unlink()
    {"coco": write_coco, "yolo": write_yolo}[fmt](annotations, folder)
    return sum(len(a.boxes) for a in annotations)


def _as_roboflow_export(folder: Path) -> dict[str, int]:
    """The YOLO set moved into a Roboflow YOLOv8 export's layout: ``{train,valid,test}/{images,
    labels}``, a ``data.yaml`` with ``../`` paths and the class names, a README; the images of each split."""
    counts = {"train": 0, "val": 0, "test": 0}
    for i, image in enumerate(sorted((folder / "images").iterdir())):
        split = {4: "valid", 5: "test"}.get(i % 6, "train")
        counts[{"valid": "val"}.get(split, split)] += 1
        for kind, path in (("images", image), ("labels", folder / "labels" / f"{image.stem}.txt")):
            (folder / split / kind).mkdir(parents=True, exist_ok=True)
            path.rename(folder / split / kind / path.name)
    for emptied in ("images", "labels"):
        (folder / emptied).rmdir()
    (folder / "classes.txt").unlink()  # the names are in data.yaml
    names = "".join(f"  - {name}\n" for name in CLASSES)
    (folder / "data.yaml").write_text(
        f"train: ../train/images\nval: ../valid/images\ntest: ../test/images\nnames:\n{names}"
    )
    (folder / "README.roboflow.txt").write_text("Exported via roboflow.com\n")
    return counts


@pytest.mark.parametrize("fmt", ["voc", "coco", "yolo"])
def test_repro_on_each_format(tmp_path: Path, monkeypatch, fmt: str) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data = tmp_path / "data"
    if fmt == "voc":
        shutil.copytree(FRUITS, data)
        classes, boxes = ["date", "fig", "hazelnut"], 164
        # One broken photo among the real ones: the pipeline must drop it and go on.
        voc = data / "VOC2007"
        (voc / "JPEGImages" / "99.jpg").write_bytes((voc / "JPEGImages" / "0.jpg").read_bytes()[:5000])
        (voc / "Annotations" / "99.xml").write_text(
            (voc / "Annotations" / "0.xml").read_text().replace("0.jpg", "99.jpg")
        )
    else:
        classes, boxes = list(CLASSES), _synthetic_in(fmt, data)
    own_splits = _as_roboflow_export(data) if fmt == "yolo" else None  # YOLO as Roboflow exports it
    (data / "README.md").write_text("where these came from\n")  # ingest leaves it out, the report counts it
    on_disk = sum(1 for p in data.rglob("*") if p.is_file())
    work = copy_project(ROOT, tmp_path / "project")
    overrides = ["experiment=smoke", "dataset=local", f"dataset.path={data}"]
    # COCO categories and a YOLO class table name the classes: dataset.classes is for VOC's order
    overrides += [f"dataset.classes=[{','.join(classes)}]"] if fmt == "voc" else ["dataset.classes=[]"]
    overrides += ["video=none"]  # the video's tracking is format-blind, and tested elsewhere
    compose_params(work, overrides, work / PARAMS_FILE)
    run_dvc(work, "repro", *([] if fmt == "voc" else ["tfrecord"]), timeout=1200)

    paths = load_params(work).paths
    summary = json.loads((work / paths.clean_split_report).read_text())
    kept = 18 if fmt == "voc" else SPEC.num_images
    assert summary["kept"] == kept
    assert summary["dropped_by_reason"] == ({"image_unreadable": 1} if fmt == "voc" else {})
    assert summary["images_in"] == kept + summary["dropped"]
    assert summary["classes"] == classes and json.loads((work / paths.classes).read_text())["names"] == classes
    files = summary["files"]  # every file of dataset.path in one place
    assert (
        files["found"] == on_disk == files["kept"] + sum(files["dropped"].values()) + sum(files["not_input"].values())
    )
    left_out = {entry["file"] for entry in json.loads((work / paths.manifest).read_text())["left_out"]}
    assert files["not_input"]["not_data"] == len(left_out) and "README.md" in left_out
    # test_formats.write_coco adds one crowd region: reported with the boxes, in val's or
    # test's TFRecords as an is_crowd box for evaluation to ignore, never in train's.
    crowds = {
        split: sum(b["crowd"] for a in read_jsonl(work / paths.clean_split / f"{split}.jsonl") for b in a["boxes"])
        for split in SPLITS
    }
    assert sum(crowds.values()) == (fmt == "coco")
    assert sum(s["boxes"] for s in summary["splits"].values()) == boxes + sum(crowds.values())
    if own_splits:  # the export's split folders, named in data.yaml, are its splits
        assert {split: s["images"] for split, s in summary["splits"].items()} == own_splits
        assert summary["format"] == "yolo" and files["not_input"] == {"class_table": 1, "not_data": 1, "not_read": 1}
    if fmt == "voc":  # ImageSets/Main/test.txt pins the test split
        test_images = [
            json.loads(line)["filename"] for line in (work / paths.clean_split / "test.jsonl").read_text().splitlines()
        ]
        assert sorted(Path(n).name for n in test_images) == ["10.jpg", "15.jpg"]
    assert (work / paths.clean_split_markdown).read_text().startswith("# Dataset cleaning")
    assert (work / paths.clean_split_grid).stat().st_size > 0
    examples = [e for split in SPLITS for e in read_examples(shard_pattern(work / paths.tfrecord, split))]
    decoded = [e for e in examples if "#aug" not in e["filename"].decode()]  # the cleaned images
    assert len(decoded) == kept
    assert len(examples) - kept == summary["splits"]["train"]["images"] * load_params(work).augment.copies
    assert sum(len(e["groundtruth_classes"]) for e in decoded) == boxes + crowds["val"] + crowds["test"]
    if fmt == "voc":
        metrics = json.loads((work / paths.evaluate_report).read_text())
        assert metrics["num_images"] > 0 and 0 <= metrics["map_50"] <= 1
