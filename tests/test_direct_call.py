"""Direct eager calls (runtime/direct.py): a small model that is one openvino subgraph, called eagerly, runs
its compiled model through OpenVINO's Python API, skipping the TF function call.

It must give bit-identical answers to the op (the graph path), keep every input check, apply only where the
graph is exactly one openvino call, and leave graph callers on the op. Cases are data: each model, its
example, and whether the direct path applies (with the reason when it does not). Times are never asserted:
benchmarks/bench_zoo.py measures what it saves.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfaccel
from conftest import ATOL, RTOL, assert_close
from tfaccel.errors import InputTypeError, InputValueError
from tfaccel.runtime import direct as direct_module

RNG = np.random.default_rng(19)
W = tf.constant(RNG.standard_normal((6, 4)), tf.float32)


def dense3() -> Any:
    """The reference's first example: one Dense(3)."""
    inputs = keras.Input([3])
    return keras.Model(inputs, keras.layers.Dense(3)(inputs))


@tf.function
def two_in_three_out(a, b):
    """Inputs used in another order than given, an output repeated."""
    h = tf.matmul(b, W) + tf.reduce_sum(a, axis=1, keepdims=True)
    return {"h": h, "top": tf.reduce_max(h, axis=1), "again": h}


@tf.function
def integer_math(ids):
    return ids * 3 + 1


@tf.function
def with_a_tf_op(x):
    """tf.strings stays on TF: the graph is more than one openvino call."""
    y = tf.matmul(x, W)
    return y, tf.strings.as_string(tf.reduce_sum(y, axis=1))


def rows(n: int, cols: int = 6, seed: int = 0) -> tf.Tensor:
    return tf.constant(np.random.default_rng(seed).standard_normal((n, cols)), tf.float32)


# name -> (build, example inputs (a tuple: the positional arguments), inputs at another batch or None)
DIRECT = {
    "dense3": (dense3, lambda n, s: (rows(n, 3, s),)),
    "two-in-three-out": (lambda: two_in_three_out, lambda n, s: (rows(n, 5, s), rows(n, 6, s + 1))),
    "integers": (
        lambda: integer_math,
        lambda n, s: (tf.constant(np.random.default_rng(s).integers(-50, 50, (n, 4)), tf.int32),),
    ),
}


def trace(source: Any, example: tuple[Any, ...], **options: Any) -> Any:
    options = {"placement": "static", "timing_cache": "off", **options}
    return tfaccel.trace(source, example if len(example) > 1 else example[0], **options)


def call(model: Any, inputs: tuple[Any, ...]) -> Any:
    return model(*inputs)


def graph_answer(traced: Any, inputs: tuple[Any, ...]) -> Any:
    """The same call through the op (the tf.function the SavedModel holds)."""
    executable = traced.tfaccel_executable
    return executable.call_flat(*executable.flatten(inputs, {}))


def same_bits(got: Any, expected: Any) -> None:
    tf.nest.assert_same_structure(got, expected)
    for g, e in zip(tf.nest.flatten(got), tf.nest.flatten(expected), strict=True):
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_array_equal(np.asarray(g), np.asarray(e))


@pytest.fixture(scope="module")
def sources() -> dict[str, Any]:
    return {name: build() for name, (build, _) in DIRECT.items()}


@pytest.fixture(scope="module")
def traced(sources) -> dict[str, Any]:
    return {name: trace(sources[name], example(2, 0)) for name, (_, example) in DIRECT.items()}


@pytest.mark.parametrize("name", list(DIRECT))
def test_direct_calls_give_the_ops_bits_and_the_originals_answer(sources, traced, name):
    example = DIRECT[name][1]
    model, original = traced[name], sources[name]
    direct = model.tfaccel_executable.direct
    assert direct is not None
    for n, seed in [(2, 1), (1, 2), (7, 3)]:  # the traced batch and others (the batch propagates)
        inputs = example(n, seed)
        before = direct.calls
        got = call(model, inputs)
        assert direct.calls == before + 1  # answered directly, not by the graph
        same_bits(got, graph_answer(model, inputs))
        expected = original(*inputs) if not hasattr(original, "layers") else original(inputs[0])
        for g, e in zip(tf.nest.flatten(got), tf.nest.flatten(expected), strict=True):
            if g.dtype.is_integer:
                np.testing.assert_array_equal(np.asarray(g), np.asarray(e))
            else:
                assert_close(g, e, RTOL, ATOL)


def test_every_input_check_still_runs_before_a_direct_call(traced):
    model = traced["two-in-three-out"]
    direct = model.tfaccel_executable.direct
    before = direct.calls
    with pytest.raises(InputTypeError, match="must be float32"):
        model(rows(2, 5).numpy().astype(np.float64), rows(2))
    with pytest.raises(InputValueError, match=r"has shape \[2, 7\].*only dim 0 \(the batch\) may differ"):
        model(rows(2, 5), rows(2, 7))
    with pytest.raises(InputValueError, match="same batch size"):
        model(rows(2, 5), rows(3))
    assert direct.calls == before


def test_an_empty_batch_is_answered_by_the_graph(traced):
    model = traced["dense3"]
    direct = model.tfaccel_executable.direct
    before = direct.calls
    out = model(rows(0, 3))
    assert out.shape == (0, 3)
    assert direct.calls == before


def test_a_caller_inside_tf_function_runs_the_op(traced):
    model = traced["dense3"]
    direct = model.tfaccel_executable.direct
    x = rows(3, 3, 4)
    before = direct.calls
    inside = tf.function(lambda t: model(t))(x)
    assert direct.calls == before
    same_bits(inside, model(x))


