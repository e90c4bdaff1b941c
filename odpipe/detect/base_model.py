"""The base model a run starts from: a ``pipeline.config`` and, for a TF2 Detection Zoo model,
the checkpoint to fine-tune from.

``model.source`` is a zoo tarball URL (downloaded once into the cache, resumable, atomic and
checked against ``model.sha256``), a tarball or unpacked zoo folder the user already has
(offline), or a bare ``.config`` file for a model trained from scratch. Whatever the source,
the stage output has one layout: ``pipeline.config``, ``checkpoint/ckpt-0.*`` when there is
one, and ``source.json`` recording where it came from with every file's sha256. The zoo's
``saved_model/`` is left out: fine-tuning never reads it.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from odpipe.core.manifest import build_manifest, sha256_file
from odpipe.data.download import GB, extract, fetch_archive, is_url

PIPELINE_CONFIG = "pipeline.config"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_PREFIX = f"{CHECKPOINT_DIR}/ckpt-0"
# The cap on what a model tarball may unpack to. Not a config key: the base_model stage reads
# only model.source and model.sha256, and no zoo model comes near it; a tarball that does is
# the wrong file (or a hostile one).
MAX_EXTRACT_GB = 20


def model_root(folder: Path, source: str) -> Path:
    """The one folder under ``folder`` holding a ``pipeline.config`` (a zoo tarball wraps
    everything in ``<model name>/``)."""
    found = sorted(path.parent for path in folder.rglob(PIPELINE_CONFIG))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise ValueError(f"model.source {source}: expected one {PIPELINE_CONFIG}, found {what}")
    return found[0]


def _copy_model(root: Path, dst: Path) -> None:
    shutil.copy2(root / PIPELINE_CONFIG, dst / PIPELINE_CONFIG)
    if (root / CHECKPOINT_DIR).is_dir():
        shutil.copytree(root / CHECKPOINT_DIR, dst / CHECKPOINT_DIR)


def fetch_base_model(
    source: str, dst: Path, cache_dir: Path, sha256: str | None = None, max_extract_gb: float = MAX_EXTRACT_GB
) -> dict:
    """Fill ``dst`` from ``source`` and return the provenance record written beside it. A
    tarball that would unpack to more than ``max_extract_gb`` is refused before unpacking."""
    local = None if is_url(source) else Path(source).expanduser()
    if local is not None and local.is_dir():
        _copy_model(model_root(local, source), dst)
        return build_manifest(dst, {"source": source, "sha256": None})
    fetched = fetch_archive(source, cache_dir, sha256, key="model.source")
    if fetched.suffix == ".config":
        shutil.copy2(fetched, dst / PIPELINE_CONFIG)
    else:
        with tempfile.TemporaryDirectory(dir=dst.parent) as unpacked:
            extract(fetched, Path(unpacked), int(max_extract_gb * GB), key=f"{__name__}.MAX_EXTRACT_GB")
            _copy_model(model_root(Path(unpacked), source), dst)
    return build_manifest(dst, {"source": source, "sha256": sha256_file(fetched)})


def checkpoint_prefix(base_dir: Path) -> Path:
    """The fine-tune checkpoint of a fetched base model: zoo tarballs hold ``ckpt-0``; a
    folder of the user's may hold a later one, and then the highest-numbered is taken. The
    path may not exist: checking that is the pipeline_config stage's job, with a clear error."""
    indexes = sorted((base_dir / CHECKPOINT_DIR).glob("*.index"), key=lambda p: _checkpoint_number(p.stem))
    return indexes[-1].with_suffix("") if indexes else base_dir / CHECKPOINT_PREFIX


def _checkpoint_number(stem: str) -> int:
    match = re.fullmatch(r".*-(\d+)", stem)
    return int(match.group(1)) if match else -1
