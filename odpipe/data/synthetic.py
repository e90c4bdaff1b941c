"""The built-in dataset: labelled shapes on textured backgrounds, generated offline.

It exists so that ``dvc repro`` works on a fresh machine with no network, and it is laid out
exactly as a LabelImg user's folder (a JPEG and a Pascal VOC XML per image), so the rest of
the pipeline cannot tell it from real data. Each image is drawn from its own RNG stream
(seed, index): asking for more images keeps the earlier ones byte-identical.

Segmentation gets the same scenes as a Pascal VOC segmentation folder (JPEG + palette PNG
mask). Its masks are exact because image and mask are painted from the same coverage of each
shape: where a shape's edge is blended with what lies under it, the mask says void (VOC's 255),
and every other pixel shows its class's colour unmixed.

Classification gets scenes of its own, as class folders: one large shape, the image's class, over
smaller distractors of other classes, with some hard cases (low contrast, cut by the image edge),
so that a classifier has to find the dominant shape rather than any shape.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from odpipe.core.boxes import Box
from odpipe.core.parallel import Workers
from odpipe.data.annotations import Annotation, write_voc
from odpipe.data.index_masks import VOID, encode_png

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


def _hexagon(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], colour) -> None:
    x0, y0, x1, y1 = box
    cy, quarter = (y0 + y1) / 2, (x1 - x0) / 4
    draw.polygon(
        [(x0, cy), (x0 + quarter, y0), (x1 - quarter, y0), (x1, cy), (x1 - quarter, y1), (x0 + quarter, y1)],
        fill=colour,
    )


STAR_INNER = 0.45  # inner over outer radius of the five-pointed star


def _star(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], colour) -> None:
    """A five-pointed star, point up, stretched to touch all four sides of the box (as every
    other shape does, so that a detection box is tight on it)."""
    x0, y0, x1, y1 = box
    half_width = math.cos(math.radians(18))  # the side points' reach, for a unit outer radius
    depth = 1 + math.cos(math.radians(36))  # top point to the bottom points
    points = []
    for k in range(10):
        radius = 1.0 if k % 2 == 0 else STAR_INNER
        angle = math.radians(-90 + 36 * k)
        x = (x0 + x1) / 2 + (x1 - x0) / 2 * radius * math.cos(angle) / half_width
        y = y0 + (y1 - y0) * (1 + radius * math.sin(angle)) / depth
        points.append((round(x, 6), round(y, 6)))  # 4.9999 would light pixel 4, outside the box
    draw.polygon(points, fill=colour)


SHAPES: dict[str, Draw] = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "diamond": _diamond,
    "hexagon": _hexagon,
    "star": _star,
}


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate; mirrors the ``dataset`` config group of the synthetic sources. The
    scene settings default to the built-in detection set's, so that the classification source's
    config, whose scenes are drawn otherwise, need not name them."""

    num_images: int
    classes: Sequence[str]
    seed: int
    min_side: int
    max_side: int
    min_objects: int = 1
    max_objects: int = 6
    min_object_frac: float = 0.12
    max_object_frac: float = 0.6
    max_overlap: float = 0.35
    jpeg_quality: int = 90
    void_width: int = 1  # segmentation: pixels on each side of a shape's outline blended and marked void
    max_distractors: int = 2  # classification: smaller shapes of other classes beside the dominant one, 0 to this
    hard_fraction: float = 0.1  # classification: images whose dominant shape is low-contrast or cut by the edge

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


# Classification scenes: the dominant shape's side, as a share of the image's short side; a
# distractor's area at most DISTRACTOR_AREA[1] of the dominant's; a hard case's dominant shape
# either differs from the background under it by LOW_CONTRAST levels a channel, or has CUT of its
# width or height outside the image.
DOMINANT_FRAC = (0.45, 0.8)
DISTRACTOR_AREA = (0.08, 0.35)
LOW_CONTRAST = (14.0, 26.0)
CUT = (0.2, 0.45)
PLACING_TRIES = 20  # draws per wanted distractor before the image goes with fewer
CLASSIFICATION_STREAM = 1  # a third entropy word: these scenes never share draws with detection's


def _side_box(rng: np.random.Generator, side: float, limit: tuple[int, int]) -> tuple[int, int]:
    """Width and height of a shape of about ``side`` pixels (area ``side``**2), its aspect ratio
    drawn as for detection's boxes, each at most ``limit``."""
    aspect = np.exp(rng.uniform(-0.25, 0.25))
    return min(limit[0], max(6, round(side * aspect))), min(limit[1], max(6, round(side / aspect)))


