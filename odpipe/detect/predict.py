"""``odpipe predict`` with a detector export: each image's detections as rows (class name,
score, pixel box), an annotated copy in ``annotated/``, and with a label format, the images and
their boxes as a dataset to correct (VOC XML beside each image, LabelImg's "Open Dir", or one
COCO JSON) that goes back in as ``dataset=local``."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import tensorflow as tf
from PIL import Image, UnidentifiedImageError

from odpipe.core.draw import draw_boxes
from odpipe.core.files import unique_stems
from odpipe.core.images import readable_bytes
from odpipe.data.annotations import Annotation, write_coco, write_voc
from odpipe.detect.detectors import load_detector
from odpipe.detect.evaluate import as_boxes, decode_error, detect, score_captions
from odpipe.detect.export import LABEL_MAP_NAME
from odpipe.detect.label_map import read_label_map

CSV_COLUMNS = ("file", "class", "score", "xmin", "ymin", "xmax", "ymax")
LABEL_FORMATS = ("voc", "coco")
COCO_FILE = "annotations.json"


class LabelFolder:
    """Images with their predicted boxes, as a dataset to correct and train on: the image as
    the model saw it (converted to JPEG only when it had to be, so boxes line up in any
    viewer) and a VOC XML beside it, or one COCO JSON for the folder with each box's score."""

    def __init__(self, root: Path, fmt: str, categories: Mapping[int, str]) -> None:
        self.root, self.fmt, self.categories = root, fmt, categories
        self.annotations: list[Annotation] = []  # COCO's, written at the end: boxes only, no pixels
        self.scores: list[list[float]] = []
        root.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, data: bytes, annotation: Annotation, scores: list[float]) -> None:
        (self.root / annotation.filename).write_bytes(data)
        if self.fmt == "voc":
            write_voc(annotation, self.root / f"{name}.xml")
        else:
            self.annotations.append(annotation)
            self.scores.append(scores)

    def close(self) -> None:
        if self.fmt == "coco":
            write_coco(self.annotations, self.categories, self.root / COCO_FILE, self.scores)


def predict_images(
    model_dir: Path,
    images: Sequence[Path],
    out_dir: Path,
    min_score: float,
    max_detections: int,
    label_format: str | None = None,
) -> tuple[list[dict], list[str]]:
    """Detections of every image (as rows) and the errors of those that could not be read;
    with ``label_format``, the images and their boxes also go to ``out_dir/labels``."""
    detector = load_detector(model_dir)
    classes = read_label_map(model_dir / LABEL_MAP_NAME)
    names = [classes[i] for i in sorted(classes)]
    annotated = out_dir / "annotated"
    annotated.mkdir(parents=True, exist_ok=True)
    labels = LabelFolder(out_dir / "labels", label_format, classes) if label_format else None
    rows, errors = [], []
    for path, name in zip(images, unique_stems(images), strict=True):
        try:
            raw = path.read_bytes()
            data = readable_bytes(raw)
        except UnidentifiedImageError:
            errors.append(f"{path}: cannot read the image (not an image format Pillow recognises)")
            continue
        except (OSError, SyntaxError, ValueError) as err:
            errors.append(f"{path}: cannot read the image ({err})")
            continue
        try:
            detections = detect(detector, data, min_score)[:max_detections]
        except tf.errors.InvalidArgumentError as err:
            errors.append(f"{path}: {decode_error(err)}")
            continue
        boxes = as_boxes(detections, classes)
        rows += [
            {
                "file": str(path),
                "class": b.label,
                "score": round(d.score, 4),
                "xmin": round(b.xmin, 1),
                "ymin": round(b.ymin, 1),
                "xmax": round(b.xmax, 1),
                "ymax": round(b.ymax, 1),
            }
            for b, d in zip(boxes, detections, strict=True)
        ]
        with Image.open(io.BytesIO(data)) as opened:
            image = opened.convert("RGB")
        if labels:
            suffix = path.suffix.lower() if data is raw else ".jpg"
            annotation = Annotation(f"{name}{suffix}", image.width, image.height, tuple(boxes))
            labels.add(name, data, annotation, [d.score for d in detections])
        draw_boxes(image, boxes, names, captions=score_captions(boxes, detections))
        image.save(annotated / f"{name}.jpg", quality=90)
    if labels:
        labels.close()
    return rows, errors
