"""Classification datasets as users arrive with them: one label per image, given by the folder the
image is in or by a CSV.

Layouts (``layout``; ``auto`` tells them apart by :func:`detect_layout`):

- ``folders``: ``<class>/**/<file>``. Files in subfolders of a class folder belong to that class,
  as Keras' ``image_dataset_from_directory`` has it. Files outside every class folder (a README at
  the root) are not inputs.
- ``split_folders``: ``train/<class>/...``, ``val/`` (or ``validation/``, ``valid/``) and
  ``test/`` with the same class folders: pre-made splits, which splitting can honour.
- ``csv``: one ``*.csv`` at the root with columns ``filename,label`` and optionally ``split``
  (``train``, ``val``, ``test`` or empty), file names relative to the CSV's folder.

A root holding nothing but one folder (an archive unpacked to ``PetImages/Cat/...``) is read from
inside that folder; paths stay relative to the root given. Every non-hidden file of a class folder
is an input, images or not: cleaning reports what it cannot read, where a reader that picked files
by suffix would leave them behind without a word. The label CSV read is recorded (``tables``), so
that the report can say what became of every file under the root. Everything is listed sorted, so
that neither the classes' ids nor the images' order depend on the file system's listing order.
"""

from __future__ import annotations

import csv
import os
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from odpipe.core.files import is_hidden
from odpipe.data.discover import inventory, walk
from odpipe.data.splitting import SPLIT_WORDS, SPLITS

LAYOUTS = ("folders", "split_folders", "csv")
CSV_COLUMNS = ("filename", "label")  # required; ``split`` is optional


@dataclass(frozen=True)
class LabelledImage:
    """One input file and its class; ``split`` when the dataset pre-made one (None otherwise)."""

    path: str  # relative to the dataset root, POSIX
    label: str
    split: str | None = None


@dataclass(frozen=True)
class ClassDataset:
    """Every input of a classification dataset, in a stable order; ``classes`` in id order;
    ``tables``: the files read for labels, not inputs themselves (relative path: the
    :data:`~odpipe.data.cleaning.NOT_INPUT` code saying why)."""

    layout: str
    classes: tuple[str, ...]
    images: list[LabelledImage]
    empty_classes: tuple[str, ...]  # classes without a single file: reported, kept in ``classes``
    tables: Mapping[str, str] = field(default_factory=dict)


def _path_order(path: str) -> str:
    """Sort key of a relative path, part by part (``/`` below any character of a name), so that
    ``a/b`` comes before ``a-b/c`` as a folder listing shows them."""
    return path.replace("/", "\0")


def _folders(folder: Path) -> list[str]:
    """The visible sub-folders' names, sorted."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not is_hidden(e.name))


def _files_under(root: Path, folder: str) -> list[str]:
    """The visible files anywhere under ``root/folder``, as POSIX paths relative to ``root``,
    sorted; nothing under a hidden folder. Symbolic links are followed, as
    :func:`~odpipe.data.discover.walk` follows them."""
    visible = (rel for rel in walk(root / folder) if not any(is_hidden(part) for part in rel.split("/")))
    return sorted((posixpath.normpath(posixpath.join(folder, rel)) for rel in visible), key=_path_order)


def _csvs(folder: Path) -> list[Path]:
    """The visible CSV files directly in ``folder``, sorted."""
    return sorted(p for p in folder.glob("*.csv") if p.is_file() and not is_hidden(p.name))


def _header(path: Path) -> list[str]:
    """The column names of a CSV's first line."""
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        return [name.strip() for name in next(csv.reader(handle), [])]


def _labelled_csvs(folder: Path) -> list[Path]:
    """The CSVs directly in ``folder`` whose header holds ``filename`` and ``label``."""
    return [path for path in _csvs(folder) if set(CSV_COLUMNS) <= set(_header(path))]


def dataset_folder(root: Path) -> Path:
    """The folder the dataset starts in: ``root``, or the one folder it holds (repeatedly) when
    that is all it holds besides loose files, is not a split folder, and itself holds folders or
    a CSV, as an archive unpacked with its own top folder (``PetImages/``) does."""
    folder = root
    while True:
        inner = _folders(folder)
        if len(inner) != 1 or inner[0].lower() in SPLIT_WORDS or _labelled_csvs(folder):
            return folder
        candidate = folder / inner[0]
        if not _folders(candidate) and not _labelled_csvs(candidate):
            return folder
        folder = candidate


def detect_layout(folder: Path) -> str:
    """``csv`` when one labelled CSV is at the top, else ``split_folders`` when there is a
    ``train/`` folder, else ``folders``."""
    csvs = _labelled_csvs(folder)
    if len(csvs) > 1:
        names = ", ".join(p.name for p in csvs)
        raise ValueError(
            f"{folder}: several CSVs with columns filename,label ({names}): keep one, with a split column "
            "for pre-made splits, or set dataset.format"
        )
    if csvs:
        return "csv"
    return "split_folders" if "train" in (name.lower() for name in _folders(folder)) else "folders"


def read_class_dataset(root: Path, layout: str = "auto", classes: Sequence[str] = ()) -> ClassDataset:
    """The inputs of the dataset under ``root`` with their labels; ``classes`` (from config)
    fixes the class order and must name exactly the classes found (empty: sorted names)."""
    if not root.is_dir():
        raise ValueError(f"{root}: not a folder")
    if layout not in ("auto", *LAYOUTS):
        raise ValueError(f"dataset.format {layout!r} is not one of auto, {', '.join(LAYOUTS)}")
    folder = dataset_folder(root)
    layout = detect_layout(folder) if layout == "auto" else layout
    tables = {}
    if layout == "folders":
        if not _folders(folder):
            raise ValueError(_no_layout(root, folder))
        found, images = _class_images(root, folder)
    elif layout == "split_folders":
        found, images = _read_split_folders(root, folder)
    else:
        path = _the_csv(folder)
        found, images = _read_csv(root, path)
        tables[path.relative_to(root).as_posix()] = "class_table"
    ordered = _ordered(found, classes, folder)
    present = {image.label for image in images}
    return ClassDataset(layout, ordered, images, tuple(c for c in ordered if c not in present), tables)


