"""The exported classifier as an MLflow model, what the Model Registry holds for the classify
task: ``mlflow.pyfunc.load_model("models:/odpipe-classifier/<version>")`` and ``mlflow models serve``.

Input as every odpipe model's (:mod:`odpipe.engine.pyfunc`): one row per image, the encoded file in
``image``. Output: one row per image, its top class (id, name, probability) and its top-k classes
(k at most 5) as a JSON list of ``{"class": name, "probability": p}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

from odpipe.classify.export import Classifier, load_classifier
from odpipe.classify.metrics import TOP_K
from odpipe.engine.pyfunc import IMAGE, PATH, ExportFolderModel

OUTPUT = {
    IMAGE: "long",
    PATH: "string",
    "class_id": "long",
    "class_name": "string",
    "probability": "double",
    "top_k": "string",
}


def top_k(probabilities: np.ndarray, names: Sequence[str], k: int = TOP_K) -> list[tuple[str, float]]:
    """The ``k`` most probable classes of one image, most probable first (ties: lower id first)."""
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [(names[i], float(probabilities[i])) for i in order]


class ClassifierModel(ExportFolderModel):
    """The exported classifier: each image's top class and its top-k classes."""

    OUTPUT = OUTPUT

    def load(self, export_dir: Path) -> Classifier:
        return load_classifier(export_dir)

    def answer(self, images: list[bytes]) -> Iterator[dict]:
        names = self.export.names
        for probabilities in self.export.predict(images):
            best = top_k(probabilities, names)
            yield {
                "class_id": names.index(best[0][0]),
                "class_name": best[0][0],
                "probability": best[0][1],
                "top_k": json.dumps([{"class": n, "probability": round(p, 6)} for n, p in best]),
            }


def log_model(client: MlflowClient, run_id: str, export_dir: Path) -> str:
    """Log the export to the run as a loadable MLflow model; returns its model id."""
    return ClassifierModel().log(client, run_id, export_dir)
