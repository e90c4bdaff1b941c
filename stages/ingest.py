"""ingest: bring the dataset into data/raw (a LabelImg-style folder) and write its manifest."""

from pathlib import Path

from omegaconf import DictConfig

from odpipe.core.files import fresh_dir, write_json
from odpipe.core.manifest import build_manifest
from odpipe.core.runtime import stage
from odpipe.data.sources import ingest


@stage("ingest")
def main(cfg: DictConfig) -> None:
    raw = fresh_dir(cfg.paths.raw)
    ingest(cfg.dataset, raw, Path(cfg.paths.downloads))
    source = {"type": cfg.dataset.source, "path": cfg.dataset.get("path"), "sha256": cfg.dataset.get("sha256")}
    write_json(build_manifest(raw, source), Path(cfg.paths.manifest))


if __name__ == "__main__":
    main()