def test_concurrent_callers_get_their_own_answers(traced):
    model = traced["two-in-three-out"]
    inputs = [DIRECT["two-in-three-out"][1](1 + i % 3, 10 + i) for i in range(4)]
    expected = [graph_answer(model, x) for x in inputs]
    failures: list[str] = []

    def worker(i: int) -> None:
        for _ in range(40):
            got = call(model, inputs[i])
            try:
                same_bits(got, expected[i])
            except AssertionError as err:
                failures.append(f"thread {i}: {err}")
                return

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


@pytest.mark.parametrize("name", list(DIRECT))
def test_a_loaded_model_is_called_directly_with_the_same_bits(traced, tmp_path, name):
    model = traced[name]
    model.save(tmp_path / "m")
    loaded = tfaccel.load(tmp_path / "m")
    direct = loaded.tfaccel_executable.direct
    assert direct is not None, loaded.tfaccel_executable.direct_why
    for n, seed in [(2, 5), (5, 6)]:
        x = DIRECT[name][1](n, seed)
        first = loaded(*x)  # the first call goes through Keras (and the graph)
        before = direct.calls
        again = loaded(*x)
        assert direct.calls == before + 1
        same_bits(again, first)
        same_bits(again, graph_answer(model, x))


BROKEN_PLANS = [
    ("not an IR", {"xml": b"<not an IR"}, "could not compile"),
    (
        "other output dtype",
        {"output_dtypes": (tf.int64,)},
        "output 0 of the compiled model is i32, the op declares int64",
    ),
    (
        "other input count",
        {"inputs": (0, 0), "input_dtypes": (tf.int32, tf.int32)},
        "has 1 inputs and 1 outputs",
    ),
]


@pytest.mark.parametrize("case,edit,why", BROKEN_PLANS, ids=[c[0] for c in BROKEN_PLANS])
def test_a_model_the_python_api_cannot_run_as_the_op_would_runs_its_graph_and_says_so(
    traced, caplog, case, edit, why
):
    """Never silently: one warning, then the graph (whose op has its own checks) answers from then on."""
    model = traced["integers"]
    executable = model.tfaccel_executable
    kept = executable.direct
    x = DIRECT["integers"][1](3, 8)
    expected = graph_answer(model, x)
    executable.direct = direct_module.DirectCall(dataclasses.replace(kept.plan, **edit))
    try:
        with caplog.at_level(logging.WARNING, logger="tfaccel.runtime.model"):
            same_bits(call(model, x), expected)
        assert executable.direct is None and why in executable.direct_why
        assert "direct eager calls are off for this model" in caplog.text
        same_bits(call(model, x), expected)  # and stays on the graph
    finally:
        executable.direct, executable.direct_why = kept, ""


# -- where it does not apply ------------------------------------------------------------------------------
NOT_DIRECT = [
    ("xla", lambda: trace(dense3(), (rows(2, 3),), backend="xla"), "the batch runs chunked"),
    ("a TF op next to it", lambda: trace(with_a_tf_op, (rows(2),)), "ops run on TF"),
    ("too big", lambda: trace(dense3(), (rows(2, 3),)), "more than 0"),
    ("extracted weights", lambda: trace(dense3(), (rows(2, 3),), extract_weights=True), "not a model input"),
]


@pytest.mark.parametrize("case,make,why", NOT_DIRECT, ids=[c[0] for c in NOT_DIRECT])
def test_the_graph_answers_where_the_model_is_more_than_one_compiled_call(monkeypatch, case, make, why):
    if case == "too big":
        monkeypatch.setattr(direct_module, "MAX_WEIGHT_BYTES", 0)
    model = make()
    assert model.tfaccel_executable.direct is None
    assert why in model.tfaccel_executable.direct_why


def test_find_direct_names_why_not_on_hand_built_graphs():
    def graph(extra_op: str | None = None, control: bool = False, streams: int = 1) -> Any:
        g = tf.compat.v1.GraphDef()
        for name in ("xml", "bin", "x"):
            g.node.add(name=name, op="Placeholder")
        inputs = ["xml:0", "bin:0", "x:0"] + (["^x"] if control else [])
        op = g.node.add(name="sg", op="TfaccelOpenvino", input=inputs)
        op.attr["streams"].i = streams
        op.attr["Tin"].list.type.append(tf.float32.as_datatype_enum)
        op.attr["Tout"].list.type.append(tf.float32.as_datatype_enum)
        op.attr["output_shapes"].list.shape.add().dim.add(size=-1)
        op.attr["precision"].s = b"f32"
        if extra_op:
            g.node.add(name="after", op=extra_op, input=["sg:0"])
        return g

    resources = {"xml": b"<net/>", "bin": b""}
    found, why = direct_module.find_direct(graph(), ["x"], ["sg:0"], resources)
    assert found is not None and found.inputs == (0,) and found.outputs == (0,) and not why
    cases = [
        (graph("Relu"), ["after:0"], "ops run on TF next to the compiled subgraph (Relu)"),
        (graph(streams=2), ["sg:0"], "runs 2 streams"),
        (graph(), ["x:0"], "model output x:0 is not an output of the compiled subgraph"),
        (graph(control=True), ["sg:0"], "control input"),
    ]
    for g, outputs, expected in cases:
        found, why = direct_module.find_direct(g, ["x"], outputs, resources)
        assert found is None and expected in why
    found, why = direct_module.find_direct(graph(), ["y"], ["sg:0"], resources)
    assert found is None and "not a model input" in why
