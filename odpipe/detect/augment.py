"""Detection's offline augmentation: each train image's augmented copies with their boxes, in
the seeded order and through the worker pool the tfrecord stage writes them with, and the preview
grid of a policy. Boxes are transformed with the image and dropped when too little of them is
left (``min_visibility``, ``min_area``).

A policy may list ``Mosaic`` (Albumentations' own parameters): each copy is then tiled with
partner images, other train images drawn from the copy's seed among the split's file names,
their boxes carried with their classes. The partners are picked where the copies are queued
and read by whoever draws the copy, so the bytes stay the same for any number of workers.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

import albumentations as A
import numpy as np
from PIL import Image

from odpipe.core.draw import sample_grid
from odpipe.core.parallel import Workers
from odpipe.data.annotations import Annotation
from odpipe.data.augmentation import JPEG_QUALITY, Policy, build_transform, cached_transform, copy_seed, decode_rgb
from odpipe.data.records import shuffled
from odpipe.detect.records import ImageBoxes, make_example, with_images

PARTNER_STREAM = 1  # partners draw from their own stream of the copy's seed, not the transform's


def mosaic_of(transform: A.Compose | None) -> A.Mosaic | None:
    """The policy's mosaic, if it has one."""
    return next((t for t in transform.transforms if isinstance(t, A.Mosaic)), None) if transform else None


def partner_count(transform: A.Compose | None) -> int:
    """How many other images each copy is tiled with: all the mosaic's cells but one."""
    mosaic = mosaic_of(transform)
    return math.prod(mosaic.grid_yx) - 1 if mosaic else 0


class PartnerPicker:
    """Chooses each copy's mosaic partners among a split's images: ``count`` others (fewer in
    a smaller split: the mosaic then repeats the image itself), drawn from the copy's seed.
    The choice depends on the set of file names, not on their order."""

    def __init__(self, records: Iterable[ImageBoxes], count: int, seed: int) -> None:
        self.records = sorted(records, key=lambda record: record.filename) if count else []
        self.position = {record.filename: i for i, record in enumerate(self.records)}
        self.count = count
        self.seed = seed

    def __call__(self, record: ImageBoxes, copy: int) -> tuple[ImageBoxes, ...]:
        own = self.position.get(record.filename, len(self.records))
        others = len(self.records) - (own < len(self.records))
        if not self.count or others < 1:
            return ()
        rng = np.random.default_rng([copy_seed(self.seed, record.filename, copy), PARTNER_STREAM])
        chosen = rng.choice(others, size=min(self.count, others), replace=False)
        return tuple(self.records[i + (i >= own)] for i in chosen)


def _gather(sources: Sequence[ImageBoxes], field: str, kept: Sequence[int]) -> tuple:
    """A per-box field of the boxes kept, numbered through all the sources in turn; an
    optional field (``difficult``, ...) that some sources lack counts as 0 there."""
    columns = [getattr(source, field) for source in sources]
    if not any(columns):
        return ()
    values = [v for source, column in zip(sources, columns, strict=True) for v in column or (0,) * len(source.boxes)]
    return tuple(values[i] for i in kept)


def _box_array(record: ImageBoxes) -> np.ndarray:
    return np.array(record.boxes, dtype=np.float32).reshape(-1, 4)


def augment_one(
    record: ImageBoxes,
    image: np.ndarray,
    transform: A.Compose,
    seed: int,
    copy: int,
    partners: Sequence[tuple[ImageBoxes, np.ndarray]] = (),
) -> tuple[ImageBoxes, bytes]:
    """One augmented copy: the JPEG bytes and the boxes that survived, with their labels.
    ``partners`` (records and decoded images) fill a mosaic's other cells; their boxes are
    numbered after the image's own, so every box kept is traced to its source and class."""
    transform.set_random_seed(copy_seed(seed, record.filename, copy))
    sources = (record, *(partner for partner, _ in partners))
    inputs = {"image": image, "bboxes": _box_array(record), "box_index": list(range(len(record.boxes)))}
    if mosaic := mosaic_of(transform):
        start = len(record.boxes)
        inputs[mosaic.metadata_key] = []
        for partner, partner_image in partners:
            index = list(range(start, start + len(partner.boxes)))
            inputs[mosaic.metadata_key].append(
                {"image": partner_image, "bboxes": _box_array(partner), "box_index": index}
            )
            start += len(partner.boxes)
    out = transform(**inputs)
    kept = [int(i) for i in out["box_index"]]
    height, width = out["image"].shape[:2]
    buffer = io.BytesIO()
    Image.fromarray(out["image"]).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    augmented = replace(
        record,
        filename=f"{record.filename}#aug{copy}",
        width=width,
        height=height,
        boxes=tuple(tuple(float(v) for v in box) for box in out["bboxes"]),
        **{field: _gather(sources, field, kept) for field in ("labels", "texts", "difficult", "truncated", "crowd")},
    )
    return augmented, buffer.getvalue()


