"""Validate every image and annotation; keep what is usable, and say why anything is not.

Nothing is lost silently: each input image ends up kept (possibly with fixes such as clipped
boxes or a rotated image, also reported) or dropped with exactly one reason code, and every
annotation file or entry that could not be used is listed with its reason too.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from itertools import chain, count, tee
from pathlib import Path, PurePosixPath

from odpipe.core.boxes import Box, agreement
from odpipe.core.images import (
    DECODE_ERRORS,
    DEFAULT_MAX_PIXELS,
    ImageTooLargeError,
    normalise_image,
    same_aspect,
)
from odpipe.core.parallel import Workers
from odpipe.data.annotations import Annotation
from odpipe.data.cleaning import FirstCopies, Inspected, Issue, Ledger
from odpipe.data.discover import walk
from odpipe.data.splitting import missing_classes
from odpipe.detect.formats import ImageIndex, Parsed, read_dataset
from odpipe.detect.split_files import Sample, SplitTally


@dataclass(frozen=True)
class ClassRules:
    """What to do with the labels found: rename or merge, ignore, and refuse or drop others."""

    classes: Sequence[str]
    rename: Mapping[str, str] = field(default_factory=dict)
    ignore: Sequence[str] = ()
    unknown: str = "drop"  # or "error"

    def apply(self, label: str, where: str) -> tuple[str | None, Issue | None]:
        """The label to train on, or None with the reason the box is not kept."""
        if not label:
            return None, Issue(where, "box_unlabelled", "box with an empty class name dropped")
        label = self.rename.get(label, label)
        if label in self.ignore:
            return None, Issue(where, "class_ignored", f"box of class {label!r} ignored by config")
        if label not in self.classes:
            if self.unknown == "error":
                raise ValueError(f"{where}: class {label!r} is not in dataset.classes {list(self.classes)}")
            return None, Issue(where, "unknown_class", f"box of class {label!r} dropped")
        return label, None


def class_names(configured: Sequence[str] | None, parsed: Parsed, rules: ClassRules) -> list[str]:
    """``dataset.classes`` when set; else the classes the dataset names (COCO's categories and a
    YOLO class table in their order, labels found in boxes sorted), renamed by ``class_map``,
    ignored ones left out."""
    if configured:
        return list(configured)
    renamed = (rules.rename.get(name, name) for name in parsed.names or ())
    names = list(dict.fromkeys(name for name in renamed if name and name not in rules.ignore))
    if not names:
        raise ValueError(f"no class names found in the {parsed.format} annotations: set dataset.classes")
    return names


@dataclass(frozen=True)
class CleanPolicy:
    """The choices cleaning leaves to the user (``dataset.*`` and ``clean_split.*``)."""

    keep_negatives: bool = False
    drop_difficult: bool = False
    max_image_pixels: int | None = DEFAULT_MAX_PIXELS
    workers: int = 1


@dataclass
class CleanResult:
    """Every decision; the images themselves are already written, so memory stays flat."""

    kept: list[Sample] = field(default_factory=list)  # unless they went elsewhere (``clean``'s ``keep``)
    dropped: list[Issue] = field(default_factory=list)  # images, exactly one entry each
    unused: list[Issue] = field(default_factory=list)  # annotation files or entries
    fixed: list[Issue] = field(default_factory=list)  # kept, but changed


def clip_box(box: Box, width: int, height: int) -> Box | None:
    """The box clipped to the image (the same object when inside it), or None when nothing of
    it is left."""
    if 0 <= box.xmin < box.xmax <= width and 0 <= box.ymin < box.ymax <= height:
        return box
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


def fit_to_image(annotation: Annotation, width: int, height: int) -> tuple[Annotation | None, Issue | None]:
    """The annotation in the real image's pixels.

    An annotation made on a resized copy (its size differs, its aspect ratio does not) has its
    boxes scaled; clipping them instead would train on wrong boxes. When the aspect ratios
    differ there is no telling where the boxes belong: None, with the reason.
    """
    claimed = (annotation.width, annotation.height)
    if not annotation.boxes or not annotation.width or not annotation.height or claimed == (width, height):
        return replace(annotation, width=width, height=height), None
    sx, sy = width / annotation.width, height / annotation.height
    says = f"annotation says {annotation.width}x{annotation.height}, image is {width}x{height}"
    if not same_aspect((width, height), claimed):
        return None, Issue(
            annotation.filename, "size_mismatch", f"{says}: aspect ratios differ, boxes cannot be mapped"
        )
    boxes = tuple(
        replace(b, xmin=b.xmin * sx, ymin=b.ymin * sy, xmax=b.xmax * sx, ymax=b.ymax * sy) for b in annotation.boxes
    )
    fitted = replace(annotation, width=width, height=height, boxes=boxes)
    return fitted, Issue(annotation.filename, "boxes_rescaled", f"{says}: boxes scaled by {sx:.4g} x {sy:.4g}")


def clean_boxes(annotation: Annotation, rules: ClassRules, drop_difficult: bool) -> tuple[Annotation, list[Issue]]:
    """Boxes of wanted classes, inside the image (``annotation`` is in its real size);
    every change reported."""
    name = annotation.filename
    issues = []
    boxes = []
    for box in annotation.boxes:
        label, issue = rules.apply(box.label, name)
        if issue:
            issues.append(issue)
            continue
        if drop_difficult and box.difficult:
            issues.append(Issue(name, "difficult_dropped", f"difficult box of class {label!r} dropped by config"))
            continue
        labelled = box if label == box.label else replace(box, label=label)
        clipped = clip_box(labelled, annotation.width, annotation.height)
        coords = f"{box.xmin:g},{box.ymin:g},{box.xmax:g},{box.ymax:g}"
        if clipped is None:
            issues.append(Issue(name, "box_empty", f"box {coords} is empty or outside the image"))
            continue
        if clipped is not labelled:
            issues.append(Issue(name, "box_clipped", f"box {coords} clipped to the image"))
        boxes.append(clipped)
    return replace(annotation, boxes=tuple(boxes)), issues


def inspect_image(job: tuple[str, tuple[int, int] | None, Path], root: Path, max_pixels: int | None) -> Inspected:
    """Hash, decode and (when needed) convert one image, and write the bytes to train on to
    the job's staging file; runs in a worker process, so the copying is parallel too."""
    name, claimed, staged = job
    path = Path(os.path.join(root, name))  # not root / name: pathlib would intern the index's string for good
    try:
        raw = path.read_bytes()
    except OSError as err:
        return Inspected(f"unread:{name}", None, False, "image_unreadable", f"{path}: {err}")
    digest = hashlib.sha256(raw).hexdigest()
    try:
        image = normalise_image(raw, claimed, max_pixels)
        staged.write_bytes(image.data or raw)
        return Inspected(digest, replace(image, data=None), image.data is not None)
    except ImageTooLargeError as err:
        return Inspected(digest, None, False, "image_too_large", f"{path}: {err}")
    except DECODE_ERRORS as err:
        return Inspected(digest, None, False, "image_empty" if not raw else "image_unreadable", f"{path}: {err}")
    except Exception as err:  # noqa: BLE001  Pillow raises more than it documents on malformed files
        return Inspected(digest, None, False, "image_unreadable", f"{path}: {err!r}")


