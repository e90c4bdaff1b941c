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

# Produced by running the pipeline, never part of a copy.
RUN_PRODUCTS = (".venv", "data", "models", "reports", "mlflow.db", "mlruns", "dvc.lock", "__pycache__", ".pytest_cache")


def project_root(cwd: Path) -> Path:
    """The real project: a queued ``dvc exp run`` runs in a temporary copy and says where the
    project is in ``DVC_ROOT``; what must outlive the run (checkpoints, the MLflow store and
    its artifacts) goes there."""
    return Path(os.environ.get("DVC_ROOT") or cwd).resolve()


def stage_names(root: Path) -> list[str]:
    """Stages in the order dvc.yaml lists them, which is the DAG order."""
    return list(yaml.safe_load((root / "dvc.yaml").read_text())["stages"])


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


def experiments(root: Path) -> dict[str, dict]:
    """``dvc exp show --json`` as {name: {"rev", "params", "metrics"}}: the params of params.yaml
    and the metrics of every metrics file, by file, of each named experiment, whatever commit
    it was run from (plain ``exp show`` lists only the experiments of the current one)."""
    shown = json.loads(run_dvc(root, "exp", "show", "--all-commits", "--json").stdout)
    found = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            for revision in exp["revs"]:
                data = revision.get("data") or {}
                if revision.get("name") and data:
                    found[revision["name"]] = {
                        "rev": revision["rev"],
                        "params": data["params"]["params.yaml"]["data"],
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


CODE_DEP = re.compile(r"\s*- (stages|odpipe)/\w+\.py$")


def sync_code_deps(root: Path) -> None:
    """Rewrite the code part of each stage's ``deps`` in dvc.yaml from what the stage's
    script imports (``make deps``); other deps (data, config folders) and comments stay."""
    text = (root / "dvc.yaml").read_text()
    for name in stage_names(root):
        deps_at = text.index("    deps:\n", text.index(f"\n  {name}:\n"))
        end = text.index("    params:\n", deps_at)
        kept = [line for line in text[deps_at:end].splitlines()[1:] if not CODE_DEP.match(line)]
        script = f"stages/{name}.py"
        code = [script, *sorted(code_deps(root, script) - {script})]
        block = "    deps:\n" + "".join(f"      - {c}\n" for c in code) + "".join(f"{line}\n" for line in kept)
        text = text[:deps_at] + block + text[end:]
    (root / "dvc.yaml").write_text(text)


if __name__ == "__main__":  # python -m odpipe.project: refresh dvc.yaml's code deps
    sync_code_deps(Path.cwd())
