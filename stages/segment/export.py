"""export (segment): the selected checkpoint as a SavedModel that takes an encoded image of any
size and returns its class map and per-class probabilities at that size (sliding windows)."""

import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from odpipe.core.files import fresh_dir
from odpipe.core.runtime import stage
from odpipe.engine.keras_loop import check_task_model, restore_weights
from odpipe.segment.export import export_segmenter
from odpipe.segment.models import SEGMENT_MODELS, build_model

log = logging.getLogger(__name__)


@stage("export")
def main(cfg: DictConfig) -> None:
    model_cfg = OmegaConf.to_container(cfg.model)
    check_task_model(model_cfg, "segment", SEGMENT_MODELS)
    classes = json.loads(Path(cfg.paths.classes).read_text())
    model = build_model(model_cfg["architecture"], len(classes["names"]), model_cfg)
    checkpoint = restore_weights(model, Path(cfg.paths.train))
    out = fresh_dir(cfg.paths.export)
    export_segmenter(
        model,
        out,
        tile_size=cfg.segment.tile_size,
        overlap=cfg.segment.tile_overlap,
        class_names=classes["names"],
        colors=classes["colors"],
    )
    log.info("exported %s to %s", checkpoint, out)


if __name__ == "__main__":
    main()
