"""Annotation formats users arrive with, all parsed into :class:`~odpipe.data.annotations.Annotation`.

Supported: Pascal VOC XML (LabelImg's flat folders and the VOC directory layout), CSV with one
row per box, COCO JSON, LinkedAI's web-tool JSON and YOLO txt. Each format's own coordinate
convention is followed (VOC 1-based, YOLO relative to the EXIF-rotated image, COCO, LinkedAI and
CSV 0-based pixels) and every box leaves here in 0-based pixel edges. Every reader returns the same
:class:`Parsed`: annotations keyed by the image's path relative to the dataset root, and an
:class:`~odpipe.detect.clean.Issue`-style record for every annotation it could not use.

Annotations name their images in their own ways (a ``<filename>``, a ``file_name``, a stem);
:class:`ImageIndex` resolves those names against the images actually on disk. A path written
inside an annotation (VOC's ``<path>``) is never trusted: it is the labeller's machine's path.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import posixpath
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from odpipe.core.boxes import Box
from odpipe.core.files import key_name, name_key, scratch_db
from odpipe.core.images import DECODE_ERRORS, IMAGE_SUFFIXES, displayed_size
from odpipe.data.annotations import Annotation, AnnotationError, read_voc
from odpipe.data.cleaning import Issue
from odpipe.data.discover import CLASS_TABLES, ClassFile, class_file, find, inventory, is_coco, split_entries
from odpipe.data.pairing import Convention, describe, pair
from odpipe.data.splitting import folder_split


class AnnotationStore:
    """Annotations by image, in a temporary SQLite file rather than in memory: they grow with
    the dataset (about 1 KB an image as Python objects), and cleaning needs each only when it
    decides on its image (and a duplicate's first copy once more)."""

    def __init__(self) -> None:
        self._db = scratch_db()
        self._db.execute(
            "CREATE TABLE annotation (image BLOB PRIMARY KEY, width INT, height INT, data BLOB, source BLOB)"
        )

    def add(self, image: str, annotation: Annotation, source: str) -> None:
        """``image``'s annotation, read from the file ``source``."""
        data = pickle.dumps(annotation, pickle.HIGHEST_PROTOCOL)
        row = (name_key(image), annotation.width, annotation.height, data, name_key(source))
        self._db.execute("INSERT OR REPLACE INTO annotation VALUES (?, ?, ?, ?, ?)", row)

    def sources(self) -> Iterator[tuple[str, str]]:
        """(annotation file, image) of every annotation, in the order they were added."""
        for source, image in self._db.execute("SELECT source, image FROM annotation ORDER BY rowid"):
            yield key_name(source), key_name(image)

    def size(self, image: str) -> tuple[int, int] | None:
        """The size the image's annotation claims (0 when unknown), without unpickling it;
        None when the image has no annotation."""
        return self._db.execute("SELECT width, height FROM annotation WHERE image = ?", (name_key(image),)).fetchone()

    def __contains__(self, image: object) -> bool:
        query = "SELECT 1 FROM annotation WHERE image = ?"
        return isinstance(image, str) and self._db.execute(query, (name_key(image),)).fetchone() is not None

    def get(self, image: str) -> Annotation | None:
        row = self._db.execute("SELECT data FROM annotation WHERE image = ?", (name_key(image),)).fetchone()
        return pickle.loads(row[0]) if row else None

    def items(self) -> Iterator[tuple[str, Annotation]]:
        """In the order they were added."""
        for image, data in self._db.execute("SELECT image, data FROM annotation ORDER BY rowid"):
            yield key_name(image), pickle.loads(data)

    def __len__(self) -> int:
        return self._db.execute("SELECT count(*) FROM annotation").fetchone()[0]


@dataclass
class Parsed:
    """What a reader made of a dataset folder: the annotations, what it could not use, and
    which files it read (for the cleaning report's account of every file)."""

    format: str = ""
    annotations: AnnotationStore = field(default_factory=AnnotationStore)
    issues: list[Issue] = field(default_factory=list)  # annotation files or entries not used
    box_issues: list[Issue] = field(default_factory=list)  # boxes not used, their image kept
    read: dict[str, str] = field(default_factory=dict)  # annotation file -> "" when used, else why not
    tables: dict[str, str] = field(default_factory=dict)  # other files read -> NOT_INPUT code (class_table, ...)
    names: list[str] | None = None  # the classes the dataset declares, in its order (COCO, YOLO)
    yaml_splits: dict[str, str] | None = None  # file -> split its dataset YAML names (yaml_split_of)

    def record(self, image: str, annotation: Annotation, source: str) -> None:
        self.annotations.add(image, annotation, source)
        self.read[source] = ""

    def unused(self, source: str, reason: str) -> None:
        """Something of annotation file ``source`` could not be used: unless some other part of
        it was, ``reason`` is the file's own."""
        self.read.setdefault(source, reason)


def _suffix(name: str) -> str:
    """``PurePath.suffix`` of a file name, without making a path (which interns its parts)."""
    dot = name.rfind(".")
    return name[dot:] if 0 < dot < len(name) - 1 else ""


def _stem(name: str) -> str:
    return name[: -len(_suffix(name))] if _suffix(name) else name


class ImageIndex:
    """The images under a dataset root, found by relative path, by file name or by stem."""

    def __init__(self, root: Path) -> None:
        self.root = root
        images = find(root, lambda name: _suffix(name).lower() in IMAGE_SUFFIXES)
        self.paths = sorted(rel for rel in images if os.path.isfile(os.path.join(root, rel)))
        self._by_name: dict[str, list[str]] = {}
        self._by_stem: dict[str, list[str]] = {}
        for rel in self.paths:
            name = posixpath.basename(rel)
            self._by_name.setdefault(name.lower(), []).append(rel)
            self._by_stem.setdefault(_stem(name), []).append(rel)

    def resolve(self, name: str, near: str | None = None) -> str | None:
        """The image a written name refers to: the exact relative path, else the one image of
        that file name (a folder next to ``near`` preferred), else None."""
        name = name.replace("\\", "/")
        if name in self.paths:
            return name
        return self._pick(self._by_name.get(PurePosixPath(name).name.lower(), []), near)

    def by_stem(self, stem: str, near: str | None = None) -> str | None:
        return self._pick(self._by_stem.get(stem, []), near)

    @staticmethod
    def _pick(candidates: list[str], near: str | None) -> str | None:
        if len(candidates) == 1:
            return candidates[0]
        if near is not None:
            siblings = [c for c in candidates if PurePosixPath(c).parent == PurePosixPath(near).parent]
            if len(siblings) == 1:
                return siblings[0]
        return None


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _add(parsed: Parsed, image: str | None, annotation: Annotation, source: str) -> None:
    """Record an annotation for ``image``, or say why it cannot be used."""
    if image is None:
        parsed.issues.append(Issue(source, "image_missing", f"no image found for {annotation.filename!r}"))
        parsed.unused(source, "image_missing")
    elif image in parsed.annotations:
        parsed.issues.append(Issue(source, "annotation_duplicate", f"{image} is already annotated elsewhere"))
        parsed.unused(source, "annotation_duplicate")
    else:
        parsed.record(image, Annotation(image, annotation.width, annotation.height, annotation.boxes), source)


def read_voc_dataset(root: Path, index: ImageIndex, options: Mapping) -> Parsed:
    """LabelImg folders (XML next to the image) and the VOC layout (Annotations/ + JPEGImages/)."""
    parsed = Parsed()
    partner = _label_images(root, index, options)
    for source in find(root, lambda name: name.endswith(".xml")):
        image = partner.get(source) or index.by_stem(_stem(posixpath.basename(source)), near=source)
        try:
            annotation = read_voc(root / source)
        except AnnotationError as err:
            parsed.issues.append(Issue(image or source, "annotation_invalid", str(err)))
            parsed.unused(source, "annotation_invalid")
            continue
        if not annotation.width or not annotation.height:
            parsed.box_issues.append(Issue(source, "size_missing", "no <size> (or 0x0): the image's own size is used"))
        if source not in partner and (image is None or posixpath.dirname(image) != posixpath.dirname(source)):
            image = index.resolve(annotation.filename, near=source) or image
        _add(parsed, image, annotation, source)
    return parsed


CSV_FIELDS = ("filename", "width", "height", "xmin", "ymin", "xmax", "ymax", "class")


def _label_images(root: Path, index: ImageIndex, options: Mapping) -> dict[str, str]:
    """Label file -> image, paired by the folders the user named (``dataset.images`` and
    ``dataset.labels``); empty without them, each reader then finding images by name."""
    if not options.get("images") and not options.get("labels"):
        return {}
    labels = find(root, lambda name: _suffix(name).lower() in (".xml", ".txt"))
    convention = Convention.from_options(options.get("images"), options.get("labels"), ())
    return {label: image for image, label in pair([*index.paths, *labels], convention) if image and label}


def read_csv_dataset(root: Path, index: ImageIndex, options: Mapping) -> Parsed:
    """One row per box; ``dataset.csv_columns`` maps our names to the file's own
    (``{filename: image_path, class: label}``); width and height may be absent."""
    columns = {name: (options.get("csv_columns") or {}).get(name, name) for name in CSV_FIELDS}
    parsed = Parsed()
    grouped: dict[str, list[Box]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    first_source: dict[str, str] = {}
    for source in find(root, lambda name: name.endswith(".csv")):
        path = root / source
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [
                columns[c]
                for c in ("filename", "xmin", "ymin", "xmax", "ymax", "class")
                if columns[c] not in (reader.fieldnames or [])
            ]
            if missing:
                parsed.issues.append(Issue(source, "annotation_invalid", f"{source}: no column(s) {missing}"))
                parsed.unused(source, "annotation_invalid")
                continue
            for line, row in enumerate(reader, start=2):
                where = f"{source}:{line}"
                try:
                    box = Box(
                        row[columns["class"]].strip(),
                        *(float(row[columns[c]]) for c in ("xmin", "ymin", "xmax", "ymax")),
                    )
                except (TypeError, ValueError) as err:
                    parsed.issues.append(Issue(where, "annotation_invalid", f"{where}: bad box ({err})"))
                    parsed.unused(source, "annotation_invalid")
                    continue
                image = index.resolve(row[columns["filename"]], near=source)
                if image is None:
                    parsed.issues.append(
                        Issue(where, "image_missing", f"no image found for {row[columns['filename']]!r}")
                    )
                    parsed.unused(source, "image_missing")
                    continue
                grouped.setdefault(image, []).append(box)
                first_source.setdefault(image, source)
                parsed.read[source] = ""
                if row.get(columns["width"]) and row.get(columns["height"]):
                    sizes[image] = (int(float(row[columns["width"]])), int(float(row[columns["height"]])))
        parsed.unused(source, "annotation_empty")  # unless a row of it was used
    for image, boxes in grouped.items():
        width, height = sizes.get(image, (0, 0))
        parsed.record(image, Annotation(image, width, height, tuple(boxes)), first_source[image])
    return parsed


def _json_documents(root: Path, parsed: Parsed, is_kind: Callable[[object], bool]) -> Iterator[tuple[str, Any]]:
    """(relative path, content) of every JSON file under ``root`` that ``is_kind`` accepts;
    a file that is not JSON at all is reported as ``annotation_invalid``."""
    for source in find(root, lambda name: name.endswith(".json")):
        try:
            data = json.loads((root / source).read_text(encoding="utf-8-sig"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            parsed.issues.append(Issue(source, "annotation_invalid", f"{source}: not JSON ({err})"))
            parsed.unused(source, "annotation_invalid")
            continue
        if is_kind(data):
            yield source, data


def is_linkedai(data) -> bool:
    return (
        isinstance(data, list)
        and bool(data)
        and all(isinstance(d, dict) and "tags" in d and "image" in d for d in data)
    )


def read_coco_dataset(root: Path, index: ImageIndex, options: Mapping) -> Parsed:
    """COCO detection JSON: ``bbox`` is x, y, w, h in 0-based pixels. ``iscrowd`` regions
    are kept as crowd boxes: never trained on, ignored by evaluation as COCO's protocol does.
    The classes are the categories some annotation uses, in id order: Roboflow's exports
    declare the project itself as category 0, which no box has."""
    parsed = Parsed(names=[])
    for source, data in _json_documents(root, parsed, is_coco):
        names = {c["id"]: str(c["name"]) for c in data["categories"]}
        used = {ann.get("category_id") for ann in data["annotations"]}
        parsed.names += [names[i] for i in sorted(names) if i in used and names[i] not in parsed.names]
        boxes: dict[int, list[Box]] = {}
        for ann in data["annotations"]:
            image_id = ann.get("image_id")
            try:
                x, y, w, h = (float(v) for v in ann["bbox"])
                label = names[ann["category_id"]]
            except (KeyError, TypeError, ValueError) as err:
                parsed.issues.append(
                    Issue(f"{source}#{ann.get('id')}", "annotation_invalid", f"bad annotation ({err!r})")
                )
                parsed.unused(source, "annotation_invalid")
                continue
            boxes.setdefault(image_id, []).append(Box(label, x, y, x + w, y + h, crowd=bool(ann.get("iscrowd"))))
        for image in data["images"]:
            annotation = Annotation(
                str(image["file_name"]),
                int(image.get("width") or 0),
                int(image.get("height") or 0),
                tuple(boxes.get(image["id"], ())),
            )
            _add(parsed, index.resolve(annotation.filename, near=source), annotation, source)
        parsed.unused(source, "annotation_empty")  # unless an image of it was used
    return parsed


def read_linkedai_dataset(root: Path, index: ImageIndex, options: Mapping) -> Parsed:
    """LinkedAI exports: a list of ``{image, width, height, tags: [{name, type, pos}]}``,
    numbers often as strings; tags other than bounding boxes are reported and skipped."""
    parsed = Parsed()
    for source, data in _json_documents(root, parsed, is_linkedai):
        for entry in data:
            boxes = []
            for tag in entry["tags"]:
                if not isinstance(tag, dict) or tag.get("type") != "bounding_box":
                    kind = tag.get("type") if isinstance(tag, dict) else type(tag).__name__
                    parsed.box_issues.append(
                        Issue(f"{source}:{entry['image']}", "not_a_box", f"tag of type {kind!r} skipped")
                    )
                    continue
                try:
                    pos = tag["pos"]
                    x, y, w, h = (float(pos[k]) for k in ("x", "y", "w", "h"))
                    boxes.append(Box(str(tag["name"]), x, y, x + w, y + h))
                except (KeyError, TypeError, ValueError) as err:
                    parsed.issues.append(
                        Issue(f"{source}:{entry['image']}", "annotation_invalid", f"bad tag ({err!r})")
                    )
                    parsed.unused(source, "annotation_invalid")
            annotation = Annotation(
                str(entry["image"]),
                int(float(entry.get("width") or 0)),
                int(float(entry.get("height") or 0)),
                tuple(boxes),
            )
            _add(parsed, index.resolve(annotation.filename, near=source), annotation, source)
        parsed.unused(source, "annotation_empty")  # unless an image of it was used
    return parsed


def read_yolo_dataset(root: Path, index: ImageIndex, options: Mapping) -> Parsed:
    """YOLO txt: ``class cx cy w h`` normalised, one file per image (next to it or in a
    parallel ``labels/`` folder). Box pixels need the image's size as displayed, EXIF rotation
    applied (as Ultralytics reads it), taken from the file's header."""
    table = class_file(root)
    if table is None:
        raise ValueError(f"{root}: YOLO labels need class names: a classes.txt, labels.txt or a dataset YAML's names")
    parsed = Parsed(names=table.names, tables={table.file: "class_table"})
    names = table.names
    partner = _label_images(root, index, options)
    yaml_split_of(root, table, index, parsed)  # its split lists are tables, not labels
    for source in find(root, lambda name: name.endswith(".txt")):
        path = root / source
        if source in parsed.tables or path.name in CLASS_TABLES or path.parent.name == "Main":
            continue
        image = partner.get(source) or index.by_stem(path.stem, near=source.replace("labels/", "images/"))
        if image is None and not _yolo_lines(path.read_text(errors="replace")):
            continue  # a README.txt or notes: not a label file, the report says so
        if image is None:
            parsed.issues.append(Issue(source, "image_missing", f"no image named {path.stem}.*"))
            parsed.unused(source, "image_missing")
            continue
        try:
            width, height = displayed_size(root / image)
        except DECODE_ERRORS:
            width = height = 0  # cleaning reports the unreadable image itself
        boxes = []
        for line_no, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                cls, cx, cy, w, h = line.split()[:5]
                label = names[int(cls)]
                cx, cy, w, h = (float(v) for v in (cx, cy, w, h))
            except (ValueError, IndexError) as err:
                parsed.issues.append(
                    Issue(f"{source}:{line_no}", "annotation_invalid", f"bad YOLO line {line!r} ({err})")
                )
                parsed.unused(source, "annotation_invalid")
                continue
            boxes.append(
                Box(label, (cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
            )
        _add(parsed, image, Annotation(image, width, height, tuple(boxes)), source)
    return parsed


def _yolo_lines(text: str) -> bool:
    """Whether a text reads as YOLO labels (empty, or lines of five numbers or more)."""
    for line in text.splitlines():
        try:
            if line.strip() and len([float(v) for v in line.split()]) < 5:
                return False
        except ValueError:
            return False
    return True


READERS: dict[str, Callable[[Path, ImageIndex, Mapping], Parsed]] = {
    "voc": read_voc_dataset,
    "csv": read_csv_dataset,
    "coco": read_coco_dataset,
    "linkedai": read_linkedai_dataset,
    "yolo": read_yolo_dataset,
}


def detect_format(root: Path) -> str:
    """The annotation format of a dataset folder, from the files it holds."""
    for path in sorted(root.rglob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if is_coco(data):
            return "coco"
        if is_linkedai(data):
            return "linkedai"
    if any(root.rglob("*.xml")):
        return "voc"
    if any(root.rglob("*.csv")):
        return "csv"
    if class_file(root) is not None:
        return "yolo"
    raise _unrecognised(root)


def _unrecognised(root: Path) -> ValueError:
    """The error for a folder in no format: what it holds, and what each format looks for."""
    files = find(root, lambda name: True)
    count = Counter(_suffix(path).lower() for path in files)
    json_files, txt_files = count[".json"], count[".txt"]
    expected = {
        "voc": "Pascal VOC XML files (LabelImg's), one per image; found no .xml file",
        "csv": "a CSV of filename,width,height,class,xmin,ymin,xmax,ymax; found no .csv file",
        "coco": f"a COCO JSON (images, annotations, categories); {json_files} .json file(s), none COCO",
        "linkedai": f"LinkedAI JSON exports; {json_files} .json file(s), none LinkedAI",
        "yolo": f"YOLO .txt labels with classes.txt, labels.txt or a dataset YAML's names; {txt_files} .txt file(s), "
        "no class names",
    }
    looked_for = "\n".join(f"  {fmt}: {what}" for fmt, what in expected.items())
    return ValueError(
        f"{root}: no annotation format recognised.\nFound:\n{inventory(files)}\n"
        f"Looked for (dataset.format):\n{looked_for}"
    )


def read_dataset(root: Path, fmt: str, options: Mapping) -> tuple[ImageIndex, Parsed]:
    """Parse a dataset folder in ``fmt`` ('auto' to detect it)."""
    fmt = detect_format(root) if fmt == "auto" else fmt
    if fmt not in READERS:
        raise ValueError(f"dataset.format {fmt!r} is not one of auto, {', '.join(READERS)}")
    index = ImageIndex(root)
    parsed = READERS[fmt](root, index, options)
    parsed.format = fmt
    if index.paths and not len(parsed.annotations):
        raise _nothing_annotated(root, index, parsed)
    if parsed.names is None:  # named in the boxes alone: sorted, for an order that does not depend on file order
        parsed.names = sorted({box.label for _, annotation in parsed.annotations.items() for box in annotation.boxes})
    return index, parsed


def _nothing_annotated(root: Path, index: ImageIndex, parsed: Parsed) -> ValueError:
    """The error for images none of which found an annotation: every one would be dropped and
    the splits come out empty, far from the cause. Where the images and the annotation files
    are, and what became of the annotation files."""
    found = describe([*((image, None) for image in index.paths), *((None, source) for source in parsed.read)])
    fates = Counter(reason or "used" for reason in parsed.read.values())
    why = f" ({', '.join(f'{n} {reason}' for reason, n in sorted(fates.items()))})" if fates else ""
    return ValueError(
        f"{root}: 0 of {len(index.paths)} images found an annotation as {parsed.format}: {found}{why}. "
        "Name the folders with dataset.images and dataset.labels, or set dataset.format (auto detects it)"
    )


VOC_LISTS = ("train", "val", "trainval", "test")


def split_lists(root: Path, index: ImageIndex, parsed: Parsed) -> dict[str, str]:
    """Image -> split (or ``trainval``) of the splits the dataset comes with: VOC ImageSets
    lists, an Ultralytics YAML's ``train``/``val``/``test``, then split folders (``train/``,
    ``valid/``, ``val2017/``); the list files read go to ``parsed.tables``."""
    listed = voc_imagesets(root, index, parsed.tables)
    table = class_file(root)
    if table is not None and table.splits:
        named = yaml_split_of(root, table, index, parsed)
        listed = {image: named[image] for image in index.paths if image in named} | listed
        parsed.tables.setdefault(table.file, "split_list")
    folders = {image: split for image in index.paths if (split := folder_split(image.split("/")[:-1]))}
    return folders | listed


def yaml_split_of(root: Path, table: ClassFile, index: ImageIndex, parsed: Parsed) -> dict[str, str]:
    """File -> split that the dataset YAML ``table``'s entries name (:func:`split_entries`),
    resolved once per dataset (the YOLO reader needs its list files, the split its images; an
    entry naming nothing is logged once); the list files read go to ``parsed.tables``."""
    if parsed.yaml_splits is None:
        parsed.yaml_splits, read = split_entries(root, table, index.paths)
        parsed.tables |= {file: "split_list" for file in read if file not in parsed.tables}
    return parsed.yaml_splits


def voc_imagesets(root: Path, index: ImageIndex, read: dict[str, str] | None = None) -> dict[str, str]:
    """Image name -> list name from VOC's ``ImageSets/Main/{train,val,trainval,test}.txt``;
    each list file read goes into ``read`` (as a ``split_list``)."""
    listed: dict[str, str] = {}
    for list_name in VOC_LISTS:
        for path in sorted(root.rglob(f"ImageSets/Main/{list_name}.txt")):
            if read is not None:
                read[_rel(path, root)] = "split_list"
            for image_id in path.read_text().split():
                image = index.by_stem(image_id, near=_rel(path.parents[2] / "JPEGImages" / "x", root))
                if image is not None and image not in listed:
                    listed[image] = list_name
    return listed
