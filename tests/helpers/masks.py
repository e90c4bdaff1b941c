"""Small segmentation datasets written as each mask format lays them out, shared by the segment
tests: three 16x12 masks painted from rectangles, saved as index or colour PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from odpipe.data.index_masks import PALETTE, VOID

H, W = 12, 16
# Each mask: rectangles (class, x0, y0, x1, y1), end-exclusive, painted in order: later wins.
RECTS = {
    "a": [(1, 0, 0, 8, 6), (2, 8, 6, 16, 12), (VOID, 0, 10, 3, 12)],
    "b": [(3, 2, 2, 10, 9), (1, 6, 0, 16, 4), (VOID, 14, 8, 16, 12)],
    "c": [(2, 0, 0, 16, 12), (3, 4, 3, 12, 9)],
}
NAMES = ("sky", "road", "car", "tree")  # ids 0-3 for the formats that name their classes
COLOURS = ((70, 130, 180), (128, 64, 128), (0, 0, 142), (107, 142, 35))
VOID_COLOUR = (0, 0, 0)


def paint(rects) -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    for cls, x0, y0, x1, y1 in rects:
        mask[y0:y1, x0:x1] = cls
    return mask


MASKS = {stem: paint(rects) for stem, rects in RECTS.items()}


def write_image(path: Path, size: tuple[int, int] = (W, H), seed: int | None = None) -> None:
    """Noise seeded by the name's length unless ``seed`` says otherwise (alike names, alike images)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(path.name) if seed is None else seed)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def save(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def colour_mask(ids: np.ndarray, colours=COLOURS, void: tuple[int, int, int] = VOID_COLOUR) -> Image.Image:
    table = np.array([*colours, *[void] * (256 - len(colours))], np.uint8)
    return Image.fromarray(table[ids])


def palette_mask(ids: np.ndarray, palette=PALETTE) -> Image.Image:
    image = Image.frombytes("P", (ids.shape[1], ids.shape[0]), ids.tobytes())
    image.putpalette([c for colour in palette for c in colour])
    return image


def write_voc(root: Path) -> dict[str, np.ndarray]:
    for stem, ids in MASKS.items():
        write_image(root / "VOC2012/JPEGImages" / f"{stem}.jpg")
        save(palette_mask(ids), root / "VOC2012/SegmentationClass" / f"{stem}.png")
    lists = root / "VOC2012/ImageSets/Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("a\nb\n")
    (lists / "val.txt").write_text("c\n")
    (lists / "trainval.txt").write_text("a\nb\nc\n")
    return {f"VOC2012/JPEGImages/{stem}.jpg": ids for stem, ids in MASKS.items()}


def write_camvid(root: Path) -> dict[str, np.ndarray]:
    """Side by side, as CamVid's release: images in one folder, ``*_L.png`` in another."""
    for stem, ids in MASKS.items():
        write_image(root / "701_StillsRaw_full" / f"0016E5_{stem}.png")
        save(colour_mask(ids), root / "LabeledApproved_full" / f"0016E5_{stem}_L.png")
    rows = [f"{n} , {r} , {g} , {b}" for n, (r, g, b) in zip(NAMES, COLOURS, strict=True)]
    (root / "class_dict.csv").write_text("\n".join([" name , r , g , b ", *rows, "Void, 0, 0, 0", ""]))
    return {f"701_StillsRaw_full/0016E5_{stem}.png": ids for stem, ids in MASKS.items()}
