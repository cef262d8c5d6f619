"""tools/mutation_check.py stays usable: its mutations are well-formed and still apply to this tree.

Why in the default suite: the mutation check itself is a slow job, run by hand or in a nightly job; a
refactor that moves a mutation's code would otherwise turn it STALE unnoticed until then. These tests
read files only (no TensorFlow, no pytest runs), so they take well under a second.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "mutation_check.py"


def _load_tool():
    spec = importlib.util.spec_from_file_location("mutation_check", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


tool = _load_tool()
MUTATIONS = tool.MUTATIONS
NAMES = [m.name for m in MUTATIONS]


def test_the_list_is_large_and_names_are_unique_slugs():
    assert len(MUTATIONS) >= 16  # the sanity mutation + at least 15 semantic ones (issue 21)
    assert len(set(NAMES)) == len(NAMES)
    for name in NAMES:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", name), name
    assert NAMES[0] == "sanity-copy-imported"


@pytest.mark.parametrize("mutation", MUTATIONS, ids=NAMES)
def test_mutation_is_well_formed(mutation):
    assert mutation.find and mutation.find != mutation.replace
    assert mutation.why.strip() and mutation.tests
    assert mutation.timeout > 0
    assert (ROOT / mutation.file).is_file(), mutation.file
    for test in mutation.tests:
        path, _, node = test.partition("::")
        assert path.startswith("tests/") and (ROOT / path).is_file(), f"{mutation.name}: no file {path}"
        if node:  # a test function of that file (parametrized ids stripped)
            function = node.split("::")[-1].split("[")[0]
            defined = {
                n.name
                for n in ast.walk(ast.parse((ROOT / path).read_text()))
                if isinstance(n, ast.FunctionDef)
            }
            assert function in defined, f"{mutation.name}: {path} has no test {function} (renamed?)"


@pytest.mark.parametrize("mutation", MUTATIONS, ids=NAMES)
def test_find_text_matches_exactly_once_in_this_tree(mutation):
    text = (ROOT / mutation.file).read_text()
    count = text.count(mutation.find)
    assert count == 1, (
        f"mutation {mutation.name} is stale: its find text occurs {count} times in {mutation.file}; "
        "update it in tools/mutation_check.py to break the same behaviour in the new code"
    )


def test_a_mutated_file_still_parses_as_python():
    # a mutation must change behaviour, not break the syntax (a SyntaxError would 'kill' it for nothing)
    for mutation in MUTATIONS:
        if mutation.file.endswith(".py"):
            text = (ROOT / mutation.file).read_text().replace(mutation.find, mutation.replace)
            compile(text, mutation.file, "exec")


def test_apply_replaces_once_and_reports_stale_text(tmp_path):
    (tmp_path / "src").mkdir()
    target = tmp_path / "src" / "m.py"
    make = tool.Mutation
    target.write_text("a = 1\nb = 2\nb = 2\n")
    tool.apply(make("once", "src/m.py", "a = 1", "a = 0", ("tests/t.py",), "why"), tmp_path)
    assert target.read_text() == "a = 0\nb = 2\nb = 2\n"
    with pytest.raises(tool.StaleMutation, match="occurs 0 times"):
        tool.apply(make("gone", "src/m.py", "c = 3", "c = 0", ("tests/t.py",), "why"), tmp_path)
    with pytest.raises(tool.StaleMutation, match="occurs 2 times"):
        tool.apply(make("twice", "src/m.py", "b = 2", "b = 0", ("tests/t.py",), "why"), tmp_path)
    with pytest.raises(tool.StaleMutation, match="does not exist"):
        tool.apply(make("nofile", "src/x.py", "a", "b", ("tests/t.py",), "why"), tmp_path)


def test_the_copy_environment_puts_the_copy_first(tmp_path):
    env = tool.copy_env(tmp_path, tmp_path / "cache")
    assert env["PYTHONPATH"] == str(tmp_path / "src") and env["TFACCEL_CACHE_DIR"] == str(tmp_path / "cache")
    # without a private cache, the user's (prebuilt) op library is reused: unmutated C++, same hash
    assert tool.copy_env(tmp_path).get("TFACCEL_CACHE_DIR") == os.environ.get("TFACCEL_CACHE_DIR")


def test_list_and_unknown_names_from_the_command_line():
    listed = subprocess.run([sys.executable, str(TOOL), "--list"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0
    assert all(name in listed.stdout for name in NAMES)
    unknown = subprocess.run(
        [sys.executable, str(TOOL), "--only", "no-such-mutation"], capture_output=True, text=True, timeout=60
    )
    assert unknown.returncode != 0 and "unknown mutation(s): no-such-mutation" in unknown.stderr


def test_the_kill_table_shows_every_status():
    results = [
        tool.Result(MUTATIONS[1], "KILLED", 12.3, "tests/test_x.py::test_y"),
        tool.Result(MUTATIONS[2], "SURVIVED", 40.0, "5 passed"),
        tool.Result(MUTATIONS[3], "STALE", 0.0, "the find text occurs 0 times"),
    ]
    text = tool.table(results)
    assert text.splitlines()[0].startswith("| mutation |")
    assert "| KILLED | test_x.py::test_y | 12 |" in text
    assert "SURVIVED" in text and "STALE" in text
