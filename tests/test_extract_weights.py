"""--extract-weights: weights live in SavedModel variables, not in the graph; same answers.

The byte checks run on xla, whose compiled functions would otherwise hold the weights as constants (an
openvino model keeps them in its compiled IR, a string variable, with or without the flag).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfaccel
from conftest import FRESH_IMPORT, FRESH_PATH, assert_close, legacy_trace_then_reload, run_python


def model_with_embedding():
    keras.utils.set_random_seed(0)
    feat, ids = keras.Input((16,), name="feat"), keras.Input((3,), dtype="int32", name="ids")
    emb = keras.layers.Flatten()(keras.layers.Embedding(50, 4)(ids))
    h = keras.layers.Dense(32, activation="relu")(keras.layers.Concatenate()([feat, emb]))
    h = keras.layers.BatchNormalization()(h)
    return keras.Model([feat, ids], keras.layers.Dense(5)(h))


def inputs(n=2):
    feat = np.random.default_rng(n).uniform(size=(n, 16)).astype(np.float32)
    return [tf.constant(feat), tf.constant(np.arange(3 * n).reshape(n, 3) % 50, tf.int32)]


def kernel_bytes(model):
    kernel = next(v for v in model.weights if "dense" in v.path and "kernel" in v.path)
    return kernel.numpy().tobytes()[:256]


def test_graph_holds_no_weight_bytes_and_answers_are_equal(tmp_path):
    model = model_with_embedding()
    x = inputs()
    traced = tfaccel.trace(model, x, extract_weights=True, backend="xla")
    assert_close(traced(x), model(x))
    assert traced.on_neuron_ratio == 1.0
    needle = kernel_bytes(model)
    assert needle not in traced.tfaccel_executable.graph_def.SerializeToString()
    # the model's own variables hold them
    held = b"".join(v.numpy().tobytes() for v in traced.tfaccel_executable.weights)
    assert needle in held
    # the same model traced normally does carry them: the checks above can fail
    assert needle in tfaccel.trace(model, x, backend="xla").tfaccel_executable.graph_def.SerializeToString()

    traced.save(str(tmp_path / "ew"))
    assert needle not in (tmp_path / "ew" / "saved_model.pb").read_bytes()
    assert needle in b"".join(p.read_bytes() for p in (tmp_path / "ew" / "variables").iterdir())
    np.savez(tmp_path / "io.npz", feat=x[0].numpy(), ids=x[1].numpy(), y=model(x).numpy())
    code = f"""
import sys
import numpy as np, tensorflow as tf
{FRESH_IMPORT["xla"]}
io = np.load({str(tmp_path / "io.npz")!r})
sig = tf.saved_model.load({str(tmp_path / "ew")!r}).signatures['serving_default']
out = sig(feat=tf.constant(io['feat']), ids=tf.constant(io['ids']))['output_0']
np.testing.assert_allclose(out.numpy(), io['y'], rtol=1e-5, atol=1e-5)
print('ok')
"""
    assert run_python(code, cwd=tmp_path, env={"PYTHONPATH": FRESH_PATH["xla"]}).strip().endswith("ok")


def test_openvino_model_with_extracted_weights_gives_the_same_answers():
    model = model_with_embedding()
    x = inputs()
    traced = tfaccel.trace(model, x, extract_weights=True)
    assert traced.placement_report.backend == "openvino" and traced.on_neuron_ratio == 1.0
    assert_close(traced(x), model(x))


def test_traced_model_keeps_its_own_copy_of_the_weights():
    model = model_with_embedding()
    x = inputs()
    expected = model(x).numpy()
    traced = tfaccel.trace(model, x, extract_weights=True, backend="xla")
    for v in model.weights:
        v.assign(tf.zeros_like(v))
    assert_close(traced(x), expected)


def test_combines_with_dynamic_batch_size():
    model = model_with_embedding()
    traced = tfaccel.trace(model, inputs(4), extract_weights=True, dynamic_batch_size=True)
    for n in (1, 4, 9):
        x = inputs(n)
        assert_close(traced(x), model(x))


def test_tf_keras_flow_with_extracted_weights(tmp_path):
    code = """
import numpy as np, tensorflow as tf, tfaccel
inp = tf.keras.layers.Input(3)
model = tf.keras.Model(inp, tf.keras.layers.Dense(2)(tf.keras.layers.Dense(8, activation='relu')(inp)))
x = tf.random.uniform([2, 3])
traced = tfaccel.trace(model, x, extract_weights=True)
np.testing.assert_allclose(traced(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
traced.save('ew_legacy')
np.save('x.npy', x.numpy()); np.save('y.npy', model(x).numpy())
print('traced')
"""
    legacy_trace_then_reload(tmp_path, code, "ew_legacy")


def test_weights_past_the_protobuf_limit_need_the_flag():
    big = tf.Variable(tf.zeros([2**29 + 2**26], tf.float32))  # 2.25 GiB, allocated but never frozen

    def f(x):
        return x * big[:4]

    with pytest.raises(tfaccel.CaptureValueError, match=r"2\.25 GiB.*trace with --extract-weights"):
        tfaccel.trace(f, tf.ones([4]))


@pytest.mark.slow
def test_weights_past_the_protobuf_limit_trace_save_and_reload_with_the_flag(tmp_path):
    rng = np.random.default_rng(0)
    big = tf.Variable(tf.zeros([2**29 + 2**26], tf.float32))  # 2.25 GiB: no GraphDef can hold it
    big[:4].assign(rng.standard_normal(4).astype(np.float32))
    big[-4:].assign(rng.standard_normal(4).astype(np.float32))

    def f(x):
        return tf.nn.relu(x * big[:4] + big[-4:])

    x = tf.constant(rng.standard_normal((2, 4)), tf.float32)
    expected = f(x).numpy()
    traced = tfaccel.trace(f, x, extract_weights=True, backend="xla")
    assert_close(traced(x), expected)
    traced.save(str(tmp_path / "big"))
    del traced
    assert (tmp_path / "big" / "saved_model.pb").stat().st_size < 2**20
    held = sum(p.stat().st_size for p in (tmp_path / "big" / "variables").iterdir())
    assert held > 2**31
    assert_close(tfaccel.load(str(tmp_path / "big"))(x), expected)
