"""The project as a whole: its stages in DAG order, and clean copies of it for tests and
benchmarks (which must neither disturb nor reuse the user's workspace and caches)."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from odpipe.runtime import TASK_FOLDERS

# Produced by running the pipeline, never part of a copy.
RUN_PRODUCTS = (
    ".venv", "data", "models", "reports", "mlflow.db", "mlruns", "dvc.lock", "__pycache__", ".pytest_cache",
    ".cache",  # training work folders: a copy with the same inputs would resume from the source's checkpoints
)  # fmt: skip


def project_root(cwd: Path) -> Path:
    """The real project: what must outlive a run (checkpoints, the MLflow store and its
    artifacts) goes there. DVC says where it is in ``DVC_ROOT`` (a queued ``dvc exp run`` runs
    in a temporary copy: the variable names the real one); by hand, it is the folder holding
    ``.dvc/`` at or above ``cwd`` (a task's pipeline folder, segment/, is below it)."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    cwd = cwd.resolve()
    return next((folder for folder in (cwd, *cwd.parents) if (folder / ".dvc").is_dir()), cwd)


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
    """A copy of the source tree (git history included, DVC cache and run products not)."""

    def ignore(folder: str, names: list[str]) -> set[str]:
        skipped = {n for n in names if n in RUN_PRODUCTS}
        if Path(folder).name == ".dvc":
            skipped |= {"cache", "tmp"} & set(names)
        return skipped

    shutil.copytree(src, dst, ignore=ignore, symlinks=True)
    return dst


def run_dvc(root: Path, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    """``dvc <args>`` in ``root``; raises with DVC's own output when it fails.

    The running interpreter's folder goes first on PATH: the stages' ``python`` and ``dvc``
    itself must be the ones of this environment, activated or not.
    """
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(["dvc", *args], cwd=root, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode:
        raise RuntimeError(f"dvc {' '.join(args)} failed in {root}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def experiments(root: Path, params_file: str = "params.yaml") -> dict[str, dict]:
    """``dvc exp show --json`` as {name: {"rev", "params", "metrics"}}: the params of
    ``params_file`` (a task's, e.g. ``segment/params.yaml``) and the metrics of every metrics
    file, by file, of each named experiment, whatever commit it was run from (plain ``exp show``
    lists only the experiments of the current one)."""
    shown = json.loads(run_dvc(root, "exp", "show", "--all-commits", "--json").stdout)
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


def _odpipe_imports(path: Path) -> set[str]:
    """Modules of the odpipe package that a source file imports directly."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "odpipe":
            if node.module == "odpipe":
                found |= {f"odpipe.{alias.name}" for alias in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("odpipe.")}
    return found


def code_deps(root: Path, script: str) -> set[str]:
    """The script and every odpipe module it imports, transitively, as repo-relative paths:
    what a stage's ``deps`` must list so that a code change reruns it."""
    deps, todo = {script}, [script]
    while todo:
        for module in _odpipe_imports(root / todo.pop()):
            path = module.replace(".", "/") + ".py"
            if path not in deps and (root / path).exists():
                deps.add(path)
                todo.append(path)
    return deps


CODE_DEP = re.compile(r"\s*- (\.\./)*(stages|odpipe)/[\w/]+\.py$")


def pipeline_folders(root: Path) -> list[Path]:
    """Every task's pipeline folder (where its dvc.yaml is), detection's first."""
    return [(root / folder).resolve() for folder in TASK_FOLDERS.values()]


def stage_code_deps(root: Path, folder: Path) -> dict[str, list[str]]:
    """For each stage of ``folder``'s dvc.yaml, the code it runs as dvc.yaml must list it
    (relative to ``folder``): its script first, then every odpipe module it imports."""
    stages = yaml.safe_load((folder / "dvc.yaml").read_text())["stages"]
    listed = {}
    for name, stage in stages.items():
        script = Path(os.path.relpath(folder / stage_script(stage["cmd"]), root)).as_posix()
        code = [script, *sorted(code_deps(root, script) - {script})]
        listed[name] = [Path(os.path.relpath(root / c, folder)).as_posix() for c in code]
    return listed


def sync_code_deps(root: Path) -> None:
    """Rewrite the code part of each stage's ``deps`` in every task's dvc.yaml from what the
    stage's script imports (``make deps``); other deps (data, config folders) and comments stay."""
    for folder in pipeline_folders(root):
        text = (folder / "dvc.yaml").read_text()
        for name, code in stage_code_deps(root, folder).items():
            deps_at = text.index("    deps:\n", text.index(f"\n  {name}:\n"))
            end = text.index("    params:\n", deps_at)
            kept = [line for line in text[deps_at:end].splitlines()[1:] if not CODE_DEP.match(line)]
            block = "    deps:\n" + "".join(f"      - {c}\n" for c in code) + "".join(f"{line}\n" for line in kept)
            text = text[:deps_at] + block + text[end:]
        (folder / "dvc.yaml").write_text(text)


if __name__ == "__main__":  # python -m odpipe.project: refresh the dvc.yaml files' code deps
    sync_code_deps(Path.cwd())
