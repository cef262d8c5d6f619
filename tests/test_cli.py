"""The ``tfaccel`` command, driven as a user drives it: the installed script in a subprocess, on real
SavedModels, checking exit codes, stdout/stderr and the files it writes.
"""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import tfaccel  # (also registers the op an openvino-traced model holds)
from conftest import STATIC, assert_close, installed_script, run_python

TFACCEL = installed_script("tfaccel", ["-m", "tfaccel_cli"])


class _Model(tf.Module):
    """Two signatures; serving_default has a float and an integer output."""

    def __init__(self) -> None:
        rng = np.random.default_rng(7)
        self.w1 = tf.Variable(rng.normal(size=(8, 16)).astype("float32"))
        self.w2 = tf.Variable(rng.normal(size=(16, 3)).astype("float32"))

    @tf.function(input_signature=[tf.TensorSpec([None, 8], tf.float32, name="features")])
    def serve(self, features: tf.Tensor) -> dict[str, tf.Tensor]:
        hidden = tf.nn.relu(tf.matmul(features, self.w1))
        logits = tf.matmul(hidden, self.w2)
        return {"logits": logits, "best": tf.argmax(logits, axis=1, output_type=tf.int32)}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 8], tf.float32, name="a"),
            tf.TensorSpec([None, 8], tf.float32, name="b"),
        ]
    )
    def pair(self, a: tf.Tensor, b: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"sum": tf.nn.relu(tf.matmul(a + b, self.w1))}


