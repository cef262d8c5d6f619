"""The reference's call forms (issue 15 items 3 and 5): ``saved_model.compile`` output is called like its
input (``tf.saved_model.load(dir)(x)``, in a fresh process), and the traced model's ``aws_neuron_function``.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

import tfaccel as tfn
from conftest import ATOL, FRESH_IMPORT, FRESH_PATH, LEGACY_ENV, RTOL, STATIC, assert_close, run_python

BACKENDS = ["openvino", "xla"]
SPEC = tf.TensorSpec([None, 6], tf.float32)


class _Scale(tf.Module):
    """Callable as ``loaded(x)``, one tensor out; its ``__call__`` is also its signature."""

    def __init__(self) -> None:
        self.w = tf.Variable(np.random.default_rng(5).normal(size=(6, 4)).astype("float32"))

    @tf.function(input_signature=[tf.TensorSpec([None, 6], tf.float32, name="x")])
    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return tf.nn.relu(tf.matmul(x, self.w))


class _Pair(tf.Module):
    """Two same-shaped inputs without spec names (only running them tells ``a`` from ``b``), a tuple out."""

    def __init__(self) -> None:
        self.w = tf.Variable(np.random.default_rng(6).normal(size=(6, 6)).astype("float32"))

    @tf.function(input_signature=[SPEC, SPEC])
    def __call__(self, a: tf.Tensor, b: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        h = tf.matmul(a, self.w)
        return h - b, tf.reduce_sum(h * b, axis=1)


class _TwoWays(_Scale):
    """``loaded(x)`` and the serving signature compute different things: only the signature is compiled."""

    @tf.function(input_signature=[tf.TensorSpec([None, 6], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": 2.0 * tf.nn.relu(tf.matmul(x, self.w))}


def _compile(src: Path, dst: Path, backend: str, **kwargs: Any) -> dict[str, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return tfn.saved_model.compile(src, dst, compiler_args=f"--backend={backend} {STATIC}", **kwargs)


_KEYS = """
def keys(loaded):
    sig = loaded.signatures['serving_default']
    return sorted(sig.structured_input_signature[1]), sorted(sig.structured_outputs)
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_module_is_called_like_its_source_in_a_fresh_process(backend: str, tmp_path: Path) -> None:
    module = _Scale()
    tf.saved_model.save(module, str(tmp_path / "src"), signatures={"serving_default": module.__call__})
    _compile(tmp_path / "src", tmp_path / "new", backend, batch_size=3)
    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((3, 6), dtype=np.float32))
    code = f"""
import sys, numpy as np, tensorflow as tf
{FRESH_IMPORT[backend]}
src, new = tf.saved_model.load('src'), tf.saved_model.load('new')
x = np.load('x.npy')
np.testing.assert_allclose(new(x).numpy(), src(x).numpy(), rtol={RTOL}, atol={ATOL})
np.testing.assert_allclose(new(tf.constant(x)).numpy(), src(x).numpy(), rtol={RTOL}, atol={ATOL})
{_KEYS}
assert keys(src) == keys(new), (keys(src), keys(new))
got = new.signatures['serving_default'](x=tf.constant(x))['output_0']
np.testing.assert_allclose(got.numpy(), src(x).numpy(), rtol={RTOL}, atol={ATOL})
print('ok')
"""
    assert run_python(code, cwd=tmp_path, env={"PYTHONPATH": FRESH_PATH[backend]}).strip().endswith("ok")


def test_inputs_told_apart_by_running_them_and_a_tuple_kept(tmp_path: Path) -> None:
    module = _Pair()
    tf.saved_model.save(module, str(tmp_path / "src"), signatures={"serving_default": module.__call__})
    _compile(tmp_path / "src", tmp_path / "new", "xla", batch_size=2)
    rng = np.random.default_rng(1)
    np.save(tmp_path / "a.npy", rng.random((2, 6), dtype=np.float32))
    np.save(tmp_path / "b.npy", rng.random((2, 6), dtype=np.float32))
    code = f"""
import sys, numpy as np, tensorflow as tf
src, new = tf.saved_model.load('src'), tf.saved_model.load('new')
a, b = np.load('a.npy'), np.load('b.npy')
for args in ((a, b), (b, a)):
    got, want = new(*args), src(*args)
    assert isinstance(got, tuple) and len(got) == 2, got
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol={RTOL}, atol={ATOL})
got = new(a=a, b=b)[0].numpy()  # a keyword call binds as the source's did
np.testing.assert_allclose(got, src(a, b)[0].numpy(), rtol={RTOL}, atol={ATOL})
{_KEYS}
assert keys(src) == keys(new), (keys(src), keys(new))
assert 'tfaccel' not in sys.modules
print('ok')
"""
    assert run_python(code, cwd=tmp_path, env={"PYTHONPATH": ""}).strip().endswith("ok")


