"""Drawing every report shares: one colour per class, tiles of images with their labelled boxes
drawn (the clean_split sample grid, which is how users check their labels before spending hours
training on them; predictions beside the truth), and the gallery constants of the Keras tasks."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Protocol

from PIL import Image, ImageDraw

from odpipe.core.boxes import Box

Colour = tuple[int, int, int]
BACKGROUND: Colour = (32, 32, 32)  # behind the tiles of every grid and gallery
TEXT: Colour = (255, 255, 255)
LINE = 16  # pixels: one line of Pillow's default font, with room around it
GAP = 4  # pixels between tiles and around text
PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240))


class Labelled(Protocol):
    """An image's file name and its labelled boxes (an annotation, or an example to preview)."""

    filename: str
    boxes: Sequence[Box]


def draw_boxes(
    image: Image.Image,
    boxes: Sequence[Box],
    classes: Sequence[str],
    scale: float = 1.0,
    captions: Sequence[str] | None = None,
) -> None:
    """Draw labelled boxes in place, one colour per class (the same in every picture); each
    box is captioned with its label unless ``captions`` says otherwise (e.g. with a score)."""
    draw = ImageDraw.Draw(image)
    for i, box in enumerate(boxes):
        colour = PALETTE[classes.index(box.label) % len(PALETTE)] if box.label in classes else (255, 255, 255)
        xy = (box.xmin * scale, box.ymin * scale, box.xmax * scale, box.ymax * scale)
        draw.rectangle(xy, outline=colour, width=2)
        draw.text((xy[0] + 2, xy[1] + 1), captions[i] if captions else box.label, fill=colour)


def open_rgb(encoded: bytes) -> Image.Image:
    with Image.open(io.BytesIO(encoded)) as opened:
        return opened.convert("RGB")


def _tile(
    image: Image.Image, boxes: Sequence[Box], classes: Sequence[str], tile: int, captions: Sequence[str] | None = None
) -> Image.Image:
    """``image`` scaled to fit a ``tile``-pixel square, with its boxes drawn at that scale."""
    scale = tile / max(image.size)
    scaled = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    draw_boxes(scaled, boxes, classes, scale, captions)
    return scaled


def sample_grid(
    annotations: Sequence[Labelled],
    images: Mapping[str, bytes],
    classes: Sequence[str],
    tile: int = 256,
    columns: int = 4,
    rows: int | None = None,
) -> Image.Image:
    """Up to ``columns`` × ``rows`` (default square) images with their boxes and labels drawn,
    each scaled into a tile."""
    chosen = list(annotations)[: columns * (rows or columns)]
    rows = max(1, -(-len(chosen) // columns))
    grid = Image.new("RGB", (columns * tile, rows * tile), BACKGROUND)
    for i, annotation in enumerate(chosen):
        image = _tile(open_rgb(images[annotation.filename]), annotation.boxes, classes, tile)
        grid.paste(image, ((i % columns) * tile, (i // columns) * tile))
    return grid


def side_by_side(
    rows: Sequence[tuple[bytes, Sequence[Box], Sequence[Box], Sequence[str]]],
    classes: Sequence[str],
    tile: int = 320,
) -> Image.Image:
    """One row per image: ground truth on the left, predictions (captioned, e.g. with their
    scores) on the right, so a wrong or missed box is seen at a glance."""
    grid = Image.new("RGB", (2 * tile, max(1, len(rows)) * tile), BACKGROUND)
    for row, (encoded, truth, predicted, captions) in enumerate(rows):
        image = open_rgb(encoded)
        grid.paste(_tile(image, truth, classes, tile), (0, row * tile))
        grid.paste(_tile(image, predicted, classes, tile, captions), (tile, row * tile))
    return grid
