"""The returned model: calling errors are clear and never a wrong answer; ratio and summary."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tensorflow as tf

import tfaccel
from conftest import assert_close

W = tf.constant(np.random.default_rng(0).standard_normal((4, 4)), tf.float32)


def dense(x):
    return tf.nn.relu(tf.matmul(x, W) + 0.5)


@pytest.fixture(scope="module")
def traced():
    return tfaccel.trace(dense, tf.ones([2, 4]))


@pytest.fixture(scope="module")
def traced_dict():
    def f(a, b):
        return tf.matmul(a, W) * b

    return tfaccel.trace(f, {"a": tf.ones([2, 4]), "b": tf.ones([2, 4])})


def test_wrong_dtype_is_a_type_error_naming_the_input(traced):
    with pytest.raises(TypeError, match=r"input 'x' \(inputs\) must be float32, got int32"):
        traced(tf.ones([2, 4], tf.int32))
    with pytest.raises(TypeError, match=r"must be float32, got float64; convert it first"):
        traced(np.ones([2, 4]))


def test_wrong_rank_and_shape_are_value_errors_naming_both_shapes(traced):
    with pytest.raises(
        ValueError, match=r"input 'x' .* has shape \[8\] but the model was traced for \[2, 4\]"
    ):
        traced(tf.ones([8]))
    # another batch is fine (the batch propagates, see test_auto_batch.py); another feature dim is not
    with pytest.raises(ValueError, match=r"has shape \[2, 5\] but the model was traced for \[2, 4\]"):
        traced(tf.ones([2, 5]))


def test_wrong_number_of_inputs_is_a_type_error(traced):
    with pytest.raises(TypeError, match="this model takes one tensor"):
        traced(tf.ones([2, 4]), tf.ones([2, 4]))


def test_missing_and_extra_dict_keys_are_named(traced_dict):
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        traced_dict(a=tf.ones([2, 4]))
    with pytest.raises(ValueError, match=r"unexpected \['c'\]"):
        traced_dict(a=tf.ones([2, 4]), b=tf.ones([2, 4]), c=tf.ones([1]))


def test_traced_model_is_usable_inside_tf_function(traced):
    x = tf.random.uniform([2, 4])
    graph_call = tf.function(lambda t: traced(t))
    assert_close(graph_call(x), dense(x))


def test_ratio_counts_only_real_ops_and_summary_lists_subgraphs(traced):
    report = traced.placement_report
    assert traced.on_neuron_ratio == traced.on_accelerator_ratio == 1.0
    assert report.accelerated_ops == report.total_ops == 3  # MatMul, AddV2, Relu
    lines: list[str] = []
    traced.summary(print_fn=lines.append)
    assert lines[0].startswith("tfaccel placement (openvino): 3/3 ops on the accelerator (100.0%)")
    assert any(line.strip().startswith("tfaccel_sg_0") for line in lines)
    x = tf.random.uniform([2, 4], seed=8)
    assert_close(traced(x), dense(x))  # the compiled subgraph computes the model


def test_low_ratio_warns_with_the_reasons(caplog):
    def f(x):
        s = tf.strings.as_string(x)  # strings can never be compiled
        return tf.strings.to_number(s) * 2.0

    with caplog.at_level(logging.WARNING, logger="tfaccel"):
        model = tfaccel.trace(f, tf.ones([3]))
    assert model.on_neuron_ratio < 0.5
    assert "dtype the backend cannot hold (AsString" in caplog.text
    assert "model.summary()" in caplog.text
    x = tf.random.uniform([3], seed=9)
    assert_close(model(x), f(x))


def test_ratio_of_a_graph_without_counted_ops_is_zero_not_a_crash():
    model = tfaccel.trace(lambda x: tf.identity(x), tf.ones([2]))
    assert model.on_neuron_ratio == 0.0
    assert_close(model(tf.ones([2])), np.ones([2]))


# -- issue 16 item 4: the shape check lives in the graph ----------------------------------------------------
def per_batch(x):
    """Batch-dependent: grappler folds tf.shape(x)[0] to the traced batch, so a wrong batch is wrong math."""
    return tf.matmul(x, W) / tf.cast(tf.shape(x)[0], tf.float32)


def per_feature(x):
    """Row-independent (dynamic batch keeps it) but dependent on dim 1, which capture folds the same way."""
    return tf.matmul(x, W[:, :3]) * 0.0 + tf.reduce_sum(x, axis=1, keepdims=True) / tf.cast(
        tf.shape(x)[1], tf.float32
    )


def _outer(model, spec_shape):
    return tf.function(lambda t: model(t), input_signature=[tf.TensorSpec(spec_shape, tf.float32)])


@pytest.mark.parametrize("backend", ["xla", "openvino"])
def test_wrong_batch_inside_an_outer_function_is_refused_in_the_graph(backend, tmp_path):
    model = tfaccel.trace(per_batch, tf.ones([2, 4]), backend=backend)
    model.save(str(tmp_path / "m"))
    loaded = tfaccel.load(tmp_path / "m")
    x2 = tf.random.uniform([2, 4], seed=1)
    x3 = tf.random.uniform([3, 4], seed=2)
    for m in (model, loaded):
        outer = _outer(m, [None, 4])
        assert_close(outer(x2), per_batch(x2))
        with pytest.raises(
            tf.errors.InvalidArgumentError,
            match=r"\[input x has shape\] \[3 4\] \[but the model was traced for \[2, 4\]; it takes its",
        ):
            outer(x3)
    restored = tf.saved_model.load(str(tmp_path / "m"))  # the saved function checks too, without tfaccel
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"input x has shape\] \[3 4\] \[but the model was traced for \[2, 4\]",
    ):
        _outer(restored.tfaccel_call_flat, [None, 4])(x3)


@pytest.mark.parametrize("backend", ["xla", "openvino"])
def test_dynamic_batch_checks_the_other_dims_in_the_graph(backend, tmp_path):
    model = tfaccel.trace(per_feature, tf.ones([2, 4]), backend=backend, dynamic_batch_size=True)
    model.save(str(tmp_path / "m"))
    loaded = tfaccel.load(tmp_path / "m")
    x3 = tf.random.uniform([3, 4], seed=1)
    bad = tf.random.uniform([3, 5], seed=2)
    for m in (model, loaded):
        outer = _outer(m, [None, None])
        assert_close(outer(x3), per_feature(x3))
        with pytest.raises(
            tf.errors.InvalidArgumentError,
            match=r"\[input x has shape\] \[3 5\] \[but the model was traced for \[None, 4\]; only dim 0",
        ):
            outer(bad)
