"""evaluate (segment): the exported segmenter over a split, MMSegmentation's metrics (aAcc, per
class IoU/Acc/Dice, mIoU, mDice), the normalised confusion matrix, the worst images, latency;
the quality gate on mIoU; to DVC and MLflow."""

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from odpipe.core.files import fresh_dir, write_csv
from odpipe.core.runtime import stage
from odpipe.data.index_masks import decode_png
from odpipe.engine.confusion import confusion_figure, normalised_confusion, row_shares
from odpipe.engine.gate import SEGMENT_GATE
from odpipe.engine.results import record_results
from odpipe.segment.clean import read_rows
from odpipe.segment.evaluate import score_rows
from odpipe.segment.export import load_segmenter
from odpipe.segment.metrics import flat_metrics, per_class_markdown, per_class_rows, segmentation_metrics
from odpipe.segment.report import gallery
from odpipe.segment.serve import log_model

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
    confusion_figure(row_shares(scores.confusion), names, "pixels").save(samples / "confusion.png")
    worst = []
    for i in scores.worst(cfg.evaluate.num_samples):
        encoded = (images / rows[i].image).read_bytes()
        caption = f"{rows[i].image}  mIoU {scores.image_miou[i]:.3f}"
        worst.append((encoded, decode_png((masks / rows[i].mask).read_bytes()), segmenter.predict(encoded)[0], caption))
    gallery(worst, colors, names).save(samples / "worst.jpg", quality=90)

    reports = (cfg.paths.clean_split_report, cfg.paths.clean_split_markdown, cfg.paths.clean_split_grid)
    produced = (cfg.paths.evaluate_report, cfg.paths.per_class, cfg.paths.per_class_markdown, cfg.paths.confusion)
    record_results(
        cfg,
        report,
        metric=SEGMENT_GATE,
        split_file=split_csv,
        artifacts=[Path(p) for p in (*reports, *produced, cfg.paths.augment_preview, samples)],
        log_model=lambda client, run_id: log_model(client, run_id, export_dir),
        version_tags=flat_metrics(metrics),
    )


if __name__ == "__main__":
    main()
