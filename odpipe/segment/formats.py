"""Segmentation datasets as users arrive with them, read as (image, index mask) pairs.

Formats, recognised from their files by :func:`detect_format`:

- ``voc``: ``JPEGImages/<id>.jpg`` with ``SegmentationClass/<id>.png`` palette PNGs, read as the
  palette's indices (255 void); splits from ``ImageSets/Segmentation/{train,val,test}.txt``.
- ``camvid``: colour masks and ``class_dict.csv`` (``name,r,g,b``) or ``label_colors.txt``
  (``r g b name``); images and masks paired as for index. A class named void is VOID.
- ``cityscapes``: ``leftImg8bit/<split>/<city>/<x>_leftImg8bit.png`` with
  ``gtFine/<split>/<city>/<x>_gtFine_labelIds.png``; label ids become the 19 train ids.
- ``index``: images and masks paired by the layouts datasets ship in (:mod:`odpipe.data.pairing`:
  ``images/training/a.jpg`` with ``annotations/training/a.png`` as ADE20K, ``train/`` with
  ``trainannot/`` as SegNet's CamVid, ``a.png`` with ``a_mask.png``; ``dataset.images``,
  ``dataset.masks`` and ``dataset.mask_suffix`` name others); single-channel PNGs whose values are
  class ids; names from ``dataset.classes`` or a ``classes.txt``/``labels.txt``.
- ``coco``: COCO JSON polygons or RLE, rasterised by pycocotools; overlapping objects: the later
  annotation in the file wins. An image listed without annotations is all background.
- ``labelme``: a JSON per image; polygons, rectangles and circles drawn with PIL on the points as
  written, as LabelMe itself draws them. A JSON without shapes is all background.
- ``cvat``: CVAT's "Segmentation mask 1.1": the VOC layout with colour masks and ``labelmap.txt``.

Every mask leaves here as an (H, W) uint8 array of class ids, ``VOID`` where no class applies.
A value, colour or label the class table lacks is never taken for background: its pixels become
VOID and are counted, so that cleaning can say how many there were.

Splits: voc and cvat from their lists; every other format from the image's folders (``train/``,
``images/validation/``, ``train2017/``; for COCO also the JSON's name, ``instances_val2017``).

Options (the ``dataset`` config section):

- ``classes``: class names, index = id. For the formats whose files hold ids (voc, index) it
  names those ids; for the formats that name their classes (camvid, cvat, cityscapes, coco,
  labelme) it picks and orders them by name, and any other class is void (and reported).
  Empty: the format's own table (VOC's 21 classes; for index a ``classes.txt``/``labels.txt``).
- ``reduce_zero_label``: index only: id 0 means "unlabelled" (ADE20K), so it becomes VOID and
  every other id moves down by one; ``classes`` then names the ids after the move.
- ``images``, ``masks``, ``mask_suffix``: index and camvid: the image and mask folder names and
  the masks' name suffix, where the usual layouts do not pair them (:mod:`odpipe.data.pairing`).
"""

from __future__ import annotations

import csv
import json
import math
import os
import posixpath
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as coco_mask

from odpipe.core.images import DECODE_ERRORS, IMAGE_SUFFIXES, ImageTooLargeError
from odpipe.data.discover import class_file, find, inventory, is_coco
from odpipe.data.index_masks import PALETTE, VOID, Colour
from odpipe.data.pairing import Convention, describe, pair
from odpipe.data.splitting import folder_split

Key = int | tuple[int, int, int] | str  # a value, a colour or a label as the dataset's files write it

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
# Cityscapes' 19 evaluated classes: (name, label id in *_labelIds.png, official colour); the
# train id is the position. Every other label id is void, as in the official scripts.
CITYSCAPES = (
    ("road", 7, (128, 64, 128)), ("sidewalk", 8, (244, 35, 232)), ("building", 11, (70, 70, 70)),
    ("wall", 12, (102, 102, 156)), ("fence", 13, (190, 153, 153)), ("pole", 17, (153, 153, 153)),
    ("traffic light", 19, (250, 170, 30)), ("traffic sign", 20, (220, 220, 0)),
    ("vegetation", 21, (107, 142, 35)), ("terrain", 22, (152, 251, 152)), ("sky", 23, (70, 130, 180)),
    ("person", 24, (220, 20, 60)), ("rider", 25, (255, 0, 0)), ("car", 26, (0, 0, 142)),
    ("truck", 27, (0, 0, 70)), ("bus", 28, (0, 60, 100)), ("train", 31, (0, 80, 100)),
    ("motorcycle", 32, (0, 0, 230)), ("bicycle", 33, (119, 11, 32)),
)  # fmt: skip
BACKGROUND_NAMES = {"background", "_background_", "bg"}
VALUE_MODES = {"1", "L", "P", "I", "I;16", "I;16B", "I;16L"}  # modes whose pixels are ids, not colours
VALUE_FORMATS = {"voc", "index", "cityscapes"}
# A colour mask with this many distinct colours close to (but not exactly) class colours has
# been through lossy compression or smoothing: guessing which class each pixel was is refused.
LOSSY_COLOURS = 8
NEAR = 32  # per channel
JSON_SNIFFED = 20  # JSON files read to detect COCO or LabelMe before giving up on JSON
LISTED = {*IMAGE_SUFFIXES, ".json", ".txt", ".csv"}  # the files any format reads


