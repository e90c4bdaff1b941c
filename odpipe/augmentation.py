"""Offline augmentation of the train split with Albumentations, declared in ``conf/augment``.

Each train image gets ``copies`` augmented versions next to the original in the train
TFRecords. Boxes are transformed with the image and dropped when too little of them is left
(``min_visibility``, ``min_area``). Every copy draws its randomness from a seed derived from
the policy seed, the file name and the copy number, so the output is identical from run to
run and does not depend on the order images are read in.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import albumentations as A
import numpy as np
from PIL import Image

from odpipe.annotations import Annotation
from odpipe.parallel import Workers
from odpipe.report import sample_grid
from odpipe.tfrecord import ImageBoxes, make_example, shuffled

JPEG_QUALITY = 95


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
            min_visibility=float(augment["min_visibility"]),
            min_area=float(augment["min_area"]),
            seed=int(augment["seed"]),
        )


def build_transform(policy: Policy) -> A.Compose:
    """The policy as an ``A.Compose``; an unknown transform or parameter fails here, named."""
    transforms = []
    for spec in policy.transforms:
        params = {k: v for k, v in spec.items() if k != "name"}
        name = spec.get("name")
        factory = getattr(A, str(name), None)
        if not isinstance(factory, type) or not issubclass(factory, A.BasicTransform):
            raise ValueError(f"augment.transforms: {name!r} is not an Albumentations transform")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                transforms.append(factory(**params))
            except (TypeError, ValueError) as err:
                raise ValueError(f"augment.transforms: {name}({params}) is invalid: {err}") from err
        # Albumentations only warns about a misspelt parameter, and then ignores it.
        if invalid := [str(w.message) for w in caught if "not valid" in str(w.message)]:
            raise ValueError(f"augment.transforms: {name}({params}): {'; '.join(invalid)}")
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


def augment_one(
    record: ImageBoxes, image: np.ndarray, transform: A.Compose, seed: int, copy: int
) -> tuple[ImageBoxes, bytes]:
    """One augmented copy: the JPEG bytes and the boxes that survived, with their labels."""
    transform.set_random_seed(copy_seed(seed, record.filename, copy))
    out = transform(
        image=image,
        bboxes=np.array(record.boxes, dtype=np.float32).reshape(-1, 4),
        box_index=list(range(len(record.boxes))),
    )
    kept = [int(i) for i in out["box_index"]]
    height, width = out["image"].shape[:2]
    buffer = io.BytesIO()
    Image.fromarray(out["image"]).save(buffer, format="JPEG", quality=JPEG_QUALITY)

    def pick(values: tuple) -> tuple:
        return tuple(values[i] for i in kept) if values else ()

    augmented = replace(
        record,
        filename=f"{record.filename}#aug{copy}",
        width=width,
        height=height,
        boxes=tuple(tuple(float(v) for v in box) for box in out["bboxes"]),
        labels=pick(record.labels),
        texts=pick(record.texts),
        difficult=pick(record.difficult),
        truncated=pick(record.truncated),
        crowd=pick(record.crowd),
    )
    return augmented, buffer.getvalue()


def decode_rgb(encoded: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(encoded)) as opened:
        return np.asarray(opened.convert("RGB"))


def augment(examples: Iterable[tuple[ImageBoxes, bytes]], policy: Policy) -> Iterator[tuple[ImageBoxes, bytes]]:
    """Each example as it is, followed by its ``policy.copies`` augmented copies."""
    transform = build_transform(policy) if policy.copies else None
    for record, encoded in examples:
        yield record, encoded
        if transform is None:
            continue
        image = decode_rgb(encoded)
        for copy in range(1, policy.copies + 1):
            yield augment_one(record, image, transform, policy.seed, copy)


_TRANSFORMS: dict[str, A.Compose] = {}  # per process: a worker builds each policy's once


def _transform(policy: Policy) -> A.Compose:
    key = repr(policy)
    if key not in _TRANSFORMS:
        _TRANSFORMS[key] = build_transform(policy)
    return _TRANSFORMS[key]


def example_bytes(unit: tuple[ImageBoxes, int], image_root: Path, policy: Policy) -> bytes:
    """One serialized Example: copy 0 is the image as it is, copy n its n-th augmented copy.
    Runs in a worker process; a copy depends only on its own name and number."""
    record, copy = unit
    encoded = (image_root / record.filename).read_bytes()
    if copy:
        record, encoded = augment_one(record, decode_rgb(encoded), _transform(policy), policy.seed, copy)
    return make_example(record, encoded).SerializeToString()


def split_examples(
    records: Sequence[ImageBoxes], image_root: Path, policy: Policy, order_seed: int | None, workers: Workers
) -> Iterator[bytes]:
    """A split's serialized Examples in the order they are written, each image read when its
    turn comes (memory stays flat). The train split (``order_seed`` given) gets the policy's
    copies and the seeded random order of ``tfrecord.shuffled``; the others are as they are.
    Augmented copies are drawn by the workers."""
    if order_seed is None:
        units: Iterable[tuple[ImageBoxes, int]] = ((record, 0) for record in records)
    else:
        units = shuffled(records, policy.copies, order_seed)
    return workers.map(partial(example_bytes, image_root=image_root, policy=policy), units, inline=is_original)


def is_original(unit: tuple[ImageBoxes, int]) -> bool:
    """An image written as it is: cheaper to build here than to ship to a worker and back
    (measured by ``make bench-data``); augmented copies go to the workers."""
    return unit[1] == 0


def as_annotation(record: ImageBoxes) -> Annotation:
    """An example in the shape the report's sample grid draws."""
    return Annotation(record.filename, record.width, record.height, record.labelled_boxes())


def preview_grid(
    examples: Sequence[tuple[ImageBoxes, bytes]], policy: Policy, classes: Sequence[str], rows: int = 4
) -> Image.Image:
    """What the policy does, before any training: each row one train image followed by its
    augmented copies, boxes drawn (just originals when the policy makes no copies)."""
    columns = 1 + policy.copies if policy.copies else 4
    shown = list(augment(examples[: rows if policy.copies else rows * columns], policy))
    images = {record.filename: encoded for record, encoded in shown}
    return sample_grid([as_annotation(record) for record, _ in shown], images, classes, columns=columns, rows=rows)