class CleanedFolder:
    """The cleaned images' folder. Names stay unique even when conversion changes an
    extension: ``a.png`` becomes ``a.jpg``, or ``a.png.jpg`` when an ``a.jpg`` exists too
    (compared ignoring case, as a Windows or macOS checkout would)."""

    def __init__(self, root: Path, inputs: Sequence[str]) -> None:
        self.root = root
        self._inputs = inputs
        self._taken: set[str] | None = None  # names a converted image may not take, once one is
        self._folders: set[Path] = set()

    def place(self, staged: Path, name: str) -> None:
        """Move a staged image in under ``name`` (one rename: no copy in this process)."""
        target = Path(os.path.join(self.root, name))  # not root / name: pathlib would intern ``name`` for good
        if target.parent not in self._folders:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._folders.add(target.parent)
        os.replace(staged, target)

    def claim(self, name: str, converted: bool) -> str:
        if not converted or name.lower().endswith((".jpg", ".jpeg")):
            return name
        if self._taken is None:  # every name tried ends in .jpg: only such inputs can collide
            self._taken = {n.lower() for n in self._inputs if n.lower().endswith(".jpg")}
        path = PurePosixPath(name)
        numbered = (path.with_name(f"{path.stem}-{i}.jpg") for i in count(2))
        for candidate in chain((path.with_suffix(".jpg"), path.with_name(path.name + ".jpg")), numbered):
            if str(candidate).lower() not in self._taken:
                self._taken.add(str(candidate).lower())
                return str(candidate)
        raise AssertionError("unreachable: the numbered names never run out")


def _labelled(annotation: Annotation | None) -> list[tuple[str, tuple[float, float, float, float]]]:
    return [(b.label, (b.xmin, b.ymin, b.xmax, b.ymax)) for b in annotation.boxes] if annotation else []


