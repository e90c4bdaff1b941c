"""Validate every image and annotation; keep what is usable, and say why anything is not.

Nothing is lost silently: each input image ends up kept (possibly with fixes such as clipped
boxes or a rotated image, also reported) or dropped with exactly one reason code, and every
annotation file or entry that could not be used is listed with its reason too.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from odpipe.annotations import Annotation, Box
from odpipe.formats import ImageIndex, Issue, Parsed, read_dataset
from odpipe.report import box_sizes
from odpipe.splitting import pins_from_lists, split_images

PASS_THROUGH_FORMATS = {"JPEG", "PNG"}  # what a TFRecord can hold as it is
EXIF_ORIENTATION = 0x0112
SWAPS_SIDES = {5, 6, 7, 8}  # EXIF orientations that rotate by 90 degrees


@dataclass(frozen=True)
class ClassRules:
    """What to do with the labels found: rename or merge, ignore, and refuse or drop others."""

    classes: Sequence[str]
    rename: Mapping[str, str] = field(default_factory=dict)
    ignore: Sequence[str] = ()
    unknown: str = "drop"  # or "error"

    def apply(self, label: str, where: str) -> tuple[str | None, Issue | None]:
        """The label to train on, or None with the reason the box is not kept."""
        label = self.rename.get(label, label)
        if label in self.ignore:
            return None, Issue(where, "class_ignored", f"box of class {label!r} ignored by config")
        if label not in self.classes:
            if self.unknown == "error":
                raise ValueError(f"{where}: class {label!r} is not in dataset.classes {list(self.classes)}")
            return None, Issue(where, "unknown_class", f"box of class {label!r} dropped")
        return label, None


@dataclass(frozen=True)
class Sample:
    """A usable image: its name (relative path), its cleaned annotation, its bytes to train on."""

    image: str
    annotation: Annotation
    sha256: str
    source: str  # the input file's name, which differs from ``image`` when converted to JPEG


@dataclass
class CleanResult:
    kept: list[Sample] = field(default_factory=list)
    dropped: list[Issue] = field(default_factory=list)  # images, exactly one entry each
    unused: list[Issue] = field(default_factory=list)  # annotation files or entries
    fixed: list[Issue] = field(default_factory=list)  # kept, but changed
    images: dict[str, bytes] = field(default_factory=dict)  # the bytes of each kept image


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
    annotation: Annotation, width: int, height: int, rules: ClassRules, drop_difficult: bool
) -> tuple[Annotation, list[Issue]]:
    """Boxes of wanted classes, inside the real image size; every change reported."""
    name = annotation.filename
    issues = []
    if annotation.width and (annotation.width, annotation.height) != (width, height):
        issues.append(
            Issue(
                name,
                "size_mismatch",
                f"annotation says {annotation.width}x{annotation.height}, image is {width}x{height}",
            )
        )
    boxes = []
    for box in annotation.boxes:
        label, issue = rules.apply(box.label, name)
        if issue:
            issues.append(issue)
            continue
        if drop_difficult and box.difficult:
            issues.append(Issue(name, "difficult_dropped", f"difficult box of class {label!r} dropped by config"))
            continue
        coords = f"{box.xmin:g},{box.ymin:g},{box.xmax:g},{box.ymax:g}"
        clipped = clip_box(replace(box, label=label), width, height)
        if clipped is None:
            issues.append(Issue(name, "box_empty", f"box {coords} is empty or outside the image"))
        elif clipped != replace(box, label=label):
            issues.append(Issue(name, "box_clipped", f"box {coords} clipped to the image"))
            boxes.append(clipped)
        else:
            boxes.append(clipped)
    return replace(annotation, width=width, height=height, boxes=tuple(boxes)), issues


def _orient(image: Image.Image, annotation: Annotation | None) -> tuple[Image.Image, bool]:
    """Pixels as the labelling tool showed them. A 90-degree EXIF rotation is applied when the
    annotation's size is the rotated one (or unknown); flips and 180 are always applied, as
    every current labelling tool and browser does."""
    orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    if orientation == 1:
        return image, False
    if orientation in SWAPS_SIDES and annotation is not None and annotation.width:
        if (annotation.width, annotation.height) == image.size:  # the tool showed raw pixels
            return image, False
    return ImageOps.exif_transpose(image), True


def normalise_image(data: bytes, annotation: Annotation | None) -> tuple[bytes, int, int, list[str]]:
    """The bytes to train on, the real size, and what was changed.

    JPEG and PNG in RGB, unrotated, are passed through untouched; anything else (greyscale,
    RGBA, CMYK, 16-bit, palette, BMP, WebP, an EXIF rotation) becomes an RGB JPEG.
    """
    if not data:
        raise OSError("zero-byte file")
    with Image.open(io.BytesIO(data)) as image:
        image.load()  # a truncated file fails here, not later in training
        fmt = image.format
        oriented, rotated = _orient(image, annotation)
        changes = ["exif_rotated"] if rotated else []
        if fmt in PASS_THROUGH_FORMATS and image.mode == "RGB" and not rotated:
            return data, image.width, image.height, changes
        if image.mode != "RGB" or fmt not in PASS_THROUGH_FORMATS:
            changes.append(f"converted_{fmt or 'unknown'}_{image.mode}".lower())
        rgb = _to_rgb(oriented)
        out = io.BytesIO()
        rgb.save(out, format="JPEG", quality=95)
        return out.getvalue(), rgb.width, rgb.height, changes


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB, compositing transparency on white and scaling 16-bit data down to 8 bits."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        return image.point(lambda v: v / 256).convert("L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def jpeg_name(name: str, changed: bool) -> str:
    """Converted images are JPEG: give them the extension that says so."""
    if not changed or name.lower().endswith((".jpg", ".jpeg")):
        return name
    return str(Path(name).with_suffix(".jpg").as_posix())


def clean(
    root: Path, index: ImageIndex, parsed: Parsed, rules: ClassRules, keep_negatives: bool, drop_difficult: bool
) -> CleanResult:
    """Decide on every image under ``root`` given its parsed annotation."""
    result = CleanResult(unused=list(parsed.issues), fixed=list(parsed.box_issues))
    invalid = {issue.file: issue for issue in parsed.issues if issue.reason == "annotation_invalid"}
    first_of: dict[str, str] = {}  # content hash -> first image with it
    for name in index.paths:
        annotation = parsed.annotations.get(name)
        if annotation is None and name in invalid:
            result.unused.remove(invalid[name])
            result.dropped.append(invalid[name])
            continue
        if annotation is None and not keep_negatives:
            result.dropped.append(
                Issue(name, "no_annotation", "image without annotation (dataset.keep_negatives: false)")
            )
            continue
        raw = (root / name).read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        if digest in first_of:
            result.dropped.append(Issue(name, "duplicate", f"same content as {first_of[digest]}"))
            continue
        first_of[digest] = name
        try:
            data, width, height, changes = normalise_image(raw, annotation)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            reason = "image_empty" if not raw else "image_unreadable"
            result.dropped.append(Issue(name, reason, f"{root / name}: {err}"))
            continue
        out_name = jpeg_name(name, data is not raw)
        result.fixed.extend(Issue(name, change, f"{name} -> {out_name}") for change in changes)
        if annotation is None:
            result.fixed.append(Issue(name, "negative_kept", "image without annotation kept as a negative"))
            annotation = Annotation(name, width, height, ())
        cleaned, issues = clean_boxes(replace(annotation, filename=out_name), width, height, rules, drop_difficult)
        result.fixed.extend(issues)
        if not cleaned.boxes and annotation.boxes:
            result.dropped.append(Issue(name, "no_valid_boxes", "no usable box left after cleaning"))
            continue
        result.kept.append(Sample(out_name, cleaned, digest, name))
        result.images[out_name] = data
    return result


def _count(items: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(items).items()))


def issues_as_dicts(result: CleanResult) -> dict[str, list[dict]]:
    """Every decision, file by file, for people and tests to read."""
    return {key: [asdict(i) for i in getattr(result, key)] for key in ("dropped", "unused", "fixed")}


def report(result: CleanResult, splits: Mapping[str, Sequence[Sample]], classes: Sequence[str]) -> dict:
    """Counts for DVC metrics: what came in, what was dropped or fixed and why, the images,
    boxes and boxes per class of each split, and box sizes in COCO's buckets."""
    return {
        "classes": list(classes),
        "box_sizes": box_sizes([s.annotation for s in result.kept]),
        "images_in": len(result.kept) + len(result.dropped),
        "kept": len(result.kept),
        "dropped": len(result.dropped),
        "dropped_by_reason": _count(i.reason for i in result.dropped),
        "unused_annotations_by_reason": _count(i.reason for i in result.unused),
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


def clean_folder(
    root: Path, fmt: str, options: Mapping, rules: ClassRules, keep_negatives: bool, drop_difficult: bool
) -> tuple[ImageIndex, CleanResult]:
    """Parse a dataset folder in ``fmt`` ('auto' to detect it) and clean it."""
    index, parsed = read_dataset(root, fmt, options)
    return index, clean(root, index, parsed, rules, keep_negatives, drop_difficult)


def split_samples(
    samples: Sequence[Sample],
    lists: Mapping[str, str],
    ratios: Mapping[str, float],
    seed: int,
    group_pattern: str | None,
) -> dict[str, list[Sample]]:
    """Cleaned samples by split; ``lists`` (VOC ImageSets, by input file name) pin images."""
    by_name = {s.image: s for s in samples}
    hashes = {s.image: s.sha256 for s in samples}
    labels = {s.image: [b.label for b in s.annotation.boxes] for s in samples}
    renamed = {s.source: s.image for s in samples}  # names change when converted to JPEG
    pins = pins_from_lists({renamed.get(k, k): v for k, v in lists.items()}, hashes, ratios, seed)
    names = split_images(hashes, labels, ratios, seed, group_pattern, pins)
    return {split: [by_name[n] for n in split_names] for split, split_names in names.items()}
