"""Detection datasets laid out as their authors distribute them, made here in miniature (no
third-party file is committed): a Roboflow YOLOv8 export, Ultralytics' coco8, a Roboflow COCO
export, Kaggle's face-mask VOC folders, and folders only the user can name. Each is read without
renaming anything: its classes, its own splits, and where every one of its files ended."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from odpipe.core.boxes import Box
from odpipe.data.annotations import Annotation, write_voc
from odpipe.data.splitting import carve_missing
from odpipe.detect.clean import ClassRules, CleanPolicy, account, class_names, clean
from odpipe.detect.formats import read_dataset, split_lists

RATIOS = {"train": 0.8, "val": 0.1, "test": 0.1}


def _image(path: Path, size: tuple[int, int] = (64, 48), shade: int = 0) -> None:
    """A small image of its own content (duplicates would be dropped as such)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = Image.new("RGB", size, (shade * 7 % 256, shade * 13 % 256, 90))
    pixels.save(path, format="PNG" if path.suffix == ".png" else "JPEG")


def _yolo(path: Path, *lines: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def _read(root: Path, options: dict | None = None):
    """What clean_split makes of ``root``: the parse, the classes, the splits it comes with
    (carved where it lacks one) and the account of every file."""
    index, parsed = read_dataset(root, "auto", options or {})
    rules = ClassRules((), {}, (), "drop")
    classes = class_names(None, parsed, rules)
    lists, carved = carve_missing(split_lists(root, index, parsed), RATIOS)
    rules = ClassRules(classes)
    result = clean(root, root.with_name("clean"), index=index, parsed=parsed, rules=rules, policy=CleanPolicy())
    files, not_inputs = account(root, index, parsed, result.dropped)
    on_disk = sum(1 for p in root.rglob("*") if p.is_file())
    assert files["found"] == on_disk == files["kept"] + sum(files["dropped"].values()) + len(not_inputs)
    return parsed, classes, lists, carved, result, files, {i.file: i.reason for i in not_inputs}


def test_a_roboflow_yolov8_export_keeps_its_splits_and_names(tmp_path: Path) -> None:
    """``train|valid|test/{images,labels}``, a data.yaml whose ``../train/images`` paths only
    resolve with the ``../`` dropped (as Ultralytics retries them), ``valid`` for val, file
    names with dots (``a_jpg.rf.<hash>.jpg``), two READMEs."""
    root = tmp_path / "mask-yolo"
    for i, split in enumerate(("train", "train", "valid", "test")):
        stem = f"img{i}_jpg.rf.{i:032x}"
        _image(root / split / "images" / f"{stem}.jpg", shade=i)
        _yolo(root / split / "labels" / f"{stem}.txt", f"{i % 2} 0.5 0.5 0.25 0.25")
    data = {"train": "../train/images", "val": "../valid/images", "test": "../test/images", "nc": 2}
    data |= {"names": ["no_mask", "with_mask"], "roboflow": {"workspace": "w", "project": "p", "version": 1}}
    (root / "data.yaml").write_text(yaml.safe_dump(data))
    (root / "README.dataset.txt").write_text("# mask > raw\n")
    (root / "README.roboflow.txt").write_text("exported\n")

    parsed, classes, lists, carved, result, files, not_inputs = _read(root)
    assert parsed.format == "yolo" and classes == ["no_mask", "with_mask"]
    assert sorted(lists.values()) == ["test", "train", "train", "val"] and not carved
    assert lists["valid/images/img2_jpg.rf.00000000000000000000000000000002.jpg"] == "val"
    assert len(result.dropped) == 0 and files["kept"] == 8
    assert not_inputs == {
        "README.dataset.txt": "not_read",
        "README.roboflow.txt": "not_read",
        "data.yaml": "class_table",
    }


def test_ultralytics_coco8_names_as_a_mapping_and_a_test_split_carved_from_train(tmp_path: Path) -> None:
    """``{images,labels}/{train,val}``, a YAML not called data.yaml whose ``path`` names a folder
    of the machine it was written on, ``names`` keyed by id, an empty ``test``."""
    root = tmp_path / "coco8"
    for i in range(6):
        split = "val" if i >= 4 else "train"
        _image(root / "images" / split / f"{i:012d}.jpg", shade=i)
        _yolo(root / "labels" / split / f"{i:012d}.txt", f"{i % 3} 0.4 0.5 0.2 0.3")
    text = "path: ../datasets/coco8\ntrain: images/train\nval: images/val\ntest:\n"
    (root / "coco8.yaml").write_text(text + "names:\n  0: person\n  2: car\n  1: bicycle\n")
    (root / "README.md").write_text("coco8\n")

    parsed, classes, lists, carved, result, files, not_inputs = _read(root)
    assert classes == ["person", "bicycle", "car"]  # id order, not the order written
    assert carved == ["test"]  # train images may go to test, in the ratios' proportion
    assert {lists[f"images/val/{i:012d}.jpg"] for i in (4, 5)} == {"val"}
    assert {lists[f"images/train/{i:012d}.jpg"] for i in range(4)} == {"train+test"}
    assert files["kept"] == 12 and not_inputs == {"README.md": "not_read", "coco8.yaml": "class_table"}


def test_split_lists_of_paths_are_read_once_and_an_entry_naming_nothing_is_said_once(tmp_path: Path, caplog) -> None:
    """A YAML whose ``train``/``val`` are ``.txt`` lists of image paths (``./`` relative to the
    list), and a ``test`` naming a folder that is not there: the lists give the splits and are
    reported as split lists, never read as labels; the missing folder is warned about once."""
    root = tmp_path / "lists"
    for i in range(4):
        _image(root / "images" / f"{i}.jpg", shade=i)
        _yolo(root / "labels" / f"{i}.txt", f"{i % 2} 0.5 0.5 0.25 0.25")
    (root / "train.txt").write_text("./images/0.jpg\n./images/1.jpg\n./images/2.jpg\n")
    (root / "val.txt").write_text("./images/3.jpg\n")
    (root / "data.yaml").write_text("train: train.txt\nval: val.txt\ntest: gone/images\nnames: [a, b]\n")

    with caplog.at_level("WARNING"):
        parsed, classes, lists, carved, result, files, not_inputs = _read(root)
    assert classes == ["a", "b"] and len(parsed.annotations) == 4
    assert lists == {f"images/{i}.jpg": "val" if i == 3 else "train+test" for i in range(4)} and carved == ["test"]
    assert not_inputs == {"train.txt": "split_list", "val.txt": "split_list", "data.yaml": "class_table"}
    assert [r.getMessage() for r in caplog.records].count(
        "data.yaml: test entry 'gone/images' names nothing under " + str(root) + "; ignored"
    ) == 1


def _coco_split(folder: Path, first: int, count: int) -> None:
    """A Roboflow COCO export's split: ``_annotations.coco.json`` beside its images, the project
    declared as category 0 (no box has it, its name repeats a class's), image ids from 0."""
    images, annotations = [], []
    for n in range(count):
        name = f"face{first + n}_png.rf.{first + n:032x}.jpg"
        _image(folder / name, shade=first + n)
        images.append({"id": n, "file_name": name, "width": 64, "height": 48})
        annotations.append({"id": n, "image_id": n, "category_id": 1 + n % 2, "bbox": [4, 4, 20, 16], "iscrowd": 0})
    categories = [
        {"id": 0, "name": "masks", "supercategory": "none"},
        {"id": 1, "name": "mask", "supercategory": "masks"},
        {"id": 2, "name": "no-mask", "supercategory": "masks"},
    ]
    document = {"info": {"description": "Exported from roboflow.ai"}, "images": images}
    document |= {"annotations": annotations, "categories": categories}
    (folder / "_annotations.coco.json").write_text(json.dumps(document))


def test_a_roboflow_coco_export_one_json_per_split_folder(tmp_path: Path) -> None:
    root = tmp_path / "faces"
    for first, (split, count) in zip((0, 4, 6), (("train", 4), ("valid", 2), ("test", 2)), strict=True):
        _coco_split(root / split, first, count)
    (root / "README.roboflow.txt").write_text("exported\n")

    parsed, classes, lists, carved, result, files, not_inputs = _read(root)
    assert parsed.format == "coco" and classes == ["mask", "no-mask"]  # not the project's category 0
    assert [lists[f"{s}/face{i}_png.rf.{i:032x}.jpg"] for s, i in (("train", 0), ("valid", 4), ("test", 7))] == [
        "train",
        "val",
        "test",
    ]
    assert len(result.dropped) == 0 and files["kept"] == 8 + 3  # the images and the three JSON files
    assert not_inputs == {"README.roboflow.txt": "not_read"}


def test_kaggle_face_masks_voc_folders_beside_each_other_name_their_classes(tmp_path: Path) -> None:
    """``images/*.png`` + ``annotations/*.xml``: the class names are only in the XML."""
    root = tmp_path / "face-mask"
    labels = ("with_mask", "without_mask", "mask_weared_incorrect")
    for i in range(3):
        _image(root / "images" / f"maksssksksss{i}.png", shade=i)
        boxes = (Box(labels[i], 2, 2, 30, 30), Box("with_mask", 32, 10, 60, 40))
        (root / "annotations").mkdir(exist_ok=True)
        write_voc(Annotation(f"maksssksksss{i}.png", 64, 48, boxes), root / "annotations" / f"maksssksksss{i}.xml")
    _image(root / "images" / "maksssksksss9.png", shade=9)  # no XML

    parsed, classes, lists, _, result, files, not_inputs = _read(root)
    assert parsed.format == "voc" and classes == sorted(labels) and lists == {}
    assert files == {"found": 7, "kept": 6, "dropped": {"no_annotation": 1}, "not_input": {}}


def test_label_folders_only_the_user_can_name_are_paired_by_dataset_images_and_labels(tmp_path: Path) -> None:
    """``photos/<day>/x.jpg`` with ``boxes/<day>/x.txt``, one stem on two days: by name alone
    neither label file can tell its image; named, each finds its own."""
    root = tmp_path / "survey"
    for day, line in (("mon", "0 0.5 0.5 0.2 0.2"), ("tue", "1 0.3 0.3 0.1 0.1")):
        _image(root / "photos" / day / "x.jpg", shade=len(day) + ord(day[0]))
        _yolo(root / "boxes" / day / "x.txt", line)
    (root / "classes.txt").write_text("gull\ntern\n")

    said = r"0 of 2 images found an annotation as yolo: 2 images in photos/mon/ photos/tue/"
    with pytest.raises(ValueError, match=said):
        _read(root)
    parsed, classes, _, _, result, files, not_inputs = _read(root, {"images": ["photos"], "labels": ["boxes"]})
    labelled = {name: [b.label for b in a.boxes] for name, a in parsed.annotations.items()}
    assert labelled == {"photos/mon/x.jpg": ["gull"], "photos/tue/x.jpg": ["tern"]}
    assert files["kept"] == 4 and not_inputs == {"classes.txt": "class_table"}


def test_images_none_of_which_found_an_annotation_stop_with_where_each_is(tmp_path: Path) -> None:
    """``dataset.format: voc`` on YOLO data: rather than every image dropped and empty splits
    later, the folders of the images and of the annotation files read, and the way out."""
    for i in range(2):
        _image(tmp_path / "images" / f"{i}.jpg", shade=i)
        _yolo(tmp_path / "labels" / f"{i}.txt", "0 0.5 0.5 0.2 0.2")
        (tmp_path / "xml").mkdir(exist_ok=True)
        (tmp_path / "xml" / f"other{i}.xml").write_text("<annotation><filename>other.jpg</filename></annotation>")
    said = (
        r"0 of 2 images found an annotation as voc: 2 images in images/; 2 label files in xml/ \(2 image_missing\)\. "
        r"Name the folders with dataset.images and dataset.labels, or set dataset.format"
    )
    with pytest.raises(ValueError, match=said):
        read_dataset(tmp_path, "voc", {})


@pytest.mark.parametrize("names", ["[]", "{}"])
def test_a_dataset_naming_no_class_asks_for_dataset_classes(tmp_path: Path, names: str) -> None:
    _image(tmp_path / "images" / "a.jpg")
    _yolo(tmp_path / "labels" / "a.txt")
    (tmp_path / "data.yaml").write_text(f"names: {names}\n")
    _, parsed = read_dataset(tmp_path, "auto", {})
    with pytest.raises(ValueError, match="no class names found in the yolo annotations: set dataset.classes"):
        class_names(None, parsed, ClassRules(()))