def _no_layout(root: Path, folder: Path) -> str:
    """The error for a folder no layout reads (images loose in one folder, a CSV of other
    columns): what each layout needs, and what is there."""
    headers = {path.name: _header(path) for path in _csvs(folder)}
    others = [
        f"{name} (columns {', '.join(h) or 'none'})" for name, h in headers.items() if not set(CSV_COLUMNS) <= set(h)
    ]
    csvs = f"; its CSV(s) lack filename,label: {', '.join(others)}" if others else ""
    files = sorted(walk(root), key=_path_order)
    return (
        f"{folder}: no classification layout matches: folders needs a folder per class, split_folders "
        f"train/<class>/ folders, csv a CSV with columns filename,label{csvs}. Found:\n{inventory(files)}"
    )


def _class_images(root: Path, folder: Path, split: str | None = None) -> tuple[list[str], list[LabelledImage]]:
    """The class folders of ``folder`` and the files under each."""
    names = _folders(folder)
    base = folder.relative_to(root).as_posix()
    images = [
        LabelledImage(path, name, split) for name in names for path in _files_under(root, posixpath.join(base, name))
    ]
    return names, images


def _read_split_folders(root: Path, folder: Path) -> tuple[list[str], list[LabelledImage]]:
    """Each split folder's class folders; every split must have train's classes."""
    splits: dict[str, str] = {}
    for name in _folders(folder):
        split = SPLIT_WORDS.get(name.lower())
        if split is None:
            raise ValueError(f"{folder / name}: not a split folder (train, val, validation, valid or test)")
        if split in splits:
            raise ValueError(f"{folder}: {splits[split]}/ and {name}/ are both the {split} split: keep one")
        splits[split] = name
    if "train" not in splits:
        raise ValueError(f"{folder}: no train/ folder, which the split_folders layout needs")
    classes, images = _class_images(root, folder / splits["train"], "train")
    for split in SPLITS[1:]:
        if split not in splits:
            continue
        names, more = _class_images(root, folder / splits[split], split)
        if names != classes:
            missing, extra = sorted(set(classes) - set(names)), sorted(set(names) - set(classes))
            raise ValueError(
                f"{folder / splits[split]}: its class folders differ from train's: missing {missing}, extra {extra}"
            )
        images += more
    images.sort(key=lambda image: _path_order(image.path))
    return classes, images


def _read_csv(root: Path, path: Path) -> tuple[list[str], list[LabelledImage]]:
    """The rows of the dataset's CSV at ``path``, in the file's order."""
    base = path.parent.relative_to(root).as_posix()
    images = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        reader.fieldnames = [name.strip() for name in reader.fieldnames or ()]
        missing = [column for column in CSV_COLUMNS if column not in reader.fieldnames]
        if missing:
            raise ValueError(f"{path}:1: no column(s) {missing}; a classification CSV has filename,label[,split]")
        for line, row in enumerate(reader, start=2):
            images.append(_csv_image(row, base, f"{path}:{line}"))
    return sorted({image.label for image in images}), images


def _the_csv(folder: Path) -> Path:
    """The CSV of the csv layout: the one with the columns it needs, else the only CSV there (so
    that the error names its missing column)."""
    labelled = _labelled_csvs(folder)
    if len(labelled) == 1:
        return labelled[0]
    every = _csvs(folder)
    if not labelled and len(every) == 1:
        return every[0]
    names = [p.name for p in labelled or every]
    raise ValueError(f"{folder}: the csv layout needs one CSV with columns filename,label, found {names}")


def _csv_image(row: dict[str, str | None], base: str, where: str) -> LabelledImage:
    """One CSV row as an input, its file name relative to the CSV's folder."""
    filename, label = ((row.get(column) or "").strip() for column in CSV_COLUMNS)
    written = (row.get("split") or "").strip()
    if not filename:
        raise ValueError(f"{where}: empty filename")
    if not label:
        raise ValueError(f"{where}: empty label for {filename}")
    split = SPLIT_WORDS.get(written.lower()) if written else None
    if written and split is None:
        raise ValueError(f"{where}: split {written!r} is not one of train, val, test (or empty)")
    path = posixpath.normpath(posixpath.join(base, filename.replace("\\", "/")))
    if posixpath.isabs(filename) or path == ".." or path.startswith("../"):
        raise ValueError(f"{where}: {filename!r} is outside the dataset folder")
    return LabelledImage(path, label, split)


def _ordered(found: Iterable[str], classes: Sequence[str], folder: Path) -> tuple[str, ...]:
    """The class ids' order: ``classes`` when given (exactly the classes found), else sorted."""
    found = sorted(set(found))
    if classes:
        missing, extra = sorted(set(found) - set(classes)), sorted(set(classes) - set(found))
        if missing or extra or len(set(classes)) != len(classes):
            raise ValueError(
                f"{folder}: dataset.classes {list(classes)} must list each class found once: "
                f"found {found}, not listed {missing}, not found {extra}"
            )
        found = list(classes)
    if len(found) < 2:
        raise ValueError(f"{folder}: found class(es) {found}: classification needs at least two")
    return tuple(found)
