"""The project as tests and benchmarks drive it: its stages in DAG order, clean copies of it
(which must neither disturb nor reuse the user's workspace and caches), ``dvc`` run in a copy,
and the experiments ``dvc exp show`` lists."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import yaml

from odpipe.core.runtime import TASK_FOLDERS

# Produced by running a pipeline, in its folder (the root, segment/, classify/): never part of a copy.
RUN_PRODUCTS = (
    ".venv", "data", "models", "reports", "mlflow.db", "mlruns", "dvc.lock",
    ".cache",  # training work folders: a copy with the same inputs would resume from the source's checkpoints
)  # fmt: skip
CACHES = ("__pycache__", ".pytest_cache")  # left out wherever they are


def stage_names(folder: Path) -> list[str]:
    """Stages in the order ``folder``'s dvc.yaml lists them, which is the DAG order."""
    return list(yaml.safe_load((folder / "dvc.yaml").read_text())["stages"])


def stage_script(cmd: str) -> str:
    """The script a stage runs (``python ../stages/segment/train.py`` -> ``../stages/segment/train.py``)."""
    words = cmd.split()
    if len(words) != 2 or words[0] != "python":
        raise ValueError(f"stage command {cmd!r} is not `python <script>`")
    return words[1]


def copy_project(src: Path, dst: Path) -> Path:
    """A copy of the source tree (git history included, DVC cache and run products not). Run
    products are skipped only in a pipeline's folder: ``odpipe/data/`` or ``tests/data/`` are code."""
    pipelines = {(src / folder).resolve() for folder in TASK_FOLDERS.values()}

    def ignore(folder: str, names: list[str]) -> set[str]:
        here = Path(folder).resolve()
        skipped = {n for n in names if n in CACHES}
        if here in pipelines:
            skipped |= {n for n in names if n in RUN_PRODUCTS}
        if here.name == ".dvc":
            skipped |= {"cache", "tmp"} & set(names)
        return skipped

    shutil.copytree(src, dst, ignore=ignore, symlinks=True)
    return dst


def python_env(**extra: str) -> dict[str, str]:
    """This environment with its interpreter's folder first on PATH and ``extra`` set: what a
    child starts (``dvc``, the stages' ``python``, the MLflow CLI's uvicorn) must come from this
    environment, activated or not."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", **extra}


def run_dvc(
    root: Path, *args: str, timeout: float | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``dvc <args>`` in ``root`` (:func:`python_env`, plus ``env``: what a thread passes, where
    setting ``os.environ`` would reach every other thread's runs); raises with DVC's own output
    when it fails."""
    proc = subprocess.run(
        ["dvc", *args], cwd=root, capture_output=True, text=True, timeout=timeout, env=python_env(**(env or {}))
    )
    if proc.returncode:
        raise RuntimeError(f"dvc {' '.join(args)} failed in {root}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def experiments(root: Path, params_file: str = "params.yaml", all_commits: bool = False) -> dict[str, dict]:
    """``dvc exp show --json`` as {name: {"rev", "params", "metrics"}}: the params of
    ``params_file`` (a task's, e.g. ``segment/params.yaml``) and the metrics of every metrics
    file, by file, of each named experiment of the current commit; with ``all_commits``, of
    every commit (``--all-commits``: a minute on this repo's history, where the current
    commit's take seconds)."""
    command = ["exp", "show", "--json", *(["--all-commits"] if all_commits else [])]
    shown = json.loads(run_dvc(root, *command).stdout)
    found = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            for revision in exp["revs"]:
                data = revision.get("data") or {}
                if revision.get("name") and data:
                    found[revision["name"]] = {
                        "rev": revision["rev"],
                        "params": data["params"][params_file]["data"],
                        "metrics": {path: file.get("data", {}) for path, file in data.get("metrics", {}).items()},
                    }
    return found


def repro_timed(root: Path) -> dict[str, float]:
    """Reproduce stage by stage in DAG order; wall seconds of each."""
    seconds = {}
    for name in stage_names(root):
        start = time.monotonic()
        run_dvc(root, "repro", "--single-item", name)
        seconds[name] = time.monotonic() - start
    return seconds
