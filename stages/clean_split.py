"""clean_split: validate images and annotations, drop what is broken (with reasons), split."""

import logging
from pathlib import Path

from omegaconf import DictConfig

from odpipe.annotations import annotation_to_dict
from odpipe.cleaning import ClassRules, clean_folder, issues_as_dicts, report, split_samples
from odpipe.files import fresh_dir, write_files, write_json, write_jsonl
from odpipe.formats import voc_imagesets
from odpipe.report import markdown, sample_grid
from odpipe.runtime import stage

log = logging.getLogger(__name__)


@stage("clean_split")
def main(cfg: DictConfig) -> None:
    raw, dataset, options = Path(cfg.paths.raw), cfg.dataset, cfg.clean_split
    classes = list(dataset.classes)
    rules = ClassRules(classes, dict(dataset.class_map), list(dataset.ignore_classes), dataset.unknown_classes)
    index, result = clean_folder(raw, dataset.format, dataset, rules, dataset.keep_negatives, dataset.drop_difficult)

    lists = voc_imagesets(raw, index) if options.use_imagesets else {}
    splits = split_samples(result.kept, lists, options.ratios, options.seed, options.group_pattern)

    out = fresh_dir(cfg.paths.clean_split)
    write_files(result.images, cfg.paths.clean_images)
    for split, samples in splits.items():
        write_jsonl((annotation_to_dict(s.annotation) for s in samples), out / f"{split}.jsonl")
    issues = issues_as_dicts(result)
    write_json(issues, out / "issues.json")

    summary = report(result, splits, classes)
    write_json(summary, cfg.paths.clean_split_report)
    grid = Path(cfg.paths.clean_split_grid)
    sample_grid([s.annotation for s in result.kept], result.images, classes).save(grid, quality=90)
    Path(cfg.paths.clean_split_markdown).write_text(markdown(summary, issues, grid.name))
    log.info("kept %d images, dropped %d: %s", summary["kept"], summary["dropped"], summary["dropped_by_reason"])


if __name__ == "__main__":
    main()
