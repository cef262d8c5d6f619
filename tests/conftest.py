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
