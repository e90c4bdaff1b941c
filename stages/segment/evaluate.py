"""evaluate (segment): the exported segmenter over a split, MMSegmentation's metrics (aAcc, per
class IoU/Acc/Dice, mIoU, mDice), the normalised confusion matrix, the worst images, latency;
the quality gate on mIoU; to DVC and MLflow."""

import json
import logging
from pathlib import Path

from odpipe.seg_serving import register_segmenter
from omegaconf import DictConfig, OmegaConf

from odpipe.files import fresh_dir, write_csv, write_json
from odpipe.gate import SEGMENT_GATE, QualityGateError, quality_gate
from odpipe.manifest import sha256_file
from odpipe.runs import (
    best_registered,
    flatten,
    log_artifacts,
    log_metrics,
    numeric,
    open_client,
    read_run_id,
    resolve_tracking_uri,
    run_for_evaluation,
    run_status,
)
from odpipe.runtime import EVERY_STAGE, stage
from odpipe.seg_evaluation import read_mask, score_rows
from odpipe.seg_export import load_segmenter
from odpipe.seg_metrics import (
    flat_metrics,
    normalised_confusion,
    per_class_markdown,
    per_class_rows,
    row_shares,
    segmentation_metrics,
)
from odpipe.seg_report import confusion_figure, gallery
from odpipe.segment_data import read_rows

log = logging.getLogger(__name__)


@stage("evaluate")
def main(cfg: DictConfig) -> None:
    export_dir, images, masks = Path(cfg.paths.export), Path(cfg.paths.clean_images), Path(cfg.paths.clean_masks)
    segmenter = load_segmenter(export_dir)
    names, colors = segmenter.names, segmenter.colors
    split_csv = Path(cfg.paths.clean_split) / f"{cfg.evaluate.split}.csv"
    rows = read_rows(split_csv)
    scores = score_rows(lambda encoded: segmenter.predict(encoded)[0], rows, images, masks, len(names))
    metrics = segmentation_metrics(scores.confusion, names)
    log.info("%s (%d images):\n%s", cfg.evaluate.split, len(rows), per_class_markdown(metrics))
    selection = json.loads(Path(cfg.paths.train_selection).read_text())
    report = {**flat_metrics(metrics), **scores.speed(), "num_images": len(rows), "exported_epoch": selection["step"]}
    if "val_mIoU" in selection:
        report["exported_val_mIoU"] = selection["val_mIoU"]

    write_csv(per_class_rows(metrics), ["class", "IoU", "Acc", "Dice", "pixels"], cfg.paths.per_class)
    Path(cfg.paths.per_class_markdown).write_text(per_class_markdown(metrics) + "\n")
    Path(cfg.paths.confusion).write_text(json.dumps(normalised_confusion(scores.confusion, names), indent=1) + "\n")
    samples = fresh_dir(cfg.paths.samples)
    confusion_figure(row_shares(scores.confusion), names).save(samples / "confusion.png")
    worst = []
    for i in scores.worst(cfg.evaluate.num_samples):
        encoded = (images / rows[i].image).read_bytes()
        caption = f"{rows[i].image}  mIoU {scores.image_miou[i]:.3f}"
        worst.append((encoded, read_mask(masks / rows[i].mask), segmenter.predict(encoded)[0], caption))
    gallery(worst, colors, names).save(samples / "worst.jpg", quality=90)

    client = open_client(resolve_tracking_uri(cfg.mlflow.tracking_uri, Path.cwd()))
    params = flatten({k: v for k, v in OmegaConf.to_container(cfg).items() if k not in EVERY_STAGE})
    run_id = run_for_evaluation(
        client, read_run_id(Path(cfg.paths.mlflow_run)), params, cfg.mlflow.experiment_name, Path.cwd()
    )
    gate_config = cfg.evaluate
    split_sha256 = sha256_file(split_csv)
    best = None
    if gate_config.min_improvement is not None:
        best = best_registered(client, gate_config.registered_model, split_sha256, SEGMENT_GATE.key)
    gate = quality_gate(report["mIoU"], gate_config.min_miou, gate_config.min_improvement, best, SEGMENT_GATE)
    log.info("quality gate: %s", gate.reason)
    report |= gate.as_report()
    write_json(report, cfg.paths.evaluate_report)
    with run_status(client, run_id):
        log_metrics(client, run_id, numeric(report))
        client.set_tag(run_id, "odpipe.gate", gate.reason)
        reports = (cfg.paths.clean_split_report, cfg.paths.clean_split_markdown, cfg.paths.clean_split_grid)
        produced = (cfg.paths.evaluate_report, cfg.paths.per_class, cfg.paths.per_class_markdown, cfg.paths.confusion)
        log_artifacts(client, run_id, [Path(p) for p in (*reports, *produced, cfg.paths.augment_preview, samples)])
        if gate.passed:
            name = gate_config.registered_model
            version = register_segmenter(client, run_id, export_dir, name, flat_metrics(metrics), split_sha256)
            log.info("registered %s version %s", name, version)
        elif gate.passed is False and gate_config.strict_gate:
            raise QualityGateError(f"quality gate failed (evaluate.strict_gate): {gate.reason}")


if __name__ == "__main__":
    main()