def test_a_call_the_signature_does_not_compute_fails_saying_so(tmp_path: Path, caplog: Any) -> None:
    module = _TwoWays()
    tf.saved_model.save(module, str(tmp_path / "src"), signatures={"serving_default": module.serve})
    with caplog.at_level("WARNING", logger="tfaccel.saved_model"):
        _compile(tmp_path / "src", tmp_path / "new", "xla", batch_size=2)
    assert "does not compute what signature serving_default computes" in caplog.text
    new, src = tf.saved_model.load(str(tmp_path / "new")), tf.saved_model.load(str(tmp_path / "src"))
    x = np.random.default_rng(2).random((2, 6), dtype=np.float32)
    assert_close(new.signatures["serving_default"](x=tf.constant(x))["y"], src.serve(x)["y"])
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"tfaccel: saved_model.compile of .*: loaded\(x=float32\[\?,6\]\) does not compute what "
        r"signature serving_default computes .*; call signatures\[serving_default\]\(\*\*inputs\)",
    ):
        new(x)


def test_a_signature_other_than_serving_default_keeps_its_key(tmp_path: Path, caplog: Any) -> None:
    module = _TwoWays()
    signatures = {"serving_default": module.__call__, "double": module.serve}
    tf.saved_model.save(module, str(tmp_path / "src"), signatures=signatures)
    with caplog.at_level("WARNING", logger="tfaccel.saved_model"):
        _compile(tmp_path / "src", tmp_path / "new", "xla", batch_size=2, signature_def_key="double")
    assert "more signatures than the compiled 'double' (serving_default)" in caplog.text
    new = tf.saved_model.load(str(tmp_path / "new"))
    x = np.random.default_rng(9).random((2, 6), dtype=np.float32)
    for key in ("double", "serving_default"):  # the compiled one, under its key and the default one
        assert_close(new.signatures[key](x=tf.constant(x))["y"], module.serve(x)["y"])


@pytest.mark.slow  # a fresh tf_keras process: ~20 s
def test_tf_keras_savedmodels_are_called_like_their_source(tmp_path: Path) -> None:
    """model.save(dir) and tf.saved_model.save(model, dir) of a tf_keras model: loaded(x) after compile;
    training=True, which the dropout makes another function than the compiled inference, fails naming it."""
    make = f"""
import warnings, numpy as np, tensorflow as tf
import tfaccel as tfn
inp = tf.keras.Input((6,), name='features')
hidden = tf.keras.layers.Dense(4)(inp)
out = tf.keras.layers.Dropout(0.5, name='scores')(hidden)
model = tf.keras.Model(inp, out)
model.save('saved')
tf.saved_model.save(model, 'exported')
x = np.random.default_rng(3).random((2, 6), dtype=np.float32)
np.save('x.npy', x)
warnings.simplefilter('ignore', DeprecationWarning)
for name in ('saved', 'exported'):
    tfn.saved_model.compile(name, name + '_new', batch_size=2, compiler_args='--backend=xla {STATIC}')
print('compiled')
"""
    assert run_python(make, cwd=tmp_path, env=LEGACY_ENV).strip().endswith("compiled")
    check = f"""
import sys, numpy as np, tensorflow as tf
{_KEYS}
x = np.load('x.npy')
for name in ('saved', 'exported'):
    src, new = tf.saved_model.load(name), tf.saved_model.load(name + '_new')
    assert keys(src) == keys(new), (keys(src), keys(new))
    np.testing.assert_allclose(new(x).numpy(), src(x).numpy(), rtol={RTOL}, atol={ATOL})
    np.testing.assert_allclose(new(x, training=False).numpy(), src(x).numpy(), rtol={RTOL}, atol={ATOL})
    try:
        new(x, training=True)
    except tf.errors.InvalidArgumentError as err:
        assert 'training=True' in str(err) and 'inference only' in str(err), str(err)
    else:
        raise AssertionError('training=True ran')
assert 'tfaccel' not in sys.modules
print('ok')
"""
    env = {"TF_USE_LEGACY_KERAS": "1", "PYTHONPATH": ""}
    assert run_python(check, cwd=tmp_path, env=env).strip().endswith("ok")


