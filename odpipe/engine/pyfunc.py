"""What every task's MLflow model shares: the request's input (a DataFrame, one row per image,
the encoded file in ``image`` as base64 text or bytes, an optional ``path`` echoed back), checked
before any model runs, with a client's mistake answered as a 400 naming the rows; an input
example; the stated requirements; and logging a model to its run (registering it is the gate's
call: :func:`odpipe.engine.mlflow_runs.register_version`)."""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Iterable, Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, ParamSchema, Schema
from PIL import Image, UnidentifiedImageError

from odpipe.core.images import DECODE_ERRORS, readable_bytes
from odpipe.engine.export_folder import CLASSES_FILE, SAVED_MODEL_DIR
from odpipe.engine.mlflow_runs import active_run

IMAGE, PATH = "image", "path"  # input columns
MODEL_NAME = "model"  # the logged model's name on its run's page
MAX_PROBLEMS = 10  # bad rows named in one error; the count says how many more
# What a model imports directly, at the versions it was logged with: for the record (and the
# MLflow UI); odpipe itself is not on PyPI, so models are served from the project's environment.
REQUIREMENTS = ("mlflow", "tensorflow", "pandas", "pillow", "numpy", "protobuf")


def invalid(message: str) -> MlflowException:
    """The client's mistake: the scoring server answers INVALID_PARAMETER_VALUE with a 400."""
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def encoded_image(value: object) -> bytes:
    """One cell of ``image`` as the file's bytes: bytes as they are, text as base64 (line breaks
    allowed, as MIME writes it). Raises ValueError saying what the cell is instead."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if not isinstance(value, str):
        raise ValueError(f"expected base64 text or bytes, got {type(value).__name__}")
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except binascii.Error as err:
        raise ValueError(f"not base64 text ({err})") from None


def image_bytes(value: object) -> bytes:
    """The cell as the bytes the model reads: decoded as ``odpipe predict`` reads a file
    (``readable_bytes``), so both see the same pixels. Raises ValueError for anything that is
    not an image Pillow can read, before the model is called."""
    raw = encoded_image(value)
    try:
        return readable_bytes(raw)
    except UnidentifiedImageError:  # its message shows only a BytesIO's address
        raise ValueError("not an image Pillow can read (no image format it recognises)") from None
    except DECODE_ERRORS as err:
        raise ValueError(f"not an image Pillow can read ({err or type(err).__name__})") from None


def parse_images(frame: object) -> list[bytes]:
    """Every row's image, checked before any is run: a request fails whole, naming each bad row
    (up to ``MAX_PROBLEMS``), rather than returning detections for some rows and not others."""
    if not isinstance(frame, pd.DataFrame):
        raise invalid(f"expected a DataFrame with an '{IMAGE}' column, got {type(frame).__name__}")
    if IMAGE not in frame.columns:
        raise invalid(f"no '{IMAGE}' column (got {list(map(str, frame.columns))}): send each image as base64 text")
    if frame.empty:
        raise invalid(f"no rows: send one row per image, the encoded file as base64 text in '{IMAGE}'")
    images: list[bytes] = []
    problems: list[str] = []
    for row, value in enumerate(frame[IMAGE]):
        try:
            images.append(image_bytes(value))
        except ValueError as err:
            problems.append(f"row {row}: {err}")
    if problems:
        more = len(problems) - MAX_PROBLEMS
        raise invalid("; ".join(problems[:MAX_PROBLEMS]) + (f"; and {more} more bad rows" if more > 0 else ""))
    return images


def input_paths(frame: pd.DataFrame) -> list[str | None] | None:
    """The ``path`` column as given (None for a missing cell), or None without one."""
    if PATH not in frame.columns:
        return None
    return [value if isinstance(value, str) else None if pd.isna(value) else str(value) for value in frame[PATH]]


def input_example() -> pd.DataFrame:
    """A tiny grey PNG: shows the expected input in the MLflow UI, and MLflow runs the model on
    it when logging (a model that cannot answer it is reported then, not when served)."""
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (128, 128, 128)).save(out, format="PNG")
    return pd.DataFrame({IMAGE: [base64.b64encode(out.getvalue()).decode()], PATH: ["example.png"]})


def requirements() -> list[str]:
    """``REQUIREMENTS`` pinned to the versions installed here."""
    return [f"{name}=={version(name)}" for name in REQUIREMENTS]


class ExportFolderModel(PythonModel):
    """An export folder (``saved_model/`` with ``classes.json`` beside it, as the Keras tasks
    write) behind MLflow's pyfunc interface, one output row per input image. A subclass says how to
    ``load`` the folder, its ``OUTPUT`` columns and each image's ``answer``; it must live in an
    importable module (cloudpickle stores a reference to the class, not a copy)."""

    OUTPUT: Mapping[str, str] = {}
    FOLDER_ARTIFACTS = (SAVED_MODEL_DIR, CLASSES_FILE)  # logged under their own names, so that they stay a folder

    def load(self, export_dir: Path) -> Any:
        raise NotImplementedError

    def answer(self, images: list[bytes]) -> Iterable[dict]:
        raise NotImplementedError

    def load_context(self, context: PythonModelContext) -> None:
        self.export = self.load(Path(context.artifacts[self.FOLDER_ARTIFACTS[0]]).parent)

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        images = parse_images(model_input)
        paths = input_paths(model_input)
        rows = [
            {IMAGE: index, PATH: paths[index] if paths else None, **answer}
            for index, answer in enumerate(self.answer(images))
        ]
        frame = pd.DataFrame(rows, columns=list(self.OUTPUT))
        return frame if paths else frame.drop(columns=[PATH])

    def log(self, client: MlflowClient, run_id: str, export_dir: Path) -> str:
        """Log ``export_dir`` to the run as this model; returns the logged model's id."""
        artifacts = {artifact: export_dir / artifact for artifact in self.FOLDER_ARTIFACTS}
        return log_pyfunc(client, run_id, self, artifacts, signature(self.OUTPUT))


def signature(outputs: Mapping[str, str], params: ParamSchema | None = None) -> ModelSignature:
    """Every odpipe model's input columns, the task's ``outputs`` (column: MLflow type; ``path``
    optional, echoed back when sent) and its request ``params``, if any."""
    inputs = Schema([ColSpec("string", IMAGE), ColSpec("string", PATH, required=False)])
    return ModelSignature(
        inputs, Schema([ColSpec(kind, name, required=name != PATH) for name, kind in outputs.items()]), params
    )


def log_pyfunc(
    client: MlflowClient,
    run_id: str,
    python_model: PythonModel,
    artifacts: Mapping[str, Path],
    model_signature: ModelSignature,
) -> str:
    """Log an export to run ``run_id`` as a pyfunc model (a LoggedModel on the run's page, and
    ``runs:/<run id>/model``); returns its model id. Every evaluated run does this, as MLflow's
    autologging does, so that any run's model can be loaded, served or registered later. The
    requirements are stated, not inferred: inferring them loads the model in a subprocess."""
    with active_run(client, run_id):
        logged = mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            python_model=python_model,
            artifacts={key: str(path) for key, path in artifacts.items()},
            signature=model_signature,
            input_example=input_example(),
            pip_requirements=requirements(),
        )
    return logged.model_id
