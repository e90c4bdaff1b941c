"""Reading and writing the pipeline's small files: JSON, JSON Lines, CSV, fresh folders."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path


def fresh_dir(path: Path | str) -> Path:
    """An empty folder at ``path``: a stage owns its outputs, and stale files from an
    earlier run by hand must not end up in what DVC caches."""
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def write_text_atomic(text: str, path: Path | str) -> None:
    """Readers (and a run resumed after a kill) see the old file or the new one, never half
    of one: write beside it, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(data: dict, path: Path | str) -> None:
    """Pretty, key-sorted JSON: stable bytes for DVC and readable diffs for people."""
    write_text_atomic(json.dumps(data, indent=2, sort_keys=True) + "\n", path)


def read_json(path: Path | str) -> dict:
    return json.loads(Path(path).read_text())


def write_jsonl(rows: Iterable[dict], path: Path | str) -> None:
    """One JSON object per line, streamed to a temporary file and renamed into place."""
    write_lines((jsonl_line(row) for row in rows), path)


def jsonl_line(row: dict) -> str:
    """A row as :func:`write_jsonl` writes it, for rows kept as text until they are written."""
    return json.dumps(row, sort_keys=True) + "\n"


def write_lines(lines: Iterable[str], path: Path | str) -> None:
    """Lines (each ending in a newline) streamed to a temporary file and renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as handle:
        handle.writelines(lines)
    os.replace(tmp, path)


SCRATCH_CACHE_KIB = 256


def scratch_db() -> sqlite3.Connection:
    """A private SQLite database in a temporary file, deleted when closed: per-image records
    that a stage needs again later wait there instead of in memory, which would grow with the
    dataset. Its page cache is kept small (the OS caches the file anyway); nothing is synced,
    as nothing in it outlives the process."""
    db = sqlite3.connect("")
    db.execute(f"PRAGMA cache_size = -{SCRATCH_CACHE_KIB}")
    db.execute("PRAGMA journal_mode = OFF")
    db.execute("PRAGMA synchronous = OFF")
    return db


def name_key(name: str) -> bytes:
    """A file name as a SQLite key: its UTF-8 bytes sort as the strings do (code point
    order), and a name with undecodable bytes (surrogate escapes) is stored too."""
    return name.encode("utf-8", "surrogatepass")


def key_name(key: bytes) -> str:
    return key.decode("utf-8", "surrogatepass")


def read_jsonl(path: Path | str) -> Iterator[dict]:
    """Rows one at a time, so that a large file is never held whole."""
    with Path(path).open() as handle:
        yield from (json.loads(line) for line in handle if line.strip())


def write_csv(rows: Iterable[dict], columns: Sequence[str], path: Path | str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path | str) -> list[dict]:
    return list(iter_csv(path))


def iter_csv(path: Path | str) -> Iterator[dict]:
    """Rows one at a time: a 100k-image split's CSV is never held whole."""
    with Path(path).open(newline="") as handle:
        yield from csv.DictReader(handle)


def unique_stems(paths: Sequence[Path]) -> list[str]:
    """An output name per input path: its stem, numbered when inputs from several folders share one."""
    used: set[str] = set()
    names = []
    for path in paths:
        name = next(n for n in (f"{path.stem}{s}" for s in ("", *range(1, len(paths) + 1))) if n not in used)
        used.add(name)
        names.append(name)
    return names


# Not hidden, still not data: what macOS adds to the zip archives it makes, and the thumbnail
# cache and folder settings Windows Explorer leaves in folders of pictures.
LITTER = {"__MACOSX", "Thumbs.db", "desktop.ini"}


def is_hidden(name: str) -> bool:
    """Whether a file or folder is OS litter (``.DS_Store``, ``._x.jpg``, ``.ipynb_checkpoints``,
    ``__MACOSX``, ``Thumbs.db``, ``desktop.ini``) rather than data: never an input, never a class."""
    return name.startswith(".") or name in LITTER
