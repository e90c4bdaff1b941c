"""Validate every image and annotation; keep what is usable, and say why anything is not.

Nothing is lost silently: each input image is either kept (possibly with fixes such as
clipped boxes, also reported) or listed as dropped with a reason code.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from odpipe.annotations import IMAGE_SUFFIXES, Annotation, AnnotationError, Box, read_voc


@dataclass(frozen=True)
class Sample:
    """A usable image: its path relative to the dataset root, and its cleaned annotation."""

    image: str
    annotation: Annotation


@dataclass(frozen=True)
class Issue:
    """A decision taken on an input file: ``reason`` is a stable code, ``detail`` for people."""

    file: str
    reason: str
    detail: str


@dataclass
class CleanResult:
    kept: list[Sample] = field(default_factory=list)
    dropped: list[Issue] = field(default_factory=list)  # whole images or annotation files
    fixed: list[Issue] = field(default_factory=list)  # kept, but changed (clipped, resized...)


def find_images(root: Path) -> list[Path]:
    """Every image under ``root``, whatever the case of its extension (.JPG, .jpeg...)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) after fully decoding the image: a truncated file fails here."""
    with Image.open(path) as image:
        image.load()
        return image.size


def clip_box(box: Box, width: int, height: int) -> Box | None:
    """The box clipped to the image, or None when nothing of it is left."""
    clipped = replace(
        box,
        xmin=min(max(box.xmin, 0.0), width),
        ymin=min(max(box.ymin, 0.0), height),
        xmax=min(max(box.xmax, 0.0), width),
        ymax=min(max(box.ymax, 0.0), height),
    )
    if clipped.xmax <= clipped.xmin or clipped.ymax <= clipped.ymin:
        return None
    return clipped


def clean_boxes(
    annotation: Annotation, width: int, height: int, classes: Sequence[str], name: str
) -> tuple[Annotation, list[Issue]]:
    """Boxes inside the real image size and of a known class; every change reported."""
    issues = []
    if (annotation.width, annotation.height) != (width, height):
        issues.append(
            Issue(
                name,
                "size_mismatch",
                f"annotation says {annotation.width}x{annotation.height}, image is {width}x{height}",
            )
        )
    boxes = []
    for box in annotation.boxes:
        if box.label not in classes:
            issues.append(Issue(name, "unknown_class", f"box of class {box.label!r} dropped"))
            continue
        clipped = clip_box(box, width, height)
        if clipped is None:
            issues.append(
                Issue(
                    name, "box_empty", f"box {box.xmin},{box.ymin},{box.xmax},{box.ymax} has no area inside the image"
                )
            )
        elif clipped != box:
            issues.append(
                Issue(name, "box_clipped", f"box {box.xmin},{box.ymin},{box.xmax},{box.ymax} clipped to the image")
            )
            boxes.append(clipped)
        else:
            boxes.append(box)
    return replace(annotation, width=width, height=height, boxes=tuple(boxes)), issues


def clean_voc_folder(root: Path, classes: Sequence[str]) -> CleanResult:
    """Pair each image with the VOC XML of the same stem and validate both."""
    result = CleanResult()
    images = find_images(root)
    image_keys = {p.with_suffix("") for p in images}
    for xml in sorted(root.rglob("*.xml")):
        if xml.with_suffix("") not in image_keys:
            result.dropped.append(
                Issue(xml.relative_to(root).as_posix(), "image_missing", "annotation without an image")
            )
    for path in images:
        name = path.relative_to(root).as_posix()
        xml = path.with_suffix(".xml")
        if not xml.exists():
            result.dropped.append(Issue(name, "no_annotation", f"no {xml.name} next to the image"))
            continue
        try:
            annotation = read_voc(xml)
        except AnnotationError as err:
            result.dropped.append(Issue(name, "annotation_invalid", str(err)))
            continue
        try:
            width, height = image_size(path)
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            result.dropped.append(Issue(name, "image_unreadable", f"{path}: {err}"))
            continue
        cleaned, issues = clean_boxes(replace(annotation, filename=name), width, height, classes, name)
        result.fixed.extend(issues)
        if not cleaned.boxes:
            result.dropped.append(Issue(name, "no_valid_boxes", "no usable box left after cleaning"))
            continue
        result.kept.append(Sample(name, cleaned))
    return result


def _count(items: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(items).items()))


def issues_as_dicts(result: CleanResult) -> dict[str, list[dict]]:
    """Every decision, file by file, for people and tests to read."""
    return {"dropped": [asdict(i) for i in result.dropped], "fixed": [asdict(i) for i in result.fixed]}


def report(result: CleanResult, splits: Mapping[str, Sequence[Sample]]) -> dict:
    """Counts for DVC metrics: what came in, what was dropped or fixed and why, and the
    images, boxes and boxes per class of each split."""
    dropped_images = [i for i in result.dropped if i.reason != "image_missing"]
    return {
        "images_in": len(result.kept) + len(dropped_images),
        "kept": len(result.kept),
        "dropped": len(dropped_images),
        "dropped_by_reason": _count(i.reason for i in result.dropped),
        "fixed_by_reason": _count(i.reason for i in result.fixed),
        "splits": {
            name: {
                "images": len(samples),
                "boxes": sum(len(s.annotation.boxes) for s in samples),
                "boxes_per_class": _count(b.label for s in samples for b in s.annotation.boxes),
            }
            for name, samples in splits.items()
        },
    }
