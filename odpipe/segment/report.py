"""The human side of segmentation's evaluation: masks in colour, masks over their images and a
gallery of images beside their truth and prediction, which is how users see what a model gets
wrong where the metrics only say how much (the confusion matrix's heat map, shared with the
other tasks, is :func:`odpipe.engine.confusion.confusion_figure`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from odpipe.core.draw import BACKGROUND, GAP, LINE, TEXT, Colour, open_rgb
from odpipe.data.cleaning import count_table, decisions, files_table
from odpipe.data.index_masks import VOID, decode_png

ImageLike = Image.Image | np.ndarray | bytes  # bytes: an encoded image, as a TFRecord holds it
# Void is grey: neither class 0's black in Pascal VOC's colours nor any other of them (their
# channels are multiples of 32 below 512 classes).
VOID_COLOUR: Colour = (80, 80, 80)
SWATCH = 12  # pixels: the side of a legend's colour square


def _class_ids(index_mask: np.ndarray, count: int) -> np.ndarray:
    """The mask as indices into a colour table, refused when it holds an id with no colour."""
    mask = np.asarray(index_mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask must be 2-D (height, width), this one has shape {mask.shape}")
    unknown = (mask != VOID) & ((mask < 0) | (mask >= count))
    if unknown.any():
        found = np.unique(mask[unknown])[:5].tolist()
        raise ValueError(f"mask has class ids {found} but there are colours for {count} classes (void is {VOID})")
    return mask.astype(np.intp)


def _colour_table(colors: Sequence[Colour]) -> np.ndarray:
    table = np.full((VOID + 1, 3), VOID_COLOUR, dtype=np.uint8)
    table[: len(colors)] = colors
    return table


def colorize(index_mask: np.ndarray, colors: Sequence[Colour]) -> Image.Image:
    """Each pixel in its class's colour, void pixels in ``VOID_COLOUR`` (grey)."""
    return Image.fromarray(_colour_table(colors)[_class_ids(index_mask, len(colors))])


def _rgb(image: ImageLike) -> Image.Image:
    if isinstance(image, bytes):
        return open_rgb(image)
    return (image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))).convert("RGB")


def overlay(image: ImageLike, index_mask: np.ndarray, colors: Sequence[Colour], alpha: float = 0.5) -> Image.Image:
    """The image with each class's pixels tinted by its colour (``alpha`` of it). Background
    (class 0) and void are left as they are, so that only what was labelled or predicted as an
    object stands out against a scene that stays readable."""
    picture = np.asarray(_rgb(image))
    mask = _class_ids(index_mask, len(colors))
    if mask.shape != picture.shape[:2]:
        raise ValueError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the image {picture.shape[1]}x{picture.shape[0]}")
    painted = (mask != 0) & (mask != VOID)
    tint = _colour_table(colors)[mask[painted]]
    blended = picture.copy()
    blended[painted] = np.rint((1 - alpha) * picture[painted] + alpha * tint).astype(np.uint8)
    return Image.fromarray(blended)


