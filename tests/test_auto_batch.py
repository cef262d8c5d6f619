"""Automatic dynamic batch: without ``--dynamic-batch-size`` a model whose batch propagates takes any batch.

As in the reference, tracing checks whether every input and output carries the batch on dim 0 with rows
independent of each other (:mod:`tfaccel.compiler.batch_analysis`). openvino then compiles one graph with a
dynamic dim 0; xla runs chunks of the traced batch. A model whose batch does not propagate keeps its traced
batch, and its report says why, naming the input, output or node. The cases are data: each model, how it
is traced, and the plan and sentence expected.
"""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

import tfaccel
from conftest import FRESH_IMPORT, FRESH_PATH, assert_close, run_python
from tfaccel.runtime.batching import BatchMode

B = 3  # the traced batch
RNG = np.random.default_rng(11)
W = tf.constant(RNG.standard_normal((6, 4)) / 3, tf.float32)


def rows(n, seed=0, width=6):
    return tf.constant(np.random.default_rng(seed + n).standard_normal((n, width)), tf.float32)


def dense(x):
    return tf.nn.relu(tf.matmul(x, W) + 0.5)


def centred(x):
    """Mixes rows: every output row depends on the whole batch (batch-norm in training style)."""
    h = tf.matmul(x, W)
    return h - tf.reduce_mean(h, axis=0, keepdims=True)


def folded(x):
    """Folds the batch into dim 0 twice over: 2n rows out for n in."""
    return tf.reshape(tf.matmul(x, W), [-1, 2])


def total(x):
    return tf.reduce_sum(tf.matmul(x, W), axis=0)


def two_inputs(a, b):
    return tf.matmul(a, W) + tf.matmul(b, W)


def pair(a, b):
    return tf.matmul(a, W), tf.matmul(b, W)


def scalar_scale(x, s):
    return tf.matmul(x, W) * s


#: (id, function, example inputs, mode on openvino, mode on xla, what the plan's sentence must say)
CASES = [
    ("dense", dense, rows(B), BatchMode.ANY, BatchMode.CHUNKED, r""),
    ("two-inputs", two_inputs, (rows(B), rows(B, 1)), BatchMode.ANY, BatchMode.CHUNKED, r""),
    (
        "mixes-rows",
        centred,
        rows(B),
        BatchMode.FIXED,
        BatchMode.FIXED,
        r"batch 3 only: node '.*' \((Sub|AddV2)\) does not keep the batch on dim 0: it changes its rows",
    ),
    (
        "folds-the-batch",
        folded,
        rows(B),
        BatchMode.FIXED,
        BatchMode.FIXED,
        r"batch 3 only: node '.*' \(Reshape\) does not keep the batch on dim 0: it gives 10 rows for 5 in",
    ),
    (
        "reduces-the-batch",
        total,
        rows(B),
        BatchMode.FIXED,
        BatchMode.FIXED,
        r"batch 3 only: output 'output_0' \(node '.*'\) has shape \[4\] when traced for any batch",
    ),
    (
        "batches-disagree",
        pair,
        (rows(B), rows(B + 1, 1)),
        BatchMode.FIXED,
        BatchMode.FIXED,
        r"the inputs disagree on dim 0: example_inputs\[0\] has shape \[3, 6\] and example_inputs\[1\] has "
        r"\[4, 6\]",
    ),
    (
        "scalar-input",
        scalar_scale,
        (rows(B), tf.constant(2.0)),
        BatchMode.FIXED,
        BatchMode.FIXED,
        r"input example_inputs\[1\] is a scalar: there is no batch dimension",
    ),
]


@pytest.fixture(scope="module", params=["openvino", "xla"])
def backend(request):
    return request.param


@pytest.fixture(scope="module")
def traced_cases(backend):
    return {case[0]: tfaccel.trace(case[1], case[2], backend=backend) for case in CASES}


def _call(case, traced, n):
    """The case's function and its traced model on a batch of ``n`` built like the examples."""
    _, func, examples, *_ = case
    if isinstance(examples, tuple):
        inputs = tuple(rows(n, i) if e.shape.rank else e for i, e in enumerate(examples))
        return traced(*inputs), func(*inputs)
    return traced(rows(n)), func(rows(n))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_the_plan_is_the_expected_one_and_says_why(case, traced_cases, backend):
    name, _, _, on_openvino, on_xla, sentence = case
    traced = traced_cases[name]
    plan = traced.tfaccel_executable.batch_plan
    assert plan.mode is (on_openvino if backend == "openvino" else on_xla), plan
    assert plan.any_batch == (plan.mode is not BatchMode.FIXED)
    report = traced.placement_report
    assert report.batch == plan.describe()
    if sentence:
        assert plan.mode is BatchMode.FIXED
        assert re.search(sentence, report.batch), report.batch
    lines = []
    traced.summary(print_fn=lines.append)
    assert f"  batch: {report.batch}" in lines


