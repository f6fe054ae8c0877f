"""The package's floors, read from the source: imports go down, never up, and never in a circle.

Every import counts, module-level or inside a function: a function-level import is a
dependency all the same, it only hides it from the import-time check.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ROOT / "hoi_perception"


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports anywhere in its body."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def runtime_files() -> list[Path]:
    return sorted(p for p in RUNTIME.rglob("*.py") if "__pycache__" not in p.parts)


def unit_of(module: str) -> str | None:
    """The runtime's unit a module belongs to: its sub-package, or its top-level module."""
    parts = module.split(".")
    if parts[0] != "hoi_perception" or len(parts) < 2:
        return None
    return parts[1]


def unit_of_file(path: Path) -> str:
    relative = path.relative_to(RUNTIME).with_suffix("")
    return relative.parts[0]


def test_the_runtime_never_imports_the_training_side():
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in imported_modules(p) if m.split(".")[0] == "hoi_training")
                 for p in runtime_files()}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_ros_free_pipeline_never_imports_the_ros_adapter():
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in imported_modules(p) if m.startswith("hoi_perception.ros."))
                 for p in (RUNTIME / "pipeline").rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


def unit_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in runtime_files():
        source = unit_of_file(path)
        for module in imported_modules(path):
            target = unit_of(module)
            if target is not None and target != source and (RUNTIME / target).exists() or \
                    target is not None and (RUNTIME / f"{target}.py").exists() and target != source:
                graph[source].add(target)
    return graph


def test_no_import_cycle_between_the_runtime_units():
    graph = unit_graph()
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for unit in sorted(graph):
        if unit not in state:
            visit(unit, [unit])
    assert cycles == []


@pytest.mark.parametrize("unit", ["config", "geometry", "hand_model"])
def test_the_lowest_floors_import_no_higher_one(unit):
    higher = {"cli", "pipeline", "ros", "engines", "models", "tracking", "render", "objects", "synth"}
    assert unit_graph().get(unit, set()) & higher == set()
