"""Deterministic train/val/test splits by image, leak-free and stable.

Images are first gathered into groups: the match of ``clean_split.group_pattern`` on the file
name (the last path component, so ``'^(video\\d+)_'`` matches ``JPEGImages/video1_0001.jpg``;
frames of one video, shots of one scene), or else the image's own content hash (copies of one
image). Each group's split comes from a hash of (seed, group key) alone, so a group never
straddles splits and adding images never moves an existing one: nothing is carried between runs
(DVC deletes the stage's outputs before rerunning it), so a split may depend on nothing but the
seed, the ratios and the image's own group. Predefined lists (VOC ImageSets) pin groups instead.

``split_images`` deliberately does not stratify: moving groups so that every class reaches every
split depends on the other images, and new images can undo such a move, sending a former test
image to train. ``missing_classes`` says instead which classes a split lacks, for the report.
``stratified_split`` is the choice for tasks where a rare class must reach every split in its
share (segmentation by the classes an image shows, classification by its label): it pays with a
few moves when images are added, each stratum's boundaries shifting a little in its hash order.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePosixPath

SPLITS = ("train", "val", "test")


SPLIT_WORDS = {
    "train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}  # fmt: skip
SPLIT_TOKEN = re.compile(r"([a-z]+)\d*")  # "train2017" names the train split


def folder_split(parts: Iterable[str]) -> str | None:
    """The split that path parts name (``train``, ``images_val``, ``train2017``, ``valid``), the
    last one naming any; None when none does."""
    for part in reversed(list(parts)):
        for token in reversed(re.split(r"[_\-. ]", part.lower())):
            word = SPLIT_TOKEN.fullmatch(token)
            if word and word.group(1) in SPLIT_WORDS:
                return SPLIT_WORDS[word.group(1)]
    return None


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


def file_name(name: str) -> str:
    """The last component of an image's relative (POSIX) path: what ``group_pattern`` sees, so
    that the pattern does not depend on the dataset's folder layout."""
    return PurePosixPath(name).name


def group_key(name: str, content_sha256: str, pattern: str | None) -> str:
    """The group an image belongs to: the pattern's first group (or whole match) searched in its
    file name (not its folder), else its content (so that copies of one image stay together)."""
    if pattern:
        match = re.search(pattern, file_name(name))
        if match:
            return "name:" + (match.group(1) if match.groups() else match.group(0))
    return "sha256:" + content_sha256


def group_pattern_matches(names: Iterable[str], pattern: str | None) -> int:
    """How many of the images' file names ``pattern`` matches (0 without a pattern).

    A pattern that matches no image groups nothing, and frames of one video would then land in
    every split without a word, so that is an error (as is a pattern that is not a regex).
    """
    if not pattern:
        return 0
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise ValueError(f"clean_split.group_pattern '{pattern}' is not a valid regex: {error}") from error
    files = [file_name(n) for n in names]
    count = sum(1 for f in files if compiled.search(f))
    if files and not count:
        raise unmatched_pattern(pattern, len(files), min(files))
    return count


def unmatched_pattern(pattern: str, images: int, example: str) -> ValueError:
    """The error of a ``group_pattern`` that matches none of ``images`` file names."""
    return ValueError(
        f"clean_split.group_pattern '{pattern}' matches none of the {images} images "
        f"(it is searched in file names, without folders, e.g. {example!r}): "
        "fix the pattern or set it to null"
    )


def split_images(
    hashes: Mapping[str, str],
    labels: Mapping[str, Sequence[str]],
    ratios: Mapping[str, float],
    seed: int,
    group_pattern: str | None = None,
    fixed: Mapping[str, str] | None = None,
) -> dict[str, list[str]]:
    """Image names by split.

    ``hashes`` maps each name to its content sha256; ``fixed`` pins images to a split (e.g. from
    VOC ImageSets lists) and is never overridden. ``labels`` (the classes of each image's boxes)
    does not move anything, so that splits stay stable: ``missing_classes`` reports the gaps.
    """
    check_ratios(ratios)
    group_pattern_matches(hashes, group_pattern)
    fixed = fixed or {}
    groups: dict[str, list[str]] = {}
    for name in sorted(hashes):
        groups.setdefault(group_key(name, hashes[name], group_pattern), []).append(name)
    result: dict[str, list[str]] = {s: [] for s in SPLITS}
    for key, names in groups.items():
        pinned = sorted({fixed[n] for n in names if n in fixed})
        if len(pinned) > 1:
            raise pin_conflict(key, pinned, names)
        result[group_split(key, pinned, ratios, seed)].extend(names)
    result = {s: sorted(names) for s, names in result.items()}
    check_not_empty({s: len(names) for s, names in result.items()}, ratios)
    return result


