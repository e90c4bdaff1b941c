"""The human side of classification's evaluation: how well its confidence can be trusted (a
reliability diagram), the mistakes it makes most confidently, and where in an image it looked
(Grad-CAM), which is how users see what a model gets wrong where the metrics only say how much.
Drawn with Pillow, as the other tasks' galleries are; the confusion matrix's heat map is the one
all tasks share (:func:`odpipe.engine.confusion.confusion_figure`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw

from odpipe.classify.metrics import expected_calibration_error
from odpipe.core.draw import BACKGROUND, GAP, LINE, TEXT, Colour, open_rgb

ACCURACY_COLOUR: Colour = (0, 130, 200)  # the bars
GAP_COLOUR: Colour = (230, 25, 75)  # outline of the gap between a bar and its bin's confidence
DIAGONAL_COLOUR: Colour = (160, 160, 160)  # where a calibrated model's bars end
HEAT_MAP = "jet"  # the colour map of Selvaraju et al.'s figures, which readers of Grad-CAM know
HEAT_ALPHA = 0.5  # share of the heat map's colour over the image: both stay readable


def _measure(text: str) -> int:
    """The width of ``text`` in Pillow's default font, in pixels."""
    return math.ceil(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text))


def _captioned(caption: str, picture: Image.Image) -> Image.Image:
    """The caption on a line over the picture, wide enough for both."""
    tile = Image.new("RGB", (max(picture.width, _measure(caption) + 2 * GAP), LINE + picture.height), BACKGROUND)
    ImageDraw.Draw(tile).text((GAP, 2), caption, fill=TEXT)
    tile.paste(picture, (0, LINE))
    return tile


def _beside(pictures: Sequence[Image.Image]) -> Image.Image:
    """Pictures left to right, ``GAP`` apart, tops aligned."""
    size = (sum(p.width for p in pictures) + GAP * (len(pictures) - 1), max(p.height for p in pictures))
    strip = Image.new("RGB", size, BACKGROUND)
    left = 0
    for picture in pictures:
        strip.paste(picture, (left, 0))
        left += picture.width + GAP
    return strip


def _stack(strips: Sequence[Image.Image]) -> Image.Image:
    """Strips top to bottom, ``GAP`` apart, left aligned."""
    size = (max(s.width for s in strips), sum(s.height for s in strips) + GAP * (len(strips) - 1))
    sheet = Image.new("RGB", size, BACKGROUND)
    top = 0
    for strip in strips:
        sheet.paste(strip, (0, top))
        top += strip.height + GAP
    return sheet


