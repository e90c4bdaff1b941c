"""The segment task's clean_split: every image and mask checked (in parallel), kept pairs
written out as they are decided, duplicates dropped, splits stratified on the classes each
image contains, and counts for the report.

Each input image ends up in a split's CSV or in ``dropped`` with one reason code (so does each
mask without its image); kept-but-noted findings (unknown mask values sent to void, empty
masks) go to ``notes``. The per-pair checks are :mod:`odpipe.segment.check_pair`'s; this module
takes the decisions that depend on other images (duplicates, splits) in input order, so the
output is the same for any number of workers.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from odpipe.core.files import iter_csv, write_csv
from odpipe.core.images import converted_name
from odpipe.core.parallel import Workers
from odpipe.data.cleaning import FirstCopies, Issue, Ledger
from odpipe.data.discover import walk
from odpipe.data.index_masks import VOID, decode_png
from odpipe.data.splitting import SPLITS, check_not_empty, group_key, stratified_split
from odpipe.segment.check_pair import Checked, check_pair
from odpipe.segment.formats import MaskDataset, MaskPair

ROW_COLUMNS = ("image", "mask", "width", "height", "classes")
CHUNK = 8  # pairs per hand-over to a worker


@dataclass(frozen=True)
class Seen:
    """A worker's verdict on one pair, with what the main process needs to decide the rest:
    the image's content hash and the mask's pixels per value (ids, then VOID last)."""

    checked: Checked
    sha256: str
    pixels: tuple[int, ...]


@dataclass(frozen=True)
class Row:
    """One kept pair, as a split's CSV lists it; ``classes`` are the ids it has pixels of."""

    image: str
    mask: str
    width: int
    height: int
    classes: tuple[int, ...]

    def as_csv(self) -> dict:
        return {**asdict(self), "classes": " ".join(map(str, self.classes))}

    @classmethod
    def from_csv(cls, row: Mapping[str, str]) -> Row:
        classes = tuple(int(c) for c in row["classes"].split())
        return cls(row["image"], row["mask"], int(row["width"]), int(row["height"]), classes)


@dataclass
class MaskCleanResult:
    """Every decision, and the pixel counts of what was kept (by split once split)."""

    rows: list[Row] = field(default_factory=list)
    shas: list[str] = field(default_factory=list)
    pixels: list[tuple[int, ...]] = field(default_factory=list)
    dropped: list[Issue] = field(default_factory=list)
    notes: list[Issue] = field(default_factory=list)


def mask_name(image: str) -> str:
    """Where an image's index mask is written: its own path plus ``.png``, so that ``a.jpg``
    and ``a.png`` of one folder (or split folders with the same file names) never collide."""
    return f"{image}.png"


def inspect_pair(pair: MaskPair, root: Path, dataset: MaskDataset, options: Mapping, max_pixels: int | None) -> Seen:
    """Runs in a worker: the pair's checks, the image's hash and the mask's histogram."""
    checked = check_pair(root, pair, dataset, options, max_pixels)
    if not checked.kept:
        return Seen(checked, "", ())
    digest = hashlib.sha256(Path(os.path.join(root, checked.image)).read_bytes()).hexdigest()
    counts = np.bincount(decode_png(checked.mask_png).ravel(), minlength=VOID + 1)
    return Seen(checked, digest, (*counts[: len(dataset.classes.names)].tolist(), int(counts[VOID])))


def clean_masks(
    root: Path,
    images_out: Path,
    masks_out: Path,
    *,
    dataset: MaskDataset,
    options: Mapping,
    max_pixels: int | None,
    workers: int,
) -> MaskCleanResult:
    """Check every pair of ``dataset`` and write the kept images and index masks out."""
    result = MaskCleanResult()
    firsts = FirstCopies()
    # Workers get the dataset without its pairs: each is sent its own, not the whole list with every chunk.
    inspect = partial(inspect_pair, root=root, dataset=dataset.without_pairs(), options=options, max_pixels=max_pixels)
    with Workers(workers, chunk=CHUNK) as pool:
        for seen in pool.map(inspect, dataset.pairs):
            _settle(seen, root, images_out, masks_out, firsts, result)
    return result