def group_split(key: str, pinned: Sequence[str], ratios: Mapping[str, float], seed: int) -> str:
    """The split of a group: the one split its images are pinned to, else the hash of its key."""
    return pinned[0] if pinned else assign_split(unit_hash(seed, key), ratios)


def pin_conflict(key: str, pinned: Sequence[str], names: Sequence[str]) -> ValueError:
    """The error of a group whose images lists pin to different splits."""
    return ValueError(f"images of group {key} are pinned to different splits {sorted(pinned)}: {list(names)}")


def check_not_empty(sizes: Mapping[str, int], ratios: Mapping[str, float]) -> None:
    """A split given a share that got no image is an error: training or evaluating on nothing."""
    empty = [s for s in SPLITS if ratios[s] > 0 and not sizes[s]]
    if empty:
        raise ValueError(
            f"split(s) {empty} came out empty from {sum(sizes.values())} images with ratios {dict(ratios)}: "
            "add images or change clean_split.ratios"
        )


def missing_classes(
    boxes_per_class: Mapping[str, Mapping[str, int]], images: Mapping[str, int]
) -> dict[str, list[str]]:
    """The classes of the dataset that a non-empty split has no box of, by split (only splits
    that lack some), from each split's box counts by class and image count. ``split_images``
    does not stratify (that would make it unstable), so the stage warns instead: a class missing
    from test is not evaluated, one missing from train not learnt.
    """
    present = {s: {c for c, n in boxes_per_class.get(s, {}).items() if n} for s in SPLITS}
    every = set().union(*present.values())
    gaps = {s: sorted(every - present[s]) for s in SPLITS if images.get(s)}
    return {s: classes for s, classes in gaps.items() if classes}


def pins_from_lists(
    lists: Mapping[str, str],
    hashes: Mapping[str, str],
    ratios: Mapping[str, float],
    seed: int,
    group_pattern: str | None = None,
) -> dict[str, str]:
    """Turn predefined lists (VOC ImageSets) into pinned splits; a ``trainval`` image goes to
    train or val by the hash of its group (as ``split_images`` forms them, hence
    ``group_pattern``), in the configured train:val proportion, so that frames of one video
    listed in trainval are pinned together rather than to conflicting splits."""
    return {
        name: listed_split(listed, group_key(name, hashes[name], group_pattern), ratios, seed)
        for name, listed in lists.items()
        if name in hashes
    }


def listed_split(listed: str, key: str, ratios: Mapping[str, float], seed: int) -> str:
    """The split a list pins an image of group ``key`` to. A list of several splits
    (``trainval``, or ``train+test`` from :func:`carve_missing`) sends it to one of them by the
    hash of its group, in the configured proportion among them, so that a group goes together."""
    choices = listed_choices(listed)
    if len(choices) == 1:
        return choices[0]
    return assign_split(unit_hash(seed, key), {s: ratios[s] if s in choices else 0.0 for s in SPLITS})


def listed_choices(listed: str) -> tuple[str, ...]:
    return ("train", "val") if listed == "trainval" else tuple(listed.split("+"))


def carve_missing(lists: Mapping[str, str], ratios: Mapping[str, float]) -> tuple[dict[str, str], list[str]]:
    """Pre-made splits that name no image of a split the ratios give a share (COCO's
    ``train2017`` and ``val2017``, no test): that split is carved from the images listed for
    train, in the ratios' proportion, rather than coming out empty. The lists as pins, and the
    splits carved."""
    named = {split for listed in lists.values() for split in listed_choices(listed)}
    missing = [s for s in SPLITS if ratios[s] > 0 and s not in named]
    if not lists or not missing or "train" not in named:
        return dict(lists), []
    wider = {
        listed: "+".join(sorted({*listed_choices(listed), *missing}, key=SPLITS.index))
        for listed in ("train", "trainval")
    }
    return {image: wider.get(listed, listed) for image, listed in lists.items()}, missing


LabelledImages = Sequence[tuple[str, str, frozenset[int]]]