def _note(text: str) -> Image.Image:
    """A small picture that says ``text``: a report's image file exists even when there is
    nothing to show, and says why."""
    picture = Image.new("RGB", (_measure(text) + 4 * GAP, 2 * LINE), BACKGROUND)
    ImageDraw.Draw(picture).text((2 * GAP, LINE // 2), text, fill=TEXT)
    return picture


def reliability_diagram(bins: Sequence[dict], side: int = 300) -> Image.Image:
    """Accuracy per confidence bin (the bars) against the diagonal a calibrated model would
    follow, the gap to each bin's mean confidence outlined, the ECE in the title: bars under
    the diagonal mean an over-confident model. ``bins`` are the metrics' ``reliability``."""
    left, top, bottom = 5 * GAP + _measure("1.0"), 2 * LINE, 3 * LINE + GAP  # room for the labels
    diagram = Image.new("RGB", (left + side + 4 * GAP, top + side + bottom), BACKGROUND)
    draw = ImageDraw.Draw(diagram)

    def at(x: float, y: float) -> tuple[float, float]:
        return left + x * side, top + (1 - y) * side

    for b in bins:
        if b["count"]:
            draw.rectangle((*at(b["lo"], b["accuracy"]), *at(b["hi"], 0)), fill=ACCURACY_COLOUR, outline=BACKGROUND)
            gap = sorted((b["accuracy"], b["confidence"]))
            draw.rectangle((*at(b["lo"], gap[1]), *at(b["hi"], gap[0])), outline=GAP_COLOUR)
    draw.line((*at(0, 0), *at(1, 1)), fill=DIAGONAL_COLOUR, width=2)
    draw.rectangle((*at(0, 1), *at(1, 0)), outline=TEXT)
    for value in (0.0, 0.5, 1.0):
        x, y = at(value, value)
        draw.text((x - _measure(f"{value:.1f}") / 2, top + side + GAP), f"{value:.1f}", fill=TEXT)
        draw.text((left - GAP - _measure(f"{value:.1f}"), y - LINE / 2), f"{value:.1f}", fill=TEXT)
    draw.text((GAP, GAP), f"accuracy per confidence bin, ECE {expected_calibration_error(bins):.3f}", fill=TEXT)
    draw.text((left + side / 2 - _measure("confidence") / 2, top + side + LINE + GAP), "confidence", fill=TEXT)
    draw.text((GAP, top + side + 2 * LINE + GAP), "outlined: the gap to the bin's mean confidence", fill=GAP_COLOUR)
    return diagram


def _fit(picture: Image.Image, tile: int) -> Image.Image:
    """The picture scaled, keeping its shape, to fit a ``tile``-pixel square."""
    scale = tile / max(picture.size)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    return picture.resize(size, Image.Resampling.BILINEAR)


def captioned_grid(items: Sequence[tuple[bytes, str]], columns: int = 4, tile: int = 160) -> Image.Image:
    """Encoded images, each scaled into a ``tile``-pixel square under its caption, ``columns`` to
    a row (a cell widens for a long caption); "no images" when there are none."""
    if not items:
        return _note("no images")
    cells = [_captioned(caption, _fit(open_rgb(encoded), tile)) for encoded, caption in items]
    return _stack([_beside(cells[start : start + columns]) for start in range(0, len(cells), columns)])


def prediction_caption(names: Sequence[str], truth: int, predicted: int, confidence: float) -> str:
    """ "true cat / predicted dog 0.97": what a picture of one prediction is captioned with."""
    return f"true {names[truth]} / predicted {names[predicted]} {confidence:.2f}"


def mistakes_gallery(
    items: Sequence[tuple[bytes, int, int, float]], names: Sequence[str], tile: int = 160, columns: int = 4
) -> Image.Image:
    """Wrong predictions (encoded image, true class id, predicted class id, confidence) in a
    :func:`captioned_grid` under their :func:`prediction_caption`; "no mistakes" when there are
    none."""
    if not items:
        return _note("no mistakes")
    captioned = [(encoded, prediction_caption(names, *prediction)) for encoded, *prediction in items]
    return captioned_grid(captioned, columns, tile)


def _heat_overlay(picture: Image.Image, heat: np.ndarray) -> Image.Image:
    """The picture with the heat map, resized to it, blended over it in :data:`HEAT_MAP`."""
    resized = Image.fromarray(heat.astype(np.float32), mode="F").resize(picture.size, Image.Resampling.BILINEAR)
    colours = colormaps[HEAT_MAP](np.asarray(resized))[..., :3] * 255
    blended = (1 - HEAT_ALPHA) * np.asarray(picture, dtype=np.float64) + HEAT_ALPHA * colours
    return Image.fromarray(np.rint(blended).astype(np.uint8))


def gradcam_figure(items: Sequence[tuple[bytes, np.ndarray, str]], height: int = 200) -> Image.Image:
    """One row per image (encoded image, heat map in 0..1 of any size, caption): under the caption,
    the image beside itself under its heat map (resized to it), both ``height`` pixels high."""
    if not items:
        return _note("no images")
    rows = []
    for i, (encoded, heat, caption) in enumerate(items):
        heat = np.asarray(heat)
        if heat.ndim != 2 or not np.isfinite(heat).all() or heat.min() < 0 or heat.max() > 1:
            raise ValueError(f"heat map {i} ({caption!r}) must be 2-D with values in 0..1, it has shape {heat.shape}")
        picture = open_rgb(encoded)
        size = (max(1, round(picture.width * height / picture.height)), height)
        picture = picture.resize(size, Image.Resampling.BILINEAR)
        rows.append(_captioned(caption, _beside([picture, _heat_overlay(picture, heat)])))
    return _stack(rows)
