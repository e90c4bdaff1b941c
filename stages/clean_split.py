"""clean_split: validate images and annotations, drop what is broken (with reasons), split."""

import logging
from pathlib import Path

from omegaconf import DictConfig

from odpipe.annotations import annotation_to_dict
from odpipe.cleaning import clean_voc_folder, issues_as_dicts, report
from odpipe.files import fresh_dir, write_json, write_jsonl
from odpipe.manifest import sha256_file
from odpipe.runtime import stage
from odpipe.splitting import split_by_hash

log = logging.getLogger(__name__)


@stage("clean_split")
def main(cfg: DictConfig) -> None:
    raw = Path(cfg.paths.raw)
    result = clean_voc_folder(raw, list(cfg.dataset.classes))
    samples = {sample.image: sample for sample in result.kept}
    hashes = {name: sha256_file(raw / name) for name in samples}
    splits = split_by_hash(hashes, cfg.clean_split.ratios, cfg.clean_split.seed)

    out = fresh_dir(cfg.paths.clean_split)
    for split, names in splits.items():
        write_jsonl((annotation_to_dict(samples[n].annotation) for n in names), out / f"{split}.jsonl")
    write_json(issues_as_dicts(result), out / "issues.json")
    summary = report(result, {split: [samples[n] for n in names] for split, names in splits.items()})
    write_json(summary, cfg.paths.clean_split_report)
    log.info("kept %d images, dropped %d: %s", summary["kept"], summary["dropped"], summary["dropped_by_reason"])


if __name__ == "__main__":
    main()
