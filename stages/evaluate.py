"""evaluate: the exported model over a split: COCO box metrics, per-class PR curves, the score
threshold chosen on val, a confusion matrix, best and worst images, speed; to DVC and MLflow."""

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from odpipe.core.draw import side_by_side
from odpipe.core.files import fresh_dir, iter_csv, write_csv
from odpipe.core.runtime import stage
from odpipe.detect.curves import best_and_worst, threshold_report
from odpipe.detect.detectors import FORMAT_PATHS, format_size, load_detector
from odpipe.detect.evaluate import (
    coco_detections,
    coco_ground_truth,
    coco_metrics,
    comparison_row,
    confusion_pairs,
    detect_all,
    format_scores,
)
from odpipe.detect.export import LABEL_MAP_NAME
from odpipe.detect.label_map import read_label_map
from odpipe.detect.records import group_csv_rows
from odpipe.detect.serve import log_model
from odpipe.engine.gate import DETECT_GATE
from odpipe.engine.mlflow_runs import (
    file_stem,
    numeric,
)
from odpipe.engine.results import record_results

log = logging.getLogger(__name__)


@stage("evaluate")
def main(cfg: DictConfig) -> None:
    export_dir, images = Path(cfg.paths.export), Path(cfg.paths.clean_images)
    detector = load_detector(export_dir)
    categories = read_label_map(export_dir / LABEL_MAP_NAME)

    def run(split: str, model=detector):
        """Each image's boxes and detections; the images themselves are read as the model needs
        them and not kept, so memory does not grow with the split."""
        records = group_csv_rows(iter_csv(Path(cfg.paths.convert) / f"{split}.csv"))
        encoded = ((images / r.filename).read_bytes() for r in records)
        detections, speed = detect_all(model, encoded, cfg.evaluate.min_score)
        return records, detections, speed

    records, detections, speed = run(cfg.evaluate.split)
    val_records, val_detections, _ = run("val")
    ground_truth = coco_ground_truth(records, categories)
    metrics, summary = coco_metrics(ground_truth, coco_detections(detections))
    log.info("COCO box metrics on %s (%d images):\n%s", cfg.evaluate.split, len(records), summary)
    formats = format_scores("saved_model", metrics | speed, format_size(export_dir, "saved_model"))
    for model_format in cfg.export.formats:
        if model_format != "saved_model":  # every other format, scored by the same code on the same split
            _, found, format_speed = run(cfg.evaluate.split, load_detector(export_dir, model_format))
            format_metrics, _ = coco_metrics(ground_truth, coco_detections(found))
            formats |= format_scores(model_format, format_metrics | format_speed, format_size(export_dir, model_format))
    log.info("export formats on %s: %s", cfg.evaluate.split, formats)
    chosen = threshold_report(
        (val_records, val_detections), (records, detections), categories, cfg.evaluate.iou_threshold
    )
    log.info("score threshold %.2f (best F1 on val): %s", chosen.metrics["threshold"], chosen.metrics)
    selection = json.loads(Path(cfg.paths.train_selection).read_text())
    exported = {"exported_step": selection["step"]}
    if "val_map" in selection:  # absent when training ran without val evaluation
        exported["exported_val_map"] = selection["val_map"]
    report = {**metrics, **chosen.metrics, **speed, **exported, **formats, "num_images": len(records)}
    report["num_detections"] = sum(map(len, detections))

    score_threshold = cfg.evaluate.score_threshold
    score_threshold = chosen.metrics["threshold"] if score_threshold is None else score_threshold
    pairs = confusion_pairs(records, detections, categories, cfg.evaluate.iou_threshold, score_threshold)
    Path(cfg.paths.confusion).write_text(json.dumps(pairs, indent=1) + "\n")
    write_csv(chosen.val_curve, ["threshold", "f1", "precision", "recall"], cfg.paths.f1_curve)
    pr_dir = fresh_dir(cfg.paths.pr_curves)
    for name, points in chosen.pr.items():
        path = pr_dir / f"{file_stem(name)}.csv"  # the real name is in the file, for a cleaned one
        write_csv([{"class": name, **point} for point in points], ["class", "recall", "precision"], path)
    samples_dir = fresh_dir(cfg.paths.samples)
    classes = [categories[i] for i in sorted(categories)]
    for kind, indices in best_and_worst(chosen.image_scores, cfg.evaluate.num_samples).items():
        rows = [
            comparison_row(
                records[i], (images / records[i].filename).read_bytes(), detections[i], categories, score_threshold
            )
            for i in indices
        ]
        side_by_side(rows, classes).save(samples_dir / f"{kind}.jpg", quality=90)

    reports = (cfg.paths.clean_split_report, cfg.paths.clean_split_markdown, cfg.paths.clean_split_grid)
    produced = (cfg.paths.evaluate_report, cfg.paths.f1_curve, cfg.paths.augment_preview, pr_dir, samples_dir)
    exported_files = [export_dir / FORMAT_PATHS[f] for f in cfg.export.formats if f != "saved_model"]
    tracked = (cfg.paths.track_report, cfg.paths.track, cfg.paths.track_frames)
    record_results(
        cfg,
        report,
        metric=DETECT_GATE,
        split_file=Path(cfg.paths.convert) / f"{cfg.evaluate.split}.csv",
        artifacts=[Path(p) for p in (*reports, *produced, *tracked, *exported_files)],
        log_model=lambda client, run_id: log_model(client, run_id, export_dir),
        version_tags=metrics,
        extra_metrics=numeric(json.loads(Path(cfg.paths.track_report).read_text()), "track/"),
    )


if __name__ == "__main__":
    main()
