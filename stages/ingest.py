"""ingest: bring the dataset into data/raw (a LabelImg-style folder) and write its manifest."""

import logging
from collections import Counter
from pathlib import Path

from omegaconf import DictConfig

from odpipe.core.files import fresh_dir, write_json
from odpipe.core.manifest import build_manifest
from odpipe.core.runtime import stage
from odpipe.data.sources import ingest

log = logging.getLogger(__name__)


@stage("ingest")
def main(cfg: DictConfig) -> None:
    raw = fresh_dir(cfg.paths.raw)
    left_out = ingest(cfg.dataset, raw, Path(cfg.paths.downloads))
    source = {"type": cfg.dataset.source, "path": cfg.dataset.get("path"), "sha256": cfg.dataset.get("sha256")}
    manifest = build_manifest(raw, source) | {"left_out": left_out}  # the source's files not brought in, and why
    write_json(manifest, Path(cfg.paths.manifest))
    log.info("brought in %d files", manifest["num_files"])
    if left_out:
        reasons = Counter(entry["reason"] for entry in left_out)
        log.info("left out %d files, listed in %s: %s", len(left_out), cfg.paths.manifest, dict(reasons))


if __name__ == "__main__":
    main()
