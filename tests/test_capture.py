"""Capture: calling conventions, output structures and clear errors for bad func / example_inputs."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfaccel
from conftest import assert_close


def _w(shape, seed=0):
    return tf.constant(np.random.default_rng(seed).standard_normal(shape), tf.float32)


W = _w([4, 4])


def test_tensor_is_passed_as_one_argument():
    def f(x):
        return tf.nn.relu(tf.matmul(x, W) + 1.0)

    x = _w([2, 4], 1)
    traced = tfaccel.trace(f, x)
    assert_close(traced(x), f(x))


def test_list_is_passed_as_one_argument():
    def f(xs):
        return tf.matmul(xs[0], W) + tf.matmul(xs[1], W)

    xs = [_w([2, 4], 1), _w([2, 4], 2)]
    traced = tfaccel.trace(f, xs)
    assert_close(traced(xs), f(xs))


def test_tuple_is_spread_and_numpy_is_accepted():
    def f(a, b):
        return tf.matmul(a, b) * 2.0

    a = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    b = np.random.default_rng(2).standard_normal((4, 5)).astype(np.float32)
    traced = tfaccel.trace(f, (a, b))
    assert_close(traced(a, b), f(a, b))


def test_dict_is_passed_as_keywords_and_names_the_signature():
    def f(ids, scale):
        return tf.matmul(tf.cast(ids, tf.float32), W) * scale

    inputs = {"ids": tf.ones([2, 4], tf.int32), "scale": tf.constant([[2.0]])}
    traced = tfaccel.trace(f, inputs)
    assert_close(traced(**inputs), f(**inputs))
    assert_close(traced(inputs), f(**inputs))  # one dict positionally works too
    assert [s.name for s in traced.tfaccel_executable.layout.specs] == ["ids", "scale"]


def test_nested_output_structure_is_preserved_exactly():
    def f(x):
        y = tf.matmul(x, W)
        return {"b": (y, [tf.nn.relu(y), y * 2.0]), "a": {"sum": tf.reduce_sum(y)}}

    x = _w([2, 4], 3)
    traced = tfaccel.trace(f, x)
    got, expected = traced(x), f(x)
    tf.nest.assert_same_structure(got, expected)
    assert isinstance(got["b"], tuple) and isinstance(got["b"][1], list)
    for g, e in zip(tf.nest.flatten(got), tf.nest.flatten(expected), strict=True):
        assert_close(g, e)


def test_keras3_functional_model_with_dict_outputs():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8,), name="features")
    h = keras.layers.Dense(16, activation="relu")(inp)
    model = keras.Model(inp, {"logits": keras.layers.Dense(3)(h), "hidden": h})
    x = _w([2, 8], 4)
    traced = tfaccel.trace(model, x)
    assert isinstance(traced, keras.Model)
    got, expected = traced(x), model(x)
    assert sorted(got) == ["hidden", "logits"]
    for key in expected:
        assert_close(got[key], expected[key])
    assert traced.tfaccel_executable.layout.specs[0].name == "features"


def test_tf_function_is_traced():
    @tf.function
    def f(x):
        return tf.tanh(tf.matmul(x, W))

    x = _w([2, 4], 5)
    assert_close(tfaccel.trace(f, x)(x), f(x))


def test_keras_model_is_traced_in_inference_mode():
    keras.utils.set_random_seed(0)
    inp = keras.Input((8,))
    out = keras.layers.Dropout(0.9)(keras.layers.Dense(8)(inp))
    model = keras.Model(inp, out)
    x = _w([4, 8], 6)
    assert_close(tfaccel.trace(model, x)(x), model(x, training=False))


# -- bad input --------------------------------------------------------------------------------------------
def test_non_callable_func_is_a_type_error():
    with pytest.raises(TypeError, match=r"func must be a keras\.Model, a tf\.function or a Python callable"):
        tfaccel.trace(42, tf.ones([1]))


@pytest.mark.parametrize("empty", [[], (), {}])
def test_empty_example_inputs_is_a_value_error(empty):
    with pytest.raises(ValueError, match="example_inputs is an empty"):
        tfaccel.trace(lambda *a, **k: a, empty)


def test_function_without_inputs_is_a_value_error():
    def no_inputs():
        return tf.ones([2])

    with pytest.raises(ValueError, match=r"no_inputs\(\) takes no inputs"):
        tfaccel.trace(no_inputs, tf.ones([1]))


def test_mixed_positional_and_keyword_is_a_type_error():
    with pytest.raises(TypeError, match="mixes positional and keyword"):
        tfaccel.trace(lambda a, b: a, (tf.ones([1]), {"b": tf.ones([1])}))


@pytest.mark.parametrize(
    ("example", "where"),
    [
        ((tf.ones([1]), 3.0), r"example_inputs\[1\] must be a tf.Tensor or a numpy array, got float"),
        ({"a": "text"}, r"example_inputs\['a'\] must be a tf.Tensor or a numpy array, got str"),
        ([tf.ones([1]), [tf.ones([1]), None]], r"example_inputs\[1\]\[1\] must be a tf.Tensor.*NoneType"),
        (None, r"example_inputs must be a tf.Tensor or a numpy array, got NoneType"),
    ],
)
def test_non_tensor_leaves_are_type_errors_naming_the_leaf(example, where):
    with pytest.raises(TypeError, match=where):
        tfaccel.trace(lambda *a, **k: a, example)


def test_wrong_arity_names_the_convention():
    def f(x):
        return x

    with pytest.raises(TypeError, match=r"cannot be called as a tuple spread, func\(\*x\)"):
        tfaccel.trace(f, (tf.ones([1]), tf.ones([1])))


def test_dict_with_non_string_keys_is_a_type_error():
    with pytest.raises(TypeError, match="keys must be strings"):
        tfaccel.trace(lambda **k: k, {1: tf.ones([1])})


def test_error_inside_func_is_a_capture_error_with_the_cause():
    def f(x):
        return tf.matmul(x, tf.ones([7, 2]))  # shapes do not agree

    with pytest.raises(tfaccel.CaptureError, match="tracing func with example_inputs") as info:
        tfaccel.trace(f, tf.ones([2, 3]))
    assert info.value.__cause__ is not None


def test_tf_keras_model_is_traced_under_keras3():
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    inp = tf_keras.Input((5,), name="legacy_in")
    model = tf_keras.Model(inp, tf_keras.layers.Dense(3, activation="relu")(tf_keras.layers.Dense(4)(inp)))
    x = _w([2, 5], 7)
    traced = tfaccel.trace(model, x)
    assert_close(traced(x), model(x))
    assert traced.on_neuron_ratio == 1.0
    assert traced.tfaccel_executable.layout.specs[0].name == "legacy_in"


def test_keras_model_with_dict_inputs_takes_the_dict_as_one_argument():
    keras.utils.set_random_seed(0)
    a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
    model = keras.Model({"a": a, "b": b}, keras.layers.Dense(2)(keras.layers.Concatenate()([a, b])))
    x = {"a": _w([2, 3], 8), "b": _w([2, 3], 9)}
    traced = tfaccel.trace(model, x)
    assert_close(traced(x), model(x))
    assert_close(traced(**x), model(x))


# -- issue 16 item 16: a function that writes state is refused with a clear error ----------------------------
@pytest.mark.parametrize("extract_weights", [False, True], ids=["frozen", "extract-weights"])
@pytest.mark.parametrize(
    "write",
    [
        lambda v, t: v.assign_add(t) * 2.0,
        lambda v, t: (v.assign(t), v.read_value() * 2.0)[1],
        lambda v, t: tf.cond(tf.reduce_sum(t) > 0, lambda: v.assign_sub(t), lambda: tf.identity(v)) * 2.0,
        lambda v, t: (v.scatter_nd_update([[0]], t[:1]), v * 1.0)[1],
    ],
    ids=["assign_add", "assign", "assign_in_cond", "scatter"],
)
def test_a_function_that_writes_a_variable_is_a_capture_error(write, extract_weights):
    state = tf.Variable(tf.zeros([2, 4]), name="running_total")
    with pytest.raises(
        tfaccel.CaptureValueError, match=r"writes the variable 'running_total.*inference-only.*remove"
    ):
        tfaccel.trace(lambda t: write(state, t), tf.ones([2, 4]), extract_weights=extract_weights)
    np.testing.assert_array_equal(state.numpy(), np.zeros([2, 4]))  # and tracing did not write it
