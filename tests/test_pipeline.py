"""--neuroncore-pipeline-cores=N: stages of balanced cost, micro-batches in flight, same answers."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfaccel
from conftest import SRC, STATIC, assert_close, legacy_trace_then_reload, run_python
from tfaccel.ir import Graph, Node, TensorInfo, TensorRef
from tfaccel.stages import split_balanced


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


@pytest.fixture(scope="module")
def pipelined():
    model = mlp()
    x = tf.random.uniform([8, 32], seed=3)
    return model, x, tfaccel.trace(model, x, neuroncore_pipeline_cores=2)


def test_two_stages_give_the_unpipelined_answers(pipelined):
    model, x, traced = pipelined
    assert_close(traced(x), model(x))
    names = [s.name for s in traced.placement_report.subgraphs]
    assert names == ["tfaccel_sg_0_stage0", "tfaccel_sg_0_stage1"]
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
