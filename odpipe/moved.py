"""Old module paths that stored artefacts still name, served by the modules that replaced them.

A model logged to MLflow pickles its pyfunc class by reference (``odpipe.serving.DetectorModel``
before odpipe became packages by task), so a registered model loads only while that path
imports. Each line below keeps one such path working without a copy of the module: importing
the old name returns the new module itself (the same classes, not twins). Add a line whenever a
class that models pickle moves; never remove one while models logged with it may be served.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType

MOVED = {
    "odpipe.serving": "odpipe.detect.serve",  # DetectorModel, logged before 0.2
    "odpipe.seg_serving": "odpipe.segment.serve",  # SegmenterModel
    "odpipe.cls_serving": "odpipe.classify.serve",  # ClassifierModel
    "odpipe.pyfunc_io": "odpipe.engine.pyfunc",  # ExportFolderModel, their base class
}


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds each old name of :data:`MOVED` and loads it as its new module, imported on demand
    (so that ``import odpipe`` stays free of TensorFlow)."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> ModuleSpec | None:
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED else None

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the new module ran when it was imported."""


def install() -> None:
    """Put the finder on ``sys.meta_path`` once per process."""
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules())
