"""Export a trained checkpoint to a self-contained folder: a SavedModel (``exporter_lib_v2``)
and, as ``export.formats`` asks, a TFLite model (``odpipe.detect.tflite``)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

from object_detection import exporter_lib_v2

from odpipe.core.files import iter_csv
from odpipe.detect import tfcompat  # noqa: F401  (tf-slim bridge for the OD API)
from odpipe.detect.detectors import FORMAT_PATHS
from odpipe.detect.pipeline_config import load_pipeline, write_pipeline
from odpipe.detect.records import group_csv_rows

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


def check_formats(formats: Sequence[str]) -> None:
    """Known formats, the SavedModel among them: evaluate, track and serving run it."""
    unknown = [f for f in formats if f not in FORMAT_PATHS]
    if unknown:
        raise ValueError(f"export.formats: unknown {', '.join(unknown)}; the formats are {', '.join(FORMAT_PATHS)}")
    if "saved_model" not in formats:
        raise ValueError("export.formats must keep saved_model: evaluate, track and serving run it")


def spread(items: Sequence[str], count: int) -> list[str]:
    """At most ``count`` items evenly spaced over ``items``, so that a sample of a split sorted by
    name or by source covers all of it rather than its first folder."""
    if count <= 0 or not items:
        return []
    step = max(1, len(items) // count)
    return list(items[::step][:count])


def calibration_images(train_csv: Path, image_root: Path, count: int) -> Iterator[bytes]:
    """int8 calibration: ``count`` train images spread over the split, read as they are needed."""
    names = [record.filename for record in group_csv_rows(iter_csv(train_csv))]
    return ((image_root / name).read_bytes() for name in spread(names, count))
