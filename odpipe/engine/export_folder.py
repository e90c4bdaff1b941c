"""The Keras tasks' export folder: ``saved_model/`` with ``classes.json`` beside it (the class
names in id order and what else the task needs to use the model), so that the folder can be
copied anywhere and still be used, and MLflow can log both as one model's artifacts."""

from __future__ import annotations

import json
from pathlib import Path

SAVED_MODEL_DIR = "saved_model"
CLASSES_FILE = "classes.json"


def read_classes(export_dir: Path, kind: str) -> dict:
    """``classes.json`` of an export folder; ``kind`` (a segmenter, a classifier) names what was expected."""
    path = Path(export_dir) / CLASSES_FILE
    if not path.is_file():
        raise ValueError(f"{path}: missing; is {export_dir} {kind} export?")
    return json.loads(path.read_text())
