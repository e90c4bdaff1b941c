"""`make deps` follows packages: a stage's code dependencies are every file Python runs for its
imports, nested modules and packages' ``__init__.py`` included, and never the dev tools."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from odpipe.devtools.deps import code_deps, module_files, sync_code_deps
from tests.conftest import ROOT


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_nested_modules_packages_and_submodules_imported_by_name_are_followed(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "stages/s.py": "from odpipe.task import records\nfrom odpipe.task.train import fit\n",
            "odpipe/__init__.py": "",
            "odpipe/task/__init__.py": "",
            "odpipe/task/records.py": "import odpipe.data.deep.codec\n",
            "odpipe/task/train.py": "from odpipe.core.files import write_json\nfrom odpipe.data import deep\n",
            "odpipe/core/__init__.py": "",
            "odpipe/core/files.py": "",
            "odpipe/data/__init__.py": "",
            "odpipe/data/deep/__init__.py": "",
            "odpipe/data/deep/codec.py": "",
            "odpipe/unused.py": "",
        },
    )
    assert code_deps(tmp_path, "stages/s.py") == {
        "stages/s.py",
        "odpipe/__init__.py",
        "odpipe/task/__init__.py",
        "odpipe/task/records.py",
        "odpipe/task/train.py",
        "odpipe/core/__init__.py",
        "odpipe/core/files.py",
        "odpipe/data/__init__.py",
        "odpipe/data/deep/__init__.py",
        "odpipe/data/deep/codec.py",
    }
    assert module_files(tmp_path, "odpipe.task.train.fit") == []  # a function, not a module


def test_the_real_train_stage_lists_nested_modules_and_no_dev_tool() -> None:
    deps = code_deps(ROOT, "stages/train.py")
    nested = {"odpipe/__init__.py", "odpipe/detect/__init__.py", "odpipe/detect/train.py", "odpipe/detect/tfcompat.py"}
    assert nested <= deps
    assert not [d for d in deps if d.startswith("odpipe/devtools/")]


def test_sync_writes_nested_paths_into_each_dvc_yaml(tmp_path: Path) -> None:
    """On a copy of the project whose dvc.yaml lost its code deps, ``make deps`` puts them back,
    nested paths included, relative to each pipeline's folder."""
    for name in ("odpipe", "stages", "conf", "segment", "classify", "dvc.yaml", "params.yaml"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copyfile
        copy(ROOT / name, tmp_path / name)
    dvc_yaml = tmp_path / "segment" / "dvc.yaml"
    stripped = "".join(line for line in dvc_yaml.read_text().splitlines(True) if "odpipe/" not in line)
    dvc_yaml.write_text(stripped)
    sync_code_deps(tmp_path)
    train = yaml.safe_load(dvc_yaml.read_text())["stages"]["train"]["deps"]
    assert "../odpipe/segment/train.py" in train and "../odpipe/engine/keras_loop.py" in train
    assert dvc_yaml.read_text() == (ROOT / "segment" / "dvc.yaml").read_text()
