"""Classification datasets laid out as their authors distribute them, made here in miniature (no
third-party file is committed): each layout the reader supports, TensorFlow's flower_photos,
fast.ai's Imagenette and Kaggle's cats and dogs, brought in by ingest as a user would (the
archive unpacked, or the folder copied) and cleaned. Every file found ends in exactly one place:
kept, dropped with its reason, or no input with why; a folder no layout reads is refused with
what was found in it."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from odpipe.classify.clean import account, clean_images
from odpipe.classify.formats import read_class_dataset
from odpipe.data.sources import ingest

FOLDERS_UNREAD = "not read as folders: outside every class folder"


def _image(path: Path, n: int, fmt: str = "JPEG") -> None:
    """A tiny image of its own colour (two alike would be dropped as copies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 8), (n * 37 % 256, n * 91 % 256, n * 53 % 256)).save(path, format=fmt)


def _text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _read(root: Path, left_out: list[dict] = ()):
    """What clean_split makes of ``root``: the dataset, the cleaning, and the account of every file
    (checked to add up to the files on disk and those ingest left out), with the not-input
    files' (reason, detail) and the dropped files' reasons by file."""
    dataset = read_class_dataset(root)
    result = clean_images(root, root.with_name("clean"), dataset, None, 1)
    files, not_inputs = account(root, dataset, result, left_out)
    placed = files["kept"] + sum(files["dropped"].values()) + sum(files["not_input"].values())
    assert files["found"] == len(_files(root)) + len(left_out) == placed
    assert len(not_inputs) == sum(files["not_input"].values())
    dropped = {issue.file: issue.reason for issue in result.dropped}
    return dataset, files, {i.file: (i.reason, i.detail) for i in not_inputs}, dropped


def _ingest(tmp_path: Path, source: str, dist: Path) -> tuple[Path, list[dict]]:
    """``dist`` (a folder, or an archive of it) brought into ``raw`` as the classify task's ingest
    does (``copy_all_files``), with the files it left out."""
    raw = tmp_path / "raw"
    dataset = {"source": source, "path": str(dist), "copy_all_files": True, "max_extract_gb": 1}
    return raw, ingest(dataset, raw, tmp_path / "cache")


def _tgz(folder: Path) -> Path:
    """``folder`` as a .tgz holding it as its top folder, as TensorFlow and fast.ai ship theirs."""
    archive = folder.with_name(folder.name + ".tgz")
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(folder, arcname=folder.name)
    return archive


# The layouts, each with what real ones hold besides the images


def test_folders_every_file_kept_dropped_or_no_input(tmp_path: Path) -> None:
    """Class folders with a note, litter of macOS and Windows, a README beside them, and a
    file ingest left behind."""
    root = tmp_path / "raw"
    for i in range(3):
        _image(root / "cat" / f"{i}.jpg", i)
        _image(root / "dog" / "2019" / f"{i}.png", 10 + i, "PNG")
    _text(root / "cat" / "notes.txt", "shot on a sunny day\n")
    _text(root / "cat" / ".DS_Store", "\0")
    _text(root / "dog" / "desktop.ini", "[.ShellClassInfo]\n")
    _text(root / "__MACOSX" / "cat" / "._0.jpg", "\0")
    _text(root / "README.md", "# pets\n")
    left_out = [{"file": "cat/raw.psd", "reason": "not_data", "why": "not an image or annotation file (.psd)"}]

    dataset, files, not_inputs, dropped = _read(root, left_out)
    assert (dataset.layout, dataset.classes, dataset.tables) == ("folders", ("cat", "dog"), {})
    assert files == {
        "found": 12,
        "kept": 6,
        "dropped": {"unsupported_format": 1},
        "not_input": {"not_data": 1, "not_read": 1, "os_litter": 3},
    }
    assert dropped == {"cat/notes.txt": "unsupported_format"}  # in a class folder: an input, not an image
    assert not_inputs == {
        "README.md": ("not_read", FOLDERS_UNREAD),
        "__MACOSX/cat/._0.jpg": ("os_litter", "hidden file or OS litter"),
        "cat/.DS_Store": ("os_litter", "hidden file or OS litter"),
        "cat/raw.psd": ("not_data", "not an image or annotation file (.psd)"),
        "dog/desktop.ini": ("os_litter", "hidden file or OS litter"),
    }


