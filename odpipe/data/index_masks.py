"""What an index mask is, everywhere in the segment task: one class id per pixel (uint8), 255
for void (pixels nobody labelled: borders, ambiguous regions; never trained on or scored), stored
as a PNG; and Pascal VOC's colours, the default colour of each id."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

VOID = 255
Colour = tuple[int, int, int]


def _voc_palette() -> tuple[Colour, ...]:
    """VOC's colour map: the bits of an id spread over the high bits of r, g and b in turn, so
    that neighbouring ids get far-apart colours (1 is (128, 0, 0); ``VOID`` gets VOC's
    (224, 224, 192))."""
    colours = []
    for index in range(256):
        rgb = [0, 0, 0]
        for level in range(8):
            for channel in range(3):
                rgb[channel] |= ((index >> (3 * level + channel)) & 1) << (7 - level)
        colours.append((rgb[0], rgb[1], rgb[2]))
    return tuple(colours)


PALETTE = _voc_palette()


def encode_png(mask: np.ndarray, palette: bool = False) -> bytes:
    """An index mask as a PNG whose pixels read back as the ids: single-channel, or (``palette``)
    VOC's own palette PNG, which an image viewer shows in VOC's colours."""
    image = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8), mode="L")
    if palette:
        image = image.convert("P")
        image.putpalette([channel for colour in PALETTE for channel in colour])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def decode_png(png: bytes) -> np.ndarray:
    """The ids of an index-mask PNG (a palette PNG's indices, not its colours)."""
    with Image.open(io.BytesIO(png)) as opened:
        return np.asarray(opened)
