"""evaluate: the exported model over a split, COCO box metrics to DVC and MLflow."""

import json
import logging
from pathlib import Path

from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from odpipe.evaluation import (
    check_quality_gate,
    coco_detections,
    coco_ground_truth,
    coco_metrics,
    confusion_pairs,
    detect_all,
    load_detector,
)
from odpipe.export import LABEL_MAP_NAME
from odpipe.files import read_csv, write_json
from odpipe.label_map import read_label_map
from odpipe.runtime import stage
from odpipe.tfrecord import group_csv_rows
from odpipe.tracking import (
    flatten,
    log_artifacts,
    log_metrics,
    read_run_id,
    register_model,
    resolve_tracking_uri,
    run_for_evaluation,
    run_status,
)

log = logging.getLogger(__name__)


@stage("evaluate")
def main(cfg: DictConfig) -> None:
    export_dir, images = Path(cfg.paths.export), Path(cfg.paths.clean_images)
    records = group_csv_rows(read_csv(Path(cfg.paths.convert) / f"{cfg.evaluate.split}.csv"))
    detector = load_detector(export_dir)
    encoded = [(images / r.filename).read_bytes() for r in records]
    detections, speed = detect_all(detector, encoded, cfg.evaluate.min_score)
    categories = read_label_map(export_dir / LABEL_MAP_NAME)
    ground_truth = coco_ground_truth(records, categories)
    metrics, summary = coco_metrics(ground_truth, coco_detections(detections))
    log.info("COCO box metrics on %s (%d images):\n%s", cfg.evaluate.split, len(records), summary)
    report = {**metrics, **speed, "num_images": len(records), "num_detections": sum(map(len, detections))}
    write_json(report, cfg.paths.evaluate_report)
    pairs = confusion_pairs(records, detections, categories, cfg.evaluate.iou_threshold, cfg.evaluate.score_threshold)
    Path(cfg.paths.confusion).write_text(json.dumps(pairs, indent=1) + "\n")

    client = MlflowClient(resolve_tracking_uri(cfg.mlflow.tracking_uri, Path.cwd()))
    params = flatten({"evaluate": OmegaConf.to_container(cfg.evaluate)})
    run_id = run_for_evaluation(
        client, read_run_id(Path(cfg.paths.mlflow_run)), params, cfg.mlflow.experiment_name, Path.cwd()
    )
    with run_status(client, run_id):
        log_metrics(client, run_id, report)
        log_artifacts(client, run_id, [Path(cfg.paths.evaluate_report)])
        if check_quality_gate(metrics, cfg.evaluate.min_map):
            version = register_model(client, run_id, export_dir, cfg.evaluate.registered_model, metrics)
            log.info("registered %s version %s", cfg.evaluate.registered_model, version)


if __name__ == "__main__":
    main()
