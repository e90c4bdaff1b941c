"""The exported segmenter as an MLflow model, what the Model Registry holds for the segment task:
``mlflow.pyfunc.load_model("models:/odpipe-segmenter/<version>")`` and ``mlflow models serve``.

Input as every odpipe model's (:mod:`odpipe.pyfunc_io`): one row per image, the encoded file in
``image``. Output: one row per image, its class map at the image's size as a PNG of class ids
(255 never occurs: every pixel gets a class) in base64, and its size.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.tracking import MlflowClient

from odpipe.index_masks import encode_png
from odpipe.pyfunc_io import (
    IMAGE,
    PATH,
    input_paths,
    log_and_register,
    parse_images,
    signature,
)
from odpipe.seg_export import CLASSES_FILE, SAVED_MODEL_DIR, load_segmenter

MASK = "mask_png"
OUTPUT = {IMAGE: "long", PATH: "string", "width": "long", "height": "long", MASK: "string"}


class SegmenterModel(PythonModel):
    """The exported segmenter behind MLflow's pyfunc interface (defined in an importable module:
    cloudpickle stores a reference to the class, not a copy)."""

    def load_context(self, context: PythonModelContext) -> None:
        # load_segmenter takes the export folder: the artifacts keep the export's file names.
        self.segmenter = load_segmenter(Path(context.artifacts[SAVED_MODEL_DIR]).parent)

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Each row's class map, as a base64 PNG of class ids."""
        images = parse_images(model_input)
        paths = input_paths(model_input)
        rows = []
        for index, data in enumerate(images):
            class_map, _ = self.segmenter.predict(data)
            height, width = class_map.shape
            png = base64.b64encode(encode_png(class_map)).decode()
            rows.append(
                {IMAGE: index, PATH: paths[index] if paths else None, "width": width, "height": height, MASK: png}
            )
        frame = pd.DataFrame(rows, columns=list(OUTPUT))
        return frame if paths else frame.drop(columns=[PATH])


def register_segmenter(
    client: MlflowClient, run_id: str, export_dir: Path, name: str, metrics: dict[str, float], split_sha256: str
) -> str:
    """Log the export to the run and register it as a new version of ``name``; returns the version."""
    artifacts = {SAVED_MODEL_DIR: export_dir / SAVED_MODEL_DIR, CLASSES_FILE: export_dir / CLASSES_FILE}
    return log_and_register(client, run_id, SegmenterModel(), artifacts, signature(OUTPUT), name, metrics, split_sha256)
