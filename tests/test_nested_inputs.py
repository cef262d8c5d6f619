"""Nested example inputs (issue 15 item 2): lists, tuples and dicts inside the reference's tuple/list/dict.

``trace(f, ([a, b], c))`` calls ``f([a, b], c)``; the traced model is called the same way, refuses any
other structure with an error naming the path (``inputs[0][1]``), saves a flat signature with names made
from the paths, and keeps the structure through save and a fresh process's load.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfaccel
from conftest import ATOL, FRESH_IMPORT, FRESH_PATH, LEGACY_ENV, RTOL, STATIC, assert_close, run_python
from tfaccel.compiler.examples import MAX_DEPTH, Convention, Examples, InputLayout, InputSpec, Tree

R = np.random.default_rng(15)
W = tf.constant(R.standard_normal((4, 4)), tf.float32)


def _x(*shape: int) -> np.ndarray:
    return R.standard_normal(shape).astype(np.float32)


A, B, C = _x(2, 4), _x(2, 4), _x(2, 4)
I0, I1 = R.integers(-3, 3, (2, 4)).astype(np.int32), R.integers(-3, 3, (2, 4)).astype(np.int32)
M, S = _x(2, 4), _x(2, 1)
Q, V = _x(2, 3, 4), _x(2, 5, 4)


def pair(xs, y):
    """Called as pair([a, b], c)."""
    return tf.matmul(xs[0], W) + tf.nn.relu(xs[1]) * y


def fused(ids, extra):
    """Called as fused(ids=[i0, i1], extra={"mask": m, "scale": s})."""
    summed = tf.cast(ids[0] * 2 + ids[1], tf.float32)
    return tf.matmul(summed, W) * extra["scale"] + extra["mask"]


def featured(x, feats):
    """Called as featured(x, {"a": a, "b": b}): a dict passed positionally."""
    return tf.matmul(x, W) - feats["a"] * feats["b"]


class Fusion(keras.Model):
    """A Keras model whose one input is a dict of a list and a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = keras.layers.Dense(3)

    def call(self, inputs, training=False):
        ids = inputs["ids"]
        return self.dense(ids[0] + ids[1]) * inputs["extra"]["scale"]


@functools.cache
def _cases() -> dict[str, tuple[Any, Any, tuple, dict]]:
    """name -> (func, example_inputs, call args, call kwargs): the traced model is called as func is."""
    keras.utils.set_random_seed(0)
    attention = keras.layers.Attention()
    fusion = Fusion()
    fusion_in = {"ids": [A, B], "extra": {"scale": S}}
    fusion(fusion_in)  # built before tracing
    fused_in = {"ids": [I0, I1], "extra": {"mask": M, "scale": S}}
    return {
        "list_in_tuple": (pair, ([A, B], C), ([A, B], C), {}),
        "dict_of_list_and_dict": (fused, fused_in, (), fused_in),
        "dict_in_tuple": (featured, (A, {"a": B, "b": C}), (A, {"a": B, "b": C}), {}),
        "list_in_list": (lambda xs: pair(xs[0], xs[1]), [[A, B], C], ([[A, B], C],), {}),
        "keras_layer_list": (attention, [Q, V], ([Q, V],), {}),  # layer([query, value]): worked before
        "keras_layer_list_in_tuple": (attention, ([Q, V],), ([Q, V],), {}),
        "keras_model_dict_of_lists": (fusion, fusion_in, (fusion_in,), {}),
    }


CASE_NAMES = [
    "list_in_tuple",
    "dict_of_list_and_dict",
    "dict_in_tuple",
    "list_in_list",
    "keras_layer_list",
    "keras_layer_list_in_tuple",
    "keras_model_dict_of_lists",
]


@pytest.fixture(scope="module", params=["openvino", "xla"])
def traced(request):
    """Every case traced with one backend: name -> traced model."""
    backend = request.param
    return backend, {
        name: tfaccel.trace(func, example, backend=backend)
        for name, (func, example, _, _) in _cases().items()
    }


