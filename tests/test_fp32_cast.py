"""--fp32-cast: bfloat16 where asked, fp32 elsewhere, accuracy within a documented bound."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfaccel
from conftest import STATIC, legacy_trace_then_reload

#: bfloat16 keeps 8 bits of mantissa: one rounding of each matmul input is ~0.4% relative error, and a few
#: layers compound it. This bound is what the tests accept for small models; the benchmark reports the rest.
BF16_RELATIVE_ERROR = 3e-2


def cnn():
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu")(inp)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(4)(x))


def _rel(got, expected):
    return float(
        np.max(np.abs(np.asarray(got) - np.asarray(expected))) / np.max(np.abs(np.asarray(expected)))
    )


@pytest.mark.parametrize("mode", ["matmult", "all"])
def test_bfloat16_modes_are_close_to_fp32_and_not_exact(mode):
    model = cnn()
    x = tf.random.uniform([2, 16, 16, 3], seed=5)
    expected = model(x)
    traced = tfaccel.trace(model, x, fp32_cast=mode)
    err = _rel(traced(x), expected)
    assert 0 < err <= BF16_RELATIVE_ERROR
    assert traced.placement_report.options == f"--fp32-cast={mode} {STATIC}"


def test_matmult_runs_matmuls_and_convolutions_in_bfloat16_only():
    model = cnn()
    x = tf.random.uniform([2, 16, 16, 3], seed=5)
    traced = tfaccel.trace(model, x, fp32_cast="matmult", backend="xla")  # a rewrite of the TF graph
    rows = {r["node"]: r for r in traced.placement_report.decisions}
    heavy = [r for r in rows.values() if r["op"] in ("Conv2D", "MatMul")]
    assert len(heavy) == 3 and all(r["placement"] == "accelerator" for r in heavy)
    graph_def = traced.tfaccel_executable.graph_def
    (call,) = [n for n in graph_def.node if n.name == "tfaccel_sg_0"]
    (compiled,) = [f for f in graph_def.library.function if f.signature.name == call.attr["f"].func.name]
    optimized_types = {
        n.op: n.attr["T"].type for n in compiled.node_def if n.op in ("Conv2D", "MatMul", "Relu")
    }
    assert optimized_types["Conv2D"] == optimized_types["MatMul"] == tf.bfloat16.as_datatype_enum
    assert optimized_types["Relu"] == tf.float32.as_datatype_enum


def test_default_is_exact_fp32():
    model = cnn()
    x = tf.random.uniform([2, 16, 16, 3], seed=5)
    assert _rel(tfaccel.trace(model, x)(x), model(x)) <= 1e-5


def test_bad_mode_is_an_options_error():
    with pytest.raises(tfaccel.OptionsError, match=r"--fp32-cast=fast must be one of none, matmult, all"):
        tfaccel.trace(lambda x: x, tf.ones([1]), fp32_cast="fast")


def test_fp32_cast_from_neuron_cc_flags_with_tf_keras_saves_and_reloads(tmp_path):
    code = """
import numpy as np, tensorflow as tf, tfaccel
inp = tf.keras.layers.Input(8)
model = tf.keras.Model(inp, tf.keras.layers.Dense(4)(tf.keras.layers.Dense(16, activation='relu')(inp)))
x = tf.random.uniform([2, 8])
traced = tfaccel.trace(model, x)
assert '--fp32-cast=matmult' in traced.placement_report.options, traced.placement_report.options
np.testing.assert_allclose(traced(x).numpy(), model(x).numpy(), rtol=3e-2, atol=3e-2)
traced.save('bf16_legacy')
np.save('x.npy', x.numpy()); np.save('y.npy', traced(x).numpy())
print('traced')
"""
    legacy_trace_then_reload(
        tmp_path, code, "bf16_legacy", env={"NEURON_CC_FLAGS": "--fp32-cast=matmult"}, exact=True
    )
