"""evaluate (classify): the exported classifier over a split: top-1 (and top-5), per-class
precision / recall / F1, the normalised confusion matrix, calibration (ECE, reliability), the most
confident mistakes, Grad-CAM heat maps, latency; the quality gate on the configured metric; to
DVC and MLflow."""

import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from odpipe.classify.clean import read_rows
from odpipe.classify.evaluate import across_classes, explained, predict_rows
from odpipe.classify.export import load_classifier
from odpipe.classify.metrics import (
    classification_metrics,
    confident_mistakes,
    flat_metrics,
    per_class_markdown,
    per_class_rows,
)
from odpipe.classify.models import build_model
from odpipe.classify.report import gradcam_figure, mistakes_gallery, reliability_diagram
from odpipe.classify.serve import log_model
from odpipe.core.files import fresh_dir, write_csv
from odpipe.core.runtime import stage
from odpipe.engine.confusion import confusion_figure, normalised_confusion, row_shares
from odpipe.engine.gate import classify_gate
from odpipe.engine.keras_loop import restore_weights
from odpipe.engine.results import record_results

log = logging.getLogger(__name__)


@stage("evaluate")
def main(cfg: DictConfig) -> None:
    export_dir, images, options = Path(cfg.paths.export), Path(cfg.paths.clean_images), cfg.evaluate
    gate_metric = classify_gate(options.metric)
    classifier = load_classifier(export_dir)
    names = classifier.names
    split_csv = Path(cfg.paths.clean_split) / f"{options.split}.csv"
    rows = read_rows(split_csv)
    predicted = predict_rows(classifier, rows, images)
    metrics = classification_metrics(predicted.truth, predicted.probabilities, names)
    log.info("%s (%d images): top-1 %.4f\n%s", options.split, len(rows), metrics["top1"], per_class_markdown(metrics))
    selection = json.loads(Path(cfg.paths.train_selection).read_text())
    report = {
        **flat_metrics(metrics),
        **predicted.speed(),
        "num_images": len(rows),
        "exported_epoch": selection["step"],
    }
    if "val_top1" in selection:
        report["exported_val_top1"] = selection["val_top1"]

    write_csv(per_class_rows(metrics), ["class", "precision", "recall", "f1", "support"], cfg.paths.per_class)
    Path(cfg.paths.per_class_markdown).write_text(per_class_markdown(metrics) + "\n")
    counts = metrics["confusion"]
    Path(cfg.paths.confusion).write_text(json.dumps(normalised_confusion(counts, names), indent=1) + "\n")
    filled = [b for b in metrics["reliability"] if b["count"]]  # an empty bin has no accuracy to plot
    write_csv(filled, list(metrics["reliability"][0]), cfg.paths.calibration)
    samples = fresh_dir(cfg.paths.samples)
    confusion_figure(row_shares(counts), names, "images").save(samples / "confusion.png")
    reliability_diagram(metrics["reliability"]).save(samples / "reliability.png")
    mistakes = confident_mistakes(predicted.truth, predicted.probabilities, options.num_samples)
    best = predicted.probabilities.argmax(-1)
    shown = [
        ((images / rows[i].image).read_bytes(), rows[i].label, int(best[i]), float(predicted.probabilities[i, best[i]]))
        for i in mistakes
    ]
    mistakes_gallery(shown, names).save(samples / "mistakes.jpg", quality=90)
    model_cfg = OmegaConf.to_container(cfg.model)
    model = build_model(model_cfg["architecture"], len(names), classifier.image_size, model_cfg)
    restore_weights(model, Path(cfg.paths.train))
    heat_maps = explained(model, across_classes(rows, options.gradcam_images), images, classifier.image_size, names)
    gradcam_figure(heat_maps).save(samples / "gradcam.jpg", quality=90)

    reports = (cfg.paths.clean_split_report, cfg.paths.clean_split_markdown, cfg.paths.clean_split_grid)
    produced = (cfg.paths.evaluate_report, cfg.paths.per_class, cfg.paths.per_class_markdown, cfg.paths.confusion)
    record_results(
        cfg,
        report,
        metric=gate_metric,
        split_file=split_csv,
        artifacts=[Path(p) for p in (*reports, *produced, cfg.paths.calibration, cfg.paths.augment_preview, samples)],
        log_model=lambda client, run_id: log_model(client, run_id, export_dir),
        version_tags=flat_metrics(metrics),
    )


if __name__ == "__main__":
    main()
