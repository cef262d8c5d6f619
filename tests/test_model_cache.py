"""OpenVINO's model cache on disk (issue 19 item 4): a second process imports instead of compiling, with the
same answers bit for bit; a damaged blob is compiled afresh; a folder others can write is not used.

Every case runs in fresh processes (the cache only matters across processes), with its own cache folder.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import SRC, run_python
from tfaccel.native import model_cache

TRACE = """
import json, numpy as np, tensorflow as tf, tfaccel
from tfaccel import native
inputs = tf.keras.Input((24, 24, 3))
h = tf.keras.layers.Conv2D(16, 3, activation="relu")(inputs)
h = tf.keras.layers.Conv2D(32, 3, strides=2, activation="relu")(h)
outputs = tf.keras.layers.Dense(10)(tf.keras.layers.GlobalAveragePooling2D()(h))
model = tf.keras.Model(inputs, outputs)
x = np.random.default_rng(19).standard_normal((2, 24, 24, 3)).astype(np.float32)
traced = tfaccel.trace(model, x, backend="openvino")
assert traced.on_neuron_ratio == 1.0, traced.on_neuron_ratio
traced.save("model")
np.save("x.npy", x)
np.save("y.npy", traced(x).numpy())
print(json.dumps(native.compile_cache_stats()))
"""

LOAD = """
import json, numpy as np, tfaccel
from tfaccel import native
y = tfaccel.load("model")(np.load("x.npy")).numpy()
assert np.array_equal(y, np.load("y.npy")), "answers differ from the tracing process's"
print(json.dumps(native.compile_cache_stats()))
"""


def _stats(output: str) -> dict[str, int]:
    import json

    return dict(json.loads(output.strip().splitlines()[-1]))


def _blobs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def traced_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A traced model (one openvino subgraph), its inputs and answers, traced with no model cache."""
    where = tmp_path_factory.mktemp("model_cache")
    run_python(TRACE, cwd=where, env={"PYTHONPATH": SRC, model_cache.ENV: "off"})
    return where


def _load(where: Path, cache: str) -> dict[str, int]:
    return _stats(run_python(LOAD, cwd=where, env={"PYTHONPATH": SRC, model_cache.ENV: cache}))


def test_a_second_process_imports_the_compiled_model_and_answers_bit_for_bit(traced_dir, tmp_path):
    cache = tmp_path / "cache"
    first = _load(traced_dir, str(cache))
    assert first["compiles"] == 1 and first["from_disk"] == 0, first
    blobs = _blobs(cache)
    assert len(blobs) == 1, blobs.keys()
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    second = _load(traced_dir, str(cache))
    assert second["compiles"] == 1 and second["from_disk"] == 1, second
    assert _blobs(cache) == blobs  # imported, not written again
    off = _load(traced_dir, "off")
    assert off["from_disk"] == 0, off


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[: len(b) // 2], id="truncated"),
        pytest.param(
            lambda b: bytes(np.random.default_rng(0).integers(0, 256, len(b), np.uint8)), id="noise"
        ),
        pytest.param(lambda b: b[:100] + bytes([b[100] ^ 0xFF]) + b[101:], id="header_byte"),
    ],
)
def test_a_damaged_blob_is_compiled_afresh_with_the_same_answers(traced_dir, tmp_path, damage):
    cache = tmp_path / "cache"
    _load(traced_dir, str(cache))
    ((name, good),) = _blobs(cache).items()
    blob = cache / name
    os.chmod(blob, 0o600)
    blob.write_bytes(damage(good))
    stats = _load(traced_dir, str(cache))  # the answers are checked bit for bit inside
    assert stats["from_disk"] == 0, stats
    assert _load(traced_dir, str(cache))["from_disk"] == 1  # the blob was written again, and imports


def test_a_folder_others_can_write_is_not_used(traced_dir, tmp_path):
    """Refused when the op library loads (a warning, the variable set to ``off``), and by the op itself when
    the variable names such a folder later."""
    cache = tmp_path / "shared"
    cache.mkdir()
    os.chmod(cache, 0o777)
    code = (
        "import os, tfaccel\n"
        f"print(os.environ[{model_cache.RESOLVED_ENV!r}])\n"
        f"os.environ[{model_cache.RESOLVED_ENV!r}] = {str(cache)!r}  # past the check: the op checks again\n"
        + LOAD
    )
    env = {**os.environ, "PYTHONPATH": SRC, model_cache.ENV: str(cache), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=traced_dir, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        "OpenVINO's model cache is not used" in proc.stderr and "writable by group or others" in proc.stderr
    )
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "off"
    assert _stats(lines[-1])["from_disk"] == 0
    assert list(cache.iterdir()) == []


def test_trim_removes_the_least_recently_written_blobs_first_and_nothing_else(tmp_path):
    for age, name in enumerate(["new.blob", "middle.blob", "old.blob", "older-notes.txt"]):
        path = tmp_path / name
        path.write_bytes(b"x" * 100)
        os.utime(path, (1_000_000 - age * 1000, 1_000_000 - age * 1000))
    (tmp_path / "folder.blob").mkdir()  # not a file: never touched
    removed = model_cache.trim(tmp_path, max_bytes=150)
    assert [p.name for p in removed] == ["old.blob", "middle.blob"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.blob", "new.blob", "older-notes.txt"]
    assert model_cache.trim(tmp_path, max_bytes=150) == []


def test_a_blob_others_could_write_is_removed_before_use(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    (cache / "shared.blob").write_bytes(b"planted")
    os.chmod(cache / "shared.blob", 0o664)
    (cache / "ours.blob").write_bytes(b"fine")
    os.chmod(cache / "ours.blob", 0o640)
    monkeypatch.setenv(model_cache.ENV, str(cache))
    monkeypatch.setenv(model_cache.RESOLVED_ENV, os.environ.get(model_cache.RESOLVED_ENV, "off"))  # restored
    assert model_cache.configure(tmp_path) == cache.resolve()
    assert sorted(p.name for p in cache.iterdir()) == ["ours.blob"]
    assert os.environ[model_cache.RESOLVED_ENV] == str(cache.resolve())
    assert os.environ[model_cache.ENV] == str(cache)  # the user's variable is left as it was
