"""Several backends in one model, measured placement and analyze_model, end to end on real compilers.

The mixed model computes in float32 (which OpenVINO takes) around a float64 stretch (which OpenVINO cuts,
because its CPU plugin computes float64 as float32, and XLA compiles exactly). Its float32 ops cannot all
be one OpenVINO subgraph: the second half reads the float64 stretch, which reads the first half, so one
subgraph would be a cycle through XLA. The expected partitions are stated node by node.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import tfaccel
from conftest import FRESH_IMPORT, SRC, assert_close, run_python, skip_if_busy
from tfaccel.compiler.placement import Reason
from tfaccel.compiler.profiling import MIN_SAMPLES
from tfaccel.compiler.selection import Verdict, choose, compare

RNG = np.random.default_rng(5)
W1 = tf.constant(RNG.standard_normal((8, 8)), tf.float32)
W2 = tf.constant(RNG.standard_normal((8, 4)), tf.float32)


@tf.function
def mixed(x):
    h = tf.nn.relu(tf.matmul(x, W1, name="mm1") + 1.0)
    d = tf.cast(h, tf.float64, name="to64")
    s = tf.reduce_sum(d * d + 1.0, axis=1, keepdims=True, name="sum64")
    y = tf.cast(s, tf.float32, name="to32")
    return tf.matmul(h * y, W2, name="mm2") + 1.0


def _placement(model):
    """node -> (backend, subgraph) for every node in a subgraph, from the report."""
    report = model.placement_report
    backend = {s.name: s.backend for s in report.subgraphs}
    return {r.node: (backend[r.subgraph], r.subgraph) for r in report.decisions if r.subgraph}


@pytest.fixture(scope="module")
def static_mixed():
    x = tf.random.uniform([2, 8], seed=1)
    return x, tfaccel.trace(mixed, x, placement="static")


def test_static_placement_puts_each_node_on_the_first_backend_that_takes_it(static_mixed):
    x, traced = static_mixed
    placed = _placement(traced)
    by_op = {}
    for node, (backend, _) in placed.items():
        by_op.setdefault(backend, set()).add(node.split("/")[-1])
    assert {"mm1", "Relu", "mm2"} <= by_op["openvino"]
    assert {"to64", "sum64", "to32"} <= by_op["xla"]
    # the float64 stretch sits between the two halves, so the float32 ops form two subgraphs, not one
    ov_subgraphs = {sg for backend, sg in placed.values() if backend == "openvino"}
    assert len(ov_subgraphs) == 2
    assert placed[_node(traced, "mm1")][1] != placed[_node(traced, "mm2")][1]
    assert traced.placement_report.backend == "openvino+xla"
    rows = {r.node: r for r in traced.placement_report.decisions}
    assert "openvino" in rows[_node(traced, "to64")].detail  # says why it went to xla, not openvino
    assert traced.on_neuron_ratio == 1.0
    assert_close(traced(x), mixed(x))


def _node(traced, suffix):
    (name,) = [r.node for r in traced.placement_report.decisions if r.node.split("/")[-1] == suffix]
    return name


def test_a_mixed_model_saves_and_reloads_in_a_fresh_process(static_mixed, tmp_path):
    x, traced = static_mixed
    traced.save(str(tmp_path / "m"))
    np.save(tmp_path / "x.npy", x.numpy())
    np.save(tmp_path / "y.npy", mixed(x).numpy())  # the original's answers, not the traced model's
    code = f"""
        import sys, numpy as np, tensorflow as tf
        {FRESH_IMPORT["openvino"]}
        m = tfaccel.load("m")
        assert m.on_neuron_ratio == 1.0, m.on_neuron_ratio
        assert sorted({{s.backend for s in m.placement_report.subgraphs}}) == ["openvino", "xla"]
        np.testing.assert_allclose(m(np.load("x.npy")), np.load("y.npy"), rtol=1e-5, atol=1e-5)
        print("reloaded")
    """
    assert run_python(code, cwd=tmp_path, env={"PYTHONPATH": SRC}).strip().endswith("reloaded")


def test_dynamic_batch_on_a_mixed_candidate_set_keeps_xlas_nodes_compiled_and_says_why_it_runs_chunks():
    traced = tfaccel.trace(mixed, tf.random.uniform([2, 8]), placement="static", dynamic_batch_size=True)
    for n in (1, 3, 7):
        x = tf.random.uniform([n, 8], seed=n)
        assert_close(traced(x), mixed(x))
    # xla compiles static shapes: in one graph for any batch the float64 stretch would stay on TF, so the
    # model runs chunks of the traced batch and the stretch stays compiled on xla; the plan names the node
    plan = traced.tfaccel_executable.batch_plan
    assert plan.any_batch and plan.mode.value == "chunked", plan
    assert "needs xla, which compiles static shapes only: any batch runs as chunks of 2" in plan.why
    assert traced.placement_report.batch == plan.describe()
    rows = {r.node: r for r in traced.placement_report.decisions}
    assert rows[_node(traced, "to64")].subgraph is not None
    assert {s.backend for s in traced.placement_report.subgraphs} == {"openvino", "xla"}


def test_profiled_placement_records_every_measurement_and_follows_the_rule(caplog):
    x = tf.random.uniform([2, 8], seed=2)
    traced = tfaccel.trace(mixed, x, placement="profile")
    report = traced.placement_report
    skip_if_busy(report)
    assert report.placement == "profile" and report.profile_seconds > 0
    assert len(report.measurements) == 3  # one per statically placed subgraph
    for m in report.measurements:
        assert m.times_ms["tf"] > 0 and m.runs >= MIN_SAMPLES
        backends = {k: v for k, v in m.estimates.items() if k != "tf"}
        assert backends, m  # every candidate ran on at least the backend that placed it
        assert set(backends) | set(m.failed) == {"openvino", "xla"}  # timed, or why not
        assert (m.chosen, m.why) == choose(m.estimates["tf"], backends, ["openvino", "xla"])
    # the float64 stretch can only be measured on xla: openvino does not take its nodes
    (f64,) = [m for m in report.measurements if "openvino" in m.failed]
    assert "does not take node" in f64.failed["openvino"]
    # each node ends where its candidate's choice sent it (merging can only join same-backend neighbours)
    rows = {r.node: r for r in report.decisions}
    placed = _placement(traced)
    for node, row in rows.items():
        if row.reason is Reason.MEASURED:
            assert node in placed
        if row.reason is Reason.SLOWER:
            assert node not in placed and "speed decision" in row.detail
    assert_close(traced(x), mixed(x))
    lines: list[str] = []
    traced.summary(print_fn=lines.append)
    assert any(line.startswith("  measured placement (") for line in lines)


def test_profiled_placement_tries_backends_in_order_until_one_clearly_beats_tf():
    model = tf.keras.Sequential([tf.keras.Input((64,)), tf.keras.layers.Dense(256, activation="relu")])
    model.add(tf.keras.layers.Dense(64))
    x = tf.random.uniform([16, 64], seed=3)
    traced = tfaccel.trace(model, x, placement="profile")
    skip_if_busy(traced.placement_report)
    (m,) = traced.placement_report.measurements
    assert {"tf", "openvino"} <= set(m.times_ms), m  # the preferred backend is always timed
    if "xla" in m.failed and "unknown" in m.failed["xla"]:  # the graph takes any batch: xla cannot compile it
        assert "output 0 has an unknown (data-dependent) shape, which xla cannot compile" in m.failed["xla"]
        assert traced.tfaccel_executable.batch_plan.mode.value == "any"
    elif "xla" in m.failed:  # not timed: only because openvino already clearly beat TF
        assert m.failed["xla"].startswith("not timed: openvino (preferred) keeps it and ran it at least as")
        tf_time, openvino = m.estimates["tf"], m.estimates["openvino"]
        assert compare(tf_time, openvino) is Verdict.KEEP and openvino.ms <= tf_time.ms
    else:
        assert "xla" in m.times_ms
    assert_close(traced(x), model(x))


def test_placement_flag_is_checked():
    with pytest.raises(tfaccel.OptionsError, match=r"--placement=fastest must be one of profile, static"):
        tfaccel.trace(mixed, tf.ones([1, 8]), placement="fastest")


def test_subgraph_builder_function_is_not_second_guessed_by_profiling():
    traced = tfaccel.trace(mixed, tf.ones([2, 8]), lambda node: node.op == "MatMul", placement="profile")
    report = traced.placement_report
    assert report.placement == "static" and report.measurements == ()
    assert any("subgraph_builder_function decides the placement" in f for f in report.fallbacks)
    assert {r.op for r in report.decisions if r.subgraph} == {"MatMul"}
    x = tf.random.uniform([2, 8], seed=4)
    assert_close(traced(x), mixed(x))


# -- analyze_model ------------------------------------------------------------------------------------------
def test_analyze_model_returns_the_reference_keys_and_counts_like_the_ratio():
    model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(3, activation="relu")])
    lines: list[str] = []
    results = tfaccel.analyze_model(model, tf.random.uniform([1, 3]), print_fn=lines.append)
    reference_keys = {
        "percent_supported",
        "supported_count",
        "total_count",
        "supported_operators",
        "unsupported_operators",
        "operators",
        "operator_count",
    }
    assert reference_keys <= set(results)
    traced = tfaccel.trace(model, tf.random.uniform([1, 3]), placement="static")
    assert results["total_count"] == traced.placement_report.total_ops
    assert results["percent_supported"] == 100.0 and results["unsupported_operators"] == []
    assert results["operator_count"] == {op: 1 for op in results["operators"]}
    assert lines[0].startswith("tfaccel analyze_model (openvino+xla): ")


def test_analyze_model_names_each_unsupported_op_with_its_reason_and_nodes():
    @tf.function
    def f(x):
        label = tf.strings.as_string(x, name="label")
        return mixed(x), label

    results = tfaccel.analyze_model(f, tf.ones([2, 8]), print_fn=None)
    assert results["unsupported_operators"] == ["AsString"]
    entry = results["unsupported"]["AsString"]
    assert entry["nodes"][0].endswith("label") and "string" in entry["reasons"][0]
    assert results["backends"]["Cast"] == ["xla"] and results["backends"]["MatMul"] == ["openvino"]
    assert results["supported_count"] == results["total_count"] - 1
    assert results["percent_supported"] == pytest.approx(100 * (1 - 1 / results["total_count"]))


def test_analyze_model_of_a_graph_without_compute_does_not_divide_by_zero():
    lines: list[str] = []
    results = tfaccel.analyze_model(lambda x: tf.identity(x), tf.ones([2]), print_fn=lines.append)
    assert results["total_count"] == 0 and results["percent_supported"] == 0.0
    assert "no op that computes" in lines[1]


def test_analyze_model_reports_bad_input_like_trace():
    with pytest.raises(tfaccel.CaptureTypeError):
        tfaccel.analyze_model(mixed, "not a tensor")


def test_analyze_model_ignores_quantize_from_the_environment_and_says_so(monkeypatch):
    """Code that sets ``NEURON_CC_FLAGS=--quantize=int8`` for its traces can still analyze a model: placement
    does not depend on quantizing, so no calibration data is asked for."""
    monkeypatch.setenv("NEURON_CC_FLAGS", "--quantize=int8")
    results = tfaccel.analyze_model(mixed, tf.ones([2, 8]), print_fn=None)
    assert results["supported_count"] > 0
    (note,) = [n for n in results["notes"] if "--quantize" in n]
    assert note.startswith("--quantize=int8 (NEURON_CC_FLAGS) is ignored: analyze_model places"), note
    with pytest.raises(tfaccel.OptionsError, match="calibration"):  # trace still needs the data
        tfaccel.trace(mixed, tf.ones([2, 8]))
