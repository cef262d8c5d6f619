"""Golden partitions: small models with a forced boundary, and the subgraphs stated node by node.

Node names are the ones the user gave the ops (grappler keeps them), so these tests say exactly which
nodes run compiled, in which subgraph, and why the others stayed on TensorFlow.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import tfaccel
from conftest import STATIC, assert_close
from tfaccel.compiler.placement import Placement, Reason

W = tf.constant(np.random.default_rng(0).standard_normal((4, 4)), tf.float32)


@pytest.fixture(autouse=True)
def _xla_backend(monkeypatch):
    """These goldens state XLA's placement (its support table, its depthwise rule, its artifacts);
    the openvino backend's are in test_openvino.py."""
    monkeypatch.setenv("TFACCEL_CC_FLAGS", f"--backend=xla {STATIC}")


def _subgraphs(model):
    return {s.name: list(s.nodes) for s in model.placement_report.subgraphs}


def _rows(model):
    return {r.node: r for r in model.placement_report.decisions}


def test_string_ops_split_the_graph_into_two_subgraphs():
    def f(x):
        h = tf.nn.relu(tf.matmul(x, W, name="mm1") + 1.0, name="relu1")
        text = tf.strings.as_string(h, name="to_text")
        back = tf.strings.to_number(text, name="from_text")
        return tf.tanh(tf.matmul(back, W, name="mm2") * 3.0, name="out")

    x = tf.random.uniform([2, 4])
    model = tfaccel.trace(f, x)
    assert _subgraphs(model) == {
        "tfaccel_sg_0": ["mm1", "add", "relu1"],
        "tfaccel_sg_1": ["mm2", "mul", "out", "Identity"],
    }
    rows = _rows(model)
    assert rows["to_text"].placement is Placement.RUNTIME and rows["to_text"].reason is Reason.DTYPE
    assert rows["from_text"].reason is Reason.DTYPE  # reads a string: it could never be compiled
    assert rows["from_text"].detail == "its input dtype string cannot enter a compiled subgraph"
    assert model.on_neuron_ratio == 6 / 8
    assert_close(model(x), f(x), atol=1e-4)  # the text round trip keeps ~6 significant digits


def test_callback_splits_where_the_user_says():
    def f(x):
        a = tf.nn.relu(tf.matmul(x, W, name="mm1"), name="relu1")
        b = tf.sigmoid(a, name="gate")
        return tf.matmul(b, W, name="mm2")

    def only_matmul_and_relu(node):
        return node.op in ("MatMul", "Relu")

    x = tf.random.uniform([2, 4])
    model = tfaccel.trace(f, x, subgraph_builder_function=only_matmul_and_relu)
    assert _subgraphs(model) == {"tfaccel_sg_0": ["mm1", "relu1"], "tfaccel_sg_1": ["mm2"]}
    assert _rows(model)["gate"].reason is Reason.CALLBACK_FALSE
    assert_close(model(x), f(x))


def test_callback_never_creates_a_cycle():
    # a -> b -> c and a -> c: with a and c on the accelerator and b on TF, {a, c} would be a cycle
    def f(x):
        a = tf.matmul(x, W, name="a")
        b = tf.sigmoid(a, name="b")
        return tf.add(a, b, name="c")

    def not_b(node):
        return node.name != "b" and node.op not in ("Placeholder", "Const")

    x = tf.random.uniform([2, 4])
    model = tfaccel.trace(f, x, subgraph_builder_function=not_b)
    subgraphs = _subgraphs(model)
    assert sorted(subgraphs.values()) == [["a"], ["c", "Identity"]]
    assert_close(model(x), f(x))


def test_callback_errors_name_the_node():
    import pytest

    with pytest.raises(TypeError, match=r"must return True or False; it returned 'yes' .* node 'mul'"):
        tfaccel.trace(lambda x: x * 2.0, tf.ones([2]), subgraph_builder_function=lambda node: "yes")
    with pytest.raises(tfaccel.TraceError, match="raised KeyError on node"):
        tfaccel.trace(lambda x: x * 2.0, tf.ones([2]), subgraph_builder_function=lambda node: {}[node.op])


def test_callback_receives_nodedefs_of_the_optimized_graph():
    seen = []

    def record(node):
        seen.append((type(node).__name__, node.name, node.op))
        return True

    tfaccel.trace(
        lambda x: tf.nn.relu(tf.matmul(x, W, name="mm"), name="act"),
        tf.ones([2, 4]),
        subgraph_builder_function=record,
    )
    assert ("NodeDef", "mm", "MatMul") in seen and ("NodeDef", "act", "Relu") in seen


def test_compile_failure_falls_back_one_node_and_logs(caplog):
    def g(x, axis):
        r = tf.reverse(x, axis, name="rev")  # XLA needs `axis` as a compile-time constant
        return tf.nn.relu(tf.matmul(r, W, name="mm") + 1.0, name="act")

    x, axis = tf.random.uniform([4, 4]), tf.constant([0])
    with caplog.at_level(logging.WARNING, logger="tfaccel"):
        model = tfaccel.trace(g, (x, axis))
    assert _subgraphs(model) == {"tfaccel_sg_0": ["mm", "add", "act", "Identity"]}
    row = _rows(model)["rev"]
    assert row.reason is Reason.COMPILE_FAILURE
    assert "must be a compile-time constant" in row.detail
    assert "node 'rev' moved to TF" in caplog.text
    assert model.placement_report.fallbacks
    for value in ([0], [1]):
        assert_close(model(x, tf.constant(value)), g(x, tf.constant(value)))


