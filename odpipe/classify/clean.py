"""The classify task's clean_split: every input decoded and hashed (in parallel), kept (as JPEG
when it had to be converted) or dropped with one reason, splits stratified on the label, and
counts for the report.

The stage's calls, in order::

    dataset = read_class_dataset(raw, cfg.dataset.format, cfg.dataset.classes)  # odpipe.classify.formats
    result = clean_images(raw, images_out, dataset, max_image_pixels, workers)
    by_split = split_rows(result, ratios, seed, group_pattern, use_imagesets)
    write_splits(result, by_split, dataset.classes, out)         # out/{train,val,test}.csv
    files, not_inputs = account(raw, dataset, result, left_out)  # where every file under raw went
    summary = report(result, by_split, dataset, min_per_class, files=files)  # the DVC metrics file
    text = class_markdown(summary, issues, grid_name)  # issues: {"dropped", "notes", "not_input"}

Each input ends up in one split's CSV or in ``dropped`` with exactly one reason:

- ``image_missing`` (a CSV row naming no file), ``unsupported_format`` (Pillow cannot identify
  the file and its suffix is no image format it reads: notes, PDFs, HEIC without a plugin),
  ``image_unreadable`` (an image that fails to decode: truncated, corrupt, zero bytes) and
  ``image_too_large`` (over ``clean_split.max_image_pixels``): the file's own faults.
- ``conflicting_labels``: the same content under two or more classes. Every copy is dropped, as
  nothing says which label is right; the detail lists them all.
- ``split_leak``: the same content under one class in two pre-made splits; the copy in the later
  of train, val, test is dropped, so that no test image was trained on.
- ``duplicate``: the same content as a kept image of its class and split.

Every other file under the dataset folder is no input, with why (:func:`account`): the label CSV
read (``class_table``), OS litter (``os_litter``: ``.DS_Store``, ``Thumbs.db``), and anything the
layout does not read (``not_read``: a licence beside the class folders, a CSV of other columns);
with ingest's ``left_out`` they add up to every file found.

Kept images that had to change go to ``notes`` (``exif_rotated``, ``converted_<format>_<mode>``):
TIFF, WebP, BMP, GIF, greyscale, CMYK and the like become RGB JPEGs, never skipped (Keras' own
folder reader skips .tif and .webp without a word).

Copies are only known once every image is hashed, so cleaning takes two passes. Workers decode
each image and stage the bytes to train on; their verdicts wait in a scratch SQLite file, not in
memory. Then, in input order, each image is decided against its copies and its staged file
renamed into ``images_out`` under its own path (:func:`~odpipe.core.images.converted_name` when
converted). The result is the same for any number of workers.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path, PurePosixPath

from PIL import UnidentifiedImageError

from odpipe.classify.formats import ClassDataset, LabelledImage
from odpipe.core.files import is_hidden, iter_csv, scratch_db, write_csv
from odpipe.core.images import IMAGE_SUFFIXES, ImageTooLargeError, converted_name, normalise_image
from odpipe.core.parallel import Workers
from odpipe.data.cleaning import Inspected, Issue, Ledger, count_table, decisions, files_table
from odpipe.data.discover import walk
from odpipe.data.splitting import SPLITS, group_key, stratified_split

ROW_COLUMNS = ("image", "label", "class", "width", "height")
CHUNK = 16  # images per hand-over to a worker
# Suffixes of formats Pillow decodes: such a file that fails to is unreadable, not unsupported.
READABLE_SUFFIXES = frozenset((*IMAGE_SUFFIXES, ".jfif", ".tif", ".tiff", ".gif"))
# Phone and web formats that need a Pillow plugin (pillow-heif) or a recent Pillow.
PLUGIN_SUFFIXES = frozenset((".heic", ".heif", ".avif"))
UNIDENTIFIED = "Pillow cannot identify it as an image (corrupt, or not the format its suffix says)"
UNPINNED = len(SPLITS)  # the rank of a copy without a pre-made split: pinned copies are kept first
# Why a layout reads no more than it does: the detail of the files it left unread.
UNREAD = {
    "folders": "not read as folders: outside every class folder",
    "split_folders": "not read as split_folders: outside every split's class folders",
    "csv": "not read as csv: no row of the CSV names it",
}


@dataclass(frozen=True)
class ClassRow:
    """One kept image, as a split's CSV lists it: ``label`` is the class id."""

    image: str
    label: int
    width: int
    height: int

    def as_csv(self, classes: Sequence[str]) -> dict:
        return {**asdict(self), "class": classes[self.label]}

    @classmethod
    def from_csv(cls, row: Mapping[str, str]) -> ClassRow:
        return cls(row["image"], int(row["label"]), int(row["width"]), int(row["height"]))