@pytest.mark.parametrize("name", CASE_NAMES)
def test_nested_call_gives_the_original_answer(traced, name):
    _, models = traced
    func, _, args, kwargs = _cases()[name]
    assert_close(models[name](*args, **kwargs), func(*args, **kwargs))


def test_dict_model_takes_its_dict_positionally_too(traced):
    _, models = traced
    _, inputs, _, kwargs = _cases()["dict_of_list_and_dict"]
    assert_close(models["dict_of_list_and_dict"](inputs), fused(**kwargs))


def test_signature_names_come_from_the_paths(traced):
    _, models = traced
    names = {name: [s.name for s in m.tfaccel_executable.layout.specs] for name, m in models.items()}
    assert names["list_in_tuple"] == ["xs_0", "xs_1", "y"]
    assert names["dict_of_list_and_dict"] == ["ids_0", "ids_1", "extra_mask", "extra_scale"]
    assert names["dict_in_tuple"] == ["x", "feats_a", "feats_b"]
    assert names["keras_model_dict_of_lists"] == ["ids_0", "ids_1", "extra_scale"]
    layout = models["dict_of_list_and_dict"].tfaccel_executable.layout
    assert [layout.where(i) for i in range(4)] == [
        "example_inputs['ids'][0]",
        "example_inputs['ids'][1]",
        "example_inputs['extra']['mask']",
        "example_inputs['extra']['scale']",
    ]


def test_a_nested_name_never_takes_a_dict_key():
    def f(a_0, a):
        return a_0 + a[0] + a[1]

    model = tfaccel.trace(f, {"a_0": A, "a": [B, C]})
    assert [s.name for s in model.tfaccel_executable.layout.specs] == ["a_0", "a_0_1", "a_1"]
    assert_close(model(a_0=A, a=[B, C]), A + B + C)


I0F = I0.astype(np.float32)
#: a wrong shape: our error, or (when the model takes any batch) the same message as TensorFlow's error type
SHAPE_ERROR = (tfaccel.InputValueError, tf.errors.InvalidArgumentError)
#: (id, case, call, error type, pattern): every row on both backends, traced and loaded
CALL_ERRORS = [
    (
        "too_many_arguments",
        "list_in_tuple",
        lambda m: m(A, B, C),
        tfaccel.InputTypeError,
        r"this model takes \(\[x, x\], x\) \(a tuple spread, model\(\*x\)\), 2 argument\(s\); got 3",
    ),
    (
        "tensor_for_a_list",
        "list_in_tuple",
        lambda m: m(A, C),
        tfaccel.InputTypeError,
        r"inputs\[0\] must be a list of 2, as the model was traced \(\[x, x\]\); got \w+ of shape \(2, 4\)",
    ),
    (
        "short_list",
        "list_in_tuple",
        lambda m: m([A], C),
        tfaccel.InputTypeError,
        r"inputs\[0\] has 1 item\(s\) but the model was traced with 2: \[x, x\]",
    ),
    (
        "leaf_wrong_shape",
        "list_in_tuple",
        lambda m: m([A, B[:, :2]], C),
        SHAPE_ERROR,
        r"input 'xs_1' \(inputs\[0\]\[1\]\) has shape \[2, 2\] but the model was traced for \[2, 4\]",
    ),
    (
        "leaf_wrong_dtype",
        "list_in_tuple",
        lambda m: m([A, I0], C),
        tfaccel.InputTypeError,
        r"input 'xs_1' \(inputs\[0\]\[1\]\) must be float32, got int32",
    ),
    (
        "list_for_a_leaf",
        "list_in_tuple",
        lambda m: m([A, [B]], C),
        tfaccel.InputTypeError,
        r"input 'xs_1' \(inputs\[0\]\[1\]\) must be a tf.Tensor or numpy array, got list",
    ),
    (
        "keywords_to_a_tuple_model",
        "list_in_tuple",
        lambda m: m(xs=[A, B], y=C),
        tfaccel.InputTypeError,
        r"unexpected keyword argument\(s\) \['xs', 'y'\]",
    ),
    (
        "missing_nested_key",
        "dict_of_list_and_dict",
        lambda m: m(ids=[I0, I1], extra={"mask": M}),
        tfaccel.InputValueError,
        r"inputs\['extra'\] does not match the traced keys \['mask', 'scale'\]: missing \['scale'\]",
    ),
    (
        "extra_nested_key",
        "dict_of_list_and_dict",
        lambda m: m(ids=[I0, I1], extra={"mask": M, "scale": S, "bias": S}),
        tfaccel.InputValueError,
        r"inputs\['extra'\] does not match .*unexpected \['bias'\]",
    ),
    (
        "missing_top_key",
        "dict_of_list_and_dict",
        lambda m: m({"ids": [I0, I1]}),
        tfaccel.InputValueError,
        r"inputs do not match the traced keys \['ids', 'extra'\]: missing \['extra'\]",
    ),
    (
        "tensor_for_a_nested_list",
        "dict_of_list_and_dict",
        lambda m: m(ids=I0, extra={"mask": M, "scale": S}),
        tfaccel.InputTypeError,
        r"inputs\['ids'\] must be a list of 2",
    ),
    (
        "list_for_a_nested_dict",
        "dict_of_list_and_dict",
        lambda m: m(ids=[I0, I1], extra=[M, S]),
        tfaccel.InputTypeError,
        r"inputs\['extra'\] must be a dict with the keys \['mask', 'scale'\], as the model was traced",
    ),
    (
        "nested_leaf_wrong_dtype",
        "dict_of_list_and_dict",
        lambda m: m(ids=[I0, I0F], extra={"mask": M, "scale": S}),
        tfaccel.InputTypeError,
        r"input 'ids_1' \(inputs\['ids'\]\[1\]\) must be int32, got float32",
    ),
    (
        "nested_leaf_wrong_shape",
        "dict_of_list_and_dict",
        lambda m: m(ids=[I0, I1], extra={"mask": M, "scale": A}),
        SHAPE_ERROR,
        r"input 'extra_scale' \(inputs\['extra'\]\['scale'\]\) has shape \[2, 4\] .* traced for \[2, 1\]",
    ),
    (
        "flat_list_for_a_nested_list",
        "list_in_list",
        lambda m: m([A, B, C]),
        tfaccel.InputTypeError,
        r"this model takes \[\[x, x\], x\] \(one list, model\(\[a, b\]\)\), 2 item\(s\) in the list; got 3",
    ),
]