class MaskError(Exception):
    """A mask that cannot be used: ``reason`` is cleaning's drop code, ``detail`` names the file."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return self.detail


@dataclass(frozen=True)
class ClassTable:
    """The classes to train on: index i is class id i."""

    names: tuple[str, ...]
    colors: tuple[Colour, ...]  # for colour output: the format's own, else VOC's palette

    @property
    def background(self) -> int | None:
        """Class 0 when its name says background; None when every class is a real one (Cityscapes'
        road, ADE20K's wall once ``reduce_zero_label`` has moved it to 0)."""
        return 0 if self.names and self.names[0].lower() in BACKGROUND_NAMES else None


@dataclass(frozen=True)
class MaskPair:
    """An image and its mask; either may be None (an orphan), so that cleaning reports it."""

    image: str | None  # posix path relative to the dataset root
    mask: str | None  # the mask file or the annotation file (COCO, LabelMe JSON)
    key: str = ""  # the entry inside ``mask`` when one file holds many (COCO image id)

    @property
    def where(self) -> str:
        """The mask for people to look up: the file, and the entry in it."""
        return f"{self.mask}#{self.key}" if self.key else str(self.mask)


@dataclass
class MaskDataset:
    """A dataset's pairs, and what its masks' values, colours or labels mean."""

    format: str
    classes: ClassTable
    pairs: list[MaskPair]  # every image and every mask found, orphans included, sorted
    splits: dict[str, str]  # image path -> train|val|test when the layout splits it, else {}
    empty_is_background: bool  # an annotation with nothing in it means all background
    # What each value, colour or label in the files is: a class id or VOID. Anything else is unknown.
    class_ids: Mapping[Key, int] = field(default_factory=dict)
    # The files read that are neither images nor masks: class tables, split lists (NOT_INPUT codes)
    read: dict[str, str] = field(default_factory=dict)
    threshold: int | None = None  # binary masks: a grey level at or above it is id 1, below it 0

    def without_pairs(self) -> MaskDataset:
        """What :func:`load_index_mask` needs, cheap to send to every worker of a pool."""
        return replace(self, pairs=[], splits={}, read={})


# --- files and folders -------------------------------------------------------------------------


def _ext(path: str) -> str:
    return posixpath.splitext(path)[1].lower()


def _stem(path: str) -> str:
    return posixpath.splitext(posixpath.basename(path))[0]


def _is_image(path: str) -> bool:
    return _ext(path) in IMAGE_SUFFIXES


def _files(root: Path) -> list[str]:
    """The files under ``root`` any format reads, as sorted relative POSIX paths."""
    found = find(root, lambda name: _ext(name) in LISTED)
    return [path for path in found if os.path.isfile(os.path.join(root, path))]


def _split_at(path: str, folder: str) -> tuple[str, str] | None:
    """``(base, rest)`` of ``base/folder/rest`` at the deepest such folder; None without one."""
    parts = path.split("/")
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == folder:
            return "/".join(parts[:i]), "/".join(parts[i + 1 :])
    return None


def _without_ext(path: str) -> str:
    return posixpath.splitext(path)[0]


def _folder_splits(pairs: Iterable[MaskPair]) -> dict[str, str]:
    return {p.image: s for p in pairs if p.image and (s := folder_split(p.image.split("/")[:-1]))}


def _sorted(pairs: Iterable[MaskPair]) -> list[MaskPair]:
    return sorted(pairs, key=lambda p: (p.image or "", p.mask or "", p.key))


def _paired(
    images: Iterable[str],
    masks: Iterable[str],
    image_key: Callable[[str], Hashable],
    mask_key: Callable[[str], Hashable],
) -> list[MaskPair]:
    """Images and masks matched on their keys; anything unmatched stays as an orphan (a second
    mask of one key too), so that cleaning accounts for every file."""
    by_key: dict[Hashable, str] = {}
    masks = list(masks)
    for mask in masks:
        by_key.setdefault(mask_key(mask), mask)
    pairs = [MaskPair(image, by_key.get(image_key(image))) for image in images]
    used = {p.mask for p in pairs}
    return _sorted(pairs + [MaskPair(None, mask) for mask in masks if mask not in used])


# --- class tables ------------------------------------------------------------------------------


def _wanted(options: Mapping) -> tuple[str, ...]:
    return tuple(str(name) for name in options.get("classes") or ())


def _class_table(
    names: Sequence[str], colors: Sequence[Colour], meaning: Mapping[Key, str | None], wanted: Sequence[str]
) -> tuple[ClassTable, dict[Key, int]]:
    """The class table and what each key of the files means in it.

    ``names``/``colors`` are the format's own classes and ``meaning`` the class name of each
    key (None: void). With ``wanted`` (``dataset.classes``) the classes are those instead, in
    that order: a key of any other class is left out, so its pixels are reported as unknown.
    """
    if wanted:
        own = dict(zip(names, colors, strict=True))
        names, colors = wanted, [own.get(name, PALETTE[i]) for i, name in enumerate(wanted)]
    if len(names) >= VOID:
        raise ValueError(f"{len(names)} classes: at most {VOID - 1}, as id {VOID} means void")
    ids = {name: i for i, name in enumerate(names)}
    if len(ids) < len(names):
        raise ValueError(f"class names repeat: {list(names)}")
    class_ids = {
        key: VOID if name is None else ids[name] for key, name in meaning.items() if name is None or name in ids
    }
    return ClassTable(tuple(names), tuple(colors)), class_ids


def _with_background(labels: Iterable[str]) -> tuple[str, ...]:
    """Class names for a format whose unlabelled pixels are background: that first."""
    return ("background", *(label for label in labels if label != "background"))


def _colour(values: Sequence[str], where: str) -> Colour:
    try:
        r, g, b = (int(v) for v in values)
    except ValueError as err:
        raise ValueError(f"{where}: not an r, g, b colour ({err})") from None
    if not all(0 <= c <= 255 for c in (r, g, b)):
        raise ValueError(f"{where}: colour {(r, g, b)} is outside 0-255")
    return r, g, b


def _colour_classes(entries: Iterable[tuple[str, str, Colour]]) -> tuple[list[str], list[Colour], dict]:
    """Names, colours and the meaning of each colour from a colour table's ``(where, name,
    colour)`` rows; a class named void (any case) is VOID."""
    names: list[str] = []
    colors: list[Colour] = []
    meaning: dict[Key, str | None] = {}
    for where, name, colour in entries:
        if not name:
            raise ValueError(f"{where}: no class name")
        if colour in meaning:
            raise ValueError(f"{where}: colour {colour} is already class {meaning[colour]!r}")
        is_void = name.lower() == "void"
        meaning[colour] = None if is_void else name
        if not is_void:
            names.append(name)
            colors.append(colour)
    return names, colors, meaning


def _class_dict_rows(path: Path, where: str) -> Iterator[tuple[str, str, Colour]]:
    """CamVid's ``class_dict.csv``: ``name,r,g,b``, spaces around values and header tolerated."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = csv.reader(handle)
        header = [column.strip().lower() for column in next(rows, [])]
        if not {"name", "r", "g", "b"} <= set(header):
            raise ValueError(f"{where}: header {header} lacks name, r, g, b")
        for line, row in enumerate(rows, start=2):
            record = dict(zip(header, (value.strip() for value in row), strict=False))
            if any(record.values()):
                at = f"{where}:{line}"
                yield at, record.get("name", ""), _colour([record.get(c, "") for c in "rgb"], at)


def _label_colors_rows(path: Path, where: str) -> Iterator[tuple[str, str, Colour]]:
    """CamVid's ``label_colors.txt``: ``r g b name`` per line, tabs or spaces."""
    for line, text in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        parts = text.split()
        if parts:
            at = f"{where}:{line}"
            yield at, " ".join(parts[3:]), _colour(parts[:3], at)


def _labelmap_rows(path: Path, where: str) -> Iterator[tuple[str, str, Colour]]:
    """CVAT's ``labelmap.txt``: ``name:r,g,b:parts:actions``, ``#`` comments."""
    for line, text in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if text.strip() and not text.startswith("#"):
            at = f"{where}:{line}"
            name, _, rest = text.partition(":")
            yield at, name, _colour(rest.partition(":")[0].split(","), at)


# --- readers -----------------------------------------------------------------------------------


def _voc_layout(root: Path, files: Sequence[str]) -> tuple[list[MaskPair], dict[str, str], dict[str, str]]:
    """Pairs and splits of the VOC layout (voc, cvat): ``<base>/JPEGImages/<id>.jpg`` with
    ``<base>/SegmentationClass/<id>.png``. When ``ImageSets/Segmentation/*.txt`` lists exist
    they say which images are segmentation data (VOC's JPEGImages holds 17k images, 2.9k of them
    segmented), and ``train``/``val``/``test`` lists pre-split them. The lists read come third."""
    listed: dict[tuple[str, str], str | None] = {}
    lists: dict[str, str] = {}
    for path in files:
        at = _split_at(path, "ImageSets")
        if at and posixpath.dirname(at[1]) == "Segmentation" and path.endswith(".txt"):
            lists[path] = "split_list"
            split = _stem(path) if _stem(path) in ("train", "val", "test") else None
            for image_id in (root / path).read_text().split():
                if listed.get((at[0], image_id)) is None:
                    listed[(at[0], image_id)] = split
    with_lists = {base for base, _ in listed}
    image_key = partial(_in_folders, folders=("JPEGImages",))
    mask_key = partial(_in_folders, folders=("SegmentationClass",))
    masks = [path for path in files if _is_image(path) and mask_key(path)]
    masked = {mask_key(mask) for mask in masks}
    images = [
        path
        for path in files
        if _is_image(path) and (k := image_key(path)) and (k[0] not in with_lists or k in listed or k in masked)
    ]
    pairs = _paired(images, masks, image_key, mask_key)
    splits = {p.image: listed[k] for p in pairs if p.image and listed.get(k := image_key(p.image))}
    return pairs, splits, lists


def read_voc(root: Path, files: Sequence[str], options: Mapping) -> MaskDataset:
    """VOC: ``dataset.classes`` names the palette's indices; a mask re-saved as RGB reads by
    the VOC palette's colours instead."""
    pairs, splits, lists = _voc_layout(root, files)
    names = _wanted(options) or VOC_CLASSES
    meaning: dict[Key, str | None] = {VOID: None, PALETTE[VOID]: None}
    for i, name in enumerate(names):
        meaning[i] = meaning[PALETTE[i]] = name  # an RGB re-save of a VOC mask reads by colour
    table, class_ids = _class_table(names, PALETTE[: len(names)], meaning, ())
    return MaskDataset("voc", table, pairs, splits, False, class_ids, lists)


def _table_file(root: Path, files: Sequence[str], name: str) -> tuple[Path, str] | None:
    found = [path for path in files if posixpath.basename(path) == name]
    return (root / found[0], found[0]) if found else None


def read_cvat(root: Path, files: Sequence[str], options: Mapping) -> MaskDataset:
    """CVAT's VOC-like export: classes and their colours from ``labelmap.txt``, in its order."""
    table_file = _table_file(root, files, "labelmap.txt")
    if table_file is None:
        raise ValueError(f"{root}: a CVAT segmentation export needs its labelmap.txt")
    names, colors, meaning = _colour_classes(_labelmap_rows(*table_file))
    pairs, splits, lists = _voc_layout(root, files)
    table, class_ids = _class_table(names, colors, meaning, _wanted(options))
    return MaskDataset("cvat", table, pairs, splits, False, class_ids, lists | {table_file[1]: "class_table"})


def read_camvid(root: Path, files: Sequence[str], options: Mapping) -> MaskDataset:
    """CamVid: classes and colours from ``class_dict.csv``, else ``label_colors.txt``."""
    table_file = _table_file(root, files, "class_dict.csv")
    rows = _class_dict_rows
    if table_file is None:
        table_file, rows = _table_file(root, files, "label_colors.txt"), _label_colors_rows
    if table_file is None:
        raise ValueError(f"{root}: CamVid masks need a class_dict.csv or label_colors.txt")
    names, colors, meaning = _colour_classes(rows(*table_file))
    pairs = _raster_pairs(files, options)
    table, class_ids = _class_table(names, colors, meaning, _wanted(options))
    read = {table_file[1]: "class_table"}
    return MaskDataset("camvid", table, pairs, _folder_splits(pairs), False, class_ids, read)


CITYSCAPES_IMAGE = "_leftImg8bit"
CITYSCAPES_MASK = "_gtFine_labelIds"


def _cityscapes_key(path: str, folder: str, suffix: str) -> tuple[str, str, str] | None:
    """``(base, split/city, frame)`` of ``base/<folder>/<split>/<city>/<frame><suffix>.png``."""
    at = _split_at(path, folder)
    if at is None or at[1].count("/") != 2 or not _stem(path).endswith(suffix):
        return None
    return at[0], posixpath.dirname(at[1]), _stem(path)[: -len(suffix)]


def read_cityscapes(root: Path, files: Sequence[str], options: Mapping) -> MaskDataset:
    """Cityscapes fine labels; the other ``gtFine`` files (colour, instance ids, polygons) are
    not masks here."""
    image_key = partial(_cityscapes_key, folder="leftImg8bit", suffix=CITYSCAPES_IMAGE)
    mask_key = partial(_cityscapes_key, folder="gtFine", suffix=CITYSCAPES_MASK)
    images = [path for path in files if _is_image(path) and image_key(path)]
    masks = [path for path in files if _is_image(path) and mask_key(path)]
    pairs = _paired(images, masks, image_key, mask_key)
    meaning: dict[Key, str | None] = dict.fromkeys(range(256))
    meaning |= {label_id: name for name, label_id, _ in CITYSCAPES}
    names, _, colors = zip(*CITYSCAPES, strict=True)
    table, class_ids = _class_table(names, colors, meaning, _wanted(options))
    return MaskDataset("cityscapes", table, pairs, _folder_splits(pairs), False, class_ids)


def _in_folders(path: str, folders: Sequence[str]) -> tuple[str, str] | None:
    """``(base, path under the folder, no extension)`` for the first of ``folders`` in ``path``."""
    for folder in folders:
        at = _split_at(path, folder)
        if at:
            return at[0], _without_ext(at[1])
    return None


def _complete(pairs: Iterable[MaskPair]) -> int:
    """How many pairs have both their image and their mask."""
    return sum(1 for p in pairs if p.image and p.mask)


def _raster_pairs(files: Sequence[str], options: Mapping) -> list[MaskPair]:
    """Image files paired with mask files by the usual layouts (:mod:`odpipe.data.pairing`), or
    by the user's ``dataset.images``, ``dataset.masks`` and ``dataset.mask_suffix``."""
    convention = Convention.from_options(options.get("images"), options.get("masks"), options.get("mask_suffix"))
    return [MaskPair(image, mask) for image, mask in pair(_image_files(files), convention)]


def read_index(root: Path, files: Sequence[str], options: Mapping) -> MaskDataset:
    """Masks of class ids: names from ``dataset.classes``, else ``classes.txt``/``labels.txt`` (or a YOLO
    ``data.yaml``'s names, read the same way as for detection)."""
    pairs = _raster_pairs(files, options)
    shipped = class_file(root)
    names = _wanted(options) or tuple(shipped.names if shipped else ())
    if not names:
        raise ValueError(
            f"{root}: {_complete(pairs)} images paired with masks of class ids, and nothing names the ids: index masks "
            "need dataset.classes (the name of id 0 first) or a classes.txt or labels.txt (line i names id i)"
        )
    threshold = options.get("mask_threshold")
    if threshold is not None and (len(names) != 2 or options.get("reduce_zero_label")):
        raise ValueError(
            f"dataset.mask_threshold makes binary masks: dataset.classes must name 2 classes (below, at or above "
            f"the threshold), not {list(names)}, and reduce_zero_label stays false"
        )
    if options.get("reduce_zero_label"):
        meaning = {value + 1: name for value, name in enumerate(names)} | {0: None, VOID: None}
    else:
        meaning = dict(enumerate(names)) | {VOID: None}
    table, class_ids = _class_table(names, PALETTE[: len(names)], meaning, ())
    read = {shipped.file: "class_table"} if shipped and not _wanted(options) else {}
    splits = _folder_splits(pairs)
    return MaskDataset(
        "index", table, pairs, splits, False, class_ids, read, None if threshold is None else int(threshold)
    )


def _json(path: Path) -> Any:
    """The file's JSON, or None when it is not JSON at all."""
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _image_files(files: Sequence[str]) -> list[str]:
    return [path for path in files if _is_image(path)]


def _drawn(
    fmt: str, images: Sequence[str], pairs: list[MaskPair], labels: Iterable[str], splits: dict, options: Mapping
) -> MaskDataset:
    """A dataset whose masks are drawn from labelled shapes: class 0 is background (what no
    shape covers), and image files no annotation names are orphans."""
    listed = {p.image for p in pairs}
    pairs = _sorted(pairs + [MaskPair(image, None) for image in images if image not in listed])
    names = _with_background(labels)
    table, class_ids = _class_table(names, PALETTE[: len(names)], {name: name for name in names}, _wanted(options))
    return MaskDataset(fmt, table, pairs, splits, True, class_ids)


def read_coco(root: Path, files: Sequence[str], options: Mapping) -> MaskDataset:
    """Every COCO JSON under ``root``; images resolve by file name (the one of that name, or
    the one beside the JSON)."""
    images = _image_files(files)
    known = set(images)
    by_name: dict[str, list[str]] = {}
    for image in images:
        by_name.setdefault(posixpath.basename(image), []).append(image)
    categories: dict[str, None] = {}
    pairs: list[MaskPair] = []
    splits: dict[str, str] = {}
    for source in (path for path in files if path.endswith(".json")):
        data = _json(root / source)
        if not is_coco(data):
            continue
        named = folder_split(_without_ext(source).split("/"))
        try:
            categories |= dict.fromkeys(str(c["name"]) for c in data["categories"])
            entries = [(str(entry["file_name"]).replace("\\", "/"), str(entry["id"])) for entry in data["images"]]
        except (KeyError, TypeError) as err:
            raise ValueError(f"{root / source}: not a usable COCO file ({err!r})") from None
        for name, image_id in entries:
            image = name if name in known else _one(by_name, name, source)
            pairs.append(MaskPair(image, source, image_id))
            if image and (split := named or folder_split(image.split("/")[:-1])):
                splits[image] = split
    return _drawn("coco", images, pairs, categories, splits, options)


def _one(by_name: Mapping[str, list[str]], name: str, near: str) -> str | None:
    """The image a written name means: the one file of that name, or the one beside ``near``."""
    candidates = by_name.get(posixpath.basename(name), [])
    if len(candidates) == 1:
        return candidates[0]
    beside = [c for c in candidates if posixpath.dirname(c) == posixpath.dirname(near)]
    return beside[0] if len(beside) == 1 else None


def is_labelme(data: object) -> bool:
    return isinstance(data, dict) and isinstance(data.get("shapes"), list) and "imagePath" in data


def read_labelme(root: Path, files: Sequence[str], options: Mapping) -> MaskDataset:
    """A LabelMe JSON per image: its ``imagePath`` (relative to the JSON, the labeller's own
    path), else the image of the JSON's stem beside it. A JSON that does not parse is kept, with
    the image of its stem, so that cleaning reports it; other JSON files are not masks."""
    images = _image_files(files)
    known = set(images)
    by_stem = {(posixpath.dirname(image), _stem(image)): image for image in reversed(images)}
    labels: set[str] = set()
    pairs = []
    for source in (path for path in files if path.endswith(".json")):
        data = _json(root / source)
        if data is not None and not is_labelme(data):
            continue
        written = str(data.get("imagePath") or "") if data else ""
        path = posixpath.normpath(posixpath.join(posixpath.dirname(source), written.replace("\\", "/")))
        image = path if written and path in known else by_stem.get((posixpath.dirname(source), _stem(source)))
        pairs.append(MaskPair(image, source))
        labels |= {str(shape.get("label", "")) for shape in (data or {}).get("shapes", []) if isinstance(shape, dict)}
    # an unlabelled shape is reported (as unknown), not a class
    return _drawn("labelme", images, pairs, sorted(labels - {""}), _folder_splits(pairs), options)


READERS: dict[str, Callable[[Path, Sequence[str], Mapping], MaskDataset]] = {
    "voc": read_voc,
    "camvid": read_camvid,
    "cityscapes": read_cityscapes,
    "index": read_index,
    "coco": read_coco,
    "labelme": read_labelme,
    "cvat": read_cvat,
}


# What each format looks for, for the error that says none was found.
LAYOUTS = {
    "voc": "JPEGImages/ with SegmentationClass/ (palette PNGs)",
    "cvat": "voc's layout with CVAT's labelmap.txt",
    "camvid": "colour masks with a class_dict.csv or label_colors.txt",
    "cityscapes": "leftImg8bit/<split>/<city>/ with gtFine/<split>/<city>/",
    "index": "images and single-channel masks paired: images/ + masks/, train/ + trainannot/ (or train_labels/, "
    "train_masks/), x.png + x_mask.png; dataset.images, dataset.masks and dataset.mask_suffix name others",
    "coco": "a COCO JSON (images, annotations, categories)",
    "labelme": "a LabelMe JSON per image (shapes, imagePath)",
}


def _evidence(root: Path, files: Sequence[str], options: Mapping) -> tuple[dict[str, str], dict[str, str]]:
    """Each format whose files are present, with what gave it away; and for each of the others,
    how close the files came to it."""
    names = {posixpath.basename(path) for path in files}
    folders = {part for path in files for part in path.split("/")[:-1]}
    found, near = {}, {}
    voc = [folder for folder in ("JPEGImages", "SegmentationClass") if folder in folders]
    if "gtFine" in folders and any(_cityscapes_key(p, "leftImg8bit", CITYSCAPES_IMAGE) for p in files):
        found["cityscapes"] = "leftImg8bit/ and gtFine/"
    else:
        near["cityscapes"] = "found " + (
            " and ".join(f"{f}/" for f in ("leftImg8bit", "gtFine") if f in folders) or "neither"
        )
    if len(voc) == 2:
        found["cvat" if "labelmap.txt" in names else "voc"] = "JPEGImages/ and SegmentationClass/"
    else:
        near["voc"] = near["cvat"] = "found " + (f"{voc[0]}/ only" if voc else "neither folder")
    tables = [table for table in ("class_dict.csv", "label_colors.txt") if table in names]
    if tables:
        found["camvid"] = tables[0]
    else:
        near["camvid"] = "no class_dict.csv or label_colors.txt"
    sniffed = [path for path in files if path.endswith(".json")][:JSON_SNIFFED]
    for source in sniffed:
        data = _json(root / source)
        kind = "coco" if is_coco(data) else "labelme" if is_labelme(data) else None
        if kind:
            found[kind] = source
            break
    else:
        near["coco"] = near["labelme"] = f"{len(sniffed)} JSON file(s) read, none of either kind"
    if not found:
        pairs = _raster_pairs(files, options)
        paired = _complete(pairs)
        if paired:
            found["index"] = f"{paired} image/mask pairs"
        else:
            near["index"] = f"0 files paired ({describe((p.image, p.mask) for p in pairs)})"
    return found, near


def _detected(root: Path, files: Sequence[str], options: Mapping) -> str:
    found, near = _evidence(root, files, options)
    if len(found) == 1:
        return next(iter(found))
    if not found:
        expected = "\n".join(f"  {fmt}: {LAYOUTS[fmt]}; {near[fmt]}" for fmt in READERS)
        raise ValueError(
            f"{root}: no segmentation dataset recognised.\nFound:\n{inventory(files)}\n"
            f"Looked for (dataset.format):\n{expected}"
        )
    listed = "; ".join(f"{fmt} ({why})" for fmt, why in found.items())
    raise ValueError(f"{root}: more than one mask format found: {listed}; set dataset.format")


def detect_format(root: Path, options: Mapping | None = None) -> str:
    """The segmentation format of a dataset folder, from the files it holds; ValueError when
    none or more than one format is there, naming what was found."""
    return _detected(root, _files(root), options or {})


def _check_paired(root: Path, dataset: MaskDataset) -> None:
    """Refuse a dataset in which no image found its mask: every image would be dropped, and the
    split would come out empty with the cause far upstream."""
    if dataset.pairs and not _complete(dataset.pairs):
        raise ValueError(
            f"{root}: 0 of {len(dataset.pairs)} files were paired as {dataset.format}: "
            f"{describe((p.image, p.mask) for p in dataset.pairs)}. Name the folders with dataset.images "
            "and dataset.masks (folder names; a * stands for the name they share: *annot pairs trainannot/ "
            "with train/), or the masks' name suffix with dataset.mask_suffix"
        )


def read_mask_dataset(root: Path, fmt: str, options: Mapping) -> MaskDataset:
    """Every image and mask under ``root`` in ``fmt`` ('auto' to detect it), paired."""
    files = _files(root)
    fmt = _detected(root, files, options) if fmt == "auto" else fmt
    if fmt not in READERS:
        raise ValueError(f"dataset.format {fmt!r} is not one of auto, {', '.join(READERS)}")
    dataset = READERS[fmt](root, files, options)
    _check_paired(root, dataset)
    return dataset


# --- masks -------------------------------------------------------------------------------------


def _resolve(codes: np.ndarray, keys: Sequence[Hashable], ids: Sequence[int | None]) -> tuple[np.ndarray, dict]:
    """Class ids for ``codes`` (positions in ``keys``, whose ids are ``ids``): a key without an
    id (None) is unknown, its pixels VOID and counted by ``repr`` of the key."""
    counts = np.bincount(codes.ravel(), minlength=len(keys))
    unknown = {repr(key): int(n) for key, i, n in zip(keys, ids, counts, strict=True) if i is None and n}
    table = np.array([VOID if i is None else i for i in ids], dtype=np.uint8)
    return table[codes], unknown


def _refuse_lossy(colours: Sequence[Colour], ids: Sequence[int | None], class_ids: Mapping, where: str) -> None:
    """Raise ``mask_lossy`` when many unknown colours sit next to class colours: compression or
    smoothing blurred the classes, and which one each pixel was is not ours to guess."""
    stray = np.array([c for c, i in zip(colours, ids, strict=True) if i is None], dtype=int).reshape(-1, 3)
    known = np.array([key for key in class_ids if isinstance(key, tuple)], dtype=int).reshape(-1, 3)
    if len(stray) < LOSSY_COLOURS or not len(known):
        return
    near = (np.abs(stray[:, None, :] - known[None, :, :]).max(axis=2) <= NEAR).any(axis=1)
    if near.sum() >= LOSSY_COLOURS:
        raise MaskError(
            "mask_lossy",
            f"{where}: {int(near.sum())} colours within {NEAR} of a class colour but none of them: "
            "the mask went through lossy compression or smoothing; re-export it as PNG",
        )


def _values(values: np.ndarray) -> tuple[np.ndarray, list[Key]]:
    """Codes and keys of an id mask: 8-bit ids are their own codes (no sort needed), wider
    ones are numbered."""
    if values.dtype == np.uint8:
        return values, list(range(256))
    unique, codes = np.unique(values, return_inverse=True)
    return codes.reshape(values.shape), [int(v) for v in unique]


def _raster_mask(root: Path, pair: MaskPair, dataset: MaskDataset) -> tuple[np.ndarray, dict]:
    """A mask image: ids read as they are (palette indices, not their colours) in the formats
    that store ids, colours looked up in the others."""
    where = pair.where
    try:
        with Image.open(root / str(pair.mask)) as image:
            if image.format in ("JPEG", "MPO") and dataset.threshold is None:
                raise MaskError(
                    "mask_lossy",
                    f"{where}: saved as JPEG, which blurs every edge; re-export it as PNG (a binary mask: "
                    "set dataset.mask_threshold)",
                )
            image.load()
            if dataset.threshold is not None:
                grey = np.asarray(image.convert("L"))
                codes, keys = (grey >= dataset.threshold).astype(np.intp), [0, 1]
            elif dataset.format in VALUE_FORMATS and image.mode in VALUE_MODES:
                codes, keys = _values(np.asarray(image.convert("L") if image.mode == "1" else image))
            elif any(isinstance(key, tuple) for key in dataset.class_ids):
                rgb = np.asarray(image.convert("RGB")).astype(np.int64)
                packed, codes = np.unique((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2], return_inverse=True)
                codes = codes.reshape(rgb.shape[:2])
                keys = [(int(v >> 16), int(v >> 8 & 255), int(v & 255)) for v in packed]
            else:
                raise MaskError("mask_unreadable", f"{where}: a {image.mode} image, not single-channel class ids")
    except DECODE_ERRORS as err:
        raise MaskError("mask_unreadable", f"{where}: {err}") from None
    ids = [dataset.class_ids.get(key) for key in keys]
    if keys and isinstance(keys[0], tuple):
        _refuse_lossy(keys, ids, dataset.class_ids, where)
    return _resolve(codes, keys, ids)


def _canvas_size(width: Any, height: Any, where: str) -> tuple[int, int]:
    """An annotation's image size, checked against Pillow's pixel limit (the one cleaning sets
    with :func:`odpipe.core.images.pixel_limit`) before anything that size is allocated."""
    try:
        width, height = int(width), int(height)
    except (TypeError, ValueError):
        raise MaskError("mask_unreadable", f"{where}: no image size ({width!r} x {height!r})") from None
    if width <= 0 or height <= 0:
        raise MaskError("mask_unreadable", f"{where}: image size {width}x{height} is empty")
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > limit:
        raise ImageTooLargeError(f"{where}: {width}x{height} is over the limit of {limit} pixels")
    return width, height


def _painted(canvas: np.ndarray, labels: Mapping[str, int], class_ids: Mapping) -> tuple[np.ndarray, dict]:
    """Ids of a canvas painted with each label's code (0: unpainted, background)."""
    return _resolve(canvas, [None, *labels], [0, *(class_ids.get(label) for label in labels)])


@lru_cache(maxsize=2)  # a worker holds the JSON it is working through (and the one before)
def _coco_entries(path: str, stamp: tuple[int, int]) -> dict[str, tuple]:
    """Image id -> (width, height, [(label, segmentation, annotation id)]) of a COCO file, in
    file order; ``stamp`` (mtime, size) makes an edited file be read again."""
    data = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    names = {c["id"]: str(c["name"]) for c in data["categories"]}
    entries = {str(e["id"]): (e.get("width"), e.get("height"), []) for e in data["images"]}
    for ann in data["annotations"]:
        entry = entries.get(str(ann.get("image_id")))
        if entry is not None:
            label = names.get(ann.get("category_id"), f"category_id {ann.get('category_id')}")
            entry[2].append((label, ann.get("segmentation"), ann.get("id")))
    return entries


def _coco_region(segmentation: Any, height: int, width: int) -> np.ndarray:
    """The pixels of a COCO segmentation: polygons, or RLE (counts as numbers or compressed)."""
    if isinstance(segmentation, list):
        rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = coco_mask.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    region = coco_mask.decode(rle)
    if region.shape != (height, width):
        raise ValueError(f"RLE of size {region.shape[1]}x{region.shape[0]}, image {width}x{height}")
    return region.astype(bool)


def _coco_mask(root: Path, pair: MaskPair, dataset: MaskDataset) -> tuple[np.ndarray, dict]:
    """An image's COCO annotations drawn in file order, so a later one covers an earlier one."""
    path = root / str(pair.mask)
    try:
        stat = path.stat()
        entry = _coco_entries(str(path), (stat.st_mtime_ns, stat.st_size)).get(pair.key)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise MaskError("mask_unreadable", f"{pair.mask}: {err!r}") from None
    if entry is None:
        raise MaskError("mask_unreadable", f"{pair.where}: no image of that id")
    width, height = _canvas_size(entry[0], entry[1], pair.where)
    canvas = np.zeros((height, width), dtype=np.int32)
    labels: dict[str, int] = {}
    for label, segmentation, ann_id in entry[2]:
        if not segmentation:
            raise MaskError("mask_unreadable", f"{pair.where}: annotation {ann_id} has no segmentation")
        try:
            region = _coco_region(segmentation, *canvas.shape)
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as err:
            raise MaskError("mask_unreadable", f"{pair.where}: annotation {ann_id}: {err}") from None
        canvas[region] = labels.setdefault(label, len(labels) + 1)
    return _painted(canvas, labels, dataset.class_ids)


def _draw(draw: ImageDraw.ImageDraw, shape: Mapping, code: int) -> None:
    """One LabelMe shape, its points as LabelMe wrote them (PIL includes the edge pixels)."""
    points = [(float(x), float(y)) for x, y in shape["points"]]
    kind = shape.get("shape_type") or "polygon"  # older LabelMe writes null for polygons
    if kind == "polygon":
        draw.polygon(points, fill=code)
    elif kind == "rectangle":
        (x0, y0), (x1, y1) = points
        draw.rectangle((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), fill=code)
    elif kind == "circle":
        (cx, cy), (px, py) = points
        r = math.hypot(px - cx, py - cy)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=code)
    else:
        raise ValueError(f"a {kind!r} shape has no area (polygon, rectangle and circle do)")