@pytest.mark.slow  # a fresh process: ~12 s
def test_keras3_export_keeps_its_serve_endpoint(tmp_path: Path) -> None:
    """Keras 3's model.export(dir) is called as loaded.serve(x): so is the compiled SavedModel."""
    import keras

    inp = keras.Input((6,), name="features")
    model = keras.Model(inp, keras.layers.Dense(4, name="scores")(inp))
    model.export(str(tmp_path / "src"), verbose=False)
    _compile(tmp_path / "src", tmp_path / "new", "xla", batch_size=2)
    np.save(tmp_path / "x.npy", np.random.default_rng(7).random((2, 6), dtype=np.float32))
    code = f"""
import sys, numpy as np, tensorflow as tf
{_KEYS}
src, new = tf.saved_model.load('src'), tf.saved_model.load('new')
x = np.load('x.npy')
np.testing.assert_allclose(new.serve(x).numpy(), src.serve(x).numpy(), rtol={RTOL}, atol={ATOL})
assert keys(src) == keys(new), (keys(src), keys(new))
assert 'tfaccel' not in sys.modules
print('ok')
"""
    assert run_python(code, cwd=tmp_path, env={"PYTHONPATH": ""}).strip().endswith("ok")


# -- item 5: aws_neuron_function ---------------------------------------------------------------------------


def _accelerated_nodes(function: Any) -> int:
    """Accelerator nodes in the function's graph and the functions it calls: the reference's inspection,
    with tfaccel's op types (one call deeper than the reference's top-level NeuronOp nodes)."""
    graph_def = function.graph.as_graph_def()
    nodes = [*graph_def.node, *(node for f in graph_def.library.function for node in f.node_def)]
    return sum(node.op == "TfaccelOpenvino" or "_XlaMustCompile" in node.attr for node in nodes)


W = np.random.default_rng(8).normal(size=(6, 4)).astype("float32")


def _dense(x: tf.Tensor) -> tf.Tensor:
    return tf.nn.relu(tf.matmul(x, W)) + 1.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_aws_neuron_function_runs_the_partitioned_graph(backend: str, tmp_path: Path) -> None:
    x = tf.constant(np.random.default_rng(4).random((2, 6), dtype=np.float32))
    model = tfn.trace(_dense, x, backend=backend)
    subgraphs = len(model.placement_report.subgraphs)
    assert subgraphs >= 1
    function = model.aws_neuron_function
    assert isinstance(function, tf.types.experimental.ConcreteFunction)
    assert _accelerated_nodes(function) == subgraphs
    assert_close(function(x), _dense(x))  # called with the flat input tensors
    model.save(str(tmp_path / "m"))
    loaded = tfn.load(tmp_path / "m")
    assert _accelerated_nodes(loaded.aws_neuron_function) == subgraphs
    assert_close(loaded.aws_neuron_function(x), _dense(x))
    # without tfaccel's loader the same function is the one concrete function of tfaccel_call_flat
    restored = tf.saved_model.load(str(tmp_path / "m")).tfaccel_call_flat.concrete_functions[0]
    assert _accelerated_nodes(restored) == subgraphs


@pytest.mark.slow  # a fresh tf_keras process: ~20 s
def test_aws_neuron_function_comes_back_with_tf_keras_load_model(tmp_path: Path) -> None:
    """The reference's flow: a tf_keras model saved with model.save(dir) and loaded with load_model."""
    count = inspect.getsource(_accelerated_nodes)
    trace = """
import numpy as np, tensorflow as tf
import tfaccel as tfn
w = tf.constant(np.random.default_rng(8).normal(size=(6, 4)).astype('float32'))
x = np.random.default_rng(4).random((2, 6), dtype=np.float32)
model = tfn.trace(lambda t: tf.nn.relu(tf.matmul(t, w)) + 1.0, x)
np.save('x.npy', x)
np.save('y.npy', model(x).numpy())
model.save('m')
print(len(model.placement_report.subgraphs))
"""
    env = {**LEGACY_ENV, "TFACCEL_CC_FLAGS": f"--backend=xla {STATIC}"}
    subgraphs = int(run_python(trace, cwd=tmp_path, env=env).strip().splitlines()[-1])
    assert subgraphs >= 1
    reload = f"""
import sys, numpy as np, tensorflow as tf
from typing import Any
{count}
m = tf.keras.models.load_model('m')
function = m.aws_neuron_function
assert isinstance(function, tf.types.experimental.ConcreteFunction), type(function)
assert _accelerated_nodes(function) == {subgraphs}, _accelerated_nodes(function)
got = function(tf.constant(np.load('x.npy'))).numpy()
np.testing.assert_allclose(got, np.load('y.npy'), rtol={RTOL}, atol={ATOL})
assert _accelerated_nodes(tf.saved_model.load('m').aws_neuron_function) == {subgraphs}
assert 'tfaccel' not in sys.modules
print('ok')
"""
    legacy_only = {"TF_USE_LEGACY_KERAS": "1", "PYTHONPATH": ""}
    assert run_python(reload, cwd=tmp_path, env=legacy_only).strip().endswith("ok")
