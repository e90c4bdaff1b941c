"""clean_split (segment): pair every image with its mask, check both (with reasons), write the
kept images and index masks, split stratified on the classes each image holds, report."""

import logging
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from odpipe.core.files import fresh_dir, write_json
from odpipe.core.manifest import left_out
from odpipe.core.parallel import resolve_workers
from odpipe.core.runtime import stage
from odpipe.segment.clean import account, clean_masks, report, split_rows, write_splits
from odpipe.segment.formats import read_mask_dataset
from odpipe.segment.report import mask_grid, mask_markdown

log = logging.getLogger(__name__)
GRID_IMAGES = 16


@stage("clean_split")
def main(cfg: DictConfig) -> None:
    raw, options = Path(cfg.paths.raw), cfg.clean_split
    dataset_options = OmegaConf.to_container(cfg.dataset)
    dataset = read_mask_dataset(raw, cfg.dataset.format, dataset_options)
    out = fresh_dir(cfg.paths.clean_split)
    images, masks = Path(cfg.paths.clean_images), Path(cfg.paths.clean_masks)
    workers = resolve_workers(options.workers, "clean_split.workers")
    result = clean_masks(
        raw,
        images,
        masks,
        dataset=dataset,
        options=dataset_options,
        max_pixels=options.max_image_pixels,
        workers=workers,
    )
    pinned = dataset.splits if options.use_imagesets else {}
    by_split = split_rows(result, pinned, options.ratios, options.seed, options.group_pattern)
    write_splits(result, by_split, out)
    names, colors = dataset.classes.names, dataset.classes.colors
    write_json({"names": list(names), "colors": [list(c) for c in colors]}, cfg.paths.classes)
    files, not_inputs = account(raw, dataset, result.dropped, left_out(Path(cfg.paths.manifest)))
    issues = {key: [asdict(i) for i in found] for key, found in (("dropped", result.dropped), ("notes", result.notes))}
    issues["not_input"] = [asdict(i) for i in not_inputs]
    write_json(issues, out / "issues.json")

    summary = report(result, by_split, names, dataset.format) | {"files": files}
    write_json(summary, cfg.paths.clean_split_report)
    grid = Path(cfg.paths.clean_split_grid)
    shown = [((images / r.image).read_bytes(), (masks / r.mask).read_bytes()) for r in result.rows[:GRID_IMAGES]]
    mask_grid(shown, colors).save(grid, quality=90)
    Path(cfg.paths.clean_split_markdown).write_text(mask_markdown(summary, issues, grid.name))
    log.info("%d classes (id: name): %s", len(names), ", ".join(f"{i}: {n}" for i, n in enumerate(names)))
    log.info(
        "%s masks: kept %d images, dropped %d: %s",
        dataset.format,
        summary["kept"],
        summary["dropped"],
        summary["dropped_by_reason"],
    )
    log.info("files under dataset.path: %s", files)
    for split, missing in summary["classes_missing"].items():
        log.warning("split %s has no pixel of class(es) %s", split, missing)


if __name__ == "__main__":
    main()