@dataclass
class ClassCleanResult:
    """Every decision; per kept row its content hash and pre-made split (None without one)."""

    rows: list[ClassRow] = field(default_factory=list)
    shas: list[str] = field(default_factory=list)
    splits: list[str | None] = field(default_factory=list)
    dropped: list[Issue] = field(default_factory=list)
    notes: list[Issue] = field(default_factory=list)


def _failure(name: str, raw: bytes, err: Exception) -> tuple[str, str]:
    """The drop reason and detail of a file that did not decode: a file Pillow cannot even
    identify, under a suffix of no format it reads, is not an image to us (unsupported); any
    other failure is a broken image (unreadable)."""
    suffix = PurePosixPath(name).suffix.lower()
    unidentified = isinstance(err, UnidentifiedImageError) or not raw
    if suffix in READABLE_SUFFIXES or not unidentified:
        # Pillow's own message for an unidentified file names an object's address: not stable.
        what = UNIDENTIFIED if isinstance(err, UnidentifiedImageError) else err
        return "image_unreadable", f"{name}: {what}"
    if suffix in PLUGIN_SUFFIXES:
        return "unsupported_format", f"{name}: this Pillow cannot decode {suffix} images: convert them to JPEG or PNG"
    what = f"{suffix} is not an image format" if suffix else "no suffix, and not an image Pillow can identify"
    return "unsupported_format", f"{name}: {what}"


def inspect(job: tuple[str, Path], root: Path, max_pixels: int | None) -> Inspected:
    """Runs in a worker: read the file once, hash it, decode it in full (a truncated file fails
    here, not in training) and write the bytes to train on to the job's staging file."""
    name, staged = job
    try:
        raw = Path(os.path.join(root, name)).read_bytes()
    except FileNotFoundError:
        return Inspected("", None, reason="image_missing", detail=f"{name}: no such file")
    except OSError as err:
        return Inspected("", None, reason="image_unreadable", detail=f"{name}: {err}")
    digest = hashlib.sha256(raw).hexdigest()
    try:
        image = normalise_image(raw, None, max_pixels)
    except ImageTooLargeError as err:
        return Inspected(digest, None, reason="image_too_large", detail=f"{name}: {err}")
    except Exception as err:  # noqa: BLE001  Pillow raises more than DECODE_ERRORS on malformed files
        reason, detail = _failure(name, raw, err)
        return Inspected(digest, None, reason=reason, detail=detail)
    staged.write_bytes(image.data or raw)
    return Inspected(digest, replace(image, data=None), image.data is not None)


