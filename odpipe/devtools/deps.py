"""``make deps``: each stage's code dependencies in every task's dvc.yaml, from what its script
imports (transitively), so that a code change reruns exactly the stages whose outputs it changes."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import yaml

from odpipe.core.runtime import TASK_FOLDERS
from odpipe.devtools.project import stage_script


def _odpipe_imports(path: Path) -> set[str]:
    """Dotted names a source file imports from odpipe: each ``import odpipe.x.y``, each ``from
    odpipe.x import y`` as ``odpipe.x`` and ``odpipe.x.y`` (``y`` may be a submodule or a name
    in ``odpipe.x``: :func:`module_files` keeps what is a file)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "odpipe":
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "odpipe"}
    return found


def module_files(root: Path, module: str) -> list[str]:
    """The files Python runs to import ``module``, as repo-relative paths: every package's
    ``__init__.py`` on the way down, then the module's own file (``x.py``, or ``x/__init__.py``
    for a package). Empty for a name that is not a module (a function imported from one)."""
    parts = module.split(".")
    packages = [Path(*parts[:depth], "__init__.py") for depth in range(1, len(parts))]
    own = [Path(*parts[:-1], f"{parts[-1]}.py"), Path(*parts, "__init__.py")]
    found = next((path for path in own if (root / path).is_file()), None)
    return [path.as_posix() for path in (*packages, found) if path and (root / path).is_file()] if found else []


def code_deps(root: Path, script: str) -> set[str]:
    """The script and every odpipe file it imports, transitively (packages' ``__init__.py``
    included), as repo-relative paths: what a stage's ``deps`` must list so that a code change
    reruns it."""
    deps, todo = {script}, [script]
    while todo:
        for module in _odpipe_imports(root / todo.pop()):
            for path in module_files(root, module):
                if path not in deps:
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


if __name__ == "__main__":  # python -m odpipe.devtools.deps: refresh the dvc.yaml files' code deps
    sync_code_deps(Path.cwd())