def test_split_folders_every_file_kept_dropped_or_no_input(tmp_path: Path) -> None:
    """train/val/test class folders, a train image copied into test, notes loose in a split."""
    root = tmp_path / "raw"
    for s, split in enumerate(("train", "val", "test")):
        for c, name in enumerate(("cat", "dog")):
            _image(root / split / name / "a.jpg", 10 * s + c)
    shutil.copy(root / "train" / "cat" / "a.jpg", root / "test" / "cat" / "leaked.jpg")
    _text(root / "train" / "README.txt", "taken in 2019\n")

    dataset, files, not_inputs, dropped = _read(root)
    assert (dataset.layout, dataset.classes) == ("split_folders", ("cat", "dog"))
    assert files == {"found": 8, "kept": 6, "dropped": {"split_leak": 1}, "not_input": {"not_read": 1}}
    assert dropped == {"test/cat/leaked.jpg": "split_leak"}
    unread = "not read as split_folders: outside every split's class folders"
    assert not_inputs == {"train/README.txt": ("not_read", unread)}


def test_csv_every_file_kept_dropped_or_no_input(tmp_path: Path) -> None:
    """A label CSV with splits, an image no row names, a row naming no file."""
    root = tmp_path / "raw"
    for i in range(4):
        _image(root / "images" / f"{i}.jpg", i)
    _text(root / "images" / "0.jpg.txt", "a sidecar no row names\n")
    rows = "images/0.jpg,cat,train\nimages/1.jpg,dog,train\nimages/2.jpg,cat,val\nimages/gone.jpg,dog,test\n"
    _text(root / "labels.csv", "filename,label,split\n" + rows)

    dataset, files, not_inputs, dropped = _read(root)
    assert (dataset.layout, dataset.classes, dataset.tables) == ("csv", ("cat", "dog"), {"labels.csv": "class_table"})
    assert files == {"found": 6, "kept": 3, "dropped": {}, "not_input": {"class_table": 1, "not_read": 2}}
    assert dropped == {"images/gone.jpg": "image_missing"}  # listed in issues.json; no file to count
    unread = ("not_read", "not read as csv: no row of the CSV names it")
    assert not_inputs == {
        "images/0.jpg.txt": unread,
        "images/3.jpg": unread,
        "labels.csv": ("class_table", "class names read from it"),
    }


def test_a_linked_folder_in_a_class_folder_is_read_and_counted_like_any_other(tmp_path: Path) -> None:
    """More photos of a class kept elsewhere and linked in: inputs, as ingest's walk finds them."""
    root, elsewhere = tmp_path / "raw", tmp_path / "elsewhere"
    _image(root / "cat" / "0.jpg", 0)
    _image(root / "dog" / "0.jpg", 1)
    _image(elsewhere / "1.jpg", 2)
    (root / "cat" / "more").symlink_to(elsewhere, target_is_directory=True)
    dataset = read_class_dataset(root)
    assert [image.path for image in dataset.images] == ["cat/0.jpg", "cat/more/1.jpg", "dog/0.jpg"]
    result = clean_images(root, tmp_path / "clean", dataset, None, 1)
    files, _ = account(root, dataset, result)
    assert files == {"found": 3, "kept": 3, "dropped": {}, "not_input": {}}


# Public datasets as distributed


def test_tf_flower_photos_licence_in_the_top_folder_is_no_class(tmp_path: Path) -> None:
    """flower_photos.tgz: ``flower_photos/<class>/<id>_<hash>_n.jpg`` with ``LICENSE.txt`` in
    the top folder, beside the class folders: the credits of the photos, not a class and not an
    image to drop, so no input, named in the report as outside every class folder."""
    dist = tmp_path / "dist" / "flower_photos"
    names = {
        "daisy": ["100080576_f52e8ee070_n.jpg", "10140303196_b88d3d6cec.jpg"],
        "roses": ["10090824183_d02c613f10_m.jpg"],
    }
    for c, (name, photos) in enumerate(names.items()):
        for i, photo in enumerate(photos):
            _image(dist / name / photo, 10 * c + i)
    _text(dist / "LICENSE.txt", "All images in this archive are licensed under the Creative Commons By-Attribution\n")

    raw, left_out = _ingest(tmp_path, "archive", _tgz(dist))
    assert left_out == []
    dataset, files, not_inputs, dropped = _read(raw, left_out)
    assert (dataset.layout, dataset.classes) == ("folders", ("daisy", "roses"))
    assert files == {"found": 4, "kept": 3, "dropped": {}, "not_input": {"not_read": 1}}
    assert not dropped
    assert not_inputs == {"flower_photos/LICENSE.txt": ("not_read", FOLDERS_UNREAD)}