def _nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The mask resized to ``size`` (width, height) by taking each new pixel's nearest old one:
    class ids cannot be interpolated (the mean of car and road is no class)."""
    mask = np.asarray(mask)
    width, height = size
    rows = (2 * np.arange(height) + 1) * mask.shape[0] // (2 * height)
    columns = (2 * np.arange(width) + 1) * mask.shape[1] // (2 * width)
    return mask[rows[:, None], columns]


def _gallery_row(
    image: ImageLike, truth: np.ndarray, pred: np.ndarray, caption: str, colors: Sequence[Colour], height: int
) -> Image.Image:
    """The caption over the image, its truth and the prediction, each ``height`` pixels high."""
    picture = _rgb(image)
    size = (max(1, round(picture.width * height / picture.height)), height)
    scaled = picture.resize(size, Image.Resampling.BILINEAR)
    tiles = [scaled, overlay(scaled, _nearest(truth, size), colors), overlay(scaled, _nearest(pred, size), colors)]
    row = Image.new("RGB", (3 * size[0] + 2 * GAP, LINE + height), BACKGROUND)
    ImageDraw.Draw(row).text((GAP, 2), caption, fill=TEXT)
    for i, tile in enumerate(tiles):
        row.paste(tile, (i * (size[0] + GAP), LINE))
    return row


def _legend(colors: Sequence[Colour], names: Sequence[str], width: int) -> Image.Image:
    """The column order, then a colour square and name per class, wrapped to ``width``."""
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    places, x, y = [], GAP, LINE
    for colour, name in zip(colors, names, strict=True):
        entry = SWATCH + GAP + math.ceil(measure.textlength(name))
        if x > GAP and x + entry > width - GAP:
            x, y = GAP, y + LINE
        places.append((x, y, colour, name))
        x += entry + 3 * GAP
    legend = Image.new("RGB", (width, y + LINE), BACKGROUND)
    draw = ImageDraw.Draw(legend)
    draw.text((GAP, 2), "image | truth | prediction", fill=TEXT)
    for x, y, colour, name in places:
        draw.rectangle((x, y + 2, x + SWATCH - 1, y + SWATCH + 1), fill=tuple(int(c) for c in colour))
        draw.text((x + SWATCH + GAP, y + 1), name, fill=TEXT)
    return legend


def gallery(
    rows: Sequence[tuple[ImageLike, np.ndarray, np.ndarray, str]],
    colors: Sequence[Colour],
    names: Sequence[str],
    height: int = 200,
) -> Image.Image:
    """One row per image: the image, its truth over it and the prediction over it, scaled to
    ``height`` pixels (masks by nearest neighbour) and captioned (e.g. "name  mIoU 0.42"); under
    them a legend of the class colours. Class 0 is left out of the legend: overlays leave it
    unpainted."""
    if len(colors) != len(names):
        raise ValueError(f"{len(colors)} colours for {len(names)} class names")
    strips = [_gallery_row(*row, colors, height) for row in rows]
    width = max([strip.width for strip in strips], default=3 * height + 2 * GAP)
    strips.append(_legend(colors[1:], names[1:], width))
    sheet = Image.new("RGB", (width, sum(strip.height + GAP for strip in strips)), BACKGROUND)
    top = 0
    for strip in strips:
        sheet.paste(strip, (0, top))
        top += strip.height + GAP
    return sheet


def mask_grid(
    pairs: Sequence[tuple[bytes, bytes]], colors: Sequence[Colour], columns: int = 4, tile: int = 256
) -> Image.Image:
    """Encoded images with their index masks (PNG) painted over them, each scaled into a
    ``tile``-pixel square, ``columns`` to a row: what clean_split kept and what the augment
    policy's copies look like, checked by eye before any training."""
    rows = max(1, -(-len(pairs) // columns))
    grid = Image.new("RGB", (columns * tile, rows * tile), BACKGROUND)
    for i, (encoded, mask_png) in enumerate(pairs):
        picture = open_rgb(encoded)
        mask = decode_png(mask_png)
        scale = tile / max(picture.size)
        size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        painted = overlay(picture.resize(size, Image.Resampling.BILINEAR), _nearest(mask, size), colors)
        grid.paste(painted, ((i % columns) * tile, (i // columns) * tile))
    return grid


def mask_markdown(summary: Mapping, issues: Mapping[str, Sequence[Mapping]], grid_name: str, max_rows: int = 50) -> str:
    """The segment task's report: totals, reasons, per split the images holding each class and
    the share of its pixels, the classes a split lacks, decisions."""
    names = summary["classes"]
    lines = [
        "# Dataset cleaning and split report (segmentation)",
        "",
        f"{summary['images_in']} images in ({summary['format']} masks): {summary['kept']} kept, "
        f"{summary['dropped']} dropped.",
        "",
        *files_table(summary["files"]),
        *count_table(("reason", "dropped"), summary["dropped_by_reason"], "No image was dropped."),
        *count_table(("note", "images"), summary["notes_by_reason"], "No mask needed a note."),
        "Images holding each class (share of the split's labelled pixels):",
        "",
        "| split | images | " + " | ".join(names) + " | void pixels |",
        "|---|---|" + "---|" * (len(names) + 1),
    ]
    for name, split in summary["splits"].items():
        total = sum(split["pixels"].values()) or 1
        cells = " | ".join(f"{split['images_with'][c]} ({100 * split['pixels'][c] / total:.1f}%)" for c in names)
        lines.append(f"| {name} | {split['images']} | {cells} | {split['void_pixels']} |")
    missing = [
        f"- {split} has no pixel of: {', '.join(classes)}" for split, classes in summary["classes_missing"].items()
    ]
    lines += ["", *(missing or ["Every class is in every split."]), "", f"![samples with their masks]({grid_name})", ""]
    return "\n".join(lines + decisions(issues, max_rows))
