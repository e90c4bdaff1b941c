"""Every annotation format parses into the same records: the same boxes written as VOC, CSV,
COCO, LinkedAI and YOLO convert to the same CSV rows."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from odpipe.data import annotations as odpipe_annotations
from odpipe.data.annotations import CSV_COLUMNS, Annotation, read_voc, to_csv_rows, trainable
from odpipe.data.synthetic import generate
from odpipe.detect.clean import ClassRules, CleanPolicy, account, clean, clean_folder
from odpipe.detect.formats import ImageIndex, detect_format, read_dataset, voc_imagesets
from odpipe.detect.label_map import class_ids
from tests.conftest import CLASSES
from tests.helpers.formats import FRUITS, write_coco, write_yolo

NUMERIC = ("width", "height", "xmin", "ymin", "xmax", "ymax")


def _images_only(src: Path, dst: Path) -> list[Path]:
    dst.mkdir(parents=True)
    return [Path(shutil.copy2(p, dst / p.name)) for p in sorted(src.glob("*.jpg"))]


def write_csv_format(annotations: list[Annotation], folder: Path, columns: dict[str, str]) -> None:
    with (folder / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([columns.get(c, c) for c in ("filename", "xmin", "ymin", "xmax", "ymax", "class")])
        for a in annotations:
            for b in a.boxes:
                writer.writerow([a.filename, b.xmin, b.ymin, b.xmax, b.ymax, b.label])


def write_linkedai(annotations: list[Annotation], folder: Path) -> None:
    entries = [
        {
            "id": f"id-{a.filename}",
            "image": a.filename,
            "width": str(a.width),
            "height": str(a.height),
            "classification": [],
            "tags": [{"parent": None}]
            + [
                {
                    "name": b.label,
                    "type": "bounding_box",
                    "color": "#f10c27",
                    "classes": [],
                    "pos": {"x": str(b.xmin), "y": str(b.ymin), "w": str(b.xmax - b.xmin), "h": str(b.ymax - b.ymin)},
                }
                for b in a.boxes
            ],
        }
        for a in annotations
    ]
    (folder / "export.json").write_text(json.dumps(entries))


def _clean(folder: Path, fmt: str = "auto", options: dict | None = None, classes=CLASSES):
    out = folder.with_name(folder.name + "_clean")
    return clean_folder(folder, out, fmt, options or {}, ClassRules(classes), CleanPolicy())


def _rows(folder: Path, options: dict | None = None) -> list[dict]:
    """The CSV rows of what is trained on (COCO's crowd regions aside)."""
    _, result = _clean(folder, options=options)
    annotations = sorted((trainable(s.annotation) for s in result.kept), key=lambda a: a.filename)
    return list(to_csv_rows(annotations, class_ids(CLASSES)))


def _same(rows: list[dict], expected: list[dict]) -> None:
    """Equal rows; file names compared without their folder (YOLO keeps images in images/)."""
    assert len(rows) == len(expected)
    for row, want in zip(rows, expected, strict=True):
        row = {**row, "filename": Path(row["filename"]).name}
        assert {k: row[k] for k in CSV_COLUMNS if k not in NUMERIC} == {
            k: want[k] for k in CSV_COLUMNS if k not in NUMERIC
        }
        assert [row[k] for k in NUMERIC] == pytest.approx([want[k] for k in NUMERIC], abs=1e-4)


@pytest.mark.parametrize("fmt", ["csv", "coco", "linkedai", "yolo", "coco_by_odpipe"])
def test_every_format_converts_to_the_same_rows_as_voc(spec, tmp_path: Path, fmt: str) -> None:
    """Each format, written by hand here, reads back as the VOC it came from; so does the COCO
    that ``odpipe predict --format coco`` writes (odpipe.data.annotations.write_coco)."""
    voc = tmp_path / "voc"
    generate(spec, voc)
    expected = _rows(voc)
    annotations = [read_voc(p) for p in sorted(voc.glob("*.xml"))]
    other = tmp_path / fmt
    _images_only(voc, other / "images" if fmt == "yolo" else other)
    columns = {"filename": "image_path", "class": "label"}
    {
        "csv": lambda: write_csv_format(annotations, other, columns),
        "coco": lambda: write_coco(annotations, other),
        "linkedai": lambda: write_linkedai(annotations, other),
        "yolo": lambda: write_yolo(annotations, other),
        "coco_by_odpipe": lambda: odpipe_annotations.write_coco(
            annotations, {i: n for n, i in class_ids(CLASSES).items()}, other / "annotations.json"
        ),
    }[fmt]()
    assert detect_format(other) == fmt.removesuffix("_by_odpipe")
    _same(_rows(other, {"csv_columns": columns} if fmt == "csv" else {}), expected)


def test_crowds_are_kept_as_crowds_and_non_box_entries_reported(spec, tmp_path: Path) -> None:
    voc = tmp_path / "voc"
    generate(spec, voc)
    annotations = [read_voc(p) for p in sorted(voc.glob("*.xml"))]
    for fmt, writer in (("coco", write_coco), ("linkedai", write_linkedai)):
        folder = tmp_path / fmt
        _images_only(voc, folder)
        writer(annotations, folder)
        _, result = _clean(folder, fmt)
        if fmt == "linkedai":
            assert "not_a_box" in {i.reason for i in result.fixed}
            continue
        crowds = [(s.image, b) for s in result.kept for b in s.annotation.boxes if b.crowd]
        assert [(box.xmin, box.ymin, box.xmax, box.ymax) for _, box in crowds] == [(0, 0, 5, 5)]
        (sample,) = [s for s in result.kept if s.image == crowds[0][0]]
        assert not any(b.crowd for b in trainable(sample.annotation).boxes)
        assert len(trainable(sample.annotation).boxes) == len(sample.annotation.boxes) - 1


def test_an_unrecognisable_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "readme.md").write_text("hello")
    (tmp_path / "photos").mkdir()
    for name in ("a.jpg", "a.txt", "b.jpg", "b.txt"):  # YOLO labels without their class names
        (tmp_path / "photos" / name).write_text("0 0.5 0.5 0.2 0.2" if name.endswith(".txt") else "")
    with pytest.raises(ValueError, match="no annotation format recognised") as error:
        detect_format(tmp_path)
    said = str(error.value)  # what the folder holds, then what each format looks for and lacks
    assert "  ./: 1 .md\n  photos/: 2 .jpg, 2 .txt\n  first files: photos/a.jpg, photos/a.txt" in said
    assert "yolo: YOLO .txt labels with classes.txt, labels.txt or a dataset YAML's names; 2 .txt file(s)" in said
    assert "voc: Pascal VOC XML files (LabelImg's), one per image; found no .xml file" in said


