"""The placement page in a real browser (issue 20): it renders, logs nothing to the console, and shows every
subgraph's label, the reasons and the fallbacks as text a reader sees.

Chromium comes from the system (Debian's ``chromium`` package; ``.ci/run`` installs it): it runs headless,
prints the DOM it rendered (``--dump-dom``) and, with ``--enable-logging=stderr``, every console message
as a ``CONSOLE`` line, and takes a screenshot. Without Chromium the test is skipped, saying how to get it.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import tfaccel
from conftest import installed_script

W = tf.constant(np.random.default_rng(0).standard_normal((4, 4)), tf.float32)


def _browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(
        "no Chromium on this machine: apt-get install chromium (.ci/run installs it) to run this test"
    )


def f(x, axis):
    h = tf.nn.relu(tf.matmul(x, W, name="mm1") + 1.0, name="relu1")
    back = tf.strings.to_number(tf.strings.as_string(h), name="from_text")  # stays on TF: a string
    r = tf.reverse(back, axis, name="rev")  # XLA needs `axis` at compile time: a compile failure
    return tf.tanh(tf.matmul(r, W, name="mm2") * 3.0, name="out")


def _run(browser: str, *args: str) -> subprocess.CompletedProcess[str]:
    flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions"]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=120)


def _png_colours(path: Path) -> int:
    """How many distinct pixel values the PNG's first rows hold (a blank page has one)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, depth, colour_type = struct.unpack(">IIBB", data[16:26])
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        if kind == b"IDAT":
            chunks.append(data[offset + 8 : offset + 8 + length])
        offset += 12 + length
    raw = zlib.decompress(b"".join(chunks))
    channels = {2: 3, 6: 4}[colour_type]
    stride = 1 + width * channels * depth // 8
    rows = [raw[i * stride + 1 : (i + 1) * stride] for i in range(min(height, 400))]
    return len({row[j : j + channels] for row in rows for j in range(0, len(row), channels)})


def test_the_placement_page_renders_without_console_errors_and_shows_every_label(tmp_path):
    browser = _browser()
    workdir = tmp_path / "work"
    x, axis = tf.random.uniform([2, 4], seed=1), tf.constant([0])
    model = tfaccel.trace(f, (x, axis), workdir=str(workdir), backend="xla")
    report = model.placement_report
    assert len(report.subgraphs) >= 2 and report.fallbacks  # two labels and a fallback to show
    page = workdir / "placement.html"
    dom = _run(browser, "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    consoled = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert not consoled, consoled
    for subgraph in report.subgraphs:
        assert f">{subgraph.name}</span>" in dom.stdout, subgraph.name  # labelled, in the rendered DOM
    assert "Kept on TensorFlow" in dom.stdout and "from_text" in dom.stdout
    assert "the compiler's full output" in dom.stdout and "suggested fix" in dom.stdout
    shot = tmp_path / "page.png"
    taken = _run(browser, f"--screenshot={shot}", "--window-size=1200,900", page.as_uri())
    assert taken.returncode == 0 and shot.is_file(), taken.stderr[-2000:]
    assert _png_colours(shot) > 10  # text, tables and coloured labels, not a blank page


def test_a_saved_models_page_comes_from_its_report_alone(tmp_path):
    """``tfaccel report DIR --html`` reads only the saved JSON: the page for a saved model, in the browser."""
    browser = _browser()
    model = tfaccel.trace(lambda v: tf.nn.relu(tf.matmul(v, W)), tf.ones([2, 4]), backend="openvino")
    model.save(str(tmp_path / "m"))
    out = tmp_path / "m.html"
    proc = subprocess.run(
        [
            *installed_script("tfaccel", ["-m", "tfaccel_cli"]),
            "report",
            str(tmp_path / "m"),
            "--html",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    dom = _run(browser, "--dump-dom", out.as_uri())
    assert dom.returncode == 0 and ">tfaccel_sg_0</span>" in dom.stdout
