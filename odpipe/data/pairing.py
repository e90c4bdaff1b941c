"""Images and the label files beside them (masks, for segmentation), paired by the folder and
name conventions datasets ship with.

A label file sits beside its image in one of three ways, all tried:

- in a label folder at the place of an image folder: ``images/train/x.jpg`` with
  ``masks/train/x.png`` (or ``annotations/``, ``labels/``, ``gt/``, ``SegmentationClass/``;
  ``img/`` with ``ann/``; an image folder of any name beside a label folder: ``rgb/`` with ``gt/``);
- in a folder named after the image folder with a suffix: ``train/x.png`` with
  ``trainannot/x.png``, ``train_labels/``, ``train_masks/``, ``trainmasks/``;
- under the image's name with a suffix, beside it or anywhere in the tree: ``x.png`` with
  ``x_mask.png``, ``x_L.png``, ``x_label.png``.

Folder names are patterns matched against one folder name (``?`` any character). A ``*`` stands for
the name an image folder and its label folder share: ``*annot`` pairs ``trainannot/`` with
``train/`` (an image folder of any name: ``*``); without one, the two patterns name two kinds of
folder (``images`` and ``masks``) whose places in the tree must agree.
"""

from __future__ import annotations

import posixpath
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

Key = tuple[tuple[str, ...], str]  # (folders, with image/label folders made one token; stem)
Names = Iterable[str] | str | None  # a config value: one name, a list, or nothing


@dataclass(frozen=True)
class Convention:
    """Where label files are: folder-name patterns of image and label folders, label-name suffixes."""

    image_folders: tuple[str, ...]
    label_folders: tuple[str, ...]
    label_suffixes: tuple[str, ...]

    @classmethod
    def from_options(cls, images: Names, labels: Names, suffixes: Names) -> Convention:
        """The user's ``dataset.images``/``dataset.masks``/``dataset.mask_suffix`` (a name or a
        list; empty: the usual ones), each replacing only the usual ones of its kind."""

        def listed(value: Names, usual: tuple[str, ...]) -> tuple[str, ...]:
            names = (value,) if isinstance(value, str) else tuple(str(v) for v in value or ())
            return names or usual

        return cls(
            listed(images, USUAL.image_folders),
            listed(labels, USUAL.label_folders),
            listed(suffixes, USUAL.label_suffixes),
        )


USUAL = Convention(
    image_folders=("images", "image", "imgs", "img", "JPEGImages", "*", "*_images", "*images", "*_img", "*_imgs"),
    label_folders=(
        "masks", "mask", "annotations", "annotation", "labels", "label", "ann", "gt", "SegmentationClass",
        "*annot", "*_annot", "*_labels", "*_label", "*_masks", "*_mask", "*masks", "*_gt",
    ),
    label_suffixes=("_gtFine_labelIds", "_mask", "_label", "_labels", "_L", "_gt", "_seg"),
)  # fmt: skip


Pair = tuple[str | None, str | None]  # (image, label file); either None for an orphan


def describe(pairs: Iterable[Pair]) -> str:
    """Where the images and the label files are, for an error saying why none were paired:
    ``701 images in test/ train/ val/; 701 label files in testannot/ trainannot/ valannot/``."""
    pairs = list(pairs)
    images = Counter(posixpath.dirname(image) or "." for image, _ in pairs if image)
    labels = Counter(posixpath.dirname(label) or "." for _, label in pairs if label)
    return f"{_count(images, 'image')}; {_count(labels, 'label file')}"


def _count(folders: Counter, what: str) -> str:
    total = sum(folders.values())
    shown = " ".join(f"{folder}/" for folder in sorted(folders)[:6]) + (" ..." if len(folders) > 6 else "")
    return f"{total} {what}{'s' if total != 1 else ''}" + (f" in {shown}" if total else "")


def _pattern(pattern: str) -> re.Pattern:
    """A folder-name pattern as a regex whose one group is what its ``*`` matched (if it has one)."""
    parts = [re.escape(part).replace(r"\?", ".") for part in pattern.split("*", 1)]
    return re.compile("(.+)".join(parts) if len(parts) == 2 else parts[0])


def _token(pattern: re.Pattern, name: str) -> str | None:
    """The token a folder name becomes in a key: the shared name (the ``*``'s match), or one
    mark for every folder of a star-less pattern; None when the name does not match."""
    match = pattern.fullmatch(name)
    if match is None:
        return None
    return "\0" + (match.group(1) if pattern.groups else "")


def _split(path: str) -> tuple[tuple[str, ...], str]:
    folders = tuple(path.split("/")[:-1])
    return folders, posixpath.splitext(posixpath.basename(path))[0]