def _labelme_mask(root: Path, pair: MaskPair, dataset: MaskDataset) -> tuple[np.ndarray, dict]:
    """A LabelMe JSON's shapes drawn in order, so a later shape covers an earlier one."""
    data = _json(root / str(pair.mask))
    if not is_labelme(data):
        raise MaskError("mask_unreadable", f"{pair.mask}: not a LabelMe JSON (no shapes and imagePath)")
    canvas = Image.new("I", _canvas_size(data.get("imageWidth"), data.get("imageHeight"), pair.where), 0)
    draw = ImageDraw.Draw(canvas)
    labels: dict[str, int] = {}
    for number, shape in enumerate(data["shapes"]):
        try:
            _draw(draw, shape, labels.setdefault(str(shape.get("label", "")), len(labels) + 1))
        except (TypeError, ValueError, KeyError, AttributeError) as err:
            raise MaskError("mask_unreadable", f"{pair.mask}: shape {number}: {err}") from None
    return _painted(np.asarray(canvas), labels, dataset.class_ids)


def load_index_mask(
    root: Path, pair: MaskPair, dataset: MaskDataset, options: Mapping
) -> tuple[np.ndarray, dict[str, int]]:
    """The pair's mask as (H, W) uint8 class ids (VOID for void), and the pixel count of each
    value, colour or label the class table lacks (``repr`` of it), whose pixels are VOID too.

    Raises :class:`MaskError` (``mask_missing``, ``mask_unreadable``, ``mask_lossy``) for a mask
    that cannot be used; within :func:`odpipe.core.images.pixel_limit`, :class:`ImageTooLargeError`
    for one over the limit. ``options`` is the same section :func:`read_mask_dataset` read; all it
    says is already in ``dataset.class_ids``.
    """
    if pair.mask is None:
        raise MaskError("mask_missing", f"{pair.image}: no mask or annotation found for it")
    load = {"coco": _coco_mask, "labelme": _labelme_mask}.get(dataset.format, _raster_mask)
    return load(root, pair, dataset)
