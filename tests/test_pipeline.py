"""--neuroncore-pipeline-cores=N: stages of balanced cost, micro-batches in flight, same answers.

Micro-batches are observed, not assumed: a probe (a ``tf.py_function``, which stays on TF between two
compiled subgraphs) records the rows of every call it sees, and the overlap is read off the traced graph
(the chunk loop's ``parallel_iterations`` and each stage a separate op of its body), never off a clock.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfaccel
from conftest import SRC, STATIC, assert_close, legacy_trace_then_reload, run_python
from tfaccel.compiler.core_stages import split_balanced
from tfaccel.compiler.ir import Graph, Node, TensorInfo, TensorRef


def mlp():
    keras.utils.set_random_seed(0)
    inp = keras.Input((32,), name="x")
    h = inp
    for _ in range(4):
        h = keras.layers.Dense(64, activation="relu")(h)
    return keras.Model(inp, keras.layers.Dense(3)(h))


def test_split_is_contiguous_and_balanced():
    nodes = [Node("x", "Placeholder", outputs=(TensorInfo("float32", (8, 8)),))]
    prev = "x"
    for i in range(6):
        nodes.append(Node(f"r{i}", "Relu", (TensorRef(prev),), outputs=(TensorInfo("float32", (8, 8)),)))
        prev = f"r{i}"
    graph = Graph(nodes, ["x"], [TensorRef(prev)])
    order = [f"r{i}" for i in range(6)]
    assert split_balanced(graph, order, 2) == [order[:3], order[3:]]
    assert split_balanced(graph, order, 3) == [order[:2], order[2:4], order[4:]]
    assert split_balanced(graph, order, 1) == [order]


def test_a_stage_never_holds_only_ops_without_work():
    """An Identity (cost 0) after the last costly node joins its stage instead of being a stage alone: a
    stage that computes nothing is a call for nothing (and an OpenVINO model that only forwards its input).
    """
    shape = (TensorInfo("float32", (8, 8)),)
    nodes = [
        Node("x", "Placeholder", outputs=shape),
        Node("a", "Relu", (TensorRef("x"),), outputs=shape),
        Node("b", "Relu", (TensorRef("a"),), outputs=shape),
        Node("out", "Identity", (TensorRef("b"),), outputs=shape),
    ]
    graph = Graph(nodes, ["x"], [TensorRef("out")])
    assert split_balanced(graph, ["a", "b", "out"], 2) == [["a"], ["b", "out"]]
    assert split_balanced(graph, ["b", "out"], 2) == [["b", "out"]]


@pytest.fixture(scope="module")
def pipelined():
    model = mlp()
    x = tf.random.uniform([8, 32], seed=3)
    return model, x, tfaccel.trace(model, x, neuroncore_pipeline_cores=2)


def test_two_stages_give_the_unpipelined_answers(pipelined):
    model, x, traced = pipelined
    assert_close(traced(x), model(x))
    report = traced.placement_report
    names = [s.name for s in report.subgraphs]
    assert names == ["tfaccel_sg_0_stage0", "tfaccel_sg_0_stage1"]
    # the stages run on the backend that compiled them, and the report says so (not "tfaccel_sg_0#0+...")
    assert report.backend == "openvino" and {s.backend for s in report.subgraphs} == {"openvino"}
    lines: list[str] = []
    traced.summary(print_fn=lines.append)
    assert lines[0].startswith("tfaccel placement (openvino): ")
    assert traced.on_neuron_ratio == 1.0
    assert traced.placement_report.options == f"--neuroncore-pipeline-cores=2 {STATIC}"
    with pytest.raises(ValueError, match=r"traced for \[8, 32\]"):
        traced(tf.ones([4, 32]))  # the model takes the traced batch; micro-batches are internal


def test_pipeline_with_dynamic_batch():
    model = mlp()
    traced = tfaccel.trace(model, tf.ones([8, 32]), neuroncore_pipeline_cores=2, dynamic_batch_size=True)
    for n in (1, 3, 8, 13):
        x = tf.constant(np.random.default_rng(n).standard_normal((n, 32)), tf.float32)
        assert_close(traced(x), model(x))


def test_pipeline_needs_a_batch_dimension():
    with pytest.raises(tfaccel.OptionsError, match=r"--neuroncore-pipeline-cores=2: every example input"):
        tfaccel.trace(lambda a, b: a + b, (tf.ones([4, 2]), tf.ones([2, 2])), neuroncore_pipeline_cores=2)


def test_pipelined_model_saves_and_reloads_in_a_fresh_process(pipelined, tmp_path):
    model, x, traced = pipelined
    traced.save(str(tmp_path / "pipe"))
    np.savez(tmp_path / "io.npz", x=x.numpy(), y=model(x).numpy())
    code = f"""
import numpy as np, tensorflow as tf
import tfaccel  # registers the openvino op the model holds
io = np.load({str(tmp_path / "io.npz")!r})
sig = tf.saved_model.load({str(tmp_path / "pipe")!r}).signatures['serving_default']
np.testing.assert_allclose(sig(x=tf.constant(io['x']))['output_0'].numpy(), io['y'], rtol=1e-5, atol=1e-5)
print('ok')
"""
    assert run_python(code, cwd=tmp_path, env={"PYTHONPATH": SRC}).strip().endswith("ok")


def test_tf_keras_pipeline_flow(tmp_path):
    code = """
