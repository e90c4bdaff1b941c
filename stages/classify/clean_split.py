"""clean_split (classify): read the class folders (or split folders, or a CSV), check every file
(with reasons), write the kept images, split stratified on the label, report where every file
under the dataset folder went."""

import logging
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig

from odpipe.classify.clean import account, class_markdown, clean_images, report, split_rows, write_splits
from odpipe.classify.formats import read_class_dataset
from odpipe.classify.report import captioned_grid
from odpipe.core.files import fresh_dir, write_json
from odpipe.core.manifest import left_out
from odpipe.core.parallel import resolve_workers
from odpipe.core.runtime import stage

log = logging.getLogger(__name__)
GRID_IMAGES = 16


@stage("clean_split")
def main(cfg: DictConfig) -> None:
    raw, options = Path(cfg.paths.raw), cfg.clean_split
    dataset = read_class_dataset(raw, cfg.dataset.format, list(cfg.dataset.classes))
    out = fresh_dir(cfg.paths.clean_split)
    images = Path(cfg.paths.clean_images)
    workers = resolve_workers(options.workers, "clean_split.workers")
    result = clean_images(raw, images, dataset, options.max_image_pixels, workers)
    by_split = split_rows(result, options.ratios, options.seed, options.group_pattern, options.use_imagesets)
    write_splits(result, by_split, dataset.classes, out)
    write_json({"names": list(dataset.classes)}, cfg.paths.classes)
    files, not_inputs = account(raw, dataset, result, left_out(Path(cfg.paths.manifest)))
    decided = {"dropped": result.dropped, "notes": result.notes, "not_input": not_inputs}
    issues = {kind: [asdict(issue) for issue in found] for kind, found in decided.items()}
    write_json(issues, out / "issues.json")

    summary = report(result, by_split, dataset, cfg.classify.min_per_class, files=files)
    write_json(summary, cfg.paths.clean_split_report)
    grid = Path(cfg.paths.clean_split_grid)
    shown = [((images / r.image).read_bytes(), dataset.classes[r.label]) for r in result.rows[:GRID_IMAGES]]
    captioned_grid(shown).save(grid, quality=90)
    Path(cfg.paths.clean_split_markdown).write_text(class_markdown(summary, issues, grid.name))
    log.info(
        "%s: %d classes (id: name): %s",
        dataset.layout,
        len(dataset.classes),
        ", ".join(f"{i}: {name}" for i, name in enumerate(dataset.classes)),
    )
    log.info(
        "kept %d images, dropped %d: %s",
        summary["kept"],
        summary["dropped"],
        summary["dropped_by_reason"],
    )
    log.info("files under dataset.path: %s", files)
    if summary["classes_below_min"]:
        log.warning(
            "classes below classify.min_per_class train images (train refuses them): %s", summary["classes_below_min"]
        )
    if summary["empty_classes"]:
        log.warning("empty class folders: %s", summary["empty_classes"])


if __name__ == "__main__":
    main()
