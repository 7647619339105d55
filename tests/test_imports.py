"""src/stnet imports one way: no cycle between its modules, and no library module uses the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "stnet"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py"))
CLI = {"cli", "__main__"}  # the command line; the subcommand modules' cmd_* functions are what it calls


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST):
    """Every node that can run, at module level or inside functions; ``if TYPE_CHECKING:`` bodies skipped."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imports_of(source: str) -> set[str]:
    """The stnet modules ``source`` imports (``__init__`` for names taken from the package itself)."""
    found = set()
    for node in _runtime_nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("stnet.")}
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 1:  # relative: from .model import ..., from . import model
                module = "stnet." + module if module else "stnet"
            if module.startswith("stnet."):
                found.add(module.split(".")[1])
            elif module == "stnet":
                found |= {a.name if a.name in MODULES else "__init__" for a in node.names}
    return found


def import_graph() -> dict[str, set[str]]:
    return {m: imports_of((PACKAGE / f"{m}.py").read_text(encoding="utf-8")) - {m} for m in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle ``[a, b, ..., a]`` of ``graph``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_has_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_library_modules_never_import_the_cli():
    users = {m for m, imported in import_graph().items() if imported & CLI and m not in CLI}
    assert not users, f"library modules importing the CLI: {sorted(users)}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from stnet.model import StNet", {"model"}),
        ("import stnet.engine as e", {"engine"}),
        ("from stnet import cli, __version__", {"cli", "__init__"}),
        ("def f():\n    from stnet import demo\n", {"demo"}),  # function-level imports count
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from stnet.config import Config\n", set()),
        ("from .model import StNet\nfrom . import demo\n", {"model", "demo"}),
        ("import numpy\nfrom stnetx import y\n", set()),
    ],
)
def test_imports_are_read_from_the_source(source, expected):
    assert imports_of(source) == expected


def test_a_cycle_is_found():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
