"""base_model: fetch the model to start from (a zoo tarball, a local copy, or a bare config)."""

import logging
from pathlib import Path

from omegaconf import DictConfig

from odpipe.core.files import fresh_dir, write_json
from odpipe.core.runtime import stage
from odpipe.detect.base_model import fetch_base_model

log = logging.getLogger(__name__)


@stage("base_model")
def main(cfg: DictConfig) -> None:
    out = fresh_dir(cfg.paths.base_model)
    record = fetch_base_model(cfg.model.source, out, Path(cfg.paths.downloads), cfg.model.sha256)
    write_json(record, out / "source.json")
    log.info("%s: %d files from %s (sha256 %s)", out, record["num_files"], cfg.model.source, record["source"]["sha256"])


if __name__ == "__main__":
    main()