def _settle(
    seen: Seen, root: Path, images_out: Path, masks_out: Path, firsts: FirstCopies, result: MaskCleanResult
) -> None:
    """One pair's decision, in input order."""
    checked = seen.checked
    if not checked.kept:
        result.dropped.append(Issue(checked.image, checked.reason, checked.detail))
        return
    first = firsts.get(seen.sha256)
    if first is not None:
        result.dropped.append(Issue(checked.image, "duplicate", f"same image content as {first}"))
        return
    firsts.add(seen.sha256, checked.image)
    result.notes.extend(checked.notes)
    name = converted_name(checked.image) if checked.converted else checked.image
    image_path, mask = images_out / name, mask_name(name)
    image_path.parent.mkdir(parents=True, exist_ok=True)
    image_path.write_bytes(checked.converted or (root / checked.image).read_bytes())
    (masks_out / mask).parent.mkdir(parents=True, exist_ok=True)
    (masks_out / mask).write_bytes(checked.mask_png)
    width, height = checked.size
    result.rows.append(Row(name, mask, width, height, checked.classes_present))
    result.shas.append(seen.sha256)
    result.pixels.append(seen.pixels)


def account(
    root: Path, dataset: MaskDataset, dropped: Sequence[Issue], left_out: Sequence[Mapping] = ()
) -> tuple[dict, list[Issue]]:
    """Where every file under ``root`` (and each one ingest ``left_out``) ended, as
    :meth:`~odpipe.data.cleaning.Ledger.close` gives it: an image and its mask kept, or dropped
    for the pair's reason (a mask file holding several images' masks is kept when one is); the
    class tables and split lists read, and anything no reader read, as not inputs."""
    ledger = Ledger(walk(root), left_out)
    drops = {issue.file: issue for issue in dropped}
    fates = [(pair, drops.get(pair.image or pair.where)) for pair in dataset.pairs]
    for pair, issue in fates:
        if issue is None:
            ledger.kept(str(pair.image))
            if pair.mask:
                ledger.kept(pair.mask)
    for pair, issue in fates:
        if issue is not None:
            for file in (pair.image, pair.mask):
                if file:
                    ledger.dropped(file, issue.reason, issue.detail)
    for file, code in dataset.read.items():
        ledger.not_input(file, code)
    return ledger.close(f"not read as {dataset.format}")


def split_rows(
    result: MaskCleanResult,
    pinned: Mapping[str, str],
    ratios: Mapping[str, float],
    seed: int,
    group_pattern: str | None,
) -> dict[str, list[int]]:
    """Indices of the kept rows by split: grouped like detection's splits, stratified on the
    classes each image contains, pre-made splits honoured."""
    items = [
        (row.image, group_key(row.image, sha, group_pattern), frozenset(row.classes))
        for row, sha in zip(result.rows, result.shas, strict=True)
    ]
    assigned = stratified_split(items, ratios, seed, pinned)
    by_split: dict[str, list[int]] = {s: [] for s in SPLITS}
    for i, row in enumerate(result.rows):
        by_split[assigned[row.image]].append(i)
    check_not_empty({s: len(v) for s, v in by_split.items()}, ratios)
    return by_split


def write_splits(result: MaskCleanResult, by_split: Mapping[str, list[int]], out: Path) -> None:
    """Each split's CSV (``ROW_COLUMNS``), in input order."""
    for split, indices in by_split.items():
        write_csv((result.rows[i].as_csv() for i in indices), ROW_COLUMNS, out / f"{split}.csv")


def read_rows(path: Path) -> list[Row]:
    """A split's rows, as :func:`write_splits` wrote them."""
    return [Row.from_csv(r) for r in iter_csv(path)]


def _count(items: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(items).items()))


def report(result: MaskCleanResult, by_split: Mapping[str, list[int]], names: Sequence[str], fmt: str) -> dict:
    """Counts for DVC metrics and the Markdown report: what came in, what was dropped and
    noted and why, and per split the images, the images holding each class and its pixels
    (train's pixels are what class weights are computed from)."""
    splits = {}
    for split, indices in by_split.items():
        pixels = np.zeros(len(names) + 1, dtype=np.int64)
        images_with = Counter()
        for i in indices:
            pixels += result.pixels[i]
            images_with.update(names[c] for c in result.rows[i].classes)
        splits[split] = {
            "images": len(indices),
            "images_with": {n: images_with.get(n, 0) for n in names},
            "pixels": {n: int(p) for n, p in zip(names, pixels[:-1], strict=True)},
            "void_pixels": int(pixels[-1]),
        }
    missing = {s: [n for n in names if not v["images_with"][n]] for s, v in splits.items() if v["images"]}
    return {
        "format": fmt,
        "classes": list(names),
        "images_in": len(result.rows) + sum(i.reason != "image_missing" for i in result.dropped),
        "kept": len(result.rows),
        "dropped": len(result.dropped),
        "dropped_by_reason": _count(i.reason for i in result.dropped),
        "notes_by_reason": _count(i.reason for i in result.notes),
        "classes_missing": {s: m for s, m in missing.items() if m},
        "splits": splits,
    }
