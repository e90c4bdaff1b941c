"""Models as they were registered before odpipe's modules moved into packages (0.1): the same
logged files, but a ``python_model.pkl`` pickled by the code of 0.1, which names its class by the
old module path (``odpipe.serving.DetectorModel``, ...). The pickles in tests/data/models_before_0.2
were made with cloudpickle from the flat modules, one per task; nothing else in a logged model
names an odpipe module."""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from tests.conftest import ROOT

PICKLES = ROOT / "tests" / "data" / "models_before_0.2"
OLD_MODULES = {"detector": b"odpipe.serving", "segmenter": b"odpipe.seg_serving", "classifier": b"odpipe.cls_serving"}


def logged_before_the_move(tracking_uri: str, name: str, version: str, kind: str, dst: Path) -> Path:
    """The files of version ``version`` of registered model ``name`` in the store at
    ``tracking_uri``, downloaded to ``dst``, with the pickle a model of ``kind`` (detector,
    segmenter, classifier) had when logged by 0.1: a folder that ``mlflow.pyfunc.load_model`` and
    ``mlflow models serve`` take as it is. (Read through a client of that store: a ``models:/``
    URI would go to the process's global registry.)"""
    old = (PICKLES / f"{kind}.pkl").read_bytes()
    assert OLD_MODULES[kind] in old  # it really names the old path: the test cannot pass on a new pickle
    source = MlflowClient(tracking_uri).get_model_version_download_uri(name, version)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst), tracking_uri=tracking_uri))
    pickled = local / "python_model.pkl"
    assert pickled.is_file(), sorted(p.name for p in local.iterdir())
    pickled.write_bytes(old)
    return local
