"""Clean copies of the project, and its stages run in them one by one, measured.

A benchmark must neither disturb nor reuse the user's workspace and caches, so it works in a copy
(``odpipe.devtools.project.copy_project``) under a run folder of its own. Each stage runs as its
own process, from its task's folder as ``dvc repro`` runs it (the command of the task's
dvc.yaml), without DVC's hashing and caching around it: what is measured is the stage's.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .children import child_result
from .memory import measure
from .report import failed, progress

ROOT = Path(__file__).resolve().parents[2]
WATCHED = {"ingest": "raw", "tfrecord": "tfrecord"}  # stage -> paths.* whose first file ends start-up
DATA_STAGES = ("ingest", "clean_split", "tfrecord")  # the Keras tasks'; detection adds convert


@contextmanager
def run_folder(name: str, keep: bool = False) -> Iterator[tuple[Path, Path]]:
    """A new run folder (printed) and its logs/ folder, for the ``with`` block; on leaving it, even
    by an error, the project copies and references made in ``n<size>/`` are removed (gigabytes at
    the larger sizes) unless ``keep``: the logs and the results stay. The train stages' MLflow
    runs go to each copy's own store, not to one a user set."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    tmp = Path(tempfile.mkdtemp(prefix=f"odpipe-bench-{name}-"))
    (tmp / "logs").mkdir()
    print(f"run folder {tmp}", flush=True)
    try:
        yield tmp, tmp / "logs"
    finally:
        if not keep:
            for copies in tmp.glob("n*"):
                shutil.rmtree(copies, ignore_errors=True)


def project_copy(dst: Path, overrides: list[str], task: str = "detect") -> Path:
    """A copy of this project at ``dst``, ``task``'s params.yaml composed from conf/ and Hydra
    ``overrides``: the task's pipeline folder."""
    from odpipe.core.runtime import PARAMS_FILE, TASK_FOLDERS, compose_params
    from odpipe.devtools.project import copy_project

    work = copy_project(ROOT, dst)
    folder = work / TASK_FOLDERS[task]
    compose_params(work, [f"task={task}", *overrides], folder / PARAMS_FILE)
    return folder


def exported_model(cfg, model: Path | None) -> Path:
    """The export a benchmark of a trained model measures: ``model`` (its ``--model``), or this
    project's ``paths.export`` in the composed config ``cfg``; exits saying what to run if there is
    none."""
    model = model or ROOT / cfg.paths.export
    if not (model / "saved_model").is_dir():
        raise SystemExit(f"{model}: no exported model; run `make repro` first (or pass --model)")
    return model


def make_project(tmp: Path, size: int, overrides: list[str], task: str) -> Path:
    """A copy at ``tmp/n<size>/project`` generating ``size`` built-in images: its task folder."""
    from odpipe.core.runtime import load_params

    folder = project_copy(tmp / f"n{size}" / "project", [f"dataset.num_images={size}", *overrides], task)
    source = "synthetic" if task == "detect" else f"synthetic_{task}"
    if load_params(folder).dataset.source != source:
        raise SystemExit(f"this benchmark generates the built-in dataset: dataset.source must be {source}")
    return folder


def stage_command(folder: Path, name: str) -> list[str]:
    """A stage's script as the task's dvc.yaml runs it, with this interpreter."""
    import yaml

    from odpipe.core.runtime import DVC_FILE
    from odpipe.devtools.project import stage_script

    cmd = yaml.safe_load((folder / DVC_FILE).read_text())["stages"][name]["cmd"]
    return [sys.executable, stage_script(cmd)]


def run_stage(folder: Path, name: str, logs: Path, overrides: tuple[str, ...] = ()) -> dict:
    """One stage of the task folder ``folder``, measured as :func:`run_child` measures it, named
    (its log too) after the stage and the overrides' last keys (``clean_split_workers2``)."""
    from odpipe.core.runtime import load_params

    watch = None
    if name in WATCHED:
        watch = folder / load_params(folder).paths[WATCHED[name]]
        shutil.rmtree(watch, ignore_errors=True)  # the stage recreates it; stale files would end start-up
    tag = "_".join([name, *(o.split(".")[-1].replace("=", "") for o in overrides)])
    cmd = [*stage_command(folder, name), *overrides]
    return run_child(tag, cmd, folder, logs / f"{tag}.log", watch) | {"overrides": list(overrides)}


def run_child(what: str, cmd: list[str], cwd: Path, log: Path, watch: Path | None = None) -> dict:
    """A process measured (a stage, or a child of the benchmark's script: the RESULT it printed
    merged in); one that fails is reported, and the benchmark goes on without it."""
    try:
        run = measure(cmd, cwd, log, watch)
    except RuntimeError as error:
        return failed(what, error)
    progress(what, run)
    return child_result(run)


def run_data_stages(folder: Path, logs: Path, names: tuple[str, ...] = DATA_STAGES) -> dict:
    """The data stages in DAG order; one that fails is reported and those after it are not run."""
    runs: dict[str, dict] = {}
    for name in names:
        runs[name] = run_stage(folder, name, logs)
        if "error" in runs[name]:
            break
    return runs


def data_runs(
    tmp: Path, sizes: list[int], logs: Path, overrides: list[str], task: str, names: tuple[str, ...] = DATA_STAGES
) -> tuple[dict[int, Path], dict[str, dict]]:
    """A project copy per size, its data stages run: (the copies' task folders, their runs by
    size), the logs under ``logs/<size>``."""
    folders, runs = {}, {}
    for size in sizes:
        print(f"  data stages, {size} images ({time.strftime('%H:%M:%S')})", flush=True)
        folders[size] = make_project(tmp, size, overrides, task)
        (logs / str(size)).mkdir()
        runs[str(size)] = run_data_stages(folders[size], logs / str(size), names)
    return folders, runs