class _Verdicts:
    """Each image's verdict by input position, in a scratch SQLite file: the second pass needs
    every copy of a content, and a list of them would grow with the dataset."""

    def __init__(self) -> None:
        self._db = scratch_db()
        self._db.execute(
            "CREATE TABLE seen (idx INTEGER PRIMARY KEY, label INT, rank INT, sha TEXT, reason TEXT, detail TEXT,"
            " width INT, height INT, changes TEXT, converted INT)"
        )

    def add(self, idx: int, label: int, split: str | None, seen: Inspected) -> None:
        image = seen.image
        size = (image.width, image.height) if image else (0, 0)
        changes = " ".join(image.changes) if image else ""
        rank = SPLITS.index(split) if split else UNPINNED
        row = (idx, label, rank, seen.sha256, seen.reason, seen.detail, *size, changes, seen.converted)
        self._db.execute("INSERT INTO seen VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)

    def index(self) -> None:
        """Once every verdict is in: copies are looked up by content."""
        self._db.execute("CREATE INDEX by_sha ON seen (sha)")

    def in_order(self) -> Iterable[tuple]:
        """(label, sha, reason, detail, width, height, changes, converted) by input position."""
        query = "SELECT label, sha, reason, detail, width, height, changes, converted FROM seen ORDER BY idx"
        return self._db.execute(query)

    def copies(self, sha: str) -> list[tuple[int, int]]:
        """(input position, label) of every decoded image of this content, the one to keep first:
        the earliest of the earliest pre-made split."""
        query = "SELECT idx, label FROM seen WHERE sha = ? AND reason = '' ORDER BY rank, idx"
        return self._db.execute(query, (sha,)).fetchall()


def _copy_issue(idx: int, copies: Sequence[tuple[int, int]], images: Sequence[LabelledImage]) -> Issue | None:
    """Why the decoded image at ``idx`` goes although it decodes, given every decoded copy of its
    content (``_Verdicts.copies``); None when it is the one kept."""
    image = images[idx]
    labels = sorted({images[i].label for i, _ in copies})
    if len(labels) > 1:
        listed = ", ".join(f"{images[i].path} ({images[i].label})" for i, _ in sorted(copies))
        detail = f"{image.path}: the same content is labelled {' and '.join(labels)}: {listed}"
        return Issue(image.path, "conflicting_labels", detail)
    first = images[copies[0][0]]
    if first is image:
        return None
    if image.split and first.split and image.split != first.split:
        detail = f"{image.path} ({image.split}) has the same content as {first.path}, kept in {first.split}"
        return Issue(image.path, "split_leak", detail)
    return Issue(image.path, "duplicate", f"{image.path}: same content as {first.path}")


def clean_images(
    root: Path, images_out: Path, dataset: ClassDataset, max_pixels: int | None, workers: int
) -> ClassCleanResult:
    """Decide on every input of ``dataset`` and write the kept images into ``images_out``."""
    ids = {name: i for i, name in enumerate(dataset.classes)}
    verdicts = _Verdicts()
    images_out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=images_out))
    jobs = ((image.path, staging / str(i)) for i, image in enumerate(dataset.images))
    try:
        with Workers(workers, chunk=CHUNK) as pool:
            for i, seen in enumerate(pool.map(partial(inspect, root=root, max_pixels=max_pixels), jobs)):
                image = dataset.images[i]
                verdicts.add(i, ids[image.label], image.split, seen)
        verdicts.index()
        result = ClassCleanResult()
        for i, verdict in enumerate(verdicts.in_order()):
            _settle(i, verdict, dataset.images, verdicts, staging, images_out, result)
    finally:
        shutil.rmtree(staging)
    return result


def _settle(
    idx: int,
    verdict: tuple,
    images: Sequence[LabelledImage],
    verdicts: _Verdicts,
    staging: Path,
    images_out: Path,
    result: ClassCleanResult,
) -> None:
    """One image's decision, in input order: its staged file renamed into place, or dropped."""
    label, sha, reason, detail, width, height, changes, converted = verdict
    image = images[idx]
    issue = Issue(image.path, reason, detail) if reason else _copy_issue(idx, verdicts.copies(sha), images)
    if issue is not None:
        result.dropped.append(issue)
        return
    name = converted_name(image.path) if converted else image.path
    written = f", written as {name}" if name != image.path else ""
    result.notes += [Issue(image.path, change, f"{image.path}: {change}{written}") for change in changes.split()]
    target = images_out / name
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging / str(idx), target)
    result.rows.append(ClassRow(name, label, width, height))
    result.shas.append(sha)
    result.splits.append(image.split)


