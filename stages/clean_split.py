"""clean_split: validate images and annotations, drop what is broken (with reasons), split."""

import logging
from pathlib import Path

from omegaconf import DictConfig

from odpipe.core.draw import sample_grid
from odpipe.core.files import fresh_dir, write_json
from odpipe.core.parallel import resolve_workers
from odpipe.core.runtime import stage
from odpipe.data.splitting import group_pattern_matches
from odpipe.detect.clean import ClassRules, CleanPolicy, clean, issues_as_dicts, report
from odpipe.detect.formats import read_dataset, voc_imagesets
from odpipe.detect.report import markdown
from odpipe.detect.split_files import SplitFiles

log = logging.getLogger(__name__)
GRID_IMAGES = 16


@stage("clean_split")
def main(cfg: DictConfig) -> None:
    raw, dataset, options = Path(cfg.paths.raw), cfg.dataset, cfg.clean_split
    classes = list(dataset.classes)
    rules = ClassRules(classes, dict(dataset.class_map), list(dataset.ignore_classes), dataset.unknown_classes)
    policy = CleanPolicy(
        keep_negatives=dataset.keep_negatives,
        drop_difficult=dataset.drop_difficult,
        max_image_pixels=options.max_image_pixels,
        workers=resolve_workers(options.workers, "clean_split.workers"),
    )
    out = fresh_dir(cfg.paths.clean_split)
    images = Path(cfg.paths.clean_images)
    index, parsed = read_dataset(raw, dataset.format, dataset)
    group_pattern_matches(index.paths, options.group_pattern)  # a pattern that matches nothing fails now, not last
    lists = voc_imagesets(raw, index) if options.use_imagesets else {}
    splits = SplitFiles(lists, options.ratios, options.seed, options.group_pattern)
    result = clean(
        raw,
        images,
        index=index,
        parsed=parsed,
        rules=rules,
        policy=policy,
        keep=splits.add,  # each kept sample written out
    )
    tally = splits.write(out)
    issues = issues_as_dicts(result)
    write_json(issues, out / "issues.json")

    summary = report(result, tally, classes)
    write_json(summary, cfg.paths.clean_split_report)
    grid = Path(cfg.paths.clean_split_grid)
    shown = splits.first(GRID_IMAGES)
    sample_grid(shown, {a.filename: (images / a.filename).read_bytes() for a in shown}, classes).save(grid, quality=90)
    Path(cfg.paths.clean_split_markdown).write_text(markdown(summary, issues, grid.name))
    log.info("kept %d images, dropped %d: %s", summary["kept"], summary["dropped"], summary["dropped_by_reason"])
    if options.group_pattern:
        log.info("group_pattern %r matched %d image(s)", options.group_pattern, summary["group_pattern_matches"])
    for split, missing in summary["classes_missing"].items():
        log.warning("split %s has no box of class(es) %s", split, missing)


if __name__ == "__main__":
    main()
