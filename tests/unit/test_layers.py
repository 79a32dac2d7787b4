"""The layers point one way: the package's import graph, read statically, has no cycle, and
``lib/`` (and the plain libraries) never import ``defs/``.

Every import counts: at module level, inside a function, under ``if TYPE_CHECKING:``. A
cycle hidden by a lazy import is still a cycle: each side needs the other to be read, and
the first refactor that moves the import up breaks the import. Fix one by moving the shared
piece down into a module of its own (as ``ml/gates.py`` holds ``Gate``).

The graph comes from ``ast`` over the files on disk (nothing of the package is imported), so
a deleted module simply stops counting. Imports made from strings (``importlib``) are not seen.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "churn_assets"

# Layers that must not reach orchestration: each also bans dagster in its ruff.toml, and
# importing defs/ or lib/ would bring dagster in through the back door.
PLAIN_LIBRARIES = ("data", "ml", "quality", "serving", "tables")
# The root's modules: the words and rules every layer shares.
VOCABULARY = ("limits", "periods", "policy", "schema", "settings", "urls")


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` at ``path``:``line``."""

    source: str
    target: str
    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} ({self.path}:{self.line})"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _nearest_module(name: str, modules: Collection[str]) -> str | None:
    """The module that importing ``name`` reads: ``a.b.attr`` -> ``a.b``."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imported_modules(
    node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: Collection[str]
) -> list[str | None]:
    """The package modules an import statement reads (None: outside the package)."""
    if isinstance(node, ast.Import):
        return [_nearest_module(alias.name, modules) for alias in node.names]
    if node.level:
        # A package's __init__ is level 1 of itself; any other module is level 1 of its parent.
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        origin = ".".join([*base, *([node.module] if node.module else [])])
    else:
        origin = node.module or ""
    # `from a import b` reads the module a.b when b is one, else the module a (b is in it).
    return [
        f"{origin}.{alias.name}"
        if f"{origin}.{alias.name}" in modules
        else _nearest_module(origin, modules)
        for alias in node.names
    ]


def import_graph(root: Path, package: str) -> dict[str, list[Edge]]:
    """Every module of ``package`` under ``root`` -> its imports of the package's modules."""
    files = {_module_name(path, root): path for path in sorted((root / package).rglob("*.py"))}
    graph: dict[str, list[Edge]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: dict[str, Edge] = {}
        for node in ast.walk(tree):  # every scope: functions, TYPE_CHECKING blocks, ...
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            is_package = path.name == "__init__.py"
            for target in _imported_modules(node, module, is_package, files):
                if target is not None and target != module and target not in edges:
                    where = path.relative_to(root).as_posix()
                    edges[target] = Edge(module, target, where, node.lineno)
        graph[module] = sorted(edges.values(), key=lambda edge: edge.target)
    return graph


def _strongly_connected(graph: dict[str, list[Edge]]) -> Iterator[list[str]]:
    """Tarjan's strongly connected components (iterative), each of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    for start in graph:
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            node, position = work.pop()
            if position == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            targets = [edge.target for edge in graph[node]]
            if position < len(targets):
                work.append((node, position + 1))
                target = targets[position]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            if work:  # returning to the caller: pass the low-link up
                caller = work[-1][0]
                low[caller] = min(low[caller], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    yield sorted(component)


def _a_cycle(graph: dict[str, list[Edge]], component: list[str]) -> list[Edge]:
    """One shortest cycle through the component's first module, as the edges that make it."""
    members = set(component)
    start = component[0]
    came_by: dict[str, Edge] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for edge in graph[node]:
            if edge.target not in members:
                continue
            if edge.target == start:
                path = [edge]
                while path[0].source != start:
                    path.insert(0, came_by[path[0].source])
                return path
            if edge.target not in came_by:
                came_by[edge.target] = edge
                queue.append(edge.target)
    raise AssertionError(f"no cycle through {start} in {component}")  # not for an SCC


def cycles(graph: dict[str, list[Edge]]) -> list[tuple[list[str], list[Edge]]]:
    """Each group of modules that import each other, directly or not, with one cycle of it."""
    return [(component, _a_cycle(graph, component)) for component in _strongly_connected(graph)]


def _describe(component: list[str], cycle: list[Edge]) -> str:
    lines = [f"{len(component)} modules reach each other: {', '.join(component)}; e.g."]
    return "\n".join([*lines, *(f"  {edge}" for edge in cycle)])


@pytest.fixture(scope="module")
def graph() -> dict[str, list[Edge]]:
    return import_graph(ROOT, PACKAGE)


def test_the_package_has_no_import_cycle(graph: dict[str, list[Edge]]) -> None:
    found = cycles(graph)
    assert not found, (
        "import cycle(s), each shown as the imports that close it (lazy and TYPE_CHECKING "
        "imports count): move the shared piece down into a module both can import\n"
        + "\n\n".join(_describe(component, cycle) for component, cycle in found)
    )


def test_lib_never_imports_defs(graph: dict[str, list[Edge]]) -> None:
    wrong = [
        str(edge)
        for module, edges in graph.items()
        if module.startswith(f"{PACKAGE}.lib.") or module == f"{PACKAGE}.lib"
        for edge in edges
        if edge.target.startswith(f"{PACKAGE}.defs")
    ]
    assert not wrong, (
        "lib/ is glue shared by the Dagster areas and never imports defs/ (pass what it needs "
        "in, or move the piece into defs/):\n" + "\n".join(wrong)
    )


def test_the_plain_libraries_never_import_defs_or_lib(graph: dict[str, list[Edge]]) -> None:
    plain = tuple(f"{PACKAGE}.{layer}" for layer in PLAIN_LIBRARIES)
    orchestration = (f"{PACKAGE}.defs", f"{PACKAGE}.lib")
    wrong = [
        str(edge)
        for module, edges in graph.items()
        if module.startswith(plain)
        for edge in edges
        if edge.target.startswith(orchestration)
    ]
    assert not wrong, "a plain library imports the Dagster layers:\n" + "\n".join(wrong)


def _rank(module: str) -> int:
    """The package's ranks, lowest first: the shared vocabulary at the root (settings,
    policy, periods, schema, limits, urls), infrastructure (infra/), the libraries and the
    Dagster layers between, and the application (app/) on top."""
    if module.startswith(f"{PACKAGE}.infra"):
        return 1
    if module.startswith(f"{PACKAGE}.app"):
        return 3
    if module.removeprefix(f"{PACKAGE}.") in VOCABULARY:
        return 0
    return 2


def test_the_ranks_point_down(graph: dict[str, list[Edge]]) -> None:
    wrong = [
        str(edge)
        for module, edges in graph.items()
        for edge in edges
        if _rank(edge.target) > _rank(module)
    ]
    assert not wrong, (
        "an import points up the ranks (vocabulary at the root < infra/ < the libraries and "
        "Dagster layers < app/):\n" + "\n".join(wrong)
    )


def test_the_walk_sees_every_import_of_the_package(graph: dict[str, list[Edge]]) -> None:
    # Guards the test itself: a walk that found nothing would pass the rules above.
    root_modules = {path.stem for path in (ROOT / PACKAGE).glob("*.py")} - {"__init__"}
    assert root_modules == {*VOCABULARY, "definitions"}, "a module at the root has no rank"
    assert f"{PACKAGE}.definitions" in graph
    assert len(graph) > 50
    assert sum(len(edges) for edges in graph.values()) > 100


def test_a_cycle_hidden_in_a_function_or_type_checking_is_found(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    # a -> b at module level, b -> c inside a function (relative), c -> a under TYPE_CHECKING
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text("def f():\n    from . import c\n")
    (package / "sub" / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import A\n"
    )
    (package / "d.py").write_text("import pkg.a\nfrom pkg.sub.b import f\n")  # no cycle
    graph = import_graph(tmp_path, "pkg")
    assert [edge.target for edge in graph["pkg.d"]] == ["pkg.a", "pkg.sub.b"]
    ((component, cycle),) = cycles(graph)
    assert component == ["pkg.a", "pkg.sub.b", "pkg.sub.c"]
    assert [(edge.source, edge.target) for edge in cycle] == [
        ("pkg.a", "pkg.sub.b"),
        ("pkg.sub.b", "pkg.sub.c"),
        ("pkg.sub.c", "pkg.a"),
    ]
    assert str(cycle[1]) == "pkg.sub.b -> pkg.sub.c (pkg/sub/b.py:2)"
