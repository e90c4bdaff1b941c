"""ingest: bring the dataset into data/raw (a LabelImg-style folder) and write its manifest."""

from pathlib import Path

from omegaconf import DictConfig

from odpipe.files import fresh_dir, write_json
from odpipe.manifest import build_manifest
from odpipe.runtime import stage
from odpipe.synthetic import SyntheticSpec, generate


@stage("ingest")
def main(cfg: DictConfig) -> None:
    if cfg.dataset.source != "synthetic":
        raise ValueError(f"dataset.source {cfg.dataset.source!r} is not supported; use 'synthetic'")
    raw = fresh_dir(cfg.paths.raw)
    generate(SyntheticSpec.from_config(cfg.dataset), raw)
    write_json(build_manifest(raw, cfg.dataset.source), Path(cfg.paths.manifest))


if __name__ == "__main__":
    main()