def duplicate_issue(name: str, first: str, boxes: Annotation | None, first_boxes: Annotation | None) -> Issue:
    """The drop of a copy of an earlier image. Two copies labelled differently are a
    labelling-consistency problem worth fixing: say how far their boxes agree."""
    ours, theirs = _labelled(boxes), _labelled(first_boxes)
    if sorted(ours) == sorted(theirs):
        return Issue(name, "duplicate", f"same content as {first}")
    return Issue(
        name,
        "duplicate_labels_differ",
        f"same content as {first}, labelled differently: {len(ours)} vs {len(theirs)} boxes, "
        f"agreement (IoU) {agreement(ours, theirs):.2f}",
    )


def _jobs(
    index: ImageIndex, parsed: Parsed, keep_negatives: bool, dropped: list[Issue]
) -> Iterator[tuple[str, tuple[int, int] | None]]:
    """The images that need reading, in order, with the size their annotation claims (None:
    unknown); those decided on their annotation alone (unusable, or missing when negatives
    are not kept) go to ``dropped`` instead."""
    invalid = {issue.file: issue for issue in parsed.issues if issue.reason == "annotation_invalid"}
    for name in index.paths:
        size = parsed.annotations.size(name)
        if size is None and name in invalid:
            dropped.append(invalid[name])
        elif size is None and not keep_negatives:
            dropped.append(Issue(name, "no_annotation", "image without annotation (dataset.keep_negatives: false)"))
        else:
            yield name, (size if size and all(size) else None)


CHUNK = 16  # images per hand-over to a worker: fewer hand-overs leave this process free to decide


def clean(
    root: Path,
    out_dir: Path,
    *,
    index: ImageIndex,
    parsed: Parsed,
    rules: ClassRules,
    policy: CleanPolicy,
    keep: Callable[[Sample], None] | None = None,
) -> CleanResult:
    """Decide on every image under ``root`` given its parsed annotation, writing each kept
    image into ``out_dir`` as soon as it is decided.

    Workers decode, convert and write each image to a staging file; this process takes every
    decision that depends on earlier images (duplicates, names), in sorted order, and renames
    the staging file into place, so the result is the same for any number of workers. Each
    kept sample goes to ``keep`` when it is decided (to ``result.kept`` without one): a stage
    writes it out rather than hold every sample. Nothing else held grows with the images.
    """
    result = CleanResult(unused=list(parsed.issues), fixed=list(parsed.box_issues))
    keep = keep or result.kept.append
    out = CleanedFolder(out_dir, index.paths)
    firsts = FirstCopies()
    early: list[Issue] = []  # dropped on their annotation alone: listed first, as they are decided first
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir))
    jobs = enumerate(_jobs(index, parsed, policy.keep_negatives, early))
    todo = ((name, claimed, staging / str(i)) for i, (name, claimed) in jobs)
    settling, sent = tee(todo)  # read lazily: the workers' window bounds what tee holds
    inspect = partial(inspect_image, root=root, max_pixels=policy.max_image_pixels)
    with Workers(policy.workers, chunk=CHUNK) as workers:
        try:
            for (name, _, staged), seen in zip(settling, workers.map(inspect, sent), strict=True):
                _settle(name, seen, staged, parsed, firsts, out, rules, policy, result, keep)
        finally:
            shutil.rmtree(staging)
    moved = {id(issue) for issue in early}
    result.dropped = early + result.dropped
    result.unused = [issue for issue in result.unused if id(issue) not in moved]
    return result


def _settle(
    name: str,
    seen: Inspected,
    staged: Path,
    parsed: Parsed,
    firsts: FirstCopies,
    out: CleanedFolder,
    rules: ClassRules,
    policy: CleanPolicy,
    result: CleanResult,
    keep: Callable[[Sample], None],
) -> None:
    """One image's decision, in input order: its staged bytes renamed into place, or dropped."""
    annotation = parsed.annotations.get(name)
    first = firsts.get(seen.sha256)
    if first is not None:
        result.dropped.append(duplicate_issue(name, first, annotation, parsed.annotations.get(first)))
        return
    if seen.image is None:
        result.dropped.append(Issue(name, seen.reason, seen.detail))
        return
    sample, issues = _decide(name, seen, annotation, out, rules, policy.drop_difficult)
    if isinstance(sample, Issue):  # a copy of it may still be usable: it is not a duplicate
        result.dropped.append(sample)
        return
    firsts.add(seen.sha256, name)
    result.fixed.extend(issues)
    out.place(staged, sample.image)
    keep(sample)


