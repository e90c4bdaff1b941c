"""Use an exported model: ``odpipe predict MODEL_DIR INPUT... --out DIR``.

INPUT is an image, a folder (searched recursively) or a glob. A segmentation export (the segment
task's, with its ``classes.json``) writes class maps instead (:mod:`odpipe.segment.predict`): index
PNGs, colour PNGs, overlays, and ``segmentation.csv`` with each class's share of each image. A
classifier export writes ``classification.csv``: each image's top-5 classes with their
probabilities (:mod:`odpipe.classify.predict`). For a detector (:mod:`odpipe.detect.predict`),
each image's detections go to ``detections.json`` and ``detections.csv`` (class name, score,
pixel box) and an annotated copy to ``annotated/``. Images are read the way training read them (EXIF rotation
applied; CMYK, 16-bit, BMP, WebP converted), so predictions line up with what a person sees.
An unreadable input is reported by name and skipped; the exit status is 1 if any was.

``--format voc`` (or ``coco``) pre-labels: ``labels/`` gets each image with its predicted
boxes as a dataset a person corrects instead of drawing every box, a VOC XML beside each image
(LabelImg's "Open Dir") or one COCO JSON, and that folder goes back in as ``dataset=local``.
"""

from __future__ import annotations

import argparse
import glob
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from odpipe.classify.export import is_classifier
from odpipe.classify.predict import predict_classes
from odpipe.core.files import write_csv, write_json
from odpipe.core.images import IMAGE_SUFFIXES
from odpipe.detect.predict import CSV_COLUMNS, LABEL_FORMATS, predict_images
from odpipe.engine.export_folder import CLASSES_FILE
from odpipe.segment.predict import predict_masks


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
