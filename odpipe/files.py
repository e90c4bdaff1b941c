"""Reading and writing the pipeline's small files: JSON, JSON Lines, CSV, fresh folders."""

from __future__ import annotations

import csv
import json
import os
import shutil
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


def write_jsonl(rows: Iterable[dict], path: Path | str) -> None:
    """One JSON object per line, streamed to a temporary file and renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as handle:
        handle.writelines(json.dumps(row, sort_keys=True) + "\n" for row in rows)
    os.replace(tmp, path)


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
