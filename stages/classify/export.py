"""export (classify): the selected checkpoint as a SavedModel that takes encoded images and
returns class ids, names and probabilities (decoding and resizing inside)."""

import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from odpipe.classify.export import export_classifier
from odpipe.classify.models import CLASSIFY_MODELS, build_model
from odpipe.core.files import fresh_dir
from odpipe.core.runtime import stage
from odpipe.engine.keras_loop import check_task_model, restore_weights

log = logging.getLogger(__name__)


@stage("export")
def main(cfg: DictConfig) -> None:
    model_cfg, size = OmegaConf.to_container(cfg.model), cfg.classify.image_size
    check_task_model(model_cfg, "classify", CLASSIFY_MODELS)
    names = json.loads(Path(cfg.paths.classes).read_text())["names"]
    model = build_model(model_cfg["architecture"], len(names), size, model_cfg)
    checkpoint = restore_weights(model, Path(cfg.paths.train))
    out = fresh_dir(cfg.paths.export)
    export_classifier(model, out, size, names)
    log.info("exported %s to %s", checkpoint, out)


if __name__ == "__main__":
    main()