def account(
    root: Path, dataset: ClassDataset, result: ClassCleanResult, left_out: Sequence[Mapping[str, str]] = ()
) -> tuple[dict, list[Issue]]:
    """Where every file under ``root`` (and each one ingest ``left_out``) ended, as
    :meth:`~odpipe.data.cleaning.Ledger.close` gives it: an input kept when one of its rows was
    (a CSV may name a file twice), else dropped with its first drop's reason; the label CSV read
    (``dataset.tables``), OS litter, and whatever the layout does not read, not inputs. A CSV row
    naming no file is in ``result.dropped`` (``image_missing``), not among the files found."""
    found = list(walk(root))
    ledger = Ledger(found, left_out)
    rows = Counter(image.path for image in dataset.images)
    drops: dict[str, list[Issue]] = {}
    for issue in result.dropped:
        drops.setdefault(issue.file, []).append(issue)
    for file in found:
        dropped = drops.get(file, ())
        if len(dropped) < rows[file]:
            ledger.kept(file)
        elif dropped:
            ledger.dropped(file, dropped[0].reason, dropped[0].detail)
    for file, code in dataset.tables.items():
        ledger.not_input(file, code)
    for file in found:
        if any(is_hidden(part) for part in file.split("/")):
            ledger.not_input(file, "os_litter")
    return ledger.close(UNREAD[dataset.layout])


def split_rows(
    result: ClassCleanResult,
    ratios: Mapping[str, float],
    seed: int,
    group_pattern: str | None,
    use_imagesets: bool,
) -> dict[str, list[int]]:
    """Indices of the kept rows by split: grouped as every task's splits are, stratified on the
    label (so that each class reaches each split in its share), the dataset's pre-made splits
    honoured when ``use_imagesets``."""
    items = [
        (row.image, group_key(row.image, sha, group_pattern), frozenset((row.label,)))
        for row, sha in zip(result.rows, result.shas, strict=True)
    ]
    rows_splits = zip(result.rows, result.splits, strict=True)
    pinned = {row.image: split for row, split in rows_splits if split} if use_imagesets else {}
    assigned = stratified_split(items, ratios, seed, pinned)
    by_split: dict[str, list[int]] = {s: [] for s in SPLITS}
    for i, row in enumerate(result.rows):
        by_split[assigned[row.image]].append(i)
    return by_split


def write_splits(
    result: ClassCleanResult, by_split: Mapping[str, list[int]], classes: Sequence[str], out: Path
) -> None:
    """Each split's CSV (``ROW_COLUMNS``: the class by id and by name), in input order."""
    for split, indices in by_split.items():
        write_csv((result.rows[i].as_csv(classes) for i in indices), ROW_COLUMNS, out / f"{split}.csv")


def read_rows(path: Path) -> list[ClassRow]:
    """A split's rows, as :func:`write_splits` wrote them."""
    return [ClassRow.from_csv(r) for r in iter_csv(path)]


def _by_reason(issues: Iterable[Issue]) -> dict[str, int]:
    return dict(sorted(Counter(issue.reason for issue in issues).items()))


