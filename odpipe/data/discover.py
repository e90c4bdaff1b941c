"""Finding a dataset's files and what it says of itself: the files under a root (symbolic links
followed), a summary of them for errors, whether a JSON document is COCO, and the class names a
YOLO dataset ships."""

from __future__ import annotations

import logging
import os
import posixpath
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
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


def yolo_class_names(root: Path) -> list[str] | None:
    """Class names from ``classes.txt`` or ``labels.txt`` (one per line) or a ``data.yaml``
    ``names`` entry."""
    for table in CLASS_TABLES:
        for path in sorted(root.rglob(table)):
            return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    for path in sorted(root.rglob("data.y*ml")):
        names = (yaml.safe_load(path.read_text()) or {}).get("names")
        if isinstance(names, dict):
            return [str(names[k]) for k in sorted(names)]
        if isinstance(names, list):
            return [str(n) for n in names]
    return None