@pytest.mark.parametrize("n", [1, 2, B, B + 2, 4 * B + 1])
@pytest.mark.parametrize("name", ["dense", "two-inputs"])
def test_any_batch_gives_the_originals_answers(traced_cases, name, n):
    case = next(c for c in CASES if c[0] == name)
    got, expected = _call(case, traced_cases[name], n)
    assert got.shape[0] == n
    assert_close(got, expected)


@pytest.mark.parametrize("name", ["mixes-rows", "folds-the-batch", "reduces-the-batch"])
def test_a_model_whose_batch_does_not_propagate_refuses_another_batch_and_says_why(traced_cases, name):
    case = next(c for c in CASES if c[0] == name)
    traced = traced_cases[name]
    got, expected = _call(case, traced, B)  # the traced batch: the original's answers
    assert_close(got, expected)
    with pytest.raises(tfaccel.InputValueError, match=r"traced for \[3, 6\]; it takes batch 3 only: "):
        traced(rows(B + 1))


def test_wrong_non_batch_dims_name_the_input_and_both_shapes(traced_cases):
    with pytest.raises(
        tfaccel.InputValueError, match=r"has shape \[5, 7\] but the model was traced for \[3, 6\]"
    ):
        traced_cases["dense"](tf.ones([5, 7]))


def test_inconsistent_batches_across_inputs_name_both(traced_cases):
    with pytest.raises(tfaccel.InputValueError, match=r"input '.*' has shape \[2, 6\] and input"):
        traced_cases["two-inputs"](tf.ones([5, 6]), tf.ones([2, 6]))


def test_an_empty_batch_gives_zero_rows(traced_cases):
    assert traced_cases["dense"](tf.zeros([0, 6])).shape == (0, 4)


def test_a_keras_model_traced_at_batch_one_serves_any_batch_in_a_fresh_process(backend, tmp_path):
    keras.utils.set_random_seed(0)
    inp = keras.Input((5,), name="features")
    model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.Dense(8, activation="relu")(inp)))
    traced = tfaccel.trace(model, tf.ones([1, 5]), backend=backend)
    assert traced.tfaccel_executable.batch_plan.any_batch
    traced.save(str(tmp_path / "m"))
    x = np.random.default_rng(2).standard_normal((7, 5)).astype(np.float32)
    np.savez(tmp_path / "io.npz", x=x, y=model(x).numpy())
    code = f"""
import sys
import numpy as np, tensorflow as tf
{FRESH_IMPORT[backend]}
io = np.load({str(tmp_path / "io.npz")!r})
sig = tf.saved_model.load({str(tmp_path / "m")!r}).signatures['serving_default']
(out,) = sig(features=tf.constant(io['x'])).values()
np.testing.assert_allclose(out.numpy(), io['y'], rtol=1e-5, atol=1e-5)
print('ok')
"""
    assert run_python(code, cwd=tmp_path, env={"PYTHONPATH": FRESH_PATH[backend]}).strip().endswith("ok")
    again = tfaccel.load(str(tmp_path / "m"))
    assert_close(again(x), model(x))


def test_a_node_only_the_static_backend_takes_keeps_the_fixed_graph_and_runs_chunks():
    """openvino cuts float64; xla takes it, but not in a graph of unknown batch: chunks keep it compiled."""

    def mixed(x):
        h = tf.nn.relu(tf.matmul(x, W) + 1.0)
        d = tf.cast(h, tf.float64)
        return tf.cast(tf.reduce_sum(d * d, axis=1, keepdims=True), tf.float32) * h

    traced = tfaccel.trace(mixed, rows(B))
    plan = traced.tfaccel_executable.batch_plan
    assert plan.mode is BatchMode.CHUNKED, plan
    assert "needs xla, which compiles static shapes only: any batch runs as chunks of 3" in plan.why
    assert {s.backend for s in traced.placement_report.subgraphs} == {"openvino", "xla"}
    for n in (1, 5):
        assert_close(traced(rows(n)), mixed(rows(n)))


