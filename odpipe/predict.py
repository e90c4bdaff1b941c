"""Use an exported model: ``odpipe predict MODEL_DIR INPUT... --out DIR``.

INPUT is an image, a folder (searched recursively) or a glob. A segmentation export (the segment
task's, with its ``classes.json``) writes class maps instead (:mod:`odpipe.segment.predict`): index
PNGs, colour PNGs, overlays, and ``segmentation.csv`` with each class's share of each image. A
classifier export writes ``classification.csv``: each image's top-5 classes with their
probabilities (:mod:`odpipe.classify.predict`). For
a detector, for each image the detections
go to ``detections.json`` and ``detections.csv`` (class name, score, pixel box) and an
annotated copy to ``annotated/``. Images are read the way training read them (EXIF rotation
applied; CMYK, 16-bit, BMP, WebP converted), so predictions line up with what a person sees.
An unreadable input is reported by name and skipped; the exit status is 1 if any was.

``--format voc`` (or ``coco``) pre-labels: ``labels/`` gets each image with its predicted
boxes as a dataset a person corrects instead of drawing every box, a VOC XML beside each image
(LabelImg's "Open Dir") or one COCO JSON, and that folder goes back in as ``dataset=local``.
"""

from __future__ import annotations

import argparse
import glob
import io
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import tensorflow as tf
from PIL import Image, UnidentifiedImageError

from odpipe.classify.export import is_classifier
from odpipe.classify.predict import predict_classes
from odpipe.core.draw import draw_boxes
from odpipe.core.files import unique_stems, write_csv, write_json
from odpipe.core.images import IMAGE_SUFFIXES, readable_bytes
from odpipe.data.annotations import Annotation, write_coco, write_voc
from odpipe.detect.detectors import load_detector
from odpipe.detect.evaluate import as_boxes, decode_error, detect, score_captions
from odpipe.detect.export import LABEL_MAP_NAME
from odpipe.detect.label_map import read_label_map
from odpipe.engine.export_folder import CLASSES_FILE
from odpipe.segment.predict import predict_masks

CSV_COLUMNS = ("file", "class", "score", "xmin", "ymin", "xmax", "ymax")
LABEL_FORMATS = ("voc", "coco")
COCO_FILE = "annotations.json"


def expand_inputs(inputs: Iterable[str]) -> list[Path]:
    """Images named directly, found in folders, or matched by glob patterns; in order, once."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.exists():
            found.append(path)
        else:
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True))
            if not matches:
                raise FileNotFoundError(f"{item}: no such file, folder or matching images")
            found += [m for m in matches if m.is_file()]
    return list(dict.fromkeys(found))


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="odpipe predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", type=Path, help="an exported model folder (models/export)")
    parser.add_argument("inputs", nargs="+", help="images, folders or glob patterns")
    parser.add_argument("--out", type=Path, default=Path("predictions"), help="output folder (default: predictions)")
    parser.add_argument("--min-score", type=float, default=0.5, help="drop detections below this score")
    parser.add_argument("--max-detections", type=int, default=100, help="keep at most this many per image")
    parser.add_argument(
        "--format",
        choices=LABEL_FORMATS,
        help="pre-label: also write the images and their boxes to OUT/labels as VOC XML (LabelImg) or COCO JSON",
    )
    args = parser.parse_args(argv)
    if not (args.model_dir / "saved_model").is_dir():
        parser.error(f"{args.model_dir}: no saved_model/ inside; pass the export stage's folder")
    try:
        images = expand_inputs(args.inputs)
    except FileNotFoundError as err:
        parser.error(str(err))
    if is_classifier(args.model_dir):
        return _report(*predict_classes(args.model_dir, images), "classification", args.out)
    if (args.model_dir / CLASSES_FILE).is_file():
        return _report(*predict_masks(args.model_dir, images, args.out), "segmentation", args.out)
    rows, errors = predict_images(args.model_dir, images, args.out, args.min_score, args.max_detections, args.format)
    write_json({"detections": rows, "errors": errors}, args.out / "detections.json")
    write_csv(rows, CSV_COLUMNS, args.out / "detections.csv")
    for error in errors:
        print(error, file=sys.stderr)
    print(f"{len(images) - len(errors)} image(s), {len(rows)} detection(s) -> {args.out}")
    if args.format:
        print(f"pre-labelled ({args.format}): correct {args.out / 'labels'}, then train on it with dataset=local")
    return 1 if errors else 0


def _report(rows: list[dict], errors: list[str], columns: list[str], kind: str, out: Path) -> int:
    """Write a segmenter's or a classifier's rows and say what was done; exit status 1 if any image failed."""
    write_csv(rows, columns, out / f"{kind}.csv")
    for error in errors:
        print(error, file=sys.stderr)
    pictures = "masks/, colour/, overlays/, " if kind == "segmentation" else ""
    print(f"{len(rows)} image(s) -> {out} ({pictures}{kind}.csv)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