@pytest.fixture(scope="module")
def loaded(traced, tmp_path_factory):
    """The error cases' models saved and loaded back in this process."""
    backend, models = traced
    root = tmp_path_factory.mktemp(f"nested_{backend}")
    again = {}
    for name in {row[1] for row in CALL_ERRORS}:
        models[name].save(str(root / name))
        again[name] = tfaccel.load(root / name)
    return again


@pytest.mark.parametrize("source", ["traced", "loaded"])
@pytest.mark.parametrize(
    "case,call,error,pattern", [pytest.param(*row[1:], id=row[0]) for row in CALL_ERRORS]
)
def test_a_call_that_does_not_match_the_traced_structure_names_the_path(
    traced, loaded, source, case, call, error, pattern
):
    model = traced[1][case] if source == "traced" else loaded[case]
    with pytest.raises(error, match=pattern):
        call(model)


def test_loaded_nested_models_answer_like_the_original(loaded):
    for name in loaded:
        func, _, args, kwargs = _cases()[name]
        assert_close(loaded[name](*args, **kwargs), func(*args, **kwargs))


# -- what trace refuses ------------------------------------------------------------------------------------
def test_a_tuple_holding_keywords_is_still_mixed_positional_and_keyword():
    with pytest.raises(tfaccel.CaptureTypeError, match=r"mixes positional and keyword .*example_inputs\[1\]"):
        tfaccel.trace(lambda x, y: x + y, (A, {"y": B}))


def test_a_dict_in_a_tuple_for_a_function_without_that_parameter_says_it_is_positional():
    def f(x, **kwargs):
        return x

    with pytest.raises(tfaccel.CaptureTypeError, match=r"a dict inside the tuple is one positional argument"):
        tfaccel.trace(f, (A, {"scale": B}))