def test_depthwise_convolution_stays_on_tf_with_the_reason():
    kernel = tf.constant(np.random.default_rng(1).standard_normal((3, 3, 4, 1)), tf.float32)
    pointwise = tf.constant(np.random.default_rng(2).standard_normal((1, 1, 4, 8)), tf.float32)

    def f(x):
        y = tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "SAME", name="dw")
        y = tf.nn.relu6(y, name="act1")
        y = tf.nn.conv2d(y, pointwise, 1, "SAME", name="pw")
        return tf.nn.relu6(y + 1.0, name="act2")

    x = tf.random.uniform([1, 8, 8, 4])
    model = tfaccel.trace(f, x)
    row = _rows(model)["dw"]
    assert row.placement is Placement.RUNTIME and row.reason is Reason.SLOWER and "depthwise" in row.detail
    assert _subgraphs(model) == {"tfaccel_sg_0": ["act1", "pw", "add", "act2", "Identity"]}
    assert_close(model(x), f(x))


def test_callback_may_choose_what_automatic_placement_avoids():
    kernel = tf.constant(np.random.default_rng(1).standard_normal((3, 3, 4, 1)), tf.float32)

    def f(x):
        return tf.nn.relu(tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "SAME", name="dw"), name="act")

    x = tf.random.uniform([1, 8, 8, 4])
    model = tfaccel.trace(f, x, subgraph_builder_function=lambda node: node.op == "DepthwiseConv2dNative")
    assert _subgraphs(model) == {"tfaccel_sg_0": ["dw"]}
    assert _rows(model)["dw"].reason is Reason.CALLBACK_TRUE
    assert_close(model(x), f(x))


def test_unknown_shape_stays_on_tf():
    def f(x):
        kept = tf.boolean_mask(x, x > 0.5, name="keep")  # data-dependent length
        return tf.reduce_sum(tf.exp(kept) * 2.0)

    x = tf.random.uniform([16])
    model = tfaccel.trace(f, x)
    reasons = {r.op: r.reason for r in model.placement_report.decisions}
    assert reasons["Where"] is Reason.UNKNOWN_SHAPE
    assert_close(model(x), f(x))


def test_same_model_gives_the_same_partitioned_graph_bytes():
    def f(x):
        h = tf.nn.relu(tf.matmul(x, W, name="mm1") + 1.0, name="relu1")
        text = tf.strings.as_string(h)
        return tf.matmul(tf.strings.to_number(text), W, name="mm2") * 2.0

    first = tfaccel.trace(f, tf.ones([2, 4])).tfaccel_executable.graph_def
    second = tfaccel.trace(f, tf.ones([2, 4])).tfaccel_executable.graph_def
    assert first.SerializeToString(deterministic=True) == second.SerializeToString(deterministic=True)


def test_fallback_reuses_compiled_subgraphs_that_were_only_renumbered(monkeypatch):
    from tfaccel.backends.xla import XlaBackend

    calls = []
    original = XlaBackend.compile

    def counting(self, subgraph, artifacts=False):
        calls.append(list(subgraph.cluster.nodes))
        return original(self, subgraph, artifacts)

    monkeypatch.setattr(XlaBackend, "compile", counting)

    def g(x, axis):
        r = tf.nn.relu(tf.reverse(x, axis, name="rev"), name="first")  # fails, then too small
        back = tf.strings.to_number(tf.strings.as_string(r))
        return tf.tanh(tf.matmul(back, W, name="mm") + 1.0, name="second")

    x, axis = tf.random.uniform([4, 4]), tf.constant([0])
    model = tfaccel.trace(g, (x, axis), min_segment_size=2)  # (1, the default, would compile relu alone)
    assert _subgraphs(model) == {"tfaccel_sg_0": ["mm", "add", "second", "Identity"]}
    assert len(calls) == 2  # the first subgraph (which failed) and the second, compiled once
    assert_close(model(x, axis), g(x, axis), atol=1e-4)


def test_xla_subgraphs_are_compiled_by_xla_when_the_saved_model_runs(tmp_path):
    """The call node itself must carry _XlaMustCompile: with the mark on the function alone, TensorFlow ran
    the subgraph op by op (no error, no XLA: 3x slower on the LSTM model). XLA logs its first compile in
    the process, which a fresh process loading the saved model must show.
    """

    def f(x):
        return tf.tanh(tf.matmul(x, W, name="mm") + 1.0, name="out")

    model = tfaccel.trace(f, tf.ones([2, 4]))
    calls = [n for n in model.tfaccel_executable.graph_def.node if n.name.startswith("tfaccel_sg_")]
    assert calls and all(n.attr["_XlaMustCompile"].b for n in calls)
    model.save(str(tmp_path / "m"))
    code = (
        "import tensorflow as tf\n"
        "m = tf.saved_model.load('m')\n"
        "print(m.signatures['serving_default'](**{m.signatures['serving_default'].structured_input_signature[1]"
        ".popitem()[0]: tf.ones([2, 4])}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Compiled cluster using XLA!" in proc.stderr
