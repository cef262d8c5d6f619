"""What a fresh process imports (issue 17 item 5): checked on ``sys.modules``, never on the clock.

Why: ``import tfaccel`` must register the op library (so a fresh process can load an openvino-traced model)
and nothing more: not the ``openvino`` package, the backends' conversion code, the compiler's stages or the
server, which are imported on first use. And the commands' quick answers (``--help``, ``tfaccel report``,
a usage or flag error) must not import TensorFlow at all, which takes seconds; benchmarks/bench_startup.py
prints what that buys.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import tensorflow as tf

import tfaccel

#: what ``import tfaccel`` must not import (a module, or any module under it); keras is not listed:
#: ``import tensorflow`` imports it
NOT_ON_IMPORT = (
    "openvino",
    "tfaccel.backends",
    "tfaccel.compiler",
    "tfaccel.runtime",
    "tfaccel.serving",
    "tfaccel.cli",
    "tfaccel.tools",
)

#: runs an entry point of ``src/tfaccel_cli.py`` (what the console scripts call; test_cli checks the
#: mapping) with the given arguments, then records what the process imported and whether the deferral
#: variable leaked, even when the command exits
_ENTRY = """
import atexit, json, os, sys

def _record():
    with open(os.environ["IMPORT_COST_OUT"], "w") as out:
        json.dump({"modules": sorted(sys.modules), "leaked": "_TFACCEL_DEFER_OP_LIBRARY" in os.environ}, out)

atexit.register(_record)
import tfaccel_cli
sys.exit(tfaccel_cli.%s())
"""


def _fresh(
    code: str, args: list[str], tmp_path: Path
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = tmp_path / "imported.json"
    out.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["IMPORT_COST_OUT"] = str(out)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert out.is_file(), (proc.returncode, proc.stdout, proc.stderr)
    return proc, json.loads(out.read_text())


def _under(modules: list[str], roots: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == r or m.startswith(r + ".") for r in roots)]


def test_import_tfaccel_registers_the_op_and_imports_nothing_heavy(tmp_path: Path) -> None:
    code = """
    import json, os, sys
    import tfaccel
    modules = sorted(sys.modules)
    from tfaccel import _tf_compat, native
    record = {"modules": modules, "registered": _tf_compat.op_def(native.OP_TYPE) is not None}
    open(os.environ["IMPORT_COST_OUT"], "w").write(json.dumps(record))
    """
    proc, seen = _fresh(code, [], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert seen["registered"], "import tfaccel did not register the op library"
    assert "tensorflow" in seen["modules"]  # registering it imports TensorFlow: the checker sees imports
    assert _under(seen["modules"], NOT_ON_IMPORT) == []


@pytest.fixture(scope="module")
def traced_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real traced SavedModel (xla: tracing it needs no op library) for ``tfaccel report``."""

    @tf.function
    def f(x: tf.Tensor) -> tf.Tensor:
        return tf.nn.relu(tf.matmul(x, tf.ones([4, 3])))

    path = tmp_path_factory.mktemp("import_cost") / "traced"
    tfaccel.trace(f, tf.ones([2, 4]), backend="xla").save(str(path))
    return path


CLI_CASES = [
    # (entry point, arguments, exit code, words on stdout or stderr)
    ("main", ["--help"], 0, "'tfaccel COMMAND --help'"),
    ("main", ["--version"], 0, "tfaccel "),
    ("main", ["trace", "--help"], 0, "DST_DIR"),
    ("main", ["bench", "--help"], 0, "--baseline"),
    ("main", ["report", "{traced}"], 0, "tfaccel placement (xla)"),
    ("main", ["report", "{traced}", "--json"], 0, '"backend": "xla"'),
    ("main", ["report", "{missing}"], 1, "does not exist"),
    ("main", ["no-such-command"], 2, "invalid choice"),
    ("main", ["trace", "only-one-dir"], 2, "the following arguments are required"),
    ("main", ["serve", "--help"], 0, "--model_config_file"),
    ("main", ["serve", "--model_name=m"], 2, "--model_base_path"),
    ("serve_main", ["--help"], 0, "--model_base_path"),
    ("serve_main", ["--no_such_flag"], 2, "unrecognized arguments: --no_such_flag"),
    ("serve_main", ["--port=0"], 2, "give --model_base_path"),
    ("serve_main", ["--model_base_path=/m", "--port=x"], 2, "invalid int value"),
]


@pytest.mark.parametrize(
    ("entry", "args", "code", "words"), CLI_CASES, ids=[" ".join([c[0], *c[1]]) for c in CLI_CASES]
)
def test_quick_answers_do_not_import_tensorflow(
    entry: str, args: list[str], code: int, words: str, traced_dir: Path, tmp_path: Path
) -> None:
    argv = [a.format(traced=traced_dir, missing=tmp_path / "missing") for a in args]
    proc, seen = _fresh(_ENTRY % entry, argv, tmp_path)
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert words in proc.stdout + proc.stderr, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "tensorflow" not in seen["modules"], f"{entry} {' '.join(args)} imported TensorFlow"
    heavy = _under(seen["modules"], ("tensorflow", "keras", "openvino", "numpy"))
    assert heavy == [], f"{entry} {' '.join(args)} imported {heavy[:5]}"
    assert not seen["leaked"], "the deferral variable outlived the package import"
