"""Deterministic train/val/test splits by image, leak-free.

Images are first gathered into groups: the match of ``clean_split.group_pattern`` on the file
name (frames of one video, shots of one scene), or else the image's own content hash. Each
group's split comes from a hash of (seed, group key), so it does not depend on the other
images: adding images never moves an existing one, and a group never straddles splits.
Then, where the data allows, whole groups are moved so that every class appears in every
split (stratification); that repair is deterministic too.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence

SPLITS = ("train", "val", "test")


def unit_hash(seed: int, key: str) -> float:
    """A number in [0, 1) fixed by the seed and the key."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
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


def check_ratios(ratios: Mapping[str, float]) -> None:
    if set(ratios) != set(SPLITS) or any(r < 0 for r in ratios.values()) or not sum(ratios.values()):
        raise ValueError(f"clean_split.ratios must give non-negative {SPLITS}, got {dict(ratios)}")


def group_key(name: str, content_sha256: str, pattern: str | None) -> str:
    """The group an image belongs to: the pattern's first group (or whole match) in its
    name, else its content (so that copies of one image stay together)."""
    if pattern:
        match = re.search(pattern, name)
        if match:
            return "name:" + (match.group(1) if match.groups() else match.group(0))
    return "sha256:" + content_sha256


def _stratify(
    splits: dict[str, list[str]],
    group_classes: Mapping[str, set[str]],
    movable: set[str],
    ratios: Mapping[str, float],
    seed: int,
) -> None:
    """Move whole movable groups so every class reaches every split, taking only from a
    split that keeps at least one group of that class."""

    def holders(split: str, cls: str) -> list[str]:
        return [g for g in splits[split] if cls in group_classes[g]]

    for cls in sorted(set().union(*group_classes.values())):
        for target in (s for s in SPLITS if ratios[s] > 0):
            if holders(target, cls):
                continue
            donors = [s for s in SPLITS if s != target and len(holders(s, cls)) >= 2]
            candidates = [(s, g) for s in donors for g in holders(s, cls) if g in movable]
            if not candidates:
                continue
            donor, moving = min(candidates, key=lambda c: (-len(holders(c[0], cls)), unit_hash(seed, c[1])))
            splits[donor].remove(moving)
            splits[target].append(moving)


def split_images(
    hashes: Mapping[str, str],
    labels: Mapping[str, Sequence[str]],
    ratios: Mapping[str, float],
    seed: int,
    group_pattern: str | None = None,
    fixed: Mapping[str, str] | None = None,
) -> dict[str, list[str]]:
    """Image names by split.

    ``hashes`` maps each name to its content sha256, ``labels`` to the classes of its boxes;
    ``fixed`` pins images to a split (e.g. from VOC ImageSets lists) and is never overridden.
    """
    check_ratios(ratios)
    fixed = fixed or {}
    groups: dict[str, list[str]] = {}
    for name in sorted(hashes):
        groups.setdefault(group_key(name, hashes[name], group_pattern), []).append(name)
    splits: dict[str, list[str]] = {s: [] for s in SPLITS}
    movable = set()
    for key, names in groups.items():
        pinned = {fixed[n] for n in names if n in fixed}
        if len(pinned) > 1:
            raise ValueError(f"images of group {key} are pinned to different splits {sorted(pinned)}: {names}")
        if pinned:
            splits[pinned.pop()].append(key)
        else:
            movable.add(key)
            splits[assign_split(unit_hash(seed, key), ratios)].append(key)
    group_classes = {key: {c for n in names for c in labels.get(n, ())} for key, names in groups.items()}
    _stratify(splits, group_classes, movable, ratios, seed)
    result = {s: sorted(n for key in splits[s] for n in groups[key]) for s in SPLITS}
    empty = [s for s in SPLITS if ratios[s] > 0 and not result[s]]
    if empty:
        raise ValueError(
            f"split(s) {empty} came out empty from {len(hashes)} images with ratios {dict(ratios)}: "
            "add images or change clean_split.ratios"
        )
    return result


def pins_from_lists(
    lists: Mapping[str, str], hashes: Mapping[str, str], ratios: Mapping[str, float], seed: int
) -> dict[str, str]:
    """Turn predefined lists (VOC ImageSets) into pinned splits; a ``trainval`` image goes to
    train or val by its hash, in the configured train:val proportion."""
    train_val = {"train": ratios["train"], "val": ratios["val"], "test": 0.0}
    pins = {}
    for name, listed in lists.items():
        if name not in hashes:
            continue
        if listed == "trainval":
            listed = assign_split(unit_hash(seed, group_key(name, hashes[name], None)), train_val)
        pins[name] = listed
    return pins
