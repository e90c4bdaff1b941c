"""clean_split: validate images and annotations, drop what is broken (with reasons), split."""

import logging
from dataclasses import asdict
from pathlib import Path

from omegaconf import DictConfig

from odpipe.core.draw import sample_grid
from odpipe.core.files import fresh_dir, write_json
from odpipe.core.manifest import left_out
from odpipe.core.parallel import resolve_workers
from odpipe.core.runtime import stage
from odpipe.data.splitting import carve_missing, group_pattern_matches
from odpipe.detect.clean import ClassRules, CleanPolicy, account, class_names, clean, issues_as_dicts, report
from odpipe.detect.formats import read_dataset, split_lists
from odpipe.detect.report import markdown
from odpipe.detect.split_files import SplitFiles

log = logging.getLogger(__name__)
GRID_IMAGES = 16


@stage("clean_split")
def main(cfg: DictConfig) -> None:
    raw, dataset, options = Path(cfg.paths.raw), cfg.dataset, cfg.clean_split
    policy = CleanPolicy(
        keep_negatives=dataset.keep_negatives,
        drop_difficult=dataset.drop_difficult,
        max_image_pixels=options.max_image_pixels,
        workers=resolve_workers(options.workers, "clean_split.workers"),
    )
    out = fresh_dir(cfg.paths.clean_split)
    images = Path(cfg.paths.clean_images)
    index, parsed = read_dataset(raw, dataset.format, dataset)
    rules = ClassRules((), dict(dataset.class_map), list(dataset.ignore_classes), dataset.unknown_classes)
    classes = class_names(dataset.classes, parsed, rules)
    rules = ClassRules(classes, rules.rename, rules.ignore, rules.unknown)
    write_json({"names": classes}, cfg.paths.classes)
    log.info(
        "%s: %d classes%s: %s",
        parsed.format,
        len(classes),
        "" if dataset.classes else " named by the data",
        ", ".join(classes),
    )
    group_pattern_matches(index.paths, options.group_pattern)  # a pattern that matches nothing fails now, not last
    lists, carved = carve_missing(split_lists(raw, index, parsed) if options.use_imagesets else {}, options.ratios)
    if carved:
        log.info("the dataset's own splits have no %s images: carved from its train images", " or ".join(carved))
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
    files, not_inputs = account(raw, index, parsed, result.dropped, left_out(Path(cfg.paths.manifest)))
    issues = issues_as_dicts(result) | {"not_input": [asdict(issue) for issue in not_inputs]}
    write_json(issues, out / "issues.json")

    summary = report(result, tally, classes, files=files, fmt=parsed.format)
    write_json(summary, cfg.paths.clean_split_report)
    grid = Path(cfg.paths.clean_split_grid)
    shown = splits.first(GRID_IMAGES)
    sample_grid(shown, {a.filename: (images / a.filename).read_bytes() for a in shown}, classes).save(grid, quality=90)
    Path(cfg.paths.clean_split_markdown).write_text(markdown(summary, issues, grid.name))
    log.info("kept %d images, dropped %d: %s", summary["kept"], summary["dropped"], summary["dropped_by_reason"])
    log.info("files under dataset.path: %s", files)
    if options.group_pattern:
        log.info("group_pattern %r matched %d image(s)", options.group_pattern, summary["group_pattern_matches"])
    for split, missing in summary["classes_missing"].items():
        log.warning("split %s has no box of class(es) %s", split, missing)


if __name__ == "__main__":
    main()