#: ops that keep rows independent, and ops that mix rows (name -> function of a [n, 4] tensor)
ROW_WISE = {
    "matmul": lambda h: tf.matmul(h, W[:4]),
    "relu": tf.nn.relu,
    "tanh": tf.tanh,
    "softmax": lambda h: tf.nn.softmax(h, axis=-1),
    "row-sum": lambda h: h + tf.reduce_sum(h, axis=1, keepdims=True),
    "cumsum-rows": lambda h: tf.cumsum(h, axis=1),
    "sort-rows": lambda h: tf.sort(h, axis=1),
}
#: each changes the first rows' values, or their order, on generic data (a max over the batch does not
#: always: the first row may already hold it; the module docstring says so)
MIXING = {
    "centre": lambda h: h - tf.reduce_mean(h, axis=0, keepdims=True),
    "cumsum-batch": lambda h: tf.cumsum(h, axis=0),
    "reverse-batch": lambda h: tf.reverse(h, axis=[0]),
    "sort-batch": lambda h: tf.sort(h, axis=0),
    "fold": lambda h: tf.reshape(h, [-1, 2]),
}


@settings(max_examples=25, deadline=None)
@given(
    ops=st.lists(st.sampled_from(sorted(ROW_WISE)), min_size=1, max_size=4),
    mixer=st.one_of(st.none(), st.sampled_from(sorted(MIXING))),
    batch=st.integers(1, 4),
)
def test_the_check_accepts_row_wise_chains_and_refuses_each_batch_mixing_op(ops, mixer, batch):
    """A mixing op comes first, on generic data, followed by row-wise ops that keep rows apart (no ReLU,
    which could zero the difference: the check compares outputs, see the module docstring).
    """
    from tfaccel.compiler.batch_analysis import rows_independent
    from tfaccel.compiler.capture import call_as_traced, freeze

    steps = [ROW_WISE[name] for name in ops if mixer is None or name != "relu"]
    if mixer is not None:
        steps.insert(0, MIXING[mixer])

    def chain(x):
        h = tf.matmul(x, W)
        for step in steps:
            h = step(h) if h.shape[-1] == 4 or step is not ROW_WISE["matmul"] else h
        return h

    x = rows(batch, 7)
    frozen = freeze(chain, x, unknown_batch=True)
    why = rows_independent(frozen, lambda flat: [call_as_traced(chain, frozen.layout, flat)], [x])
    if mixer is None:
        assert why == "", why
    else:
        assert "does not keep the batch on dim 0" in why or "rows are not independent" in why, why


V = tf.Variable(W)


@tf.function
def centred_variable(x):
    h = tf.matmul(x, V)
    return h - tf.reduce_mean(h, axis=0, keepdims=True)


@pytest.mark.parametrize("backend", ["openvino", "xla"])
def test_extracted_weights_leave_the_batch_check_able_to_name_the_node(backend):
    """With ``--extract-weights`` the weights are inputs of the graph the check runs node by node (fed
    as tensors, not variables): a model whose rows mix traces and its plan names the node.
    """
    traced = tfaccel.trace(centred_variable, rows(B), backend=backend, extract_weights=True)
    plan = traced.tfaccel_executable.batch_plan
    assert plan.mode is BatchMode.FIXED
    assert re.search(r"node '.*' \((Sub|AddV2)\) does not keep the batch on dim 0", plan.why), plan.why
    assert_close(traced(rows(B, 5)), centred_variable(rows(B, 5)))


@pytest.mark.parametrize("backend", ["openvino", "xla"])
def test_examples_of_zeros_still_show_rows_that_mix(backend):
    """Added rows made by rolling zeros would be zeros again, and a mean over the batch would not move:
    the check shifts the rows it adds to float inputs, so the model keeps its batch (not a wrong answer at
    another batch).
    """
    zeros = tf.zeros((B, 6), tf.float32)
    traced = tfaccel.trace(centred, zeros, backend=backend)
    plan = traced.tfaccel_executable.batch_plan
    assert plan.mode is BatchMode.FIXED, plan
    assert "does not keep the batch on dim 0" in plan.why, plan.why
    assert_close(traced(rows(B, 7)), centred(rows(B, 7)))


def _centred_beside_inf(x):
    """Rows that mix, next to a column of +inf (which once made the comparison's tolerance infinite)."""
    inf = tf.fill(tf.stack([tf.shape(x)[0], 1]), np.float32(np.inf))
    return tf.concat([centred(x), inf], axis=1)


@pytest.mark.parametrize("backend", ["openvino", "xla"])
def test_an_infinite_output_value_does_not_hide_rows_that_mix(backend):
    traced = tfaccel.trace(_centred_beside_inf, rows(B), backend=backend)
    plan = traced.tfaccel_executable.batch_plan
    assert plan.mode is BatchMode.FIXED, plan
    assert_close(traced(rows(B, 3)), _centred_beside_inf(rows(B, 3)))