def test_structures_a_saved_model_could_not_rebuild_are_refused():
    from collections import namedtuple

    Pair = namedtuple("Pair", "a b")
    with pytest.raises(tfaccel.CaptureTypeError, match=r"example_inputs\[1\] is a namedtuple \(Pair\)"):
        tfaccel.trace(lambda x, p: x + p.a, (A, Pair(B, C)))
    with pytest.raises(
        tfaccel.CaptureTypeError, match=r"example_inputs\['f'\] is a dict with the key 1 \(int\)"
    ):
        tfaccel.trace(lambda f: f[1], {"f": {1: A}})
    loop: list[object] = [A]
    loop.append(loop)
    with pytest.raises(tfaccel.CaptureValueError, match=rf"nests deeper than {MAX_DEPTH} levels"):
        tfaccel.trace(lambda xs: xs[0], loop)
    with pytest.raises(tfaccel.CaptureValueError, match=r"example_inputs \(\[\], \[\]\) holds no tensor"):
        tfaccel.trace(lambda a, b: a, ([], []))


def test_a_top_level_namedtuple_is_still_spread():
    from collections import namedtuple

    Pair = namedtuple("Pair", "a b")
    model = tfaccel.trace(lambda a, b: a * b, Pair(A, B))
    assert_close(model(A, B), A * B)


def test_nested_inputs_take_any_batch_with_the_flag():
    model = tfaccel.trace(pair, ([A, B], C), dynamic_batch_size=True)
    a, b, c = _x(5, 4), _x(5, 4), _x(5, 4)
    assert_close(model([a, b], c), pair([a, b], c))


# -- the saved layout --------------------------------------------------------------------------------------
def _specs(n: int) -> tuple[InputSpec, ...]:
    return tuple(InputSpec(f"in_{i}", "float32", (2, 4)) for i in range(n))


def test_the_layout_round_trips_through_json_and_packs_a_call():
    tree = Examples.of(([A, B], {"k": C}, [])).tree
    layout = InputLayout(Convention.TUPLE, _specs(3), (), tree)
    data = json.loads(json.dumps(layout.to_json()))
    again = InputLayout.from_json(data)
    assert again == layout
    assert again.tree.describe() == "([x, x], {'k': x}, [])"
    args, kwargs = again.pack(["a", "b", "c"])
    assert args == (["a", "b"], {"k": "c"}, []) and kwargs == {}
    assert again.split_call(args, kwargs) == ["a", "b", "c"]
    assert again.flatten_keras(again.keras_structure(["a", "b", "c"])) == ["a", "b", "c"]


def test_a_flat_layout_saves_as_before_and_an_old_layout_loads():
    specs = [{"name": s.name, "dtype": s.dtype, "shape": list(s.shape)} for s in _specs(2)]
    old = {"convention": "dict", "keys": ["a", "b"], "specs": specs}  # as saved before nesting existed
    layout = InputLayout.from_json(old)
    assert layout.to_json() == old  # no "tree" for a flat structure: older readers read it as before
    assert layout.tree == Tree.flat(Convention.DICT, 2, ("a", "b"))
    assert layout.split_call((), {"a": 1, "b": 2}) == [1, 2]
    # a flat tree given explicitly is the same layout
    assert (
        InputLayout(Convention.DICT, _specs(2), ("a", "b"), Tree.flat(Convention.DICT, 2, ("a", "b")))
        == layout
    )
    with pytest.raises(TypeError, match=r"the layout must be an object, got list"):
        InputLayout.from_json([old])
    with pytest.raises(ValueError, match=r"the input tree has 1 tensors but there are 2 input specs"):
        InputLayout.from_json({**old, "convention": "tensor", "keys": []})


def _nested_json() -> dict:
    return InputLayout(Convention.TUPLE, _specs(3), (), Examples.of(([A, B], {"k": C})).tree).to_json()


def _deep(depth: int) -> dict:
    node: dict = {"kind": "tensor"}
    for _ in range(depth):
        node = {"kind": "list", "items": [node]}
    return node


