"""No import cycles between tfaccel's modules.

Why: a cycle makes the import order matter (a module half-initialized when its partner reads a name from
it), forces imports into function bodies to dodge that, and ties two layers together so that neither can
be understood, tested or made lighter alone. The graph is built from the source with ``ast``, without
importing anything: every ``import``/``from ... import`` of a tfaccel module counts, at module level and
inside functions alike (a lazy import still makes the two modules depend on each other). Excluded, and
only these: imports under ``if TYPE_CHECKING:`` (never executed), and the implicit import of a module's
parent packages (every module would otherwise depend on ``tfaccel/__init__``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

from conftest import SRC

ROOT_PACKAGE = "tfaccel"


def modules_under(src: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of ``package`` under ``src``."""
    found = {}
    for path in sorted(Path(src, package).rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement under ``node``, at any depth, but none in an ``if TYPE_CHECKING:`` body."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:  # the else branch does run
                if isinstance(other, (ast.Import, ast.ImportFrom)):
                    yield other
                else:
                    yield from _import_nodes(other)
        else:
            yield from _import_nodes(child)


def _known(name: str, modules: Mapping[str, Path]) -> str | None:
    """``name`` itself when it is one of ``modules``, else its longest prefix that is, else None."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def imports_of(module: str, modules: Mapping[str, Path]) -> set[str]:
    """The modules of ``modules`` that ``module``'s import statements name (``from pkg import sub`` names
    ``pkg.sub`` when that is a module, else ``pkg``)."""
    path = modules[module]
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names
            ]
        for target in targets:
            known = _known(target, modules)
            if known is not None and known != module:
                found.add(known)
    return found


def import_graph(modules: Mapping[str, Path]) -> dict[str, set[str]]:
    return {name: imports_of(name, modules) for name in modules}


def components(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted: the modules that
    all reach each other through imports.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def find_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component: the first to break."""
    return [_cycle_in(graph, set(component)) for component in components(graph)]


def _cycle_in(graph: Mapping[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first, inside the component)."""
    start = min(component)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for succ in sorted(graph[node] & component):
                if succ == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if succ not in parents:
                    parents[succ] = node
                    following.append(succ)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")  # a component always has one


def test_tfaccel_has_no_import_cycles():
    modules = modules_under(Path(SRC), ROOT_PACKAGE)
    assert len(modules) > 20, f"found only {sorted(modules)} under {SRC}"
    graph = import_graph(modules)
    new = {tuple(c): _cycle_in(graph, set(c)) for c in components(graph)}
    assert not new, (
        "import cycles between tfaccel's modules (break each so the dependency goes one way):\n"
        + (
            "\n".join(
                " -> ".join(cycle)
                + (
                    f"  (and all of {', '.join(members)} reach each other)"
                    if len(members) + 1 > len(cycle)
                    else ""
                )
                for members, cycle in new.items()
            )
        )
    )


def _write(root: Path, files: Mapping[str, str]) -> dict[str, Path]:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return modules_under(root, "pkg")


def test_the_checker_finds_a_cycle_through_a_function_level_import(tmp_path):
    modules = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/low.py": "def use():\n    from pkg.high import thing\n    return thing\n",
            "pkg/high.py": "from pkg import mid\nthing = 1\n",
            "pkg/mid.py": "import pkg.low\n",
            "pkg/alone.py": "import os\nfrom pkg import low\n",
        },
    )
    assert find_cycles(import_graph(modules)) == [["pkg.high", "pkg.mid", "pkg.low", "pkg.high"]]


def test_the_checker_resolves_relative_imports_and_skips_type_checking_only_ones(tmp_path):
    modules = _write(
        tmp_path,
        {
            "pkg/__init__.py": "from .sub import b\n",
            "pkg/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.sub.b import B\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/b.py": "from ..a import x\nfrom . import c\n",
            "pkg/sub/c.py": "from .. import a\n",
        },
    )
    graph = import_graph(modules)
    assert graph["pkg"] == {"pkg.sub.b"}
    assert graph["pkg.sub.b"] == {"pkg.a", "pkg.sub.c"}
    assert graph["pkg.sub.c"] == {"pkg.a"}
    assert graph["pkg.a"] == set()  # only under TYPE_CHECKING
    assert find_cycles(graph) == []
    (tmp_path / "pkg/a.py").write_text("from pkg.sub import b\n")
    assert find_cycles(import_graph(modules)) == [["pkg.a", "pkg.sub.b", "pkg.a"]]