def _decide(
    name: str,
    seen: Inspected,
    annotation: Annotation | None,
    out: CleanedFolder,
    rules: ClassRules,
    drop_difficult: bool,
) -> tuple[Sample | Issue, list[Issue]]:
    """A decoded image kept as a sample, with what was changed; or the reason it is dropped.
    Only a kept image takes a name in the cleaned folder."""
    image = seen.image
    issues = []
    if annotation is None:
        issues.append(Issue(name, "negative_kept", "image without annotation kept as a negative"))
        annotation = Annotation(name, image.width, image.height, ())
    fitted, issue = fit_to_image(annotation, image.width, image.height)
    if fitted is None:
        return issue, []
    issues += [issue] if issue else []
    cleaned, box_issues = clean_boxes(fitted, rules, drop_difficult)
    issues += box_issues
    if not cleaned.boxes and annotation.boxes:
        why = ", ".join(f"{reason} x{n}" for reason, n in _count(i.reason for i in box_issues).items())
        return Issue(name, "no_valid_boxes", f"no usable box left after cleaning ({why})"), []
    out_name = out.claim(name, seen.converted)
    issues = [Issue(name, change, f"{name} -> {out_name}") for change in image.changes] + issues
    return Sample(out_name, replace(cleaned, filename=out_name), seen.sha256, name), issues


def _count(items: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(items).items()))


def issues_as_dicts(result: CleanResult) -> dict[str, list[dict]]:
    """Every decision, file by file, for people and tests to read."""
    return {key: [asdict(i) for i in getattr(result, key)] for key in ("dropped", "unused", "fixed")}


def account(
    root: Path, index: ImageIndex, parsed: Parsed, dropped: Sequence[Issue], left_out: Sequence[Mapping] = ()
) -> tuple[dict, list[Issue]]:
    """Where every file under ``root`` (and each one ingest ``left_out``) ended, as
    :meth:`Ledger.close` gives it: an image kept or dropped; an annotation file kept when an
    image it annotates is, else dropped for its image's reason or its own; the class tables
    and split lists read, and anything no reader read, as not inputs."""
    ledger = Ledger(walk(root), left_out)
    drops = {issue.file: issue for issue in dropped}
    for image in index.paths:
        if image in drops:
            ledger.dropped(image, drops[image].reason, drops[image].detail)
        else:
            ledger.kept(image)
    images_of: dict[str, list[str]] = {}
    for source, image in parsed.annotations.sources():
        images_of.setdefault(source, []).append(image)
    for source, images in images_of.items():
        if any(image not in drops for image in images):
            ledger.kept(source)
        else:
            first = drops[images[0]]
            ledger.dropped(source, first.reason, f"its image {first.file}: {first.detail}")
    for source, reason in parsed.read.items():
        if reason:
            ledger.dropped(source, reason, "nothing in it could be used: see unused in issues.json")
        else:
            ledger.kept(source)  # its rows went to images another file annotated first
    for file, code in parsed.tables.items():
        ledger.not_input(file, code)
    return ledger.close(f"not read as {parsed.format}")


def report(result: CleanResult, tally: SplitTally, classes: Sequence[str], *, files: Mapping, fmt: str) -> dict:
    """Counts for DVC metrics: the format read, where every file went (``files``, from
    :func:`account`), what was dropped or fixed and why, the images, boxes and boxes per class
    of each split, the classes a split lacks, how many images the group pattern matched, and
    box sizes in COCO's buckets."""
    return {
        "format": fmt,
        "files": dict(files),
        "group_pattern_matches": tally.group_pattern_matches,
        "classes_missing": missing_classes(tally.boxes_per_class, tally.images),
        "classes": list(classes),
        "box_sizes": dict(tally.box_sizes),
        "images_in": tally.kept + len(result.dropped),
        "kept": tally.kept,
        "dropped": len(result.dropped),
        "dropped_by_reason": _count(i.reason for i in result.dropped),
        "unused_annotations_by_reason": _count(i.reason for i in result.unused),
        "fixed_by_reason": _count(i.reason for i in result.fixed),
        "splits": {
            name: {
                "images": tally.images[name],
                "boxes": tally.boxes[name],
                "boxes_per_class": dict(sorted(tally.boxes_per_class[name].items())),
            }
            for name in tally.images
        },
    }


def clean_folder(
    root: Path, out_dir: Path, fmt: str, options: Mapping, rules: ClassRules, policy: CleanPolicy
) -> tuple[ImageIndex, CleanResult]:
    """Parse a dataset folder in ``fmt`` ('auto' to detect it), clean it into ``out_dir``."""
    index, parsed = read_dataset(root, fmt, options)
    return index, clean(root, out_dir, index=index, parsed=parsed, rules=rules, policy=policy)
