"""The package's layers, read from the imports themselves (``ast``, nothing imported): core at the
bottom, then data, then engine, the tasks side by side above them, video over detect; no task
imports another and no two modules import each other, even through others or late in a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "odpipe"
BELOW = {  # what each layer may import besides itself
    "core": set(),
    "data": {"core"},
    "engine": {"core", "data"},
    "detect": {"core", "data", "engine"},
    "segment": {"core", "data", "engine"},
    "classify": {"core", "data", "engine"},
    "video": {"core", "data", "engine", "detect"},
}
TOP = {"odpipe", "odpipe.cli", "odpipe.predict", "odpipe.moved"}  # above every layer (devtools too)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, known: set[str]) -> set[str]:
    """The odpipe modules a file imports, anywhere in it (late imports inside functions too):
    ``from odpipe.x import y`` counts as ``odpipe.x.y`` when that is a module, else ``odpipe.x``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "odpipe"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "odpipe":
            names = {f"{node.module}.{alias.name}" for alias in node.names}
            found |= (names & known) or {node.module}
    return found


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and module not in TOP else None


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = set(modules())
    return {name: imported(path, known) - {name} for name, path in modules().items()}


def test_every_module_sits_in_a_known_layer(graph):
    strays = [m for m in graph if m not in TOP and layer(m) not in {*BELOW, "devtools"}]
    assert not strays, f"modules outside core/data/engine/detect/segment/classify/video/devtools: {strays}"


def test_no_layer_imports_upward_and_no_task_imports_another(graph):
    wrong = [
        f"{module} imports {target}"
        for module, targets in graph.items()
        if layer(module) in BELOW
        for target in targets
        if layer(target) != layer(module) and layer(target) not in BELOW[layer(module)]
    ]
    assert not wrong, "\n".join(wrong)


def test_nothing_in_odpipe_imports_the_dev_tools(graph):
    users = [f"{m} imports {t}" for m, targets in graph.items() for t in targets if layer(m) != "devtools"]
    assert not [u for u in users if ".devtools" in u.split(" imports ")[1]]


def test_there_are_no_import_cycles(graph):
    """Depth-first search for a back edge; the cycle is named module by module."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module], _ = 1, path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target in graph and not state.get(target) and (cycle := visit(target)):
                return cycle
        state[module], _ = 2, path.pop()
        return None

    for module in sorted(graph):
        if not state.get(module) and (cycle := visit(module)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_the_checks_see_a_violation(tmp_path):
    """The reader of imports finds an upward, a late and a cross-task import (a layering test
    that read nothing would pass on any tree)."""
    source = tmp_path / "clean.py"
    source.write_text(
        "from odpipe.detect import records\nfrom odpipe.core.files import write_json\n"
        "def f():\n    from odpipe.classify.clean import ClassRow\n"
    )
    known = {"odpipe.detect.records", "odpipe.core.files", "odpipe.classify.clean"}
    assert imported(source, known) == known
    assert layer("odpipe.segment.clean") == "segment" and "classify" not in BELOW["segment"]
