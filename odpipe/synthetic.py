"""The built-in dataset: labelled shapes on textured backgrounds, generated offline.

It exists so that ``dvc repro`` works on a fresh machine with no network, and it is laid out
exactly as a LabelImg user's folder (a JPEG and a Pascal VOC XML per image), so the rest of
the pipeline cannot tell it from real data. Each image is drawn from its own RNG stream
(seed, index): asking for more images keeps the earlier ones byte-identical.

Segmentation gets the same scenes as a Pascal VOC segmentation folder (JPEG + palette PNG
mask). Its masks are exact because image and mask are painted from the same coverage of each
shape: where a shape's edge is blended with what lies under it, the mask says void (VOC's 255),
and every other pixel shows its class's colour unmixed.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from odpipe.annotations import Annotation, Box, write_voc
from odpipe.index_masks import VOID, encode_png
from odpipe.parallel import Workers

T = TypeVar("T")
Draw = Callable[[ImageDraw.ImageDraw, tuple[int, int, int, int], int | tuple[int, int, int]], None]


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
    void_width: int = 1  # segmentation: pixels on each side of a shape's outline blended and marked void

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


@dataclass(frozen=True)
class Shape:
    """One object of a scene: ``box`` in pixel edges (``x1``, ``y1`` exclusive), as a :class:`Box`;
    ``class_id`` is its index in the segmentation mask (1 for ``spec.classes[0]``)."""

    label: str
    class_id: int
    box: tuple[int, int, int, int]
    colour: tuple[int, int, int]


@dataclass(frozen=True)
class Scene:
    """What image ``index`` shows, before any drawing: both renderers paint the same scene, so a
    segmentation image is its detection twin with soft edges."""

    background: Image.Image
    shapes: tuple[Shape, ...]


def draw_scene(spec: SyntheticSpec, index: int) -> Scene:
    """The scene of image ``index``, from its own RNG stream (seed, index)."""
    rng = np.random.default_rng([spec.seed, index])
    width = int(rng.integers(spec.min_side, spec.max_side + 1))
    height = int(rng.integers(spec.min_side, spec.max_side + 1))
    backdrop = background(rng, width, height)
    shapes = []
    for box in _place_boxes(rng, spec, width, height):
        class_index = int(rng.integers(len(spec.classes)))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        shapes.append(Shape(spec.classes[class_index], class_index + 1, box, colour))
    return Scene(backdrop, tuple(shapes))


def coverage(shape: Shape, size: tuple[int, int], void_width: int) -> Image.Image:
    """How much of each pixel the shape covers (0-255): its outline drawn hard, then box-blurred
    ``void_width`` pixels each way, so that exactly the pixels within ``void_width`` of the
    outline (on either side) are partly covered, and every other pixel is 0 or 255 (for widths
    up to 10: beyond, a corner's faint share rounds to 0)."""
    x0, y0, x1, y1 = shape.box
    alpha = Image.new("L", size, 0)
    SHAPES[shape.label](ImageDraw.Draw(alpha), (x0, y0, x1 - 1, y1 - 1), 255)
    return alpha.filter(ImageFilter.BoxBlur(void_width)) if void_width else alpha


def composite(scene: Scene, coverages: Sequence[Image.Image]) -> Image.Image:
    """The scene's shapes laid over its background in order, each blended by its coverage."""
    image = scene.background.copy()
    for shape, alpha in zip(scene.shapes, coverages, strict=True):
        image.paste(shape.colour, mask=alpha)
    return image


def index_mask(scene: Scene, coverages: Sequence[Image.Image]) -> np.ndarray:
    """The class of each pixel as :func:`composite` paints it: a pixel a shape covers fully takes
    its class (later shapes over earlier ones); one it covers partly shows a blend and is ``VOID``,
    even over a shape of its own class, as VOC outlines every object, so that each labelled pixel
    shows one shape's colour unmixed."""
    mask = np.zeros(scene.background.size[::-1], dtype=np.uint8)
    for shape, alpha in zip(scene.shapes, coverages, strict=True):
        covered = np.asarray(alpha)
        mask[covered == 255] = shape.class_id
        mask[(covered > 0) & (covered < 255)] = VOID
    return mask


def image_name(index: int) -> str:
    """The file name (without suffix) of image ``index``, the same for both tasks."""
    return f"shapes_{index:05d}"


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def render_image(spec: SyntheticSpec, index: int) -> tuple[bytes, Annotation]:
    """JPEG bytes and the annotation of image ``index``; pure in (spec, index). Edges are hard:
    a box is where the shape is, to the pixel."""
    scene = draw_scene(spec, index)
    image = composite(scene, [coverage(shape, scene.background.size, 0) for shape in scene.shapes])
    boxes = tuple(Box(shape.label, *shape.box) for shape in scene.shapes)
    return _jpeg(image, spec.jpeg_quality), Annotation(f"{image_name(index)}.jpg", *image.size, boxes)


def render_segmentation(spec: SyntheticSpec, index: int) -> tuple[bytes, np.ndarray]:
    """JPEG bytes and the index mask (0 background, ``class_id``, ``VOID``) of image ``index``:
    the scene of :func:`render_image` with edges blended over ``spec.void_width`` pixels each way,
    which the mask marks void, so that every other pixel shows exactly the colour of its class's
    shape (before JPEG compression). Pure in (spec, index)."""
    scene = draw_scene(spec, index)
    coverages = [coverage(shape, scene.background.size, spec.void_width) for shape in scene.shapes]
    return _jpeg(composite(scene, coverages), spec.jpeg_quality), index_mask(scene, coverages)


def check_shapes(classes: Sequence[str]) -> None:
    """Each class must name a shape the generator can draw."""
    unknown = sorted(set(classes) - set(SHAPES))
    if unknown:
        raise ValueError(f"synthetic dataset: no shape named {unknown}; choose from {sorted(SHAPES)}")


def _rendered(spec: SyntheticSpec, render: Callable[[SyntheticSpec, int], T], workers: int) -> Iterator[T]:
    """``render`` of every image, in index order, drawn by ``workers`` processes: each image is
    pure in (spec, index), so the files are the same for any count."""
    with Workers(workers) as pool:
        yield from pool.map(partial(render, spec), range(spec.num_images))


def generate(spec: SyntheticSpec, out_dir: Path, workers: int = 1) -> list[Path]:
    """Write ``spec.num_images`` JPEG + VOC XML pairs into ``out_dir``; returns the images."""
    check_shapes(spec.classes)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for jpeg, annotation in _rendered(spec, render_image, workers):
        image_path = out_dir / annotation.filename
        image_path.write_bytes(jpeg)
        write_voc(annotation, image_path.with_suffix(".xml"))
        written.append(image_path)
    return written


def generate_segmentation(spec: SyntheticSpec, out_dir: Path, workers: int = 1) -> list[Path]:
    """Write ``spec.num_images`` images and masks into ``out_dir`` as a Pascal VOC segmentation
    folder (``JPEGImages/<name>.jpg``, ``SegmentationClass/<name>.png``); returns the images."""
    check_shapes(spec.classes)
    if spec.void_width < 0:
        raise ValueError(f"synthetic dataset: void_width must be >= 0 pixels, got {spec.void_width}")
    images, masks = out_dir / "JPEGImages", out_dir / "SegmentationClass"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    written = []
    for index, (jpeg, mask) in enumerate(_rendered(spec, render_segmentation, workers)):
        image_path = images / f"{image_name(index)}.jpg"
        image_path.write_bytes(jpeg)
        (masks / f"{image_name(index)}.png").write_bytes(encode_png(mask, palette=True))
        written.append(image_path)
    return written