class _Checked(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        tf.debugging.assert_non_negative(x, message="x must be >= 0")
        return {"y": tf.sqrt(x)}


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "src_model"
    model = _Model()
    tf.saved_model.save(model, str(path), signatures={"serving_default": model.serve, "pair": model.pair})
    return path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_USE_LEGACY_KERAS")}
    env["TFACCEL_CC_FLAGS"] = STATIC
    env.update(extra)
    return env


def cli(
    *args: str | os.PathLike[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TFACCEL, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(**(env or {})),
        cwd=cwd,
    )


def assert_fails(proc: subprocess.CompletedProcess[str], code: int, command: str, *words: str) -> None:
    """Exit ``code`` and, for failures (1), exactly one line on stderr naming the problem."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    if code == 1:
        assert len(lines) == 1, proc.stderr
    assert lines[-1].startswith(f"tfaccel {command}: error: "), proc.stderr
    for word in words:
        assert word in lines[-1], (word, proc.stderr)


def _reference(src: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    sig = tf.saved_model.load(str(src)).signatures["serving_default"]
    return {k: v.numpy() for k, v in sig(features=tf.constant(x)).items()}


def test_trace_xla_writes_a_savedmodel_that_plain_tensorflow_serves(src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "traced_xla"
    proc = cli("trace", src, dst, "--batch-size", "4", "--flags", "--backend=xla")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr  # no progress line (not a terminal), no TensorFlow chatter
    assert "tfaccel placement (xla)" in proc.stdout
    assert "traced signature serving_default(features: float32[?,8])" in proc.stdout
    # the source took any batch, and so does the traced model (issue 15: the batch propagates): no note
    assert "  batch: any batch, in chunks of 4 rows" in proc.stdout
    assert "note: the source accepts any batch size" not in proc.stdout
    assert (dst / "saved_model.pb").is_file() and (dst / "assets.extra" / "tfaccel.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging directory left
    # a process that never imports tfaccel serves it with the original names, and the same answers
    x = np.random.default_rng(1).random((4, 8), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    out = run_python(
        f"""
        import sys, json, numpy as np, tensorflow as tf
        sig = tf.saved_model.load({str(dst)!r}).signatures["serving_default"]
        got = sig(features=tf.constant(np.load("x.npy")))
        assert "tfaccel" not in sys.modules
        np.save("logits.npy", got["logits"].numpy()); np.save("best.npy", got["best"].numpy())
        print(json.dumps(sorted(got)))
        """,
        cwd=tmp_path,
    )
    assert json.loads(out.strip().splitlines()[-1]) == ["best", "logits"]
    want = _reference(src, x)
    assert_close(np.load(tmp_path / "logits.npy"), want["logits"])
    np.testing.assert_array_equal(np.load(tmp_path / "best.npy"), want["best"])


def test_trace_openvino_then_report_and_bench(src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "traced_ov"
    proc = cli("trace", src, dst, "--flags", "--backend=openvino")
    assert proc.returncode == 0, proc.stderr
    loaded = tf.saved_model.load(str(dst)).signatures["serving_default"]
    x = np.random.default_rng(2).random((1, 8), dtype=np.float32)
    got = loaded(features=tf.constant(x))
    want = _reference(src, x)
    assert_close(got["logits"], want["logits"])
    np.testing.assert_array_equal(got["best"].numpy(), want["best"])

    report = cli("report", dst)
    assert report.returncode == 0, report.stderr
    assert report.stdout.startswith("tfaccel placement (openvino)")
    as_json = cli("report", dst, "--json")
    data = json.loads(as_json.stdout)
    placed = {d["op"]: d["placement"] for d in data["nodes"]}
    assert placed["MatMul"] == placed["Relu"] == "accelerator", placed
    assert data["backend"] == "openvino" and len(data["subgraphs"]) == 1
    assert data["options"] == "--backend=openvino --placement=static --timing-cache=off"

    bench = cli("bench", dst, "--baseline", src, "--duration", "1", "--concurrency", "2", "--json")
    assert bench.returncode == 0, bench.stderr
    result = json.loads(bench.stdout)
    rows = {r["model"]: r for r in result["results"]}
    assert set(rows) == {"model", "baseline"}
    for row in rows.values():
        assert row["calls"] > 0 and row["errors"] == 0 and row["concurrency"] == 2 and row["batch"] == 1
        assert 0 < row["min_ms"] <= row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] <= row["max_ms"]
        assert row["min_ms"] <= row["mean_ms"] <= row["max_ms"] and row["first_call_ms"] > 0
    assert set(result["speedup"]) == {"throughput", "p50", "p99"}
    assert result["speedup_by_concurrency"] == {"2": result["speedup"]}
    table = cli("bench", dst, "--duration", "0.5", "--concurrency", "1,2")
    assert table.returncode == 0, table.stderr
    assert all(column in table.stdout for column in ("mean ms", "min ms", "p50 ms", "p99 ms", "max ms"))
    assert "first call of " in table.stdout and "(after loading; compiling included)" in table.stdout
    levels = [
        line.split()[1]
        for line in table.stdout.splitlines()
        if "traced_ov " in line and not line.strip().startswith("first call of")
    ]
    assert levels == ["1", "2"], table.stdout


def test_trace_with_npz_inputs_and_another_signature(src: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    arrays = {"a": rng.random((3, 8), dtype=np.float32), "b": rng.random((3, 8), dtype=np.float32)}
    np.savez(tmp_path / "pair.npz", **arrays)
    dst = tmp_path / "pair_traced"
    proc = cli("trace", src, dst, "--signature", "pair", "--inputs", tmp_path / "pair.npz", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["total_ops"] > 0
    sig = tf.saved_model.load(str(dst)).signatures["serving_default"]
    assert sorted(sig.structured_input_signature[1]) == ["a", "b"]
    assert sig.structured_input_signature[1]["a"].shape.as_list() == [None, 8]  # the batch propagates
    assert tfaccel.load(str(dst)).tfaccel_executable.layout.specs[0].shape == (3, 8)  # traced at the .npz's
    want = tf.saved_model.load(str(src)).signatures["pair"](**arrays)["sum"]
    assert_close(sig(**arrays)["sum"], want)


def test_analyze(src: Path) -> None:
    proc = cli("analyze", src, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["percent_supported"] == 100.0
    assert {"MatMul", "Relu", "ArgMax"} <= set(result["supported_operators"])
    text = cli("analyze", src, "--signature", "pair")
    assert text.returncode == 0 and "ops supported" in text.stdout


def test_the_console_script_is_registered() -> None:
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts["tfaccel"] == "tfaccel_cli:main"


@pytest.mark.parametrize("command", ["trace", "analyze", "report", "bench"])
def test_help_has_examples(command: str) -> None:
    proc = cli(command, "--help")
    assert proc.returncode == 0
    examples = proc.stdout.split("examples:\n", 1)[1]
    assert examples.startswith(f"  tfaccel {command} "), proc.stdout


def test_bad_sources_fail_with_one_line(src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out"
    assert_fails(cli("trace", tmp_path / "missing", dst), 1, "trace", "does not exist")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("not a model")
    assert_fails(cli("trace", tmp_path / "plain", dst), 1, "trace", "not a SavedModel directory")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(src, corrupt)
    data = (corrupt / "saved_model.pb").read_bytes()
    (corrupt / "saved_model.pb").write_bytes(data[: len(data) // 3])
    assert_fails(cli("analyze", corrupt), 1, "analyze", "could not be loaded as a SavedModel")
    assert_fails(cli("trace", src, dst, "--signature", "nope"), 1, "trace", "'nope'", "pair")
    assert not dst.exists()  # nothing written on failure
    assert_fails(cli("report", src), 1, "report", "was not saved by tfaccel")
    assert_fails(cli("bench", tmp_path / "plain"), 1, "bench", "not a SavedModel directory")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    assert_fails(cli("trace", src, tmp_path / "busy"), 1, "trace", "--overwrite")
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    assert_fails(cli("report", tmp_path / "missing"), 1, "report", "does not exist")


def test_overwrite_never_deletes_the_source(src: Path, tmp_path: Path) -> None:
    """--overwrite deletes DST_DIR: it must refuse a DST_DIR that is, holds or lies inside the source."""
    holder = tmp_path / "holder"
    shutil.copytree(src, holder / "model")
    (tmp_path / "alias").symlink_to(holder / "model")
    for dst in (holder, holder / "model", tmp_path / "alias", holder / "model" / "sub"):
        model = holder / "model"
        assert_fails(cli("trace", model, dst, "--overwrite"), 1, "trace", "overlap")
        assert (model / "saved_model.pb").is_file()


def test_bench_refuses_a_baseline_with_other_inputs(src: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    module = _Model()
    tf.saved_model.save(module, str(other), signatures={"serving_default": module.pair})
    assert_fails(cli("bench", src, "--baseline", other, "--duration", "0.2"), 1, "bench", "cannot take")


def test_a_model_failing_on_the_inputs_is_reported_as_such(tmp_path: Path) -> None:
    """A TensorFlow error while running the user's model is the user's to fix, not an internal error."""
    module = _Checked()
    tf.saved_model.save(module, str(tmp_path / "checked"), signatures={"serving_default": module.serve})
    np.savez(tmp_path / "bad.npz", x=np.full((1, 4), -1.0, np.float32))
    proc = cli("trace", tmp_path / "checked", tmp_path / "out", "--inputs", tmp_path / "bad.npz")
    assert_fails(proc, 1, "trace", "TensorFlow failed running the model", "x must be >= 0")
    assert "internal error" not in proc.stderr


def test_bad_usage_exits_2(src: Path, tmp_path: Path) -> None:
    assert_fails(cli("trace", src), 2, "trace", "DST_DIR")
    assert_fails(cli("trace", src, tmp_path / "o", "--batch-size", "0"), 2, "trace", "--batch-size")
    assert_fails(cli("trace", src, tmp_path / "o", "--flags", "--bogus"), 2, "trace", "--bogus")
    assert_fails(cli("bench", src, "--concurrency", "x"), 2, "bench", "--concurrency")
    assert_fails(cli("bench", src, "--concurrency", "1,0"), 2, "bench", "--concurrency")
    proc = cli("frobnicate")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_an_unavailable_backend_is_said_at_start_up(src: Path, tmp_path: Path) -> None:
    """The op library's cache is unusable: the import warning reaches stderr, and xla does the work."""
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    proc = cli("analyze", src, "--json", env={"TFACCEL_CACHE_DIR": str(blocker / "cache")})
    assert proc.returncode == 0, proc.stderr
    assert "tfaccel: the openvino backend is unavailable: the op library's cache folder" in proc.stderr
    assert json.loads(proc.stdout)["candidate_backends"] == ["xla"]


def test_verbose_shows_the_traceback(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    for verbose in (["--verbose", "analyze"], ["analyze", "-v"]):  # before or after the command
        proc = cli(*verbose, tmp_path / "plain")
        assert proc.returncode == 1
        assert "Traceback" in proc.stderr and "SourceError" in proc.stderr


def test_progress_is_drawn_on_a_terminal_only(src: Path, tmp_path: Path) -> None:
    """On a pseudo-terminal the trace shows which subgraph compiles; in a pipe (every test above) not."""
    main, worker = pty.openpty()
    proc = subprocess.Popen(
        [*TFACCEL, "trace", str(src), str(tmp_path / "tty_out"), "--flags", "--backend=xla"],
        stdin=worker,
        stdout=worker,
        stderr=worker,
        env=_env(),
        close_fds=True,
    )
    os.close(worker)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([main], [], [], 1.0)
        if ready:
            try:
                data = os.read(main, 4096)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=60)
    os.close(main)
    text = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, text
    assert "compiling subgraph 1/1: tfaccel_sg_0 on xla (" in text, text
    assert "s] compiling" in text  # the elapsed time leads the line
    assert "tfaccel placement (xla)" in text


def test_trace_overwrite_replaces_dst(src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "again"
    dst.mkdir()
    (dst / "stale.txt").write_text("from an earlier run")
    proc = cli("trace", src, dst, "--overwrite", "--batch-size", "2", "--flags", "--backend=xla")
    assert proc.returncode == 0, proc.stderr
    assert not (dst / "stale.txt").exists() and (dst / "assets.extra" / "tfaccel.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging directory left
    x = np.random.default_rng(4).random((2, 8), dtype=np.float32)
    got = tf.saved_model.load(str(dst)).signatures["serving_default"](features=tf.constant(x))
    want = _reference(src, x)
    assert_close(got["logits"], want["logits"])
    np.testing.assert_array_equal(got["best"].numpy(), want["best"])


def test_tag_selects_the_metagraph(tmp_path: Path) -> None:
    """A SavedModel whose only MetaGraph is tagged 'custom': --tag custom loads it, --tag serve is refused."""
    from tensorflow.core.protobuf import saved_model_pb2

    module = _Checked()
    tagged = tmp_path / "tagged"
    tf.saved_model.save(module, str(tagged), signatures={"serving_default": module.serve})
    proto = saved_model_pb2.SavedModel.FromString((tagged / "saved_model.pb").read_bytes())
    tags = proto.meta_graphs[0].meta_info_def.tags
    del tags[:]
    tags.append("custom")
    (tagged / "saved_model.pb").write_bytes(proto.SerializeToString())
    np.savez(tmp_path / "x.npz", x=np.array([[0.0, 1.0, 4.0, 9.0]], np.float32))
    dst = tmp_path / "out"
    proc = cli("trace", tagged, dst, "--tag", "custom", "--inputs", tmp_path / "x.npz", "--json")
    assert proc.returncode == 0, proc.stderr
    got = tf.saved_model.load(str(dst)).signatures["serving_default"](x=tf.constant([[0.0, 1.0, 4.0, 9.0]]))
    np.testing.assert_array_equal(got["y"].numpy(), [[0.0, 1.0, 2.0, 3.0]])
    refused = cli("analyze", tagged, "--tag", "serve")
    assert_fails(refused, 1, "analyze", "['serve']", "['custom']")


NATIVE = [sys.executable, "-m", "tfaccel.native"]


def test_python_m_tfaccel_native_prints_the_library_or_why_not(tmp_path: Path) -> None:
    proc = subprocess.run(NATIVE, capture_output=True, text=True, timeout=600, env=_env())
    assert proc.returncode == 0, proc.stderr
    library = Path(proc.stdout.strip())
    assert library.name == "libtfaccel_openvino.so" and library.is_file()
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    env = _env(TFACCEL_CACHE_DIR=str(blocker / "cache"))
    proc = subprocess.run(NATIVE, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 1 and proc.stdout == ""
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith("the OpenVINO op library is unavailable: the op library's cache folder is not writable")
    ), proc.stderr


@pytest.mark.slow
def test_concurrent_first_builds_share_one_build(tmp_path: Path) -> None:
    """Two processes building into an empty cache at once: one compiles, the other waits on the lock and
    loads the same library (the first import on a machine, with several server or pytest processes).
    """
    env = _env(TFACCEL_CACHE_DIR=str(tmp_path / "cache"), TF_CPP_MIN_LOG_LEVEL="2")
    procs = [
        subprocess.Popen(NATIVE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=1200) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    paths = {out.strip() for out, _ in outputs}
    assert len(paths) == 1 and Path(paths.pop()).is_file()
    builds = sum(err.count("building the OpenVINO op library") for _, err in outputs)
    assert builds == 1, outputs
    assert len(list((tmp_path / "cache").glob("*/libtfaccel_openvino.so"))) == 1


DEMO = installed_script("tfaccel-demo", ["-m", "tfaccel.demo"])


def test_demo_entry_point_is_installed_and_checks_its_arguments() -> None:
    proc = subprocess.run([*DEMO, "--model", "nope"], capture_output=True, text=True, timeout=300, env=_env())
    assert proc.returncode == 2 and "invalid choice: 'nope'" in proc.stderr, proc.stderr
    assert "usage: python -m tfaccel.demo [-h] [--model" in proc.stderr


#: what TensorFlow's C++ start-up and trace-time logging looks like on stderr
CHATTER = ("I0000", "W0000", "E0000", "absl::InitializeLog", "cuInit", "cpu_feature_guard")


def test_the_readme_demo_command_keeps_tensorflows_chatter_out() -> None:
    """`python -m tfaccel.demo` (the README's first command) imports the package before the demo's main runs:
    the package defers the op library for it, and the demo holds TensorFlow's stderr back."""
    proc = subprocess.run(
        [sys.executable, "-m", "tfaccel.demo", "--model", "bert", "--runs", "2", "--placement", "static"],
        capture_output=True,
        text=True,
        timeout=900,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stderr
    assert "tfaccel placement" in proc.stdout and "speed-up" in proc.stdout, proc.stdout
    assert not [c for c in CHATTER if c in proc.stderr], proc.stderr


def test_python_dash_m_tfaccel_keeps_tensorflows_chatter_out_unless_verbose(src: Path) -> None:
    """`python -m tfaccel` imports the package before the command parses its arguments: the package defers
    the op library for it (as for the `tfaccel` command), so TensorFlow's start-up lines stay held."""
    quiet = subprocess.run(
        [sys.executable, "-m", "tfaccel", "analyze", str(src)],
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(),
    )
    assert quiet.returncode == 0, quiet.stderr
    assert "tfaccel analyze_model" in quiet.stdout, quiet.stdout
    assert not [c for c in CHATTER if c in quiet.stderr], quiet.stderr
    env = _env()
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    loud = subprocess.run(
        [sys.executable, "-m", "tfaccel", "analyze", str(src), "--verbose"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert loud.returncode == 0, loud.stderr
    assert [c for c in CHATTER if c in loud.stderr], loud.stderr  # --verbose hides nothing


@pytest.mark.slow
def test_demo_traces_an_example_and_reports_error_and_speed() -> None:
    proc = subprocess.run(
        [*DEMO, "--model", "mobilenetv2", "--runs", "3", "--placement", "static"],
        capture_output=True,
        text=True,
        timeout=1200,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "traced mobilenetv2 (batch 1) in " in out and "tfaccel placement (openvino)" in out
    error = float(out.split("max relative error vs original: ")[1].split()[0])
    assert error <= 1e-5
    assert "median latency over 3 interleaved runs: TensorFlow " in out and "speed-up" in out
    assert not [c for c in CHATTER if c in proc.stderr], proc.stderr


def test_trace_quantizes_with_stacked_calibration_samples(src: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(19)
    np.savez(tmp_path / "cal.npz", features=rng.random((10, 1, 8), dtype=np.float32))  # batch 1, as traced
    dst = tmp_path / "int8"
    flags = "--quantize=int8 --quantize-tolerance=1"  # random weights: accuracy is not the point here
    proc = cli("trace", src, dst, "--calibration-inputs", tmp_path / "cal.npz", "--flags", flags)
    assert proc.returncode == 0, proc.stderr
    assert "note: --quantize=int8: tfaccel_sg_0 runs int8" in proc.stdout, proc.stdout
    loaded = tf.saved_model.load(str(dst)).signatures["serving_default"]
    x = rng.random((1, 8), dtype=np.float32)
    assert loaded(features=tf.constant(x))["logits"].shape == (1, 3)
    np.savez(tmp_path / "bad.npz", features=rng.random((3, 1, 8), dtype=np.float32), other=np.zeros(3))
    bad = cli(
        "trace",
        src,
        tmp_path / "x",
        "--calibration-inputs",
        tmp_path / "bad.npz",
        "--flags",
        "--quantize=int8",
    )
    assert_fails(bad, 1, "trace", "holds ['features', 'other']", "the signature takes ['features']")
    missing = cli("trace", src, tmp_path / "y", "--flags", "--quantize=int8")
    assert_fails(missing, 2, "trace", "needs calibration data")


def test_show_and_run_work_on_openvino_models_like_saved_model_cli(src: Path, tmp_path: Path) -> None:
    """saved_model_cli fails on a model holding tfaccel's op (it never registers it): `tfaccel show` and
    `tfaccel run` are its two verbs for every model, traced or not."""
    dst = tmp_path / "traced"
    assert cli("trace", src, dst, "--flags", "--backend=openvino").returncode == 0
    shown = cli("show", dst)
    assert shown.returncode == 0, shown.stderr
    assert (
        "signature_def['serving_default']:" in shown.stdout and "features: float32 [None, 8]" in shown.stdout
    )
    assert "traced by tfaccel: " in shown.stdout and "(openvino); made with " in shown.stdout, shown.stdout
    data = json.loads(cli("show", dst, "--json").stdout)
    assert data["signatures"]["serving_default"]["inputs"]["features"] == {
        "dtype": "float32",
        "shape": [None, 8],
    }
    assert data["tfaccel"]["backend"] == "openvino" and data["tfaccel"]["subgraphs"] == 1
    plain = cli("show", src)
    assert plain.returncode == 0 and "not traced by tfaccel" in plain.stdout
    assert "signature_def['pair']:" in plain.stdout

    x = np.random.default_rng(5).random((3, 8), dtype=np.float32)
    np.savez(tmp_path / "x.npz", features=x)
    ran = cli("run", dst, "--inputs", tmp_path / "x.npz", "--output", tmp_path / "y.npz")
    assert ran.returncode == 0, ran.stderr
    assert "logits: float32 [3, 3]" in ran.stdout, ran.stdout
    got = np.load(tmp_path / "y.npz")
    want = _reference(src, x)
    assert_close(got["logits"], want["logits"])
    np.testing.assert_array_equal(got["best"], want["best"])
    np.savez(tmp_path / "bad.npz", nope=x)
    assert_fails(cli("run", dst, "--inputs", tmp_path / "bad.npz"), 1, "run", "nope")
    # a traced model whose files changed since it was saved is refused, as tfaccel.load refuses it
    graph = dst / "saved_model.pb"
    graph.write_bytes(graph.read_bytes() + b"\0")
    for verb in ("run", "bench"):
        assert_fails(cli(verb, dst, "--inputs", tmp_path / "x.npz"), 1, verb, "is not the file saved")
    assert_fails(cli("bench", src, "--duration", "inf"), 2, "bench", "finite")
