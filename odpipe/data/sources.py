"""Where a dataset comes from: generated (synthetic; synthetic_segment with masks;
synthetic_classify as class folders), a folder on disk (local), or a .zip/.tar archive on disk or
on the web (archive)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

from odpipe.core.files import is_hidden
from odpipe.core.images import IMAGE_SUFFIXES
from odpipe.core.parallel import available_cores
from odpipe.data.cleaning import NOT_INPUT
from odpipe.data.discover import walk
from odpipe.data.download import GB, extract, fetch_archive
from odpipe.data.synthetic import SyntheticSpec, generate, generate_classification, generate_segmentation

# Every annotation format's files: VOC XML, CSV, COCO/LinkedAI JSON, YOLO txt + data.yaml.
ANNOTATION_SUFFIXES = (".xml", ".csv", ".json", ".txt", ".yaml", ".yml")


def copy_local(src: Path, dst: Path, all_files: bool = False) -> list[dict[str, str]]:
    """Copy every image and annotation under ``src`` into ``dst``, keeping sub-folders; symbolic
    links are followed (see :func:`odpipe.data.discover.walk`). Returns the files left behind,
    each with a reason code and why (``{"file", "reason", "why"}``, the codes of
    :data:`odpipe.data.cleaning.NOT_INPUT`), for the manifest: nothing goes missing unsaid.

    Other files (notes, thumbnails, .DS_Store) stay behind: they are not data. With
    ``all_files`` (classification's ``dataset.copy_all_files``) every file but hidden ones and
    OS litter is copied instead: a class folder's files are all its inputs, and cleaning reports
    those that are no image rather than this copy leaving them behind unseen.
    """
    if not src.is_dir():
        raise FileNotFoundError(f"dataset.path {src} is not a folder")
    left_out = []
    for rel in sorted(walk(src)):
        why = _left_out(Path(rel), all_files)
        if why:
            left_out.append({"file": rel, **why})
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, target)  # a link's target: what it points at is the data
    if not dst.is_dir() or not any(dst.iterdir()):
        raise FileNotFoundError(f"dataset.path {src} holds no images or annotations")
    return left_out


def _left_out(rel: Path, all_files: bool) -> dict[str, str] | None:
    """Why ``copy_local`` leaves the file at ``rel`` (relative to its source folder) behind
    (reason code and words); None when it copies it."""
    hidden = any(is_hidden(part) for part in rel.parts)
    if (not hidden) if all_files else rel.suffix.lower() in IMAGE_SUFFIXES + ANNOTATION_SUFFIXES:
        return None
    if hidden:
        return {"reason": "os_litter", "why": NOT_INPUT["os_litter"]}
    return {"reason": "not_data", "why": f"{NOT_INPUT['not_data']} ({rel.suffix or 'no extension'})"}


def ingest(dataset: Mapping, dst: Path, cache_dir: Path) -> list[dict[str, str]]:
    """Fill ``dst`` from the configured source (downloads are kept in ``cache_dir``); returns the
    files of a local folder left behind, with why. An archive that would unpack to more than
    ``dataset.max_extract_gb`` is refused before anything is written."""
    source = dataset["source"]
    if source == "synthetic":
        generate(SyntheticSpec.from_config(dataset), dst, workers=available_cores())
    elif source == "synthetic_segment":  # the segment task's: its classes start with the background
        shapes = {**dataset, "classes": list(dataset["classes"])[1:]}
        generate_segmentation(SyntheticSpec.from_config(shapes), dst, workers=available_cores())
    elif source == "synthetic_classify":
        generate_classification(SyntheticSpec.from_config(dataset), dst, workers=available_cores())
    elif source == "local":
        return copy_local(Path(dataset["path"]).expanduser(), dst, bool(dataset.get("copy_all_files", False)))
    elif source == "archive":
        archive = fetch_archive(str(dataset["path"]), cache_dir, dataset.get("sha256"))
        extract(archive, dst, int(dataset["max_extract_gb"] * GB))
    else:
        raise ValueError(
            f"dataset.source {source!r} is not supported; use 'synthetic', 'synthetic_segment', "
            "'synthetic_classify', 'local' or 'archive'"
        )
    return []
