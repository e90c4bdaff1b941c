"""The exported segmenter as an MLflow model, what the Model Registry holds for the segment task:
``mlflow.pyfunc.load_model("models:/odpipe-segmenter/<version>")`` and ``mlflow models serve``.

Input as every odpipe model's (:mod:`odpipe.engine.pyfunc`): one row per image, the encoded file in
``image``. Output: one row per image, its class map at the image's size as a PNG of class ids
(255 never occurs: every pixel gets a class) in base64, and its size.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

from mlflow.tracking import MlflowClient

from odpipe.data.index_masks import encode_png
from odpipe.engine.pyfunc import IMAGE, PATH, ExportFolderModel
from odpipe.segment.export import Segmenter, load_segmenter

MASK = "mask_png"
OUTPUT = {IMAGE: "long", PATH: "string", "width": "long", "height": "long", MASK: "string"}


class SegmenterModel(ExportFolderModel):
    """The exported segmenter: each image's class map, as a base64 PNG of class ids, and its size."""

    OUTPUT = OUTPUT

    def load(self, export_dir: Path) -> Segmenter:
        return load_segmenter(export_dir)

    def answer(self, images: list[bytes]) -> Iterator[dict]:
        for data in images:
            class_map, _ = self.export.predict(data)
            height, width = class_map.shape
            yield {"width": width, "height": height, MASK: base64.b64encode(encode_png(class_map)).decode()}


def log_model(client: MlflowClient, run_id: str, export_dir: Path) -> str:
    """Log the export to the run as a loadable MLflow model; returns its model id."""
    return SegmenterModel().log(client, run_id, export_dir)
