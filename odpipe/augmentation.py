"""Offline augmentation of the train split with Albumentations, declared in ``conf/augment``.

Each train image gets ``copies`` augmented versions next to the original in the train
TFRecords. Boxes are transformed with the image and dropped when too little of them is left
(``min_visibility``, ``min_area``). Every copy draws its randomness from a seed derived from
the policy seed, the file name and the copy number, so the output is identical from run to
run and does not depend on the order images are read in.

A policy may list ``Mosaic`` (Albumentations' own parameters): each copy is then tiled with
partner images, other train images drawn from the copy's seed among the split's file names,
their boxes carried with their classes. The partners are picked where the copies are queued
and read by whoever draws the copy, so the bytes stay the same for any number of workers.
"""

from __future__ import annotations

import hashlib
import io
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import albumentations as A
import numpy as np
from PIL import Image

from odpipe.annotations import Annotation
from odpipe.parallel import Workers
from odpipe.report import sample_grid
from odpipe.tfrecord import ImageBoxes, make_example, shuffled, with_images

JPEG_QUALITY = 95
PARTNER_STREAM = 1  # partners draw from their own stream of the copy's seed, not the transform's


@dataclass(frozen=True)
class Policy:
    """A named list of Albumentations transforms, e.g. ``{name: HorizontalFlip, p: 0.5}``."""

    copies: int
    transforms: tuple[Mapping, ...]
    min_visibility: float = 0.0
    min_area: float = 0.0
    seed: int = 0

    @classmethod
    def from_config(cls, augment: Mapping) -> Policy:
        return cls(
            copies=int(augment["copies"]),
            transforms=tuple(dict(t) for t in augment["transforms"]),
            # Box filters: the segment task's stage does not declare them (masks have no boxes).
            min_visibility=float(augment.get("min_visibility", 0.0)),
            min_area=float(augment.get("min_area", 0.0)),
            seed=int(augment["seed"]),
        )


class Mosaic(A.Mosaic):
    """Albumentations' ``Mosaic``, with ``min_visibility`` applied to the cuts of the tiles.

    Albumentations clips each image's boxes to its tile before the policy's box filter sees
    them, so a box with 5% of it left in its tile would pass any ``min_visibility``. Here each
    box carries its whole area on the output canvas (its area in its image times the square of
    the scale the image is fitted into a cell by) through the tiling, and a box is dropped
    when the part left in its tile is a smaller fraction of that than ``min_visibility``.
    """

    def _prepare_final_items(self, primary: dict, additional_items: list[dict], num_needed: int) -> list[dict]:
        items = super()._prepare_final_items(primary, additional_items, num_needed)
        return [self._with_full_area(item) for item in items]

    def _with_full_area(self, item: dict) -> dict:
        """The item with one more box column: each box's area, in output pixels, uncut."""
        boxes = item.get("bboxes")
        if boxes is None or len(boxes) == 0:
            return item
        height, width = item["image"].shape[:2]
        fit = max if self.fit_mode == "cover" else min  # cover fills the cell, contain fits in it
        scale = fit(self.cell_shape[0] / height, self.cell_shape[1] / width)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) * width * height * scale**2
        return {**item, "bboxes": np.column_stack([boxes, area])}

    def apply_to_bboxes(self, bboxes: np.ndarray, processed_cells: dict, **params) -> np.ndarray:
        min_visibility = self.get_processor("bboxes").params.min_visibility
        height, width = self.target_size
        cells = {}
        for placement, cell in processed_cells.items():
            boxes = cell["bboxes"]
            if boxes.size:  # normalised to the output, already clipped to the tile
                visible = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) * width * height
                boxes = boxes[visible + 1e-6 >= min_visibility * boxes[:, -1], :-1]
            cells[placement] = {**cell, "bboxes": boxes}
        return super().apply_to_bboxes(bboxes, cells, **params)


OWN_TRANSFORMS: dict[str, type[A.BasicTransform]] = {"Mosaic": Mosaic}  # replace Albumentations' own


def build_transform(policy: Policy, boxes: bool = True) -> A.Compose:
    """The policy as an ``A.Compose``, for images with boxes or (``boxes=False``) with a mask,
    which every transform moves in lockstep with the image (nearest neighbour); an unknown
    transform or parameter fails here, named."""
    transforms = []
    for spec in policy.transforms:
        params = {k: v for k, v in spec.items() if k != "name"}
        name = spec.get("name")
        factory = OWN_TRANSFORMS.get(str(name)) or getattr(A, str(name), None)
        if not isinstance(factory, type) or not issubclass(factory, A.BasicTransform):
            raise ValueError(f"augment.transforms: {name!r} is not an Albumentations transform")
        if issubclass(factory, A.Mosaic) and None in [*params.get("target_size", ()), *params.get("cell_shape", ())]:
            raise ValueError(
                "augment.transforms: Mosaic needs a target_size and cell_shape; augment=mosaic takes them from "
                "model.image_size, which is null: set it to the model's input side (e.g. model.image_size=320)"
            )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                transforms.append(factory(**params))
            except (TypeError, ValueError) as err:
                raise ValueError(f"augment.transforms: {name}({params}) is invalid: {err}") from err
        # Albumentations only warns about a misspelt parameter, and then ignores it.
        if invalid := [str(w.message) for w in caught if "not valid" in str(w.message)]:
            raise ValueError(f"augment.transforms: {name}({params}): {'; '.join(invalid)}")
    if sum(isinstance(t, A.Mosaic) for t in transforms) > 1:
        raise ValueError("augment.transforms: at most one Mosaic")
    if not boxes:
        if any(isinstance(t, A.Mosaic) for t in transforms):
            raise ValueError(
                "augment.transforms: Mosaic tiles boxes with their partner images; masks are not supported"
            )
        return A.Compose(transforms, seed=policy.seed)
    bbox_params = A.BboxParams(
        format="pascal_voc",
        label_fields=["box_index"],
        min_visibility=policy.min_visibility,
        min_area=policy.min_area,
        clip=True,
    )
    return A.Compose(transforms, bbox_params=bbox_params, seed=policy.seed)


def copy_seed(seed: int, filename: str, copy: int) -> int:
    """A 32-bit seed for one augmented copy, independent of every other image."""
    digest = hashlib.sha256(f"{seed}\0{filename}\0{copy}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


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


def decode_rgb(encoded: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(encoded)) as opened:
        return np.asarray(opened.convert("RGB"))


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


_TRANSFORMS: dict[tuple[str, bool], A.Compose] = {}  # per process: a worker builds each policy's once


def cached_transform(policy: Policy, boxes: bool = True) -> A.Compose:
    """:func:`build_transform`, built once per process (a worker makes every copy of its chunk)."""
    key = (repr(policy), boxes)
    if key not in _TRANSFORMS:
        _TRANSFORMS[key] = build_transform(policy, boxes)
    return _TRANSFORMS[key]


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