def test_imagenette_split_folders_win_over_its_noisy_labels_csv(tmp_path: Path) -> None:
    """imagenette2-160.tgz: ``train|val/<WordNet id>/<id>_<n>.JPEG`` (upper-case suffix) and
    ``noisy_imagenette.csv``, whose columns are no label CSV of ours: the split folders are read,
    the CSV is no input (not read), and nothing crashes on it."""
    dist = tmp_path / "dist" / "imagenette2-160"
    wnids = ("n01440764", "n02102040")
    paths = []
    for s, split in enumerate(("train", "val")):
        for c, wnid in enumerate(wnids):
            for i in range(2):
                path = f"{split}/{wnid}/{wnid}_{10026 + 100 * s + i}.JPEG"
                _image(dist / path, 10 * s + 4 * c + i)
                paths.append(path)
    header = "path,noisy_labels_0,noisy_labels_1,noisy_labels_5,noisy_labels_25,noisy_labels_50,is_valid\n"
    rows = "".join(
        f"{p},{p.split('/')[1]},{p.split('/')[1]},{wnids[0]},{wnids[1]},{wnids[0]},{p.startswith('val')}\n"
        for p in paths
    )
    _text(dist / "noisy_imagenette.csv", header + rows)

    raw, left_out = _ingest(tmp_path, "archive", _tgz(dist))
    dataset, files, not_inputs, dropped = _read(raw, left_out)
    assert (dataset.layout, dataset.classes, dataset.tables) == ("split_folders", wnids, {})
    assert [(i.path, i.split) for i in dataset.images][:2] == [
        (f"imagenette2-160/train/{wnids[0]}/{wnids[0]}_10026.JPEG", "train"),
        (f"imagenette2-160/train/{wnids[0]}/{wnids[0]}_10027.JPEG", "train"),
    ]
    assert files == {"found": 9, "kept": 8, "dropped": {}, "not_input": {"not_read": 1}}
    assert not dropped
    unread = "not read as split_folders: outside every split's class folders"
    assert not_inputs == {"imagenette2-160/noisy_imagenette.csv": ("not_read", unread)}


@pytest.mark.parametrize("source", ["archive", "local"])
def test_kaggle_cats_and_dogs_litter_empty_file_and_papers_beside(tmp_path: Path, source: str) -> None:
    """kagglecatsanddogs.zip: ``PetImages/{Cat,Dog}/<n>.jpg`` with a ``Thumbs.db`` in each class
    folder, the 0-byte ``Cat/666.jpg``, and ``readme[1].txt`` and the licence PDF beside
    ``PetImages/``; unzipped by ingest, or unzipped by the user and copied (where ingest leaves
    the litter behind itself)."""
    dist = tmp_path / "dist"
    for c, name in enumerate(("Cat", "Dog")):
        for i in range(3):
            _image(dist / "PetImages" / name / f"{i}.jpg", 10 * c + i)
        (dist / "PetImages" / name / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0" + bytes(60))
    (dist / "PetImages" / "Cat" / "666.jpg").write_bytes(b"")
    _text(dist / "readme[1].txt", "The Asirra data set\n")
    (dist / "CDLA-Permissive-2.0.pdf").write_bytes(b"%PDF-1.5\n%%EOF\n")
    distributed = _files(dist)
    archive = Path(shutil.make_archive(str(tmp_path / "kagglecatsanddogs_5340"), "zip", dist))

    raw, left_out = _ingest(tmp_path, source, archive if source == "archive" else dist)
    dataset, files, not_inputs, dropped = _read(raw, left_out)
    assert files["found"] == len(distributed) == 11
    assert (dataset.layout, dataset.classes) == ("folders", ("Cat", "Dog"))
    assert files == {
        "found": 11,
        "kept": 6,
        "dropped": {"image_unreadable": 1},
        "not_input": {"not_read": 2, "os_litter": 2},
    }
    assert dropped == {"PetImages/Cat/666.jpg": "image_unreadable"}
    assert not_inputs == {
        "CDLA-Permissive-2.0.pdf": ("not_read", FOLDERS_UNREAD),
        "PetImages/Cat/Thumbs.db": ("os_litter", "hidden file or OS litter"),
        "PetImages/Dog/Thumbs.db": ("os_litter", "hidden file or OS litter"),
        "readme[1].txt": ("not_read", FOLDERS_UNREAD),
    }
    assert {entry["file"] for entry in left_out} == (
        set() if source == "archive" else {"PetImages/Cat/Thumbs.db", "PetImages/Dog/Thumbs.db"}
    )


def test_images_loose_in_one_folder_match_no_layout_and_the_error_says_what_is_there(tmp_path: Path) -> None:
    """A phone's export: photos side by side, no class folders, a CSV of other columns."""
    for i in range(3):
        _image(tmp_path / f"IMG_000{i}.jpg", i)
    _text(tmp_path / "export.csv", "file,taken\nIMG_0000.jpg,2019-07-01\n")
    with pytest.raises(ValueError) as raised:
        read_class_dataset(tmp_path)
    assert str(raised.value) == (
        f"{tmp_path}: no classification layout matches: folders needs a folder per class, split_folders "
        "train/<class>/ folders, csv a CSV with columns filename,label; its CSV(s) lack filename,label: "
        "export.csv (columns file, taken). Found:\n"
        "  ./: 1 .csv, 3 .jpg\n"
        "  first files: IMG_0000.jpg, IMG_0001.jpg, IMG_0002.jpg, export.csv"
    )
