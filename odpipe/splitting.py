"""Deterministic train/val/test splits by image.

Each image's split comes from a hash of (seed, image content): it does not depend on the other
images, so adding images never moves an existing one to another split, and two copies of the
same image always land together.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

SPLITS = ("train", "val", "test")


def unit_hash(seed: int, content_sha256: str) -> float:
    """A number in [0, 1) fixed by the seed and the image content."""
    digest = hashlib.sha256(f"{seed}:{content_sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(u: float, ratios: Mapping[str, float]) -> str:
    """The split whose cumulative ratio interval holds ``u``."""
    total = sum(ratios[name] for name in SPLITS)
    edge = 0.0
    for name in SPLITS:
        edge += ratios[name] / total
        if u < edge:
            return name
    return SPLITS[-1]


def split_by_hash(hashes: Mapping[str, str], ratios: Mapping[str, float], seed: int) -> dict[str, list[str]]:
    """Names grouped by split; ``hashes`` maps each name to its content sha256."""
    if set(ratios) != set(SPLITS) or any(r < 0 for r in ratios.values()) or not sum(ratios.values()):
        raise ValueError(f"clean_split.ratios must give non-negative {SPLITS}, got {dict(ratios)}")
    splits: dict[str, list[str]] = {name: [] for name in SPLITS}
    for name in sorted(hashes):
        splits[assign_split(unit_hash(seed, hashes[name]), ratios)].append(name)
    empty = [name for name in SPLITS if ratios[name] > 0 and not splits[name]]
    if empty:
        raise ValueError(
            f"split(s) {empty} came out empty from {len(hashes)} images with ratios {dict(ratios)}: "
            "add images or change clean_split.ratios"
        )
    return splits
