"""The architecture's dependency rule: the graph IR, placement and partitioner never import TensorFlow.

``import tfaccel`` itself loads TensorFlow (it registers the OpenVINO op library), so the rule is checked
on the modules' own import statements, followed transitively through tfaccel's modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import SRC

TF_FREE = (
    "tfaccel.compiler.ir",
    "tfaccel.compiler.opclasses",
    "tfaccel.compiler.partition",
    "tfaccel.compiler.placement",
    "tfaccel.compiler.support",
    "tfaccel.compiler.selection",
    "tfaccel.compiler.timing",
    "tfaccel.compiler.timing_cache",
    "tfaccel.compiler.machine",
    "tfaccel.compiler.core_stages",
    "tfaccel.compiler.report",
    "tfaccel.compiler.json_fields",
    "tfaccel.compiler.hints",
    "tfaccel.compiler.report_html",
    "tfaccel.compiler.notes",
    "tfaccel.errors",
)
FORBIDDEN = ("tensorflow", "keras", "tf_keras", "openvino")


def _module_file(name: str) -> Path:
    base = Path(SRC, *name.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def _imports(name: str) -> set[str]:
    tree = ast.parse(_module_file(name).read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] in (*FORBIDDEN, "tfaccel")}


def _transitive(name: str) -> dict[str, str]:
    """Every module ``name`` imports (through tfaccel's own modules, not the package __init__), mapped to
    the tfaccel module whose import statement names it."""
    seen: dict[str, str] = {}
    stack = [name]
    visited = set()
    while stack:
        current = stack.pop()
        if current in visited:
            continue
        visited.add(current)
        for imported in _imports(current):
            seen.setdefault(imported, current)
            if imported.startswith("tfaccel.") and _module_file(imported).exists():
                stack.append(imported)
    return seen


@pytest.mark.parametrize("module", TF_FREE)
def test_tf_free_layers_do_not_import_tensorflow(module):
    bad = {m: by for m, by in _transitive(module).items() if m.split(".")[0] in FORBIDDEN}
    assert not bad, f"{module} reaches TensorFlow: {bad}"


def test_the_checker_sees_a_tensorflow_import():
    assert "tensorflow" in {m.split(".")[0] for m in _transitive("tfaccel.compiler.pipeline")}
