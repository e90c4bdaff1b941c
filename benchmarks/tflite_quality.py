"""TFLite: what each quantisation costs in test mAP and gains in size and latency, against the
SavedModel, for a trained export (``make repro`` first, or ``--project`` a kept work copy).

Each ``export.tflite.quantize`` (none, float16, int8 calibrated on train images) is converted
from the export's checkpoint as the export stage converts it, then every format is scored on the
test split by the code of the evaluate stage (``detect_all``, pycocotools), one after another in
one run: latencies are compared as ratios to the SavedModel's (machines differ ~2x between runs).
Usage: python benchmarks/tflite_quality.py [--project DIR] [--calibration N]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from odpipe.core.files import iter_csv
from odpipe.core.runtime import load_params
from odpipe.detect.detectors import FORMAT_PATHS, format_size, load_detector
from odpipe.detect.evaluate import coco_detections, coco_ground_truth, coco_metrics, detect_all
from odpipe.detect.export import LABEL_MAP_NAME, calibration_images
from odpipe.detect.label_map import read_label_map
from odpipe.detect.pipeline_config import load_pipeline
from odpipe.detect.records import group_csv_rows
from odpipe.detect.tflite import QUANTIZATIONS, export_tflite

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=ROOT, help="a project after `dvc repro` (default: this one)")
    parser.add_argument("--calibration", type=int, default=100, help="train images int8 calibrates on")
    args = parser.parse_args()
    paths = load_params(args.project).paths
    export, images = args.project / paths.export, args.project / paths.clean_images
    if not (export / "saved_model").is_dir():
        raise SystemExit(f"{export}: no exported model; run `make repro` first (or pass --project)")
    config = load_pipeline(export / "pipeline.config")
    categories = read_label_map(export / LABEL_MAP_NAME)
    records = group_csv_rows(iter_csv(args.project / paths.convert / "test.csv"))
    truth = coco_ground_truth(records, categories)

    def score(folder: Path, model_format: str) -> dict[str, float]:
        found, speed = detect_all(
            load_detector(folder, model_format), ((images / r.filename).read_bytes() for r in records), 0.0
        )
        metrics, _ = coco_metrics(truth, coco_detections(found))
        return {**metrics, **speed, "size_mb": format_size(folder, model_format) / 1e6}

    print(f"{export}: {len(records)} test images")
    rows = [("saved_model", score(export, "saved_model"))]
    with tempfile.TemporaryDirectory(prefix="odpipe-tflite-") as tmp:
        for quantize in QUANTIZATIONS:
            folder = Path(tmp) / quantize
            calibration = calibration_images(args.project / paths.convert / "train.csv", images, args.calibration)
            export_tflite(config, export / "checkpoint", folder / FORMAT_PATHS["tflite"], quantize, calibration)
            rows.append((f"tflite {quantize}", score(folder, "tflite")))
            print(f"  converted and scored: tflite {quantize}")
    reference = rows[0][1]
    print(f"  {'format':16s} {'mAP':>6s} {'mAP@.5':>6s} {'size MB':>8s} {'vs SM':>6s} {'p50 ms':>7s} {'vs SM':>6s}")
    for name, m in rows:
        print(
            f"  {name:16s} {m['map']:6.3f} {m['map_50']:6.3f} {m['size_mb']:8.2f} "
            f"{m['size_mb'] / reference['size_mb']:5.2f}x {m['latency_ms_p50']:7.2f} "
            f"{m['latency_ms_p50'] / reference['latency_ms_p50']:5.2f}x"
        )


if __name__ == "__main__":
    main()
