"""--fp32-cast: bfloat16 where asked, fp32 elsewhere, accuracy within a documented bound.

The arithmetic is checked, not only the attributes: a bf16 model's error must lie between a lower bound
that fp32 never reaches (so a cast that does nothing fails) and the documented upper bound. Where bf16
runs depends on the CPU: OpenVINO's plugin compiles f32 whatever the hint on a CPU without bf16, and
TensorFlow's oneDNN bf16 pass (``--fp32-cast=all`` on xla) needs avx512_bf16 or AMX; on such a CPU the
tests check what happens instead (``all`` says it changed nothing) or skip, saying why.
"""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfaccel
from conftest import STATIC, legacy_trace_then_reload
from tfaccel.compiler.placement import Placement

#: bfloat16 keeps 8 bits of mantissa: one rounding of each matmul input is ~0.4% relative error, and a few
#: layers compound it. This bound is what the tests accept for small models; the benchmark reports the rest.
BF16_RELATIVE_ERROR = 3e-2
#: ... and fp32 stays far below this (1e-7..1e-6 on these models), bf16 far above (1e-3..1e-2)
BF16_LOWER_BOUND = 1e-4


def cpu_has_bf16() -> bool:
    """The CPU computes bfloat16 natively (what TensorFlow's oneDNN bf16 pass requires)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def openvino_has_bf16() -> bool:
    """OpenVINO's CPU plugin honours the bf16 precision hint here (else it compiles f32)."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


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


def assert_bf16_error(err: float) -> None:
    assert BF16_LOWER_BOUND < err <= BF16_RELATIVE_ERROR, f"relative error {err:.2e} is not a bf16 one"


def test_matmult_on_xla_computes_in_bfloat16():
    model = cnn()
    x = tf.random.uniform([2, 16, 16, 3], seed=5)
    traced = tfaccel.trace(model, x, fp32_cast="matmult", backend="xla")
    assert_bf16_error(_rel(traced(x), model(x)))
    assert traced.placement_report.options == f"--backend=xla --fp32-cast=matmult {STATIC}"


def test_all_on_xla_computes_in_bfloat16_or_says_it_changed_nothing():
    model = cnn()
    x = tf.random.uniform([2, 16, 16, 3], seed=5)
    traced = tfaccel.trace(model, x, fp32_cast="all", backend="xla")
    err = _rel(traced(x), model(x))
    said = [f for f in traced.placement_report.fallbacks if "--fp32-cast=all changed nothing" in f]
    if cpu_has_bf16():
        assert_bf16_error(err)
        assert not said
    else:  # TensorFlow's oneDNN bfloat16 pass does nothing on this CPU: exact fp32, and the report says so
        assert err <= 1e-5 and said, (err, traced.placement_report.fallbacks)


@pytest.mark.parametrize("mode", ["matmult", "all"])
def test_openvino_computes_in_bfloat16(mode):
    if not openvino_has_bf16():
        pytest.skip("OpenVINO's CPU plugin has no bf16 on this CPU: it compiles f32 whatever the hint")
    model = cnn()
    x = tf.random.uniform([2, 16, 16, 3], seed=5)
    traced = tfaccel.trace(model, x, fp32_cast=mode, backend="openvino")
    assert_bf16_error(_rel(traced(x), model(x)))
    assert traced.placement_report.options == f"--backend=openvino --fp32-cast={mode} {STATIC}"


def test_openvino_says_when_it_cannot_compute_in_bfloat16():
    model = cnn()
    x = tf.random.uniform([2, 16, 16, 3], seed=5)
    traced = tfaccel.trace(model, x, fp32_cast="matmult", backend="openvino")
    err = _rel(traced(x), model(x))
    if err > BF16_LOWER_BOUND:
        assert_bf16_error(err)
    else:
        assert any("fp32" in f and "bf16" in f for f in traced.placement_report.fallbacks), (
            traced.placement_report.fallbacks
        )


def test_a_cast_that_changes_nothing_is_logged_and_reported(caplog):
    def no_matmul(x):
        return tf.nn.relu(x * 2.0 + 1.0)

    x = tf.random.uniform([2, 8], seed=1)
    with caplog.at_level(logging.WARNING, logger="tfaccel"):
        traced = tfaccel.trace(no_matmul, x, fp32_cast="matmult", backend="xla")
    sentence = "--fp32-cast=matmult changed nothing: the graph has no fp32 matmul or convolution"
    assert sentence in caplog.text
    assert any(f.startswith(sentence) for f in traced.placement_report.fallbacks)
    np.testing.assert_array_equal(traced(x), no_matmul(x))
    lines: list[str] = []
    traced.summary(print_fn=lines.append)
    assert any(line.startswith(f"  fallback: {sentence}") for line in lines)


def test_matmult_runs_matmuls_and_convolutions_in_bfloat16_only():
    model = cnn()
    x = tf.random.uniform([2, 16, 16, 3], seed=5)
    traced = tfaccel.trace(model, x, fp32_cast="matmult", backend="xla")  # a rewrite of the TF graph
    rows = {r.node: r for r in traced.placement_report.decisions}
    heavy = [r for r in rows.values() if r.op in ("Conv2D", "MatMul")]
    assert len(heavy) == 3 and all(r.placement is Placement.ACCELERATOR for r in heavy)
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
    """On xla, where the cast is a graph rewrite that runs on any CPU: the reloaded model is the bf16 one."""
    code = f"""
import numpy as np, tensorflow as tf, tfaccel
inp = tf.keras.layers.Input(8)
model = tf.keras.Model(inp, tf.keras.layers.Dense(4)(tf.keras.layers.Dense(16, activation='relu')(inp)))
x = tf.random.uniform([2, 8])
traced = tfaccel.trace(model, x)
assert '--fp32-cast=matmult' in traced.placement_report.options, traced.placement_report.options
got, want = traced(x).numpy(), model(x).numpy()
err = np.abs(got - want).max() / np.abs(want).max()
assert {BF16_LOWER_BOUND} < err <= {BF16_RELATIVE_ERROR}, err
traced.save('bf16_legacy')
np.save('x.npy', x.numpy()); np.save('y.npy', got)
print('traced')
"""
    legacy_trace_then_reload(
        tmp_path,
        code,
        "bf16_legacy",
        env={"NEURON_CC_FLAGS": "--fp32-cast=matmult"},
        exact=True,
        backend="xla",
    )