def stratified_split(
    items: LabelledImages, ratios: Mapping[str, float], seed: int, pinned: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The split of each image, stratified: ``items`` are (image key, group key, strata labels).

    Groups still never straddle splits, and a group with a pinned image (``pinned``: image key
    to split, e.g. a VOC list) goes to that split whole. Every other group is assigned within its
    stratum: the rarest of its images' labels, counted in images over all ``items`` (ties go to
    the smaller label; a group without labels forms a stratum of its own). That rule puts every
    image of the rarest classes, which are the ones that plain hashing leaves short in a small
    split, into their own strata; a commoner label of a multi-label image lands near its ratios
    only on average. Within a stratum, groups in seeded hash order fill the splits in turn, each
    up to its share of the stratum's images less those pinned there (see ``fill_stratum``), so
    with one-image groups every split gets its expected count of the stratum within one image.
    Pure in (items as a set, ratios, seed, pinned).
    """
    check_ratios(ratios)
    members, labels = stratified_groups(items)
    frequency = Counter(label for _, _, image_labels in items for label in image_labels)
    strata: dict[int | None, list[str]] = {}
    for key in sorted(members):
        strata.setdefault(rarest(labels[key], frequency), []).append(key)
    where: dict[str, str] = {}
    for stratum, keys in strata.items():
        fixed = {key: group_pin(key, members[key], pinned or {}) for key in keys}
        sizes = {key: len(members[key]) for key in keys}
        where |= fill_stratum(sizes, fixed, ratios, seed, unit_hash(seed, f"stratum:{stratum}"))
    split = {name: where[key] for key, names in members.items() for name in names}
    counts = Counter(split.values())
    check_not_empty({s: counts[s] for s in SPLITS}, ratios)
    return split


def stratified_groups(items: LabelledImages) -> tuple[dict[str, list[str]], dict[str, frozenset[int]]]:
    """The images of each group and the union of their labels; an image listed twice is an error
    (it would belong to two groups, or count twice towards its labels' rarity)."""
    members: dict[str, list[str]] = {}
    labels: dict[str, frozenset[int]] = {}
    seen: set[str] = set()
    for name, key, image_labels in sorted(items, key=lambda item: item[0]):
        if name in seen:
            raise ValueError(f"stratified split: image {name!r} is listed more than once")
        seen.add(name)
        members.setdefault(key, []).append(name)
        labels[key] = labels.get(key, frozenset()) | image_labels
    return members, labels


def rarest(labels: frozenset[int], frequency: Mapping[int, int]) -> int | None:
    """A group's stratum: its label with the fewest images (the smaller on a tie), None without one."""
    return min(labels, key=lambda label: (frequency[label], label)) if labels else None


def group_pin(key: str, names: Sequence[str], pinned: Mapping[str, str]) -> str | None:
    """The one split that images of the group are pinned to, None when none is."""
    splits = sorted({pinned[n] for n in names if n in pinned})
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise ValueError(f"images of group {key} are pinned to {unknown}, not one of {SPLITS}: {list(names)}")
    if len(splits) > 1:
        raise pin_conflict(key, splits, names)
    return splits[0] if splits else None


def fill_stratum(
    sizes: Mapping[str, int],
    fixed: Mapping[str, str | None],
    ratios: Mapping[str, float],
    seed: int,
    offset: float,
) -> dict[str, str]:
    """The split of each group of one stratum (``sizes``: images per group; ``fixed``: the
    groups' pins). The free groups' images, in hash order, are laid end to end over the splits,
    each split taking what it lacks of its share once the pinned groups are counted; a group goes
    where its image at fraction ``offset`` (in [0, 1)) falls. So one-image groups give each split
    its lacking count within one image (each split boundary is rounded once). ``offset`` is a
    seeded draw per stratum rather than 0.5 because strata of one or two images are common: with
    a fixed point each would go to the split holding the middle of the ratios (train), starving
    val and test; a drawn one sends it to each split in its share on average."""
    where = {key: split for key, split in fixed.items() if split}
    free = sorted((key for key in sizes if key not in where), key=lambda key: (unit_hash(seed, key), key))
    free_images = sum(sizes[key] for key in free)
    if not free_images:
        return where
    held: Counter[str] = Counter()
    for key, split in where.items():
        held[split] += sizes[key]
    stratum_images = free_images + sum(held.values())
    total = sum(ratios[s] for s in SPLITS)
    lacking = {s: max(0.0, ratios[s] / total * stratum_images - held[s]) for s in SPLITS}
    position = 0
    for key in free:
        where[key] = assign_split((position + offset * sizes[key]) / free_images, lacking)
        position += sizes[key]
    return where