def _dominant_box(rng: np.random.Generator, width: int, height: int, cut: bool) -> tuple[int, int, int, int]:
    """The dominant shape's box: inside the image, or with a share of it past one edge."""
    w, h = _side_box(rng, min(width, height) * rng.uniform(*DOMINANT_FRAC), (width, height))
    x0, y0 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    if cut:
        edge, share = int(rng.integers(4)), rng.uniform(*CUT)
        x0 = (-round(share * w), x0, width - w + round(share * w), x0)[edge]
        y0 = (y0, -round(share * h), y0, height - h + round(share * h))[edge]
    return x0, y0, x0 + w, y0 + h


def _low_contrast(
    backdrop: Image.Image, box: tuple[int, int, int, int], rng: np.random.Generator
) -> tuple[int, int, int]:
    """A colour a few levels off the background under ``box`` (towards mid-grey, so that it never
    clips to the background's own colour)."""
    x0, y0, x1, y1 = box
    under = np.asarray(backdrop)[max(0, y0) : max(1, y1), max(0, x0) : max(1, x1)].reshape(-1, 3).mean(axis=0)
    sign = 1.0 if under.mean() < 128 else -1.0
    return tuple(int(c) for c in np.clip(under + sign * rng.uniform(*LOW_CONTRAST), 0, 255))


def _distractors(
    rng: np.random.Generator,
    spec: SyntheticSpec,
    label: str,
    dominant: tuple[int, int, int, int],
    size: tuple[int, int],
) -> list[Shape]:
    """0 to ``spec.max_distractors`` smaller shapes of other classes (as many as fit), each at
    most ``spec.max_overlap`` hidden under the dominant shape's box (which is painted over them)."""
    others = [c for c in spec.classes if c != label]
    area = (dominant[2] - dominant[0]) * (dominant[3] - dominant[1])
    wanted = int(rng.integers(0, spec.max_distractors + 1))
    shapes: list[Shape] = []
    for _ in range(wanted * PLACING_TRIES):
        if len(shapes) == wanted:
            break
        w, h = _side_box(rng, math.sqrt(area * rng.uniform(*DISTRACTOR_AREA)), size)
        x0, y0 = int(rng.integers(0, size[0] - w + 1)), int(rng.integers(0, size[1] - h + 1))
        box = (x0, y0, x0 + w, y0 + h)
        other = others[int(rng.integers(len(others)))]
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        if _overlap(box, dominant) <= spec.max_overlap and w * h <= DISTRACTOR_AREA[1] * area:
            shapes.append(Shape(other, spec.classes.index(other) + 1, box, colour))
    return shapes


def classification_scene(spec: SyntheticSpec, index: int) -> Scene:
    """Image ``index``'s scene, from its own RNG stream: its last shape is the dominant one,
    whose class (``spec.classes`` in turn, so that they are balanced) is the image's."""
    rng = np.random.default_rng([spec.seed, index, CLASSIFICATION_STREAM])
    label = spec.classes[index % len(spec.classes)]
    width = int(rng.integers(spec.min_side, spec.max_side + 1))
    height = int(rng.integers(spec.min_side, spec.max_side + 1))
    backdrop = background(rng, width, height)
    hard = rng.random() < spec.hard_fraction
    low_contrast = hard and rng.random() < 0.5
    box = _dominant_box(rng, width, height, cut=hard and not low_contrast)
    colour = _low_contrast(backdrop, box, rng) if low_contrast else tuple(int(c) for c in rng.integers(0, 256, 3))
    dominant = Shape(label, spec.classes.index(label) + 1, box, colour)
    return Scene(backdrop, (*_distractors(rng, spec, label, box, (width, height)), dominant))


def render_classification(spec: SyntheticSpec, index: int) -> tuple[bytes, str]:
    """JPEG bytes and the class of image ``index``; pure in (spec, index)."""
    scene = classification_scene(spec, index)
    image = composite(scene, [coverage(shape, scene.background.size, 0) for shape in scene.shapes])
    return _jpeg(image, spec.jpeg_quality), scene.shapes[-1].label


def generate_classification(spec: SyntheticSpec, out_dir: Path, workers: int = 1) -> list[Path]:
    """Write ``spec.num_images`` JPEGs into ``out_dir`` as class folders
    (``<class>/<name>.jpg``); returns them, in index order."""
    check_shapes(spec.classes)
    if len(set(spec.classes)) < 2 or len(set(spec.classes)) != len(spec.classes):
        raise ValueError(f"synthetic classification needs two or more distinct classes, got {list(spec.classes)}")
    written = []
    for index, (jpeg, label) in enumerate(_rendered(spec, render_classification, workers)):
        path = out_dir / label / f"{image_name(index)}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg)
        written.append(path)
    return written