def report(
    result: ClassCleanResult,
    by_split: Mapping[str, list[int]],
    dataset: ClassDataset,
    min_per_class: int,
    *,
    files: Mapping,
) -> dict:
    """Counts for DVC metrics and the Markdown report: where every file went (``files``, from
    :func:`account`), what came in, what was dropped and noted and why, each split's images per
    class, and what the train split means for training: its ``imbalance`` (largest over smallest
    class, null when a class has none) and the classes with fewer than ``min_per_class`` images,
    which the train stage refuses."""
    names = dataset.classes
    splits = {}
    for split, indices in by_split.items():
        counts = Counter(result.rows[i].label for i in indices)
        splits[split] = {"images": len(indices), "images_per_class": {n: counts[c] for c, n in enumerate(names)}}
    train = splits["train"]["images_per_class"]
    smallest = min(train.values())
    return {
        "layout": dataset.layout,
        "files": dict(files),
        "classes": list(names),
        "images_in": len(result.rows) + len(result.dropped),
        "kept": len(result.rows),
        "dropped": len(result.dropped),
        "dropped_by_reason": _by_reason(result.dropped),
        "notes_by_reason": _by_reason(result.notes),
        "empty_classes": list(dataset.empty_classes),
        "splits": splits,
        "imbalance": max(train.values()) / smallest if smallest else None,
        "min_per_class": min_per_class,
        "classes_below_min": _below_min(train, min_per_class),
    }


def _below_min(per_class: Mapping[str, int], min_per_class: int) -> dict[str, int]:
    """The classes with fewer than ``min_per_class`` images, with their counts."""
    return {name: count for name, count in per_class.items() if count < min_per_class}


def train_counts(summary: Mapping, names: Sequence[str]) -> dict[str, int]:
    """Train images per class, in ``names`` order, from the :func:`report` clean_split wrote."""
    per_class = summary["splits"]["train"]["images_per_class"]
    if sorted(per_class) != sorted(names):
        raise ValueError(f"the clean_split report counts classes {sorted(per_class)}, not {list(names)}: rerun it")
    return {name: per_class[name] for name in names}


def check_min_per_class(per_class: Mapping[str, int], min_per_class: int) -> None:
    """Refuse to train on a class with fewer train images than ``classify.min_per_class``: it
    would be learnt from a handful of images and scored on fewer still."""
    small = _below_min(per_class, min_per_class)
    if small:
        listed = ", ".join(f"{name} ({count})" for name, count in small.items())
        raise ValueError(
            f"class(es) with fewer than {min_per_class} train images (classify.min_per_class): {listed}: "
            "add images, or merge or remove those classes"
        )


def class_markdown(
    summary: Mapping, issues: Mapping[str, Sequence[Mapping]], grid_name: str, max_rows: int = 50
) -> str:
    """The classify task's report: totals, where every file went, reasons, images per class and
    split, what the train split's balance means for training, and the decisions."""
    names = summary["classes"]
    lines = [
        "# Dataset cleaning and split report (classification)",
        "",
        f"{summary['images_in']} files in ({summary['layout']} layout): {summary['kept']} images kept, "
        f"{summary['dropped']} dropped.",
        "",
        *files_table(summary["files"]),
        *count_table(("reason", "dropped"), summary["dropped_by_reason"], "No file was dropped."),
        *count_table(("note", "images"), summary["notes_by_reason"], "No image needed a note."),
        "Images per class:",
        "",
        "| split | images | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for name, split in summary["splits"].items():
        cells = " | ".join(str(split["images_per_class"][c]) for c in names)
        lines.append(f"| {name} | {split['images']} | {cells} |")
    lines += ["", *_balance(summary), "", f"![samples with their classes]({grid_name})", ""]
    return "\n".join(lines + decisions(issues, max_rows))


def _balance(summary: Mapping) -> list[str]:
    """The report's lines on the train split's balance, the small classes and the empty ones."""
    train = summary["splits"]["train"]["images_per_class"]
    if summary["imbalance"] is None:
        lines = [f"Train has no image of: {', '.join(c for c, n in train.items() if not n)}."]
    else:
        lines = [f"Train imbalance (largest class / smallest): {summary['imbalance']:.2f}."]
    if summary["classes_below_min"]:
        small = ", ".join(f"{c} ({n})" for c, n in summary["classes_below_min"].items())
        lines.append(f"Fewer than {summary['min_per_class']} train images (train refuses these): {small}.")
    if summary["empty_classes"]:
        lines.append(f"Class folders without any file: {', '.join(summary['empty_classes'])}.")
    return lines
