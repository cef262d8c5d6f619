"""Shared test helpers: quiet TensorFlow, run code in a fresh Python process, compare numerics."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
#: The suite checks placement node by node, so it traces with the deterministic support rules; profiled
#: placement (the default for users) depends on timings and has its own tests, which ask for it by keyword;
#: they measure afresh (no timing cache) unless a test names a cache file.
#: Subprocesses inherit this. A test that sets TFACCEL_CC_FLAGS itself must include it (see STATIC).
STATIC = "--placement=static --timing-cache=off"
os.environ.setdefault("TFACCEL_CC_FLAGS", STATIC)
#: every trace in the suite checks each pipeline stage's pre- and postconditions (compiler/pipeline.py)
os.environ.setdefault("TFACCEL_CHECK_STAGES", "1")

#: fp32 tolerance for a compiled graph vs the original: XLA and OpenVINO may reassociate sums and fuse ops.
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


def softmax_reference(x: Any, tf_answer: Any) -> np.ndarray:
    """TF's softmax over the last axis as its Eigen kernel computes it: a row holding NaN, +inf, or only
    -inf is NaN throughout; other rows keep ``tf_answer``.

    Why not TF's answer as it stands: TF with oneDNN (its default on CPUs with AVX-512) answers such rows
    with NaN in some vector lanes and 0 in the others (``[0, nan, 0, 0]`` for ``[1, nan, 2, 0.5]``; a
    17-wide row gets a second NaN at lane 14, where the input is 1), and the same TF with
    TF_ENABLE_ONEDNN_OPTS=0 or on an AVX2 CPU answers NaN throughout. The first is an artifact of one
    kernel's lanes, not a semantics code can rely on; the traced model keeps the second everywhere.
    """
    row = np.asarray(x, np.float64)
    bad = np.isnan(row).any(-1) | np.isposinf(row).any(-1) | np.isneginf(row).all(-1)
    out = np.array(tf_answer, dtype=np.asarray(tf_answer).dtype, copy=True)
    out[bad] = np.nan
    return out


LEGACY_ENV = {"TF_USE_LEGACY_KERAS": "1", "PYTHONPATH": SRC}


#: what a fresh process must run before loading a model traced with each backend: an openvino model holds
#: tfaccel's op (``import tfaccel`` registers it); an xla model needs TensorFlow alone
FRESH_IMPORT = {"openvino": "import tfaccel", "xla": "assert 'tfaccel' not in sys.modules"}
FRESH_PATH = {"openvino": SRC, "xla": ""}


def legacy_trace_then_reload(
    tmp_path: os.PathLike[str],
    trace_code: str,
    model_dir: str,
    env: dict[str, str] | None = None,
    exact: bool = False,
    backend: str = "openvino",
) -> None:
    """The reference's tf_keras flow: ``trace_code`` traces (with ``backend``, through
    ``TFACCEL_CC_FLAGS``) and saves ``model_dir`` and writes ``x.npy`` and ``y.npy`` (then prints "traced");
    a fresh process reloads it with ``tf.keras.models.load_model`` and must give ``y`` for ``x``. For an
    xla model that process never imports tfaccel; for an openvino one it imports tfaccel first.
    """
    trace_env = {**LEGACY_ENV, "TFACCEL_CC_FLAGS": f"--backend={backend} {STATIC}", **(env or {})}
    assert run_python(trace_code, cwd=tmp_path, env=trace_env).strip().endswith("traced")
    if exact:
        check = "np.testing.assert_array_equal(got, want)"
    else:
        check = "np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)"
    reload = f"""
import sys, numpy as np, tensorflow as tf
{FRESH_IMPORT[backend]}
m = tf.keras.models.load_model({model_dir!r})
got, want = m(np.load('x.npy')).numpy(), np.load('y.npy')
{check}
assert 'tfaccel' not in sys.modules or {backend!r} == 'openvino'
print('ok')
"""
    legacy_only = {"TF_USE_LEGACY_KERAS": "1", "PYTHONPATH": FRESH_PATH[backend]}
    assert run_python(reload, cwd=tmp_path, env=legacy_only).strip().endswith("ok")


def installed_script(name: str, module_args: list[str]) -> list[str]:
    """The command line of an installed console script: next to the interpreter (a venv), in the user
    scripts directory (pip install --user) or on PATH; else ``python <module_args>`` (the same entry point).
    """
    import shutil
    import sysconfig

    candidates = [
        Path(sys.executable).with_name(name),
        Path(sysconfig.get_path("scripts")) / name,
        Path(sysconfig.get_path("scripts", f"{os.name}_user")) / name,
    ]
    found = [str(p) for p in candidates if p.is_file()] or [shutil.which(name) or ""]
    return [found[0]] if found[0] else [sys.executable, *module_args]


def free_ports(count: int) -> list[int]:
    """Distinct free ports on 127.0.0.1 (all held open while choosing, so they differ)."""
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """Terminate a server process, killing it if it has not exited after 30 s."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- measured placement --------------------------------------------------------------------------------------
def machine_was_busy(report: Any) -> bool:
    """The trace found other processes using the cores and placed by the static rules (and said so)."""
    return any(sentence.startswith("machine busy:") for sentence in report.fallbacks)


def skip_if_busy(report: Any) -> None:
    """A test of what measurement decides needs the machine to itself: next to busy processes the measure
    stage distrusts its timings and places statically (what test_measured_placement.py checks, with real
    busy processes). There, such a test is skipped, never passed.
    """
    if machine_was_busy(report):
        pytest.skip("the machine was busy while measuring: placed by static rules (checked elsewhere)")


def busy_loops() -> list[subprocess.Popen[bytes]]:
    """One busy-looping process per usable core (stop them with :func:`stop_busy_loops`)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]


def stop_busy_loops(loops: list[subprocess.Popen[bytes]]) -> None:
    for proc in loops:
        proc.kill()
    for proc in loops:
        proc.wait(timeout=60)