def _image_keys(path: str, patterns: Sequence[re.Pattern], beside_labels: set[tuple[str, ...]]) -> list[Key]:
    """The keys an image answers to: its own place, and each folder read as an image folder, by
    name or by standing beside a label folder (``photos/`` next to ``masks/``)."""
    folders, stem = _split(path)
    keys = [(folders, stem)]
    for i, name in enumerate(folders):
        tokens = {_token(pattern, name) for pattern in patterns} | ({"\0"} if folders[:i] in beside_labels else set())
        keys += [((*folders[:i], token, *folders[i + 1 :]), stem) for token in sorted(tokens - {None})]
    return keys


def _label_folder(folders: tuple[str, ...], patterns: Sequence[re.Pattern]) -> tuple[int, str] | None:
    """The deepest folder that is a label folder, and its token."""
    for i in range(len(folders) - 1, -1, -1):
        for pattern in patterns:
            token = _token(pattern, folders[i])
            if token is not None:
                return i, token
    return None


def _suffixes_of(stem: str, suffixes: Sequence[str]) -> list[str]:
    """The label suffixes ``stem`` ends with (and is more than)."""
    return [s for s in suffixes if stem.endswith(s) and len(stem) > len(s)]


def _stems(stem: str, suffixes: Sequence[str]) -> list[str]:
    """The image stems a label file's stem may stand for: without a suffix, then as it is."""
    return [stem[: -len(s)] for s in _suffixes_of(stem, suffixes)] + [stem]


def pair(files: Sequence[str], convention: Convention = USUAL) -> list[Pair]:
    """Sort ``files`` (relative POSIX paths of image files, masks included) into images and label
    files, and pair them; a file nothing pairs stays as an orphan, so that every file is accounted
    for. A label folder (or a name with a label suffix whose image exists) makes a file a label."""
    image_patterns = [_pattern(p) for p in convention.image_folders]
    label_patterns = [_pattern(p) for p in convention.label_folders]
    suffixes = convention.label_suffixes
    in_folder = {path: _label_folder(_split(path)[0], label_patterns) for path in files}
    is_label = {path for path in files if in_folder[path] is not None} | _suffixed_labels(
        [path for path in files if in_folder[path] is None], suffixes
    )
    labels = [path for path in files if path in is_label]
    images = [path for path in files if path not in is_label]
    beside_labels = {_split(path)[0][: at[0]] for path, at in in_folder.items() if at and at[1] == "\0"}
    by_key: dict[Key, list[str]] = {}
    for image in images:
        for key in _image_keys(image, image_patterns, beside_labels):
            by_key.setdefault(key, []).append(image)
    partner: dict[str, str] = {}
    unpaired: list[str] = []
    for label in labels:
        folders, stem = _split(label)
        at = in_folder[label]
        place = folders if at is None else (*folders[: at[0]], at[1], *folders[at[0] + 1 :])
        found = next((i for s in _stems(stem, suffixes) for i in by_key.get((place, s), []) if i not in partner), None)
        if found:
            partner[found] = label
        else:
            unpaired.append(label)
    _pair_by_stem(images, unpaired, partner, suffixes, in_folder)
    used = set(partner.values())
    pairs = [(image, partner.get(image)) for image in images] + [(None, lab) for lab in labels if lab not in used]
    return sorted(pairs, key=lambda p: (p[0] or "", p[1] or ""))


def _suffixed_labels(files: Sequence[str], suffixes: Sequence[str]) -> set[str]:
    """The files outside label folders that are label files by name: the image's name with a
    label suffix (``x_L.png`` beside ``x.png`` anywhere), and the others with that suffix in a
    folder where it marks labels (a mask whose image is missing is still a mask)."""
    stems = Counter(_split(path)[1] for path in files)
    marked = {path: [(posixpath.dirname(path), s) for s in _suffixes_of(_split(path)[1], suffixes)] for path in files}
    by_name = {path for path in files if any(stems[s] for s in _stems(_split(path)[1], suffixes)[:-1])}
    label_places = {place for path in by_name for place in marked[path]}
    return by_name | {path for path, places in marked.items() if label_places.intersection(places)}


def _pair_by_stem(
    images: Sequence[str],
    labels: Sequence[str],
    partner: dict[str, str],
    suffixes: Sequence[str],
    in_folder: Mapping[str, tuple[int, str] | None],
) -> None:
    """Last: a label file whose name is an image's with a suffix, wherever each is (CamVid's own
    release keeps ``701_StillsRaw_full/x.png`` and ``LabeledApproved_full/x_L.png`` apart), or
    a file of a label folder with the image's very name at another depth (Oxford Pets'
    ``annotations/trimaps/x.png`` for ``images/x.jpg``), when exactly one unpaired image has
    that name."""
    alone: dict[str, list[str]] = {}
    for image in images:
        if image not in partner:
            alone.setdefault(_split(image)[1], []).append(image)
    for label in labels:
        stems = _stems(_split(label)[1], suffixes)
        for stem in stems if in_folder[label] else stems[:-1]:
            candidates = [i for i in alone.get(stem, []) if i not in partner]
            if len(candidates) == 1:
                partner[candidates[0]] = label
                break