#: (id, edit of a nested layout's JSON, error type, pattern)
BAD_TREES = [
    ("unknown_kind", lambda d: d["tree"]["items"][0].update(kind="set"), ValueError, r"'set'"),
    (
        "a_leaf_missing",
        lambda d: d["tree"]["items"][0].update(items=[{"kind": "tensor"}]),
        ValueError,
        r"has 2 tensors",
    ),
    (
        "kind_vs_convention",
        lambda d: d.update(convention="list"),
        ValueError,
        r"is a tuple but the convention",
    ),
    ("node_a_string", lambda d: d["tree"]["items"].__setitem__(0, "x"), TypeError, r"must be an object"),
    ("items_not_a_list", lambda d: d["tree"].update(items={"a": 1}), TypeError, r"must be a list"),
    ("extra_field", lambda d: d["tree"].update(code="x"), ValueError, r"must have the fields"),
    ("leaf_with_items", lambda d: d["tree"]["items"][0]["items"][0].update(items=[]), ValueError, r"fields"),
    ("int_key", lambda d: d["tree"]["items"][1].update(keys=[1]), TypeError, r"list of strings"),
    ("keys_short", lambda d: d["tree"]["items"][1].update(keys=[]), ValueError, r"one distinct key per item"),
    (
        "repeated_key",
        lambda d: d["tree"]["items"][1].update(keys=["k", "k"], items=[{"kind": "tensor"}] * 2),
        ValueError,
        r"one distinct key",
    ),
    ("too_deep", lambda d: d["tree"]["items"].__setitem__(0, _deep(MAX_DEPTH + 5)), ValueError, r"deeper"),
    ("layout_keys_vs_tree", lambda d: d.update(keys=["k"]), ValueError, r"do not match the input tree"),
]


@pytest.mark.parametrize("edit,error,pattern", [pytest.param(*row[1:], id=row[0]) for row in BAD_TREES])
def test_a_malformed_saved_tree_is_refused(edit, error, pattern):
    data = _nested_json()
    InputLayout.from_json(json.loads(json.dumps(data)))  # the unedited one loads
    edit(data)
    with pytest.raises(error, match=pattern):
        InputLayout.from_json(data)


def test_load_refuses_an_edited_tree(traced, tmp_path):
    _, models = traced
    path = tmp_path / "pair"
    models["list_in_tuple"].save(str(path))
    meta_path = path / "assets.extra" / "tfaccel.json"
    meta = json.loads(meta_path.read_text())
    assert meta["layout"]["tree"]["items"][0] == {"kind": "list", "items": [{"kind": "tensor"}] * 2}
    meta["layout"]["tree"]["items"][0]["items"].pop()
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(tfaccel.ExportError, match=r"is malformed \(ValueError: the input tree has 2 tensors"):
        tfaccel.load(path)