import numpy as np, tensorflow as tf, tfaccel
inp = tf.keras.layers.Input(16)
h = tf.keras.layers.Dense(32, activation='relu')(tf.keras.layers.Dense(32, activation='relu')(inp))
model = tf.keras.Model(inp, tf.keras.layers.Dense(2)(h))
x = tf.random.uniform([6, 16])
traced = tfaccel.trace(model, x, neuroncore_pipeline_cores=2)
np.testing.assert_allclose(traced(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
traced.save('pipe_legacy')
np.save('x.npy', x.numpy()); np.save('y.npy', model(x).numpy())
print('traced')
"""
    legacy_trace_then_reload(tmp_path, code, "pipe_legacy")


def test_all_runtime_flags_together():
    model = mlp()
    traced = tfaccel.trace(
        model, tf.ones([8, 32]), neuroncore_pipeline_cores=2, dynamic_batch_size=True, extract_weights=True
    )
    for n in (1, 9):
        x = tf.constant(np.random.default_rng(n).standard_normal((n, 32)), tf.float32)
        assert_close(traced(x), model(x))


# -- micro-batches and overlap, observed ------------------------------------------------------------------
W1 = tf.constant(np.random.default_rng(1).standard_normal((8, 8)), tf.float32)
W2 = tf.constant(np.random.default_rng(2).standard_normal((8, 4)), tf.float32)
probe_rows: list[int] = []  # rows of each call of the probe


def _probe(h):
    probe_rows.append(int(h.shape[0]))
    return h


def probed(x):
    """Two compiled subgraphs around a probe that stays on TF and sees each chunk the model runs."""
    h = tf.nn.relu(tf.matmul(tf.nn.relu(tf.matmul(x, W1)), W1))
    seen = tf.py_function(_probe, [h], tf.float32)
    seen.set_shape(h.shape)
    return tf.matmul(seen, W2) + 1.0


def _loops(traced):
    """(parallel_iterations, node names of the body) of every while loop in the traced model's graph."""
    graph_def = traced.tfaccel_executable.call_flat.get_concrete_function().graph.as_graph_def()
    bodies = {f.signature.name: f for f in graph_def.library.function}
    nodes = [*graph_def.node, *(n for f in bodies.values() for n in f.node_def)]
    return [
        (n.attr["parallel_iterations"].i, [m.name for m in bodies[n.attr["body"].func.name].node_def])
        for n in nodes
        if n.op in ("While", "StatelessWhile")
    ]


def test_stages_run_on_micro_batches_with_several_in_flight():
    """On xla (openvino's stages: the test below), so that the stages are also checked on both backends."""
    x = tf.constant(np.random.default_rng(4).standard_normal((8, 8)), tf.float32)
    traced = tfaccel.trace(probed, x, neuroncore_pipeline_cores=2, backend="xla")
    report = traced.placement_report
    assert report.backend == "xla" and {s.backend for s in report.subgraphs} == {"xla"}
    stages = [s.name for s in report.subgraphs]
    assert stages == [f"tfaccel_sg_{i}_stage{k}" for i in (0, 1) for k in (0, 1)], stages
    probe_rows.clear()
    assert_close(traced(x), probed(x))
    assert probe_rows == [4, 4, 8]  # the model's two micro-batches of 4 rows, then the original's call
    # the chunk loop lets 2 chunks run at once, and each stage is its own op in the loop body, so that
    # stage 1 of one chunk and stage 0 of the next can overlap
    ((in_flight, body),) = _loops(traced)
    assert in_flight == 2
    for stage in stages:
        assert sum(1 for name in body if name.endswith(f"/{stage}")) == 1, (stage, body)


def test_pipeline_on_xla_with_dynamic_batch_runs_micro_batches():
    traced = tfaccel.trace(
        probed, tf.ones([8, 8]), neuroncore_pipeline_cores=2, dynamic_batch_size=True, backend="xla"
    )
    for n, chunks in ((3, [4]), (8, [4, 4]), (13, [4, 4, 4, 4])):
        x = tf.constant(np.random.default_rng(n).standard_normal((n, 8)), tf.float32)
        probe_rows.clear()
        got = traced(x)
        assert probe_rows == chunks, (n, probe_rows)
        assert_close(got, probed(x))


def text_between(x):
    """The second subgraph is a MatMul and the output's Identity: the Identity must not be a stage alone."""
    h = tf.nn.relu(tf.matmul(x, W1))
    return tf.matmul(tf.strings.to_number(tf.strings.as_string(h)), W2)


def test_openvino_stages_around_a_tf_op_give_the_original_answers():
    x = tf.constant(np.random.default_rng(6).standard_normal((8, 8)), tf.float32)
    traced = tfaccel.trace(text_between, x, neuroncore_pipeline_cores=2)
    report = traced.placement_report
    stages = {s.name: s.nodes for s in report.subgraphs}
    assert stages["tfaccel_sg_1_stage0"] == ("MatMul_1", "Identity"), stages
    assert report.backend == "openvino" and {s.backend for s in report.subgraphs} == {"openvino"}
    for seed in range(3):
        x = tf.constant(np.random.default_rng(seed).standard_normal((8, 8)), tf.float32)
        assert_close(traced(x), text_between(x))