def test_real_voc_layout_with_imagesets(tmp_path: Path) -> None:
    """fruits-nuts: VOC2007 layout, absolute Windows <path>s, lists without a final newline."""
    root = shutil.copytree(FRUITS, tmp_path / "fruits")
    index, result = _clean(root, classes=["date", "fig", "hazelnut"])
    assert len(result.kept) == 18 and not result.dropped
    assert sum(len(s.annotation.boxes) for s in result.kept) == 164
    assert all(s.image.startswith("VOC2007/JPEGImages/") for s in result.kept)
    lists = voc_imagesets(root, ImageIndex(root))
    assert {n for n, s in lists.items() if s == "test"} == {"VOC2007/JPEGImages/10.jpg", "VOC2007/JPEGImages/15.jpg"}
    assert len(lists) == 18


@pytest.mark.parametrize("fmt", ["voc", "csv", "coco", "linkedai", "yolo"])
def test_every_file_of_each_format_ends_in_one_place(spec, tmp_path: Path, fmt: str) -> None:
    """The same images in each format, with a README and an image no annotation names: the images
    and annotation files kept, the class table said so, the README not read, the lone image
    dropped; the places add up to the files on disk."""
    voc = tmp_path / "voc"
    images = generate(spec, voc)
    annotations = [read_voc(p) for p in sorted(voc.glob("*.xml"))]
    folder = voc if fmt == "voc" else tmp_path / fmt
    if fmt != "voc":
        _images_only(voc, folder / "images" if fmt == "yolo" else folder)
        writers = {"csv": write_csv_format, "coco": write_coco, "linkedai": write_linkedai, "yolo": write_yolo}
        writers[fmt](*((annotations, folder, {}) if fmt == "csv" else (annotations, folder)))
    (folder / "README.md").write_text("how these were labelled\n")
    (folder / "extra").mkdir()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(folder / "extra" / "lone.jpg")
    index, parsed = read_dataset(folder, "auto", {})
    result = clean(
        folder, tmp_path / "out", index=index, parsed=parsed, rules=ClassRules(CLASSES), policy=CleanPolicy()
    )
    files, not_inputs = account(folder, index, parsed, result.dropped)
    on_disk = sum(1 for p in folder.rglob("*") if p.is_file())
    assert parsed.format == fmt and files["found"] == on_disk
    per_image = fmt in ("voc", "yolo")  # one label file per image, else one file for all
    assert files["kept"] == len(images) + (len(images) if per_image else 1)
    assert files["dropped"] == {"no_annotation": 1}
    tables = {"classes.txt": "class_table"} if fmt == "yolo" else {}
    assert {i.file: i.reason for i in not_inputs} == {"README.md": "not_read", **tables}
