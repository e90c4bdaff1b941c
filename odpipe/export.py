"""Export a trained checkpoint to a self-contained SavedModel folder with ``exporter_lib_v2``."""

from __future__ import annotations

import shutil
from pathlib import Path

from object_detection import exporter_lib_v2

from odpipe import tfcompat  # noqa: F401  (tf-slim bridge for the OD API)
from odpipe.pipeline_config import load_pipeline, write_pipeline

LABEL_MAP_NAME = "label_map.pbtxt"


def export_model(pipeline_config: Path, checkpoint_dir: Path, label_map: Path, out_dir: Path, input_type: str) -> None:
    """``out_dir`` gets saved_model/, checkpoint/, pipeline.config and label_map.pbtxt.

    The exported pipeline.config points at the label map next to it, so the folder can be
    copied anywhere and still be used for inference.
    """
    config = load_pipeline(pipeline_config)
    exporter_lib_v2.export_inference_graph(
        input_type=input_type,
        pipeline_config=config,
        trained_checkpoint_dir=str(checkpoint_dir),
        output_directory=str(out_dir),
    )
    shutil.copyfile(label_map, out_dir / LABEL_MAP_NAME)
    config.train_input_reader.label_map_path = LABEL_MAP_NAME
    for reader in config.eval_input_reader:
        reader.label_map_path = LABEL_MAP_NAME
    write_pipeline(config, out_dir / "pipeline.config")
