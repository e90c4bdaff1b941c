"""Dataset manifests: every file with its sha256 and size, so a data change is visible."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def build_manifest(root: Path, source: dict) -> dict:
    """Describe where the data came from and every file under ``root`` (sorted, relative
    POSIX paths), so two versions of a dataset can be compared file by file."""
    files = [
        {"file": path.relative_to(root).as_posix(), "sha256": sha256_file(path), "bytes": path.stat().st_size}
        for path in sorted(p for p in root.rglob("*") if p.is_file())
    ]
    return {"source": source, "num_files": len(files), "files": files}


def folder_digest(root: Path) -> str:
    """One sha256 for every file under ``root``, names included: a data version to tag runs
    with (two runs with the same digest trained on the same bytes)."""
    digest = hashlib.sha256()
    for entry in build_manifest(root, {})["files"]:
        digest.update(f"{entry['file']}\0{entry['sha256']}\n".encode())
    return digest.hexdigest()


def left_out(manifest: Path) -> list[dict[str, str]]:
    """The files of the source that ingest did not bring in, with why (``{file, reason, why}``)."""
    return json.loads(manifest.read_text()).get("left_out", [])
