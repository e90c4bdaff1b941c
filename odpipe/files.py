"""Reading and writing the pipeline's small files: JSON, JSON Lines, CSV, fresh folders."""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
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
    write_text_atomic("".join(json.dumps(row, sort_keys=True) + "\n" for row in rows), path)


def read_jsonl(path: Path | str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def write_csv(rows: Iterable[dict], columns: Sequence[str], path: Path | str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path | str) -> list[dict]:
    with Path(path).open(newline="") as handle:
        return list(csv.DictReader(handle))


def write_files(files: Mapping[str, bytes], root: Path | str) -> None:
    """Write each ``relative name -> bytes`` under ``root``, creating sub-folders."""
    for name, data in files.items():
        path = Path(root) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
