"""No import cycles inside edged/, at import time or inside functions.

The graph is built from the source with ast, not by importing: every import
statement counts, at module level, inside a function (a "lazy" import only
hides a cycle until the function runs) and under `if TYPE_CHECKING:` too. A
type-only import still means each module needs the other to be read or
checked; the shared type goes into a leaf module (or a Protocol) instead.

An edge goes to the module named, or to `pkg.name` when `from pkg import name`
names a module. Implicit imports of parent packages are not edges: edged's
`__init__.py` files import nothing of edged.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import edged

ROOT = Path(edged.__file__).parent
EXCLUDED = re.compile(r"(?!)")  # nothing: every module of edged/ is checked


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = ("edged",) + path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _targets(node: ast.Import | ast.ImportFrom, name: str, is_package: bool, modules: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        package = name.split(".") if is_package else name.split(".")[:-1]
        base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]


def import_graph() -> dict[str, set[str]]:
    """Module -> the edged modules it imports anywhere in its source."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        if EXCLUDED.match(name):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        edges = graph.setdefault(name, set())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(node, name, path.name == "__init__.py", set(modules)):
                    if target in modules and target != name and not EXCLUDED.match(target):
                        edges.add(target)
                        # Importing a.b.c runs a/b/__init__.py first: the package is imported too.
                        parent = target.rsplit(".", 1)[0]
                        while parent != "edged" and not name.startswith(parent + ".") and parent != name:
                            edges.add(parent)
                            parent = parent.rsplit(".", 1)[0]
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> b -> ... -> a) per strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan; edged's graph is shallow enough for recursion
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_path_in(graph, c) for c in components]


def _path_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module, for the failure message."""
    start = min(component)
    paths = {start: [start]}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(graph[v] & component):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                todo.append(w)
    raise AssertionError(f"no cycle through {start}")  # pragma: no cover - a component always has one


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_check_sees_imports_in_functions_and_type_checking() -> None:
    graph = import_graph()
    assert "edged.journal.frame" in graph["edged.journal.store"]  # module level, `from . import frame as fr`
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    tree = ast.parse("from typing import TYPE_CHECKING\n"
                     "if TYPE_CHECKING:\n    from .b import B\n"
                     "def f():\n    from . import c\n")
    found = [t for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
             for t in _targets(node, "p.a", False, {"p.a", "p.b", "p.c"})]
    assert found == ["typing", "p.b", "p.c"]
