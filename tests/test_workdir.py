"""--workdir: the artifacts are there, readable, and reproduce one subgraph offline."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import tfaccel
from conftest import assert_close
from tfaccel.compiler.report_html import subgraph_colour

W = tf.constant(np.random.default_rng(0).standard_normal((4, 4)), tf.float32)


def f(x):
    h = tf.nn.relu(tf.matmul(x, W, name="mm1") + 1.0, name="relu1")
    back = tf.strings.to_number(tf.strings.as_string(h), name="from_text")
    return {"y": tf.tanh(tf.matmul(back, W, name="mm2") * 3.0, name="out"), "h": h}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("wd") / "artifacts"
    x = tf.random.uniform([2, 4], seed=1)
    tfaccel.trace(f, x, workdir=str(path), backend="xla")  # openvino's artifacts: test_openvino.py
    return path, x


def test_every_artifact_is_written(workdir):
    path, _ = workdir
    for name in ("frozen", "optimized", "partitioned"):
        assert (path / f"{name}.pb").stat().st_size > 0
        assert "node {" in (path / f"{name}.pbtxt").read_text()
    for name in (
        "options.json",
        "placement.json",
        "placement.html",
        "golden_inputs.npz",
        "golden_outputs.npz",
    ):
        assert (path / name).exists(), name
    for sub in ("tfaccel_sg_0", "tfaccel_sg_1"):
        folder = path / "subgraphs" / sub
        for name in (
            "graph.pb",
            "graph.pbtxt",
            "io.json",
            "golden_inputs.npz",
            "golden_outputs.npz",
            "hlo.txt",
            "stablehlo.mlir",
            "compile_options.json",
            "compile.log",
        ):
            assert (folder / name).stat().st_size > 0, f"{sub}/{name}"
        assert (folder / "hlo.txt").read_text().startswith("HloModule")
        assert "func.func @main" in (folder / "stablehlo.mlir").read_text()
        assert (
            json.loads((folder / "compile_options.json").read_text())["function_attr"]
            == "_XlaMustCompile=true"
        )


def test_placement_report_lists_every_node_with_its_reason(workdir):
    path, _ = workdir
    report = json.loads((path / "placement.json").read_text())
    rows = {r["node"]: r for r in report["nodes"]}
    assert rows["mm1"]["subgraph"] == "tfaccel_sg_0" and rows["mm2"]["subgraph"] == "tfaccel_sg_1"
    assert rows["from_text"]["placement"] == "runtime" and rows["from_text"]["reason"] == "dtype"
    assert json.loads((path / "options.json").read_text())["workdir"] == str(path)
    page = (path / "placement.html").read_text()
    for index, name in enumerate(["tfaccel_sg_0", "tfaccel_sg_1"]):  # labelled, each in its own colour
        assert f'<span class="label" style="background:{subgraph_colour(index)}">{name}</span>' in page
    assert subgraph_colour(0) != subgraph_colour(1)
    assert "Kept on TensorFlow" in page and "from_text" in page  # the reason is on the page, no hovering
    assert rows["from_text"]["detail"] in page


def test_one_subgraph_is_reproduced_from_its_saved_graphdef(workdir):
    path, x = workdir
    folder = path / "subgraphs" / "tfaccel_sg_1"
    io = json.loads((folder / "io.json").read_text())
    inputs, golden = np.load(folder / "golden_inputs.npz"), np.load(folder / "golden_outputs.npz")
    graph_def = tf.compat.v1.GraphDef.FromString((folder / "graph.pb").read_bytes())
    fn = tf.compat.v1.wrap_function(lambda: tf.graph_util.import_graph_def(graph_def, name=""), []).prune(
        [f"{k}:0" for k in io["inputs"]], [v for v in io["outputs"].values()]
    )
    outputs = fn(*[tf.constant(inputs[k]) for k in io["inputs"]])
    for k, out in zip(io["outputs"], outputs, strict=True):
        assert_close(out, golden[k])
    # and the whole model's golden outputs are the original function's
    model_golden = np.load(path / "golden_outputs.npz")
    assert_close(model_golden["y"], f(x)["y"], atol=1e-4)


def test_without_workdir_nothing_is_left_on_disk(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    traced = tfaccel.trace(f, tf.ones([2, 4]))
    assert os.listdir(tmp_path) == []
    x = tf.random.uniform([2, 4], seed=3)
    for key, value in f(x).items():
        assert_close(traced(x)[key], value, atol=1e-4)  # "h" goes through text: 6 significant digits


def test_workdir_with_pipeline_stages(tmp_path):
    x = tf.random.uniform([4, 4], seed=2)
    traced = tfaccel.trace(f, x, workdir=str(tmp_path / "art"), neuroncore_pipeline_cores=2)
    for key, value in f(x).items():
        assert_close(traced(x)[key], value, atol=1e-4)
    placed = json.loads((tmp_path / "art" / "placement.json").read_text())
    assert placed["backend"] == "openvino"
    assert {s["backend"] for s in placed["subgraphs"]} == {"openvino"}
    subgraphs = sorted(p.name for p in (tmp_path / "art" / "subgraphs").iterdir())
    assert subgraphs == [
        "tfaccel_sg_0_stage0",
        "tfaccel_sg_0_stage1",
        "tfaccel_sg_1_stage0",
        "tfaccel_sg_1_stage1",
    ]
    golden = np.load(tmp_path / "art" / "golden_inputs.npz")
    assert golden["x"].shape == (2, 4)  # the micro-batch the stages were compiled for


def test_a_failing_trace_still_leaves_the_captured_graphs(tmp_path):
    with pytest.raises(tfaccel.TraceError, match="raised RuntimeError on node"):
        tfaccel.trace(
            f,
            tf.ones([2, 4]),
            workdir=str(tmp_path / "art"),
            subgraph_builder_function=lambda node: (_ for _ in ()).throw(RuntimeError("boom")),
        )
    assert (tmp_path / "art" / "optimized.pb").exists() and (tmp_path / "art" / "options.json").exists()
    assert not (tmp_path / "art" / "partitioned.pb").exists()


def test_a_rejected_subgraph_leaves_its_graph_inputs_full_error_and_a_suggested_fix(tmp_path):
    """Issue 20: a subgraph the compiler refused gets its own folder (graph, inputs, the compiler's whole
    output), and the report's sentence says where it is and what to change."""
    w = tf.constant(np.random.default_rng(3).standard_normal((4, 4)), tf.float32)

    def g(x, axis):
        r = tf.reverse(x, axis, name="rev")  # XLA needs `axis` as a compile-time constant
        return tf.nn.relu(tf.matmul(r, w, name="mm") + 1.0, name="act")

    x, axis = tf.random.uniform([4, 4]), tf.constant([0])
    model = tfaccel.trace(g, (x, axis), workdir=str(tmp_path), backend="xla")
    (sentence,) = [f for f in model.placement_report.fallbacks if "xla failed" in f]
    assert "suggested fix: XLA needs this value while it compiles" in sentence, sentence
    (folder,) = sorted((tmp_path / "failed").iterdir())
    assert folder.name.startswith("01-tfaccel_sg_") and folder.name.endswith("-xla")
    assert f"{tmp_path}/failed/{folder.name}/error.log" in sentence
    log = (folder / "error.log").read_text()
    assert "suggested fix:" in log and "must be a compile-time constant" in log
    full = log.split("the compiler's full output:\n", 1)[1]
    assert len(full.strip().splitlines()) > 1  # the whole output, not its first line
    io = json.loads((folder / "io.json").read_text())
    assert "rev" in io["nodes"] and io["backend"] == "xla"
    inputs = np.load(folder / "golden_inputs.npz")
    assert sorted(inputs.files) == sorted(io["inputs"])
    assert (folder / "graph.pb").is_file() and (folder / "graph.pbtxt").is_file()
    assert_close(model(x, axis), g(x, axis))


def test_without_workdir_the_sentence_says_how_to_keep_the_error():
    def g(x, axis):
        return tf.reverse(x, axis) * 2.0

    model = tfaccel.trace(g, (tf.ones([2, 2]), tf.constant([0])), backend="xla")
    (sentence,) = [f for f in model.placement_report.fallbacks if "xla failed" in f]
    assert "--workdir keeps the subgraph and the compiler's full output" in sentence
