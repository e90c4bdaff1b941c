"""Offline augmentation of the train split with Albumentations, declared in ``conf/augment``,
as every task uses it: the policy, its transforms (built once per process), and the seed of each
augmented copy, derived from the policy seed, the file name and the copy number, so the output is
identical from run to run and does not depend on the order images are read in. Detection's copies
with boxes and mosaics are in :mod:`odpipe.detect.augment`; the Keras tasks' in their records.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import albumentations as A
import numpy as np
from PIL import Image

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


def decode_rgb(encoded: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(encoded)) as opened:
        return np.asarray(opened.convert("RGB"))


_TRANSFORMS: dict[tuple[str, bool], A.Compose] = {}  # per process: a worker builds each policy's once


def cached_transform(policy: Policy, boxes: bool = True) -> A.Compose:
    """:func:`build_transform`, built once per process (a worker makes every copy of its chunk)."""
    key = (repr(policy), boxes)
    if key not in _TRANSFORMS:
        _TRANSFORMS[key] = build_transform(policy, boxes)
    return _TRANSFORMS[key]
