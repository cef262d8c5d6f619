"""--dynamic-batch-size: any batch size gives the original's answers, on both paths.

openvino compiles an unknown batch dimension, so its model is one graph for any batch; xla compiles static
shapes, so its model runs chunks of the traced batch (the last one padded by repeating its last row, the
padded rows cut from every output). The tests run both; the padding is observed through a model whose
output sums over the rows of each chunk it runs.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfaccel
from conftest import FRESH_IMPORT, FRESH_PATH, assert_close, legacy_trace_then_reload, run_python
from tfaccel.runtime.batching import BatchMode

B = 4  # the traced (compiled) batch
SIZES = [1, 2, B, B + 1, 5 * B]


def two_input_model():
    keras.utils.set_random_seed(0)
    a, b = keras.Input((6,), name="a"), keras.Input((6,), name="b")
    h = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()([a, b]))
    return keras.Model([a, b], {"score": keras.layers.Dense(1)(h), "hidden": h})


def batch(n, seed=0):
    rng = np.random.default_rng(seed + n)
    return [tf.constant(rng.standard_normal((n, 6)), tf.float32) for _ in range(2)]


def _loops(fast) -> int:
    """How many while loops the traced model's graph holds (the chunked path is one)."""
    graph_def = fast.tfaccel_executable.call_flat.get_concrete_function().graph.as_graph_def()
    nodes = [*graph_def.node, *(n for f in graph_def.library.function for n in f.node_def)]
    return sum(1 for n in nodes if n.op in ("While", "StatelessWhile"))


@pytest.fixture(scope="module", params=["openvino", "xla"])
def traced(request):
    model = two_input_model()
    fast = tfaccel.trace(model, batch(B), dynamic_batch_size=True, backend=request.param)
    # openvino takes the graph traced for any batch; xla runs chunks of the traced batch in a loop
    plan = fast.tfaccel_executable.batch_plan
    assert plan.any_batch and plan.dynamic_batch == B
    assert plan.mode is (BatchMode.ANY if request.param == "openvino" else BatchMode.CHUNKED)
    assert _loops(fast) == (request.param == "xla")
    assert fast.placement_report.backend == request.param
    return model, fast


@pytest.mark.parametrize("n", SIZES)
def test_any_batch_size_equals_the_original(traced, n):
    model, fast = traced
    got, expected = fast(batch(n)), model(batch(n))
    for key in expected:
        assert got[key].shape[0] == n
        assert_close(got[key], expected[key])


def test_inputs_with_different_batch_sizes_are_a_value_error_naming_both(traced):
    _, fast = traced
    with pytest.raises(
        tfaccel.InputValueError, match=r"input 'b' has shape \[2, 6\] and input 'a' has shape \[3, 6\]"
    ):
        fast([tf.ones([3, 6]), tf.ones([2, 6])])


def test_other_dimensions_must_match_the_trace(traced):
    _, fast = traced
    with pytest.raises(
        tfaccel.InputValueError,
        match=r"input 'a' .* has shape \[3, 7\] but the model was traced for \[4, 6\]",
    ):
        fast([tf.ones([3, 7]), tf.ones([3, 6])])


def test_without_the_flag_a_model_whose_batch_propagates_takes_any_batch_too():
    model = two_input_model()
    automatic = tfaccel.trace(model, batch(B))  # issue 15: as in the reference
    assert automatic.tfaccel_executable.batch_plan.any_batch
    assert_close(automatic(batch(B + 1))["score"], model(batch(B + 1))["score"])


def test_flag_refuses_outputs_without_the_batch_dimension():
    with pytest.raises(tfaccel.OptionsError, match=r"output 'output_0' has shape \[\].*batch-wide reduction"):
        tfaccel.trace(lambda x: tf.reduce_sum(x), tf.ones([B, 3]), dynamic_batch_size=True)
    with pytest.raises(tfaccel.OptionsError, match=r"example inputs disagree on the batch size"):
        tfaccel.trace(lambda a, b: a, (tf.ones([B, 3]), tf.ones([B + 1, 3])), dynamic_batch_size=True)


def test_saved_model_serves_any_batch_in_a_fresh_process(traced, tmp_path):
    model, fast = traced
    fast.save(str(tmp_path / "dyn"))
    x = batch(2 * B + 3)
    expected = model(x)
    np.savez(tmp_path / "io.npz", a=x[0].numpy(), b=x[1].numpy(), score=expected["score"].numpy())
    backend = fast.placement_report.backend
    code = f"""
import sys
import numpy as np, tensorflow as tf
{FRESH_IMPORT[backend]}
io = np.load({str(tmp_path / "io.npz")!r})
sig = tf.saved_model.load({str(tmp_path / "dyn")!r}).signatures['serving_default']
out = sig(a=tf.constant(io['a']), b=tf.constant(io['b']))
np.testing.assert_allclose(out['score'].numpy(), io['score'], rtol=1e-5, atol=1e-5)
try:
    sig(a=tf.constant(io['a']), b=tf.constant(io['b'][:3]))
    raise SystemExit('mismatched batches were accepted')
except tf.errors.InvalidArgumentError as err:
    assert 'must have the same batch size (dim 0) as input' in str(err), err
print('ok')
"""
    assert run_python(code, cwd=tmp_path, env={"PYTHONPATH": FRESH_PATH[backend]}).strip().endswith("ok")
    again = tfaccel.load(str(tmp_path / "dyn"))
    assert_close(again(x)["score"], expected["score"])


def test_tf_keras_model_with_dynamic_batch_saves_and_reloads(tmp_path):
    code = f"""
import numpy as np, tensorflow as tf, tfaccel
inp = tf.keras.layers.Input(3)
model = tf.keras.Model(inp, tf.keras.layers.Dense(2)(tf.keras.layers.Dense(3, activation='relu')(inp)))
traced = tfaccel.trace(model, tf.random.uniform([{B}, 3]), dynamic_batch_size=True)
for n in {SIZES}:
    x = tf.random.uniform([n, 3])
    np.testing.assert_allclose(traced(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
traced.save('dyn_legacy')
x = tf.random.uniform([{B + 1}, 3])
np.save('x.npy', x.numpy()); np.save('y.npy', model(x).numpy())
print('traced')
"""
    legacy_trace_then_reload(tmp_path, code, "dyn_legacy")


W = tf.constant(np.random.default_rng(9).standard_normal((6, 3)), tf.float32)


def chunk_sum(x):
    """Row-wise output, and one that sums over the rows the graph runs on (a chunk, on the chunked path)."""
    return {"rows": tf.nn.relu(tf.matmul(x, W)), "sum": tf.zeros_like(x) + tf.reduce_sum(x, 0, keepdims=True)}


def expected_chunk_sums(x: np.ndarray) -> np.ndarray:
    """The documented chunking: chunks of B rows, the last padded by repeating the last row."""
    n = len(x)
    out = np.empty_like(x)
    for start in range(0, n, B):
        rows = np.minimum(np.arange(start, start + B), n - 1)
        out[start : start + B] = x[rows].sum(axis=0)
    return out


def test_xla_runs_chunks_padded_by_repeating_the_last_row():
    fast = tfaccel.trace(chunk_sum, tf.ones([B, 6]), dynamic_batch_size=True, backend="xla")
    assert _loops(fast) == 1
    for n in (1, B - 1, B, B + 1, 3 * B - 2):
        x = np.random.default_rng(n).uniform(1.0, 2.0, (n, 6)).astype(np.float32)
        got = fast(x)
        assert_close(got["rows"], chunk_sum(x)["rows"])
        assert_close(got["sum"], expected_chunk_sums(x))
