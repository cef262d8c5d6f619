"""Shared test helpers: quiet TensorFlow, run code in a fresh Python process, compare numerics."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: fp32 tolerance for a compiled graph vs the original: XLA may reassociate sums and fuse ops.
RTOL = 1e-5
ATOL = 1e-5

SRC = str(Path(__file__).resolve().parents[1] / "src")


def assert_close(got: object, expected: object, rtol: float = RTOL, atol: float = ATOL) -> None:
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=rtol, atol=atol)


def run_python(
    code: str, *, cwd: str | os.PathLike[str], env: dict[str, str] | None = None, timeout: int = 300
) -> str:
    """Run ``code`` in a fresh interpreter; fail the test with its output if it exits non-zero."""
    full_env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    full_env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"subprocess failed ({proc.returncode}):\nSTDOUT:\n{proc.stdout}\nSTDERR:\n{proc.stderr}"
        )
    return proc.stdout


LEGACY_ENV = {"TF_USE_LEGACY_KERAS": "1", "PYTHONPATH": SRC}


def legacy_trace_then_reload(
    tmp_path: os.PathLike[str],
    trace_code: str,
    model_dir: str,
    env: dict[str, str] | None = None,
    exact: bool = False,
) -> None:
    """The reference's tf_keras flow: ``trace_code`` traces and saves ``model_dir`` and writes ``x.npy`` and
    ``y.npy`` (then prints "traced"); a fresh process that never imports tfaccel reloads it with
    ``tf.keras.models.load_model`` and must give ``y`` for ``x``."""
    assert run_python(trace_code, cwd=tmp_path, env={**LEGACY_ENV, **(env or {})}).strip().endswith("traced")
    if exact:
        check = "np.testing.assert_array_equal(got, want)"
    else:
        check = "np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)"
    reload = f"""
import sys, numpy as np, tensorflow as tf
m = tf.keras.models.load_model({model_dir!r})
got, want = m(np.load('x.npy')).numpy(), np.load('y.npy')
{check}
assert 'tfaccel' not in sys.modules
print('ok')
"""
    legacy_only = {"TF_USE_LEGACY_KERAS": "1", "PYTHONPATH": ""}
    assert run_python(reload, cwd=tmp_path, env=legacy_only).strip().endswith("ok")
