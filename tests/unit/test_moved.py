"""Old module paths that registered models name still import, as the modules that replaced them."""

from __future__ import annotations

import importlib
import subprocess
import sys

import cloudpickle
import pytest

from odpipe.moved import MOVED
from tests.helpers.models import OLD_MODULES, PICKLES

NEW_CLASSES = {
    "detector": "odpipe.detect.serve.DetectorModel",
    "segmenter": "odpipe.segment.serve.SegmenterModel",
    "classifier": "odpipe.classify.serve.ClassifierModel",
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_path_is_the_new_module_itself(old: str) -> None:
    assert importlib.import_module(old) is importlib.import_module(MOVED[old])


@pytest.mark.parametrize("kind", sorted(NEW_CLASSES))
def test_a_pickle_made_before_the_move_loads_as_the_new_class(kind: str) -> None:
    data = (PICKLES / f"{kind}.pkl").read_bytes()
    assert OLD_MODULES[kind] in data
    model = cloudpickle.loads(data)
    assert f"{type(model).__module__}.{type(model).__name__}" == NEW_CLASSES[kind]


def test_importing_odpipe_alone_loads_no_moved_module_and_no_tensorflow() -> None:
    """The finder imports on demand: ``import odpipe`` (every stage's first import) stays light."""
    code = "import sys, odpipe; print(sorted(m for m in sys.modules if m.startswith(('tensorflow', 'odpipe.'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['odpipe.moved']"
