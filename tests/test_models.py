"""End to end on real models: numerics against the original with a named tolerance, and placement.

The full-size example models are marked slow (``python -m pytest -m slow``); a small CNN with the same
structure as MobileNetV2 (depthwise + pointwise blocks, residual adds) runs in the default suite.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfaccel
from tfaccel.compiler.placement import Placement
from tfaccel.tools.examples import EXAMPLES, example_input

#: max |traced - original| / max |original| allowed at fp32 (XLA fuses and reorders sums)
MAX_RELATIVE_ERROR = 1e-5


def _relative_error(got, expected) -> float:
    got, expected = np.asarray(got), np.asarray(expected)
    return float(np.max(np.abs(got - expected)) / max(float(np.max(np.abs(expected))), 1e-30))


def tiny_mobilenet():
    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same")(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    for _ in range(2):
        y = keras.layers.DepthwiseConv2D(3, padding="same")(x)
        y = keras.layers.BatchNormalization()(y)
        y = keras.layers.ReLU(6.0)(y)
        y = keras.layers.Conv2D(16, 1)(y)
        y = keras.layers.BatchNormalization()(y)
        x = keras.layers.Add()([x, y])
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(10, activation="softmax")(x))


def test_tiny_mobilenet_matches_and_keeps_depthwise_on_tf_with_xla():
    model = tiny_mobilenet()
    x = tf.random.uniform([2, 32, 32, 3])
    traced = tfaccel.trace(model, x, backend="xla")
    assert _relative_error(traced(x), model(x, training=False)) <= MAX_RELATIVE_ERROR
    rows = traced.placement_report.decisions
    depthwise = [r for r in rows if r.op == "DepthwiseConv2dNative"]
    assert len(depthwise) == 2 and all(r.placement is Placement.RUNTIME for r in depthwise)
    convs = [r for r in rows if r.op in ("Conv2D", "MatMul")]
    assert convs and all(r.placement is Placement.ACCELERATOR for r in convs)
    # the depthwise convs cut the graph: at least one subgraph per block
    assert len(traced.placement_report.subgraphs) >= 3
    assert 0.5 < traced.on_neuron_ratio < 1.0


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["openvino", "xla"])
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_model(name, backend, tmp_path):
    model = EXAMPLES[name]()
    x = example_input(name, 1)
    traced = tfaccel.trace(model, x, backend=backend)
    expected = model(x, training=False)
    assert _relative_error(traced(x), expected) <= MAX_RELATIVE_ERROR
    if name in ("resnet50", "bert") or backend == "openvino":
        assert traced.on_neuron_ratio >= 0.95
    traced.save(str(tmp_path / name))
    again = tfaccel.load(str(tmp_path / name))
    assert _relative_error(again(x), expected) <= MAX_RELATIVE_ERROR


def test_control_flow_stays_functional_compiles_and_reloads(tmp_path):
    w = tf.constant(np.random.default_rng(0).standard_normal((4, 4)), tf.float32)

    def f(x, n):
        y = tf.cond(tf.reduce_sum(x) > 0, lambda: tf.matmul(x, w), lambda: x * 2.0)
        _, y = tf.while_loop(lambda i, y: i < n, lambda i, y: (i + 1, tf.tanh(tf.matmul(y, w))), (0, y))
        return y

    x, n = tf.random.uniform([2, 4]), tf.constant(3)
    traced = tfaccel.trace(f, (x, n))
    ops = {r.op: r.placement for r in traced.placement_report.decisions}
    assert ops["StatelessWhile"] is ops["StatelessIf"] is Placement.ACCELERATOR
    for args in ((x, n), (-x, tf.constant(5)), (x, tf.constant(0))):
        assert _relative_error(traced(*args), f(*args)) <= MAX_RELATIVE_ERROR
    traced.save(str(tmp_path / "cf"))
    again = tfaccel.load(str(tmp_path / "cf"))
    assert _relative_error(again(-x, tf.constant(5)), f(-x, tf.constant(5))) <= MAX_RELATIVE_ERROR