# -- a fresh process ---------------------------------------------------------------------------------------
def test_saved_nested_models_serve_flat_and_reload_nested_in_a_fresh_process(traced, tmp_path):
    backend, models = traced
    models["list_in_tuple"].save(str(tmp_path / "pair"))
    models["dict_of_list_and_dict"].save(str(tmp_path / "fused"))
    fused_in = _cases()["dict_of_list_and_dict"][3]
    np.savez(
        tmp_path / "io.npz",
        a=A,
        b=B,
        c=C,
        i0=I0,
        i1=I1,
        m=M,
        s=S,
        pair=pair([A, B], C).numpy(),
        fused=fused(**fused_in).numpy(),
    )
    code = f"""
import sys
import numpy as np, tensorflow as tf
{FRESH_IMPORT[backend]}
d = np.load('io.npz')
close = lambda got, want: np.testing.assert_allclose(np.asarray(got), want, rtol={RTOL}, atol={ATOL})

# serving takes flat tensors named by their paths (no tfaccel needed for an xla model)
served = tf.saved_model.load('pair')
serve = served.signatures['serving_default']
assert sorted(serve.structured_input_signature[1]) == ['xs_0', 'xs_1', 'y']
t = {{k: tf.constant(d[k]) for k in ('a', 'b', 'c', 'i0', 'i1', 'm', 's')}}
close(serve(xs_0=t['a'], xs_1=t['b'], y=t['c'])['output_0'], d['pair'])
close(served.tfaccel_call_flat(t['a'], t['b'], t['c']), d['pair'])
serve = tf.saved_model.load('fused').signatures['serving_default']
assert sorted(serve.structured_input_signature[1]) == ['extra_mask', 'extra_scale', 'ids_0', 'ids_1']
close(serve(ids_0=t['i0'], ids_1=t['i1'], extra_mask=t['m'], extra_scale=t['s'])['output_0'], d['fused'])
assert 'tfaccel' not in sys.modules or {backend!r} == 'openvino'

# tfaccel.load gives back the traced structure and its checks
import tfaccel
model = tfaccel.load('pair')
close(model([d['a'], d['b']], d['c']), d['pair'])
try:
    model([d['a']], d['c'])
except tfaccel.InputTypeError as err:
    assert 'inputs[0] has 1 item(s)' in str(err), err
else:
    raise AssertionError('a short list was accepted')
model = tfaccel.load('fused')
inputs = {{'ids': [d['i0'], d['i1']], 'extra': {{'mask': d['m'], 'scale': d['s']}}}}
close(model(**inputs), d['fused'])
close(model(inputs), d['fused'])
try:
    model(ids=[d['i0'], d['i1']], extra={{'mask': d['m']}})
except tfaccel.InputValueError as err:
    assert "inputs['extra'] does not match the traced keys" in str(err), err
else:
    raise AssertionError('a missing key was accepted')
print('ok')
"""
    out = run_python(code, cwd=tmp_path, env={"PYTHONPATH": FRESH_PATH[backend]})
    assert out.strip().endswith("ok")


@pytest.mark.slow  # a fresh tf_keras process: ~20 s
def test_tf_keras_load_model_calls_a_nested_model_as_traced(tmp_path):
    """The reference's flow: trace with tf_keras, model.save(dir), tf.keras.models.load_model(dir) in a
    fresh process that never imports tfaccel (xla), called with the nested structure."""
    np.savez(tmp_path / "x.npz", a=A, b=B, c=C, i0=I0, i1=I1, m=M, s=S)
    trace = f"""
import numpy as np, tensorflow as tf, tfaccel
W = tf.constant({W.numpy().tolist()!r}, tf.float32)
d = np.load('x.npz')

def pair(xs):
    return tf.matmul(xs[0][0], W) + tf.nn.relu(xs[0][1]) * xs[1]

def fused(ids, extra):
    return tf.matmul(tf.cast(ids[0] * 2 + ids[1], tf.float32), W) * extra['scale'] + extra['mask']

nested_list = [[d['a'], d['b']], d['c']]
nested_dict = {{'ids': [d['i0'], d['i1']], 'extra': {{'mask': d['m'], 'scale': d['s']}}}}
m = tfaccel.trace(pair, nested_list)
assert isinstance(m, tf.keras.Model)
m.save('pair')
tfaccel.trace(fused, nested_dict).save('fused')
np.save('pair.npy', pair(nested_list).numpy())
np.save('fused.npy', fused(**nested_dict).numpy())
print('traced')
"""
    env = {**LEGACY_ENV, "TFACCEL_CC_FLAGS": f"--backend=xla {STATIC}"}
    assert run_python(trace, cwd=tmp_path, env=env).strip().endswith("traced")
    reload = f"""
import sys, numpy as np, tensorflow as tf
d = np.load('x.npz')
close = lambda got, want: np.testing.assert_allclose(np.asarray(got), want, rtol={RTOL}, atol={ATOL})
m = tf.keras.models.load_model('pair')
close(m([[d['a'], d['b']], d['c']]), np.load('pair.npy'))
m = tf.keras.models.load_model('fused')
close(m({{'ids': [d['i0'], d['i1']], 'extra': {{'mask': d['m'], 'scale': d['s']}}}}), np.load('fused.npy'))
assert 'tfaccel' not in sys.modules
print('ok')
"""
    out = run_python(reload, cwd=tmp_path, env={"TF_USE_LEGACY_KERAS": "1", "PYTHONPATH": ""})
    assert out.strip().endswith("ok")
