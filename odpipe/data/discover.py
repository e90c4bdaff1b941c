"""Finding a dataset's files and what it says of itself: the files under a root (symbolic links
followed), a summary of them for errors, whether a JSON document is COCO, and the class table
(with an Ultralytics YAML's splits) a dataset ships."""

from __future__ import annotations

import logging
import os
import posixpath
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

log = logging.getLogger(__name__)
CLASS_TABLES = ("classes.txt", "labels.txt")  # one class name per line; not label files


def walk(root: Path) -> Iterator[str]:
    """The relative POSIX paths of the files under ``root``, symbolic links to files and folders
    followed (pointing a tool at data through links is common), folder by folder in ``os.walk``'s
    order. A link back to a folder it sits in would never end: it is skipped, with a warning."""
    chains = {str(root): (os.path.realpath(root),)}
    for folder, dirs, files in os.walk(root, followlinks=True):
        chain = chains.pop(folder)
        rel = Path(folder).relative_to(root).as_posix()
        kept = []
        for name in dirs:
            path = os.path.join(folder, name)
            real = os.path.realpath(path)
            if real in chain:
                log.warning("%s: a link to %s, a folder it is in; not followed (it would loop)", path, real)
            else:
                chains[path] = (*chain, real)
                kept.append(name)
        dirs[:] = kept
        yield from (name if rel == "." else f"{rel}/{name}" for name in files)


def find(root: Path, match: Callable[[str], bool]) -> list[str]:
    """The relative POSIX paths of the files under ``root`` (see :func:`walk`) whose name
    ``match`` accepts, in the order of ``sorted(root.rglob(...))`` (part by part).

    Listed with ``os.walk`` and strings: ``Path.rglob`` holds a ``DirEntry`` per file of a
    folder and makes a ``Path`` per match, megabytes for a folder of 20k images.
    """
    found = [path for path in walk(root) if match(posixpath.basename(path))]
    return sorted(found, key=lambda path: path.replace("/", "\0"))  # "/" below any name's character


def inventory(files: Sequence[str], folders_shown: int = 8, names_shown: int = 5) -> str:
    """What a dataset folder holds, for an error saying nothing in it was recognised: files per
    folder and extension, then the first few names."""
    if not files:
        return "  no files"
    counts = Counter((posixpath.dirname(f) or ".", posixpath.splitext(f)[1].lower() or "no extension") for f in files)
    by_folder: dict[str, list[str]] = {}
    for (folder, ext), n in sorted(counts.items()):
        by_folder.setdefault(folder, []).append(f"{n} {ext}")
    lines = [f"  {folder}/: {', '.join(kinds)}" for folder, kinds in list(by_folder.items())[:folders_shown]]
    if len(by_folder) > folders_shown:
        lines.append(f"  ... and {len(by_folder) - folders_shown} more folders")
    lines.append(f"  first files: {', '.join(files[:names_shown])}")
    return "\n".join(lines)


def is_coco(data) -> bool:
    return isinstance(data, dict) and {"images", "annotations", "categories"} <= set(data)


@dataclass(frozen=True)
class ClassFile:
    """The class names a dataset ships, and where: a ``classes.txt``/``labels.txt`` (one name a
    line) or an Ultralytics dataset YAML (``names`` as a list or an id-keyed mapping), whose
    ``train``/``val``/``test`` entries (folders or list files, as written) come too."""

    names: list[str]
    file: str  # relative to the dataset root
    splits: dict[str, list[str]] = field(default_factory=dict)
    base: str = "."  # the folder split entries are relative to (the YAML's ``path``, else its own)


def class_file(root: Path) -> ClassFile | None:
    """The dataset's class table: an Ultralytics YAML with ``names`` first (it describes the
    splits too), else the first ``classes.txt`` or ``labels.txt``; None when it ships none."""
    for rel in find(root, lambda name: name.endswith((".yaml", ".yml"))):
        try:
            data = yaml.safe_load((root / rel).read_text(encoding="utf-8-sig"))
        except (yaml.YAMLError, UnicodeDecodeError):
            continue
        names = data.get("names") if isinstance(data, dict) else None
        if isinstance(names, (dict, list)):
            values = [names[k] for k in sorted(names)] if isinstance(names, dict) else names
            splits = {s: _entries(data.get(s)) for s in ("train", "val", "test") if data.get(s)}
            return ClassFile([str(n) for n in values], rel, splits, _base(root, rel, data.get("path")))
    for table in CLASS_TABLES:
        for rel in find(root, lambda name, table=table: name == table):
            lines = (root / rel).read_text(encoding="utf-8-sig").splitlines()
            return ClassFile([line.strip() for line in lines if line.strip()], rel)
    return None


def _entries(value) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def _base(root: Path, yaml_file: str, path) -> str:
    """The folder an Ultralytics YAML's split entries are relative to, inside ``root``: its
    ``path`` where that names a folder of the dataset (the YAML's own folder or the root being
    where it is read from), else the YAML's own folder."""
    here = posixpath.dirname(yaml_file) or "."
    if path:
        for start in (here, "."):
            candidate = posixpath.normpath(posixpath.join(start, str(path)))
            if _inside(candidate) and (root / candidate).is_dir():
                return candidate
    return here


def _inside(rel: str) -> bool:
    return not posixpath.isabs(rel) and rel != ".." and not rel.startswith("../")


def split_entries(root: Path, table: ClassFile, files: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """The split of each of ``files`` that an Ultralytics YAML's ``train``/``val``/``test``
    entries name, and the list files read. An entry is a folder (every file under it) or a
    ``.txt`` of paths (``./`` relative to the list's folder), resolved as Ultralytics does:
    against the YAML's ``path``, a leading ``../`` dropped when that is what exists (Roboflow
    writes ``../train/images`` beside ``train/``). An entry that names nothing here is logged."""
    split_of: dict[str, str] = {}
    read: list[str] = []
    for split, entries in table.splits.items():
        for entry in entries:
            rel = _resolve(root, table, entry)
            if rel is None:
                log.warning("%s: %s entry %r names nothing under %s; ignored", table.file, split, entry, root)
            elif (root / rel).is_dir():
                prefix = "" if rel == "." else rel + "/"
                for file in files:
                    if file.startswith(prefix):
                        split_of.setdefault(file, split)
            else:
                read.append(rel)
                for line in (root / rel).read_text(encoding="utf-8-sig").splitlines():
                    listed = posixpath.normpath(posixpath.join(posixpath.dirname(rel), line.strip()))
                    if line.strip():
                        split_of.setdefault(listed, split)
    return split_of, read


def _resolve(root: Path, table: ClassFile, entry: str) -> str | None:
    here = posixpath.dirname(table.file) or "."
    written = entry.replace("\\", "/")
    tries = [written, written[3:]] if written.startswith("../") else [written]
    for start in (table.base, here, "."):
        for tried in tries:
            rel = posixpath.normpath(posixpath.join(start, tried))
            if _inside(rel) and (root / rel).exists():
                return rel
    return None