def augment(examples: Iterable[tuple[ImageBoxes, bytes]], policy: Policy) -> Iterator[tuple[ImageBoxes, bytes]]:
    """Each example as it is, followed by its ``policy.copies`` augmented copies. The examples
    are the whole split: a mosaic's partners are drawn among them."""
    transform = build_transform(policy) if policy.copies else None
    count = partner_count(transform)
    examples = list(examples) if count else examples  # a mosaic's partners may be any of them
    images = {record.filename: encoded for record, encoded in examples} if count else {}
    picker = PartnerPicker([record for record, _ in examples] if count else [], count, policy.seed)
    return _with_copies(examples, policy, transform, picker, images.__getitem__)


def _with_copies(
    examples: Iterable[tuple[ImageBoxes, bytes]],
    policy: Policy,
    transform: A.Compose | None,
    picker: PartnerPicker,
    read: Callable[[str], bytes],
) -> Iterator[tuple[ImageBoxes, bytes]]:
    """Each example followed by its copies, a mosaic's partners read by file name."""
    for record, encoded in examples:
        yield record, encoded
        if transform is None:
            continue
        image = decode_rgb(encoded)
        for copy in range(1, policy.copies + 1):
            partners = [(partner, decode_rgb(read(partner.filename))) for partner in picker(record, copy)]
            yield augment_one(record, image, transform, policy.seed, copy, partners)


Unit = tuple[ImageBoxes, int, tuple[ImageBoxes, ...]]  # an image, its copy number, the copy's partners


def example_bytes(unit: Unit, image_root: Path, policy: Policy) -> bytes:
    """One serialized Example: copy 0 is the image as it is, copy n its n-th augmented copy.
    Runs in a worker process; a copy depends only on its own name and number (and on the
    partners picked for it, which come with it)."""
    record, copy, partners = unit
    encoded = (image_root / record.filename).read_bytes()
    if copy:
        images = [(partner, decode_rgb((image_root / partner.filename).read_bytes())) for partner in partners]
        record, encoded = augment_one(record, decode_rgb(encoded), cached_transform(policy), policy.seed, copy, images)
    return make_example(record, encoded).SerializeToString()


def split_examples(
    records: Sequence[ImageBoxes], image_root: Path, policy: Policy, order_seed: int | None, workers: Workers
) -> Iterator[bytes]:
    """A split's serialized Examples in the order they are written, each image read when its
    turn comes (memory stays flat). The train split (``order_seed`` given) gets the policy's
    copies and the seeded random order of ``tfrecord.shuffled``; the others are as they are.
    Augmented copies are drawn by the workers, with the mosaic partners picked here."""
    if order_seed is None:
        units: Iterable[Unit] = ((record, 0, ()) for record in records)
    else:
        count = partner_count(cached_transform(policy)) if policy.copies else 0
        picker = PartnerPicker(records, count, policy.seed)
        pairs = shuffled(records, policy.copies, order_seed)
        units = ((record, copy, picker(record, copy) if copy else ()) for record, copy in pairs)
    return workers.map(partial(example_bytes, image_root=image_root, policy=policy), units, inline=is_original)


def is_original(unit: Unit) -> bool:
    """An image written as it is: cheaper to build here than to ship to a worker and back
    (measured by ``make bench-data``); augmented copies go to the workers."""
    return unit[1] == 0


def as_annotation(record: ImageBoxes) -> Annotation:
    """An example in the shape the report's sample grid draws."""
    return Annotation(record.filename, record.width, record.height, record.labelled_boxes())


def preview_grid(
    records: Sequence[ImageBoxes], image_root: Path, policy: Policy, classes: Sequence[str], rows: int = 4
) -> Image.Image:
    """What the policy does, before any training: each row one train image followed by its
    augmented copies, boxes drawn (just originals when the policy makes no copies). The copies
    are those the train TFRecords hold: ``records`` is the whole split, mosaic partners are
    drawn among it, and only the images shown or tiled in are read."""
    columns = 1 + policy.copies if policy.copies else 4
    transform = build_transform(policy) if policy.copies else None
    picker = PartnerPicker(records, partner_count(transform), policy.seed)
    first = records[: rows if policy.copies else rows * columns]
    shown = list(
        _with_copies(
            with_images(first, image_root), policy, transform, picker, lambda name: (image_root / name).read_bytes()
        )
    )
    images = {record.filename: encoded for record, encoded in shown}
    return sample_grid([as_annotation(record) for record, _ in shown], images, classes, columns=columns, rows=rows)
