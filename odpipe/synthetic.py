"""The built-in dataset: labelled shapes on textured backgrounds, generated offline.

It exists so that ``dvc repro`` works on a fresh machine with no network, and it is laid out
exactly as a LabelImg user's folder (a JPEG and a Pascal VOC XML per image), so the rest of
the pipeline cannot tell it from real data. Each image is drawn from its own RNG stream
(seed, index): asking for more images keeps the earlier ones byte-identical.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from odpipe.annotations import Annotation, Box, write_voc
from odpipe.parallel import Workers

Draw = Callable[[ImageDraw.ImageDraw, tuple[int, int, int, int], tuple[int, int, int]], None]


def _circle(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], colour) -> None:
    draw.ellipse(box, fill=colour)


def _square(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], colour) -> None:
    draw.rectangle(box, fill=colour)


def _triangle(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], colour) -> None:
    x0, y0, x1, y1 = box
    draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=colour)


def _diamond(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], colour) -> None:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=colour)


SHAPES: dict[str, Draw] = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "diamond": _diamond,
}


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate; mirrors the ``dataset`` config group of the synthetic source."""

    num_images: int
    classes: Sequence[str]
    seed: int
    min_side: int
    max_side: int
    min_objects: int
    max_objects: int
    min_object_frac: float
    max_object_frac: float
    max_overlap: float
    jpeg_quality: int = 90

    @classmethod
    def from_config(cls, dataset: Mapping) -> SyntheticSpec:
        """The spec from the ``dataset`` config group (which also holds keys for other stages)."""
        return cls(**{f.name: dataset[f.name] for f in fields(cls) if f.name in dataset})


def background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A gradient, a stripe or check pattern, and noise: enough texture that a detector
    has to learn shapes rather than 'anything that is not flat'."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 215, size=3)
    tilt = rng.uniform(-0.6, 0.6, size=(2, 3))
    img = base + xx[..., None] * tilt[0] + yy[..., None] * tilt[1]
    period = rng.uniform(6, 24)
    angle = rng.uniform(0, np.pi)
    phase = (xx * np.cos(angle) + yy * np.sin(angle)) / period
    if rng.random() < 0.5:
        pattern = np.sin(2 * np.pi * phase)
    else:
        pattern = np.sign(np.sin(2 * np.pi * xx / period) * np.sin(2 * np.pi * yy / period))
    img += pattern[..., None] * rng.uniform(5, 30, size=3)
    img += rng.normal(0, rng.uniform(3, 14), size=img.shape)
    image = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2)))


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Fraction of box ``a`` covered by box ``b``."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    return (w * h) / ((a[2] - a[0]) * (a[3] - a[1]))


def _place_boxes(
    rng: np.random.Generator, spec: SyntheticSpec, width: int, height: int
) -> list[tuple[int, int, int, int]]:
    """Object boxes, log-uniform in size (so small ones are as common as large ones),
    overlapping each other at most ``max_overlap`` of their area: some occlusion, never total."""
    wanted = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    short = min(width, height)
    boxes: list[tuple[int, int, int, int]] = []
    for _ in range(wanted * 20):
        if len(boxes) == wanted:
            break
        side = short * np.exp(rng.uniform(np.log(spec.min_object_frac), np.log(spec.max_object_frac)))
        aspect = np.exp(rng.uniform(-0.25, 0.25))
        w = max(6, round(side * aspect))
        h = max(6, round(side / aspect))
        x0 = int(rng.integers(0, width - w + 1))
        y0 = int(rng.integers(0, height - h + 1))
        box = (x0, y0, x0 + w, y0 + h)
        if all(
            _overlap(box, other) <= spec.max_overlap and _overlap(other, box) <= spec.max_overlap for other in boxes
        ):
            boxes.append(box)
    return boxes


def render_image(spec: SyntheticSpec, index: int) -> tuple[bytes, Annotation]:
    """JPEG bytes and the annotation of image ``index``; pure in (spec, index)."""
    rng = np.random.default_rng([spec.seed, index])
    width = int(rng.integers(spec.min_side, spec.max_side + 1))
    height = int(rng.integers(spec.min_side, spec.max_side + 1))
    image = background(rng, width, height)
    draw = ImageDraw.Draw(image)
    boxes = []
    for x0, y0, x1, y1 in _place_boxes(rng, spec, width, height):
        label = spec.classes[int(rng.integers(len(spec.classes)))]
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        SHAPES[label](draw, (x0, y0, x1 - 1, y1 - 1), colour)
        boxes.append(Box(label, x0, y0, x1, y1))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=spec.jpeg_quality)
    filename = f"shapes_{index:05d}.jpg"
    return buffer.getvalue(), Annotation(filename, width, height, tuple(boxes))


def generate(spec: SyntheticSpec, out_dir: Path, workers: int = 1) -> list[Path]:
    """Write ``spec.num_images`` JPEG + VOC XML pairs into ``out_dir``; returns the images.
    Images are drawn by ``workers`` processes: each is pure in (spec, index), so the files are
    the same for any count."""
    unknown = sorted(set(spec.classes) - set(SHAPES))
    if unknown:
        raise ValueError(f"synthetic dataset: no shape named {unknown}; choose from {sorted(SHAPES)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with Workers(workers) as pool:
        for jpeg, annotation in pool.map(partial(render_image, spec), range(spec.num_images)):
            image_path = out_dir / annotation.filename
            image_path.write_bytes(jpeg)
            write_voc(annotation, image_path.with_suffix(".xml"))
            written.append(image_path)
    return written
