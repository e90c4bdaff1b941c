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
from odpipe.data.discover import walk
from odpipe.data.download import GB, extract, fetch_archive
from odpipe.data.synthetic import SyntheticSpec, generate, generate_classification, generate_segmentation

# Every annotation format's files: VOC XML, CSV, COCO/LinkedAI JSON, YOLO txt + data.yaml.
ANNOTATION_SUFFIXES = (".xml", ".csv", ".json", ".txt", ".yaml", ".yml")


def copy_local(src: Path, dst: Path, all_files: bool = False) -> int:
    """Copy every image and annotation under ``src`` into ``dst``, keeping sub-folders; symbolic
    links are followed (see :func:`odpipe.data.discover.walk`).

    Other files (notes, thumbnails, .DS_Store) stay behind: they are not data. With
    ``all_files`` (classification's ``dataset.copy_all_files``) every file but hidden ones and
    OS litter is copied instead: a class folder's files are all its inputs, and cleaning reports
    those that are no image rather than this copy leaving them behind unseen. Returns how many
    files were copied.
    """
    if not src.is_dir():
        raise FileNotFoundError(f"dataset.path {src} is not a folder")
    count = 0
    for rel in sorted(walk(src)):
        if _wanted(Path(rel), all_files):
            target = dst / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, target)  # a link's target: what it points at is the data
            count += 1
    if not count:
        raise FileNotFoundError(f"dataset.path {src} holds no images or annotations")
    return count


def _wanted(rel: Path, all_files: bool) -> bool:
    """Whether ``copy_local`` copies the file at ``rel`` (relative to its source folder)."""
    if all_files:
        return not any(is_hidden(part) for part in rel.parts)
    return rel.suffix.lower() in IMAGE_SUFFIXES + ANNOTATION_SUFFIXES


def ingest(dataset: Mapping, dst: Path, cache_dir: Path) -> None:
    """Fill ``dst`` from the configured source (downloads are kept in ``cache_dir``). An archive
    that would unpack to more than ``dataset.max_extract_gb`` is refused before anything is written."""
    source = dataset["source"]
    if source == "synthetic":
        generate(SyntheticSpec.from_config(dataset), dst, workers=available_cores())
    elif source == "synthetic_segment":  # the segment task's: its classes start with the background
        shapes = {**dataset, "classes": list(dataset["classes"])[1:]}
        generate_segmentation(SyntheticSpec.from_config(shapes), dst, workers=available_cores())
    elif source == "synthetic_classify":
        generate_classification(SyntheticSpec.from_config(dataset), dst, workers=available_cores())
    elif source == "local":
        copy_local(Path(dataset["path"]).expanduser(), dst, bool(dataset.get("copy_all_files", False)))
    elif source == "archive":
        archive = fetch_archive(str(dataset["path"]), cache_dir, dataset.get("sha256"))
        extract(archive, dst, int(dataset["max_extract_gb"] * GB))
    else:
        raise ValueError(
            f"dataset.source {source!r} is not supported; use 'synthetic', 'synthetic_segment', "
            "'synthetic_classify', 'local' or 'archive'"
        )
