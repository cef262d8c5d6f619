"""Bad input to the traced model's life cycle (issue 16), as data: trace time, run time, save and load time.

Why as data: each row is one thing a hostile or unlucky user does, and the answer it must get — a tfaccel
error (or, for a check that runs inside the graph, TensorFlow's ``InvalidArgumentError`` carrying our
message) that says what, where and what to do, or the exact answer. Never a crash, a bare ``TypeError``
from deep inside TensorFlow, or a silent wrong answer. Run-time and load-time rows run on both backends,
on the traced model and on the model ``tfaccel.load`` gives back.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfaccel
from conftest import assert_close
from tfaccel.errors import (
    CaptureError,
    CaptureTypeError,
    CaptureValueError,
    ExportError,
    InputTypeError,
    InputValueError,
    KerasFormatError,
    OptionsError,
    TraceError,
)

BACKENDS = ["xla", "openvino"]
W = tf.constant(np.random.default_rng(16).standard_normal((4, 4)), tf.float32)
X = tf.constant(np.random.default_rng(17).standard_normal((2, 4)), tf.float32)
STATE = tf.Variable(tf.zeros([2, 4]), name="running_total")


def dense(x):
    return tf.nn.relu(tf.matmul(x, W) + 0.5)


def per_batch(x):
    """Depends on the batch size, which capture folds to the traced one: a wrong batch is wrong math."""
    return tf.matmul(x, W) / tf.cast(tf.shape(x)[0], tf.float32)


def pair(a, b):
    return tf.matmul(a, W) * b


def _raises(t):
    raise RuntimeError("the user's code failed")


def _only_matmul(node):
    return node.op == "MatMul"


# -- trace time ----------------------------------------------------------------------------------------------
#: (id, func, example_inputs, options, subgraph_builder_function, error type, message pattern)
TRACE_ERRORS: list[tuple[str, Any, Any, dict[str, Any], Any, type[Exception], str]] = [
    ("func_not_callable", 5, X, {}, None, CaptureTypeError, r"func must be a keras.Model.*got int"),
    ("empty_tuple", dense, (), {}, None, CaptureValueError, r"example_inputs is an empty tuple"),
    ("empty_dict", dense, {}, {}, None, CaptureValueError, r"example_inputs is an empty dict"),
    ("no_parameters", lambda: tf.ones([2]), X, {}, None, CaptureValueError, r"takes no inputs"),
    (
        "str_example",
        dense,
        "abc",
        {},
        None,
        CaptureTypeError,
        r"must be a tf.Tensor or a numpy array, got str",
    ),
    ("none_example", dense, None, {}, None, CaptureTypeError, r"got NoneType"),
    ("bytes_example", dense, b"abc", {}, None, CaptureTypeError, r"got bytes"),
    (
        "ragged_example",
        dense,
        tf.ragged.constant([[1.0], [2.0, 3.0]]),
        {},
        None,
        CaptureTypeError,
        r"got Ragged",
    ),
    (
        "sparse_example",
        dense,
        tf.sparse.from_dense(tf.ones([2, 2])),
        {},
        None,
        CaptureTypeError,
        r"got Sparse",
    ),
    ("object_array", dense, np.array([object()]), {}, None, CaptureTypeError, r"numpy array of dtype object"),
    ("int_dict_key", lambda **k: k, {1: X}, {}, None, CaptureTypeError, r"keys must be strings, got 1"),
    (
        "too_few_params",
        lambda a, b: a + b,
        X,
        {},
        None,
        CaptureTypeError,
        r"missing a required argument: 'b'",
    ),
    ("too_many_args", lambda a: a, (X, X), {}, None, CaptureTypeError, r"too many positional arguments"),
    ("returns_none", lambda t: None, X, {}, None, CaptureTypeError, r"output of func is a NoneType"),
    ("returns_an_object", lambda t: (t, object()), X, {}, None, CaptureError, r"object"),
    (
        "user_code_raises",
        _raises,
        X,
        {},
        None,
        CaptureError,
        r"(?s)failed: RuntimeError: .*user's code failed",
    ),
    (
        "writes_a_variable",
        lambda t: STATE.assign_add(t) * 2.0,
        X,
        {},
        None,
        CaptureValueError,
        r"writes the variable 'running_total' at node .*inference-only.*remove the update",
    ),
    (
        "writes_in_a_cond",
        lambda t: tf.cond(tf.reduce_sum(t) > 0, lambda: STATE.assign(t), lambda: t) * 1.0,
        X,
        {},
        None,
        CaptureValueError,
        r"writes the variable 'running_total' at node 'cond' \(AssignVariableOp inside If\)",
    ),
    (
        "writes_extracted_weights",
        lambda t: STATE.assign_add(t) * 2.0,
        X,
        {"extract_weights": True},
        None,
        CaptureValueError,
        r"writes the variable 'running_total'",
    ),
    (
        "creates_a_variable",
        lambda t: tf.Variable(t) * 2.0,
        X,
        {},
        None,
        CaptureError,
        r"tracing func .* failed",
    ),
    ("unknown_option", dense, X, {"frobnicate": 1}, None, OptionsError, r"unknown option frobnicate"),
    ("unknown_backend", dense, X, {"backend": "tpu9"}, None, OptionsError, r"tpu9"),
    (
        "bad_fp32_cast",
        dense,
        X,
        {"fp32_cast": "int4"},
        None,
        OptionsError,
        r"must be one of none, matmult, all",
    ),
    (
        "bad_min_segment",
        dense,
        X,
        {"min_segment_size": -3},
        None,
        OptionsError,
        r"must be a positive integer",
    ),
    (
        "bad_placement",
        dense,
        X,
        {"placement": "random"},
        None,
        OptionsError,
        r"must be one of profile, static",
    ),
    (
        "dynamic_batch_scalar",
        lambda t: t * 2.0,
        tf.constant(1.0),
        {"dynamic_batch_size": True},
        None,
        OptionsError,
        r"input 't' is a scalar",
    ),
    (
        "dynamic_batch_reduction",
        tf.reduce_sum,
        X,
        {"dynamic_batch_size": True},
        None,
        OptionsError,
        r"output 'output_0' has shape \[\].*batch-wide reduction",
    ),
    (
        "dynamic_batch_disagree",
        lambda a, b: a + b[:2],
        (tf.ones([2, 4]), tf.ones([3, 4])),
        {"dynamic_batch_size": True},
        None,
        OptionsError,
        r"disagree on the batch size: 'a' has \[2, 4\] and 'b' has \[3, 4\]",
    ),
    (
        "pipeline_batches_disagree",
        pair,
        (tf.ones([2, 4]), tf.ones([3, 4])),
        {"neuroncore_pipeline_cores": 2},
        None,
        OptionsError,
        r"same batch size .* got batch sizes \[2, 3\]",
    ),
    (
        "callback_not_callable",
        dense,
        X,
        {},
        3,
        CaptureTypeError,
        r"subgraph_builder_function must be callable",
    ),
    (
        "callback_not_bool",
        dense,
        X,
        {},
        lambda n: "yes",
        CaptureTypeError,
        r"must return True or False.*'yes'",
    ),
    ("callback_raises", dense, X, {}, lambda n: 1 / 0, TraceError, r"raised ZeroDivisionError on node"),
]


@pytest.mark.parametrize(
    "func,example,options,callback,error,pattern", [pytest.param(*c[1:], id=c[0]) for c in TRACE_ERRORS]
)
def test_trace_time_bad_input_is_a_clear_error(func, example, options, callback, error, pattern):
    with pytest.raises(error, match=pattern):
        tfaccel.trace(func, example, callback, **{"backend": "xla", **options})


#: (id, func, example_inputs): odd but valid; the traced model must give the original's answer exactly
TRACE_EXACT = [
    ("python_constants_in_output", lambda t: (t * 2.0, 3, "s"), X),
    ("complex_input", lambda t: t * (2 + 1j), tf.constant([1 + 2j, -3j], tf.complex64)),
    ("int64_arithmetic", lambda t: t * t + 7, tf.constant([[3, 2**31 + 5]], tf.int64)),
    ("string_input", lambda t: tf.strings.length(t), tf.constant(["ab", "", "xyz"])),
    ("only_a_matmul_placed", dense, X),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("func,example", [pytest.param(*c[1:], id=c[0]) for c in TRACE_EXACT])
def test_trace_time_odd_but_valid_input_gives_the_exact_answer(func, example, backend):
    callback = _only_matmul if func is dense else None
    model = tfaccel.trace(func, example, callback, backend=backend)
    for got, want in zip(tf.nest.flatten(model(example)), tf.nest.flatten(func(example)), strict=True):
        # (a Python constant in the output becomes a tensor)
        got, want = (np.asarray(tf.convert_to_tensor(v).numpy()) for v in (got, want))
        if want.dtype.kind in "iub" or want.dtype.kind in "SOU":
            np.testing.assert_array_equal(got, want)
        else:
            assert_close(got, want)


# -- run time ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=BACKENDS)
def models(request, tmp_path_factory):
    """Per backend: traced models and the same models after save and tfaccel.load."""
    backend = request.param
    root = tmp_path_factory.mktemp(f"runtime_{backend}")
    traced = {
        "dense": tfaccel.trace(dense, X, backend=backend),
        "per_batch": tfaccel.trace(per_batch, X, backend=backend),
        "dict": tfaccel.trace(pair, {"a": X, "b": X}, backend=backend, dynamic_batch_size=True),
        "dynamic": tfaccel.trace(dense, X, backend=backend, dynamic_batch_size=True),
    }
    loaded = {}
    for name, model in traced.items():
        model.save(str(root / name))
        loaded[name] = tfaccel.load(root / name)
    return {"traced": traced, "loaded": loaded}


def _outer(model: Any, *shapes: Any) -> Callable[..., Any]:
    """The model called from the user's own tf.function whose input shapes are known only at run time."""
    specs = [tf.TensorSpec(s, tf.float32) for s in shapes]
    if len(specs) == 2:
        return tf.function(lambda a, b: model(a=a, b=b), input_signature=specs)
    return tf.function(lambda t: model(t), input_signature=specs)


R = np.random.default_rng(3)


def _x(*shape: int) -> tf.Tensor:
    return tf.constant(R.standard_normal(shape), tf.float32)


GRAPH = tf.errors.InvalidArgumentError  # a check inside the graph: TensorFlow's error type, our message
#: (id, model, call, error type, pattern): every row runs on both backends, traced and loaded
RUN_ERRORS: list[tuple[str, str, Callable[[Any], Any], type[Exception], str]] = [
    (
        "int32_tensor",
        "dense",
        lambda m: m(tf.ones([2, 4], tf.int32)),
        InputTypeError,
        r"input 'x' \(inputs\) must be float32, got int32; cast it with tf.cast",
    ),
    ("float64_numpy", "dense", lambda m: m(np.ones([2, 4])), InputTypeError, r"must be float32, got float64"),
    (
        "int64_numpy",
        "dense",
        lambda m: m(np.ones([2, 4], np.int64)),
        InputTypeError,
        r"x.astype\(np.float32\)",
    ),
    ("string_tensor", "dense", lambda m: m(tf.constant([["a"] * 4] * 2)), InputTypeError, r"got string"),
    ("python_float", "dense", lambda m: m(1.0), InputTypeError, r"must be float32, got float64"),
    (
        "python_list",
        "dense",
        lambda m: m([[1.0] * 4] * 2),
        InputTypeError,
        r"tf.Tensor or numpy array, got list",
    ),
    ("none", "dense", lambda m: m(None), InputTypeError, r"got NoneType"),
    (
        "wrong_rank",
        "dense",
        lambda m: m(tf.ones([8])),
        InputValueError,
        r"has shape \[8\] but the model was traced for \[2, 4\]",
    ),
    (
        "wrong_batch",
        "per_batch",  # its rows depend on the batch size: it keeps the traced batch, and says why
        lambda m: m(tf.ones([3, 4])),
        InputValueError,
        r"traced for \[2, 4\]; it takes batch 2 only: node .* does not keep the batch on dim 0",
    ),
    ("wrong_feature_dim", "dense", lambda m: m(tf.ones([2, 5])), InputValueError, r"has shape \[2, 5\]"),
    ("two_tensors", "dense", lambda m: m(X, X), InputTypeError, r"this model takes one tensor"),
    ("keyword_to_a_tensor_model", "dense", lambda m: m(x=X), InputTypeError, r"unexpected keyword argument"),
    ("missing_key", "dict", lambda m: m(a=X), InputValueError, r"missing \['b'\]"),
    ("extra_key", "dict", lambda m: m(a=X, b=X, c=X), InputValueError, r"unexpected \['c'\]"),
    (
        "positional_to_a_dict_model",
        "dict",
        lambda m: m(X, X),
        InputTypeError,
        r"call it as model\(\*\*inputs\)",
    ),
    (
        "dynamic_other_dim",
        "dynamic",
        lambda m: m(tf.ones([3, 5])),
        InputValueError,
        r"only dim 0 \(the batch\) may differ",
    ),
    (
        "dict_batches_disagree",
        "dict",
        lambda m: m(a=_x(3, 4), b=_x(2, 4)),
        InputValueError,
        r"input 'b' has shape \[2, 4\] and input 'a' has shape \[3, 4\]",
    ),
    # the same mistakes from inside the user's tf.function, where only the graph can see the shapes
    (
        "outer_wrong_batch",
        "per_batch",
        lambda m: _outer(m, [None, 4])(_x(3, 4)),
        GRAPH,
        r"\[input x has shape\] \[3 4\] \[but the model was traced for \[2, 4\]",
    ),
    (
        "outer_wrong_rank",
        "per_batch",
        lambda m: _outer(m, None)(_x(2, 4, 1)),
        GRAPH,
        r"\[input x has shape\] \[2 4 1\] \[but the model was traced for \[2, 4\]",
    ),
    (
        "outer_static_wrong_rank",
        "dense",
        lambda m: _outer(m, [None, None, None])(_x(2, 4, 1)),
        InputValueError,
        r"has shape \[None, None, None\] but the model was traced for \[2, 4\]",
    ),
    (
        "outer_dynamic_other_dim",
        "dynamic",
        lambda m: _outer(m, [None, None])(_x(3, 5)),
        GRAPH,
        r"\[input x has shape\] \[3 5\] \[but the model was traced for \[None, 4\]; only dim 0",
    ),
    (
        "outer_dict_batches_disagree",
        "dict",
        lambda m: _outer(m, [None, 4], [None, 4])(_x(3, 4), _x(2, 4)),
        GRAPH,
        r"input .{1,2}b.{1,2} must have the same batch size \(dim 0\) as input .{1,2}a",
    ),
]


@pytest.mark.parametrize("loaded", [False, True], ids=["traced", "loaded"])
@pytest.mark.parametrize("name,call,error,pattern", [pytest.param(*c[1:], id=c[0]) for c in RUN_ERRORS])
def test_run_time_bad_input_is_a_clear_error(models, loaded, name, call, error, pattern):
    model = models["loaded" if loaded else "traced"][name]
    with pytest.raises(error, match=pattern):
        call(model)


#: (id, model, inputs, reference): valid calls at the edges; the answer is the original function's
RUN_EXACT: list[tuple[str, str, Callable[[], Any], Callable[..., Any]]] = [
    ("numpy_float32", "dense", lambda: (X.numpy(),), dense),
    ("variable_input", "dense", lambda: (tf.Variable(X),), lambda v: dense(tf.convert_to_tensor(v))),
    (
        "inf_and_huge",
        "dense",
        lambda: (tf.constant([[np.inf, 1, 2, 3], [3e38, -3e38, 0, 1]], tf.float32),),
        dense,
    ),
    ("training_keyword_ignored", "dense", lambda: (X,), dense),
    ("outer_right_batch", "per_batch", lambda: (X,), per_batch),
    ("dynamic_batch_1", "dynamic", lambda: (_x(1, 4),), dense),
    ("dynamic_batch_5", "dynamic", lambda: (_x(5, 4),), dense),
    ("dynamic_empty_batch", "dynamic", lambda: (tf.zeros([0, 4]),), dense),
    ("dict_batch_3", "dict", lambda: ({"a": _x(3, 4), "b": _x(3, 4)},), lambda d: pair(**d)),
]


@pytest.mark.parametrize("loaded", [False, True], ids=["traced", "loaded"])
@pytest.mark.parametrize("name,inputs,reference", [pytest.param(*c[1:], id=c[0]) for c in RUN_EXACT])
def test_run_time_edge_input_gives_the_original_answer(models, loaded, name, inputs, reference):
    model = models["loaded" if loaded else "traced"][name]
    args = inputs()
    want = reference(*args)
    if name == "per_batch":
        got = _outer(model, [None, 4])(*args)
    elif name == "dict":
        got = model(**args[0])
    else:
        got = model(*args, training=False) if name == "dense" else model(*args)
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))  # NaN stays NaN (no number for it)
    assert_close(got, want)


# -- save and load time --------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=BACKENDS)
def saved(request, tmp_path_factory):
    """A saved model with variables (openvino: the compiled model; xla: --extract-weights) and its answer;
    one that keeps its traced batch (its rows depend on the batch size), as the damage cases assume.
    """
    backend = request.param
    options = {"extract_weights": True} if backend == "xla" else {}
    model = tfaccel.trace(per_batch, X, backend=backend, **options)
    assert not model.tfaccel_executable.batch_plan.any_batch
    path = tmp_path_factory.mktemp(f"saved_{backend}") / "model"
    model.save(str(path))
    return model, path


def _meta_edit(edit: Callable[[dict[str, Any]], Any]) -> Callable[[Any], None]:
    def mutate(path: Any) -> None:
        target = path / "assets.extra" / "tfaccel.json"
        meta = json.loads(target.read_text())
        result = edit(meta)
        target.write_text(
            result if isinstance(result, str) else json.dumps(meta if result is None else result)
        )

    return mutate


def _spec(meta: dict[str, Any]) -> dict[str, Any]:
    return meta["layout"]["specs"][0]


def _truncate(relative: str) -> Callable[[Any], None]:
    def mutate(path: Any) -> None:
        files = sorted(path.glob(relative))
        assert files, relative
        data = files[0].read_bytes()
        files[0].write_bytes(data[: len(data) // 2])

    return mutate


def _delete(relative: str) -> Callable[[Any], None]:
    def mutate(path: Any) -> None:
        for found in path.glob(relative):
            shutil.rmtree(found) if found.is_dir() else found.unlink()

    return mutate


META = r"assets.extra/tfaccel.json"
#: (id, mutation of a copy of the saved directory, pattern of the ExportError)
LOAD_ERRORS: list[tuple[str, Callable[[Any], None], str]] = [
    ("no_metadata", _delete(META), r"has no assets.extra/tfaccel.json: it was not saved by tfaccel"),
    ("metadata_not_json", _meta_edit(lambda m: "{{{"), r"cannot be read .*save the traced model again"),
    ("metadata_a_list", _meta_edit(lambda m: [1]), r"has format None; this tfaccel reads formats 1, 2"),
    ("metadata_newer_format", _meta_edit(lambda m: m.update(format=3)), r"has format 3"),
    ("metadata_lacks_digests", _meta_edit(lambda m: m.pop("sha256") and None), r"lacks sha256"),
    ("metadata_lacks_layout", _meta_edit(lambda m: m.pop("layout") and None), r"lacks layout"),
    ("layout_a_string", _meta_edit(lambda m: m.update(layout="x")), r"is malformed \(TypeError"),
    ("unknown_convention", _meta_edit(lambda m: m["layout"].update(convention="zzz")), r"is malformed .*zzz"),
    ("bogus_dtype", _meta_edit(lambda m: _spec(m).update(dtype="float99")), r"is malformed .*float99"),
    ("negative_dim", _meta_edit(lambda m: _spec(m).update(shape=[-2, 4])), r"is malformed"),
    (
        "shape_edited",
        _meta_edit(lambda m: _spec(m).update(shape=[3, 4])),
        r"does not match the saved graph's serving_default signature \(input 'x' float32\(3, 4\) vs",
    ),
    ("rank_edited", _meta_edit(lambda m: _spec(m).update(shape=[2, 4, 1])), r"does not match"),
    ("dtype_edited", _meta_edit(lambda m: _spec(m).update(dtype="int32")), r"does not match .*int32"),
    ("input_renamed", _meta_edit(lambda m: _spec(m).update(name="y")), r"inputs \['y'\] vs \['x'\]"),
    ("output_renamed", _meta_edit(lambda m: m.update(output_names=["scores"])), r"outputs \['scores'\] vs"),
    ("output_names_repeat", _meta_edit(lambda m: m.update(output_names=["a", "a"])), r"repeat a name"),
    ("report_an_int", _meta_edit(lambda m: m.update(report=5)), r"is malformed"),
    (
        "dynamic_batch_a_string",
        _meta_edit(lambda m: m.update(dynamic_batch="x")),
        r"positive integer or null",
    ),
    ("dynamic_batch_claimed", _meta_edit(lambda m: m.update(dynamic_batch=2)), r"does not match"),
    (
        "batch_plan_bad_mode",
        _meta_edit(lambda m: m["batch_plan"].update(mode="zzz")),
        r"batch_plan.mode must",
    ),
    (
        "batch_plan_extra_key",
        _meta_edit(lambda m: m["batch_plan"].update(x=1)),
        r"batch_plan must have the keys",
    ),
    ("batch_plan_zero_chunk", _meta_edit(lambda m: m["batch_plan"].update(chunk=0)), r"positive integer"),
    (
        "batch_plan_fixed_with_chunk",
        _meta_edit(lambda m: m["batch_plan"].update(chunk=2)),
        r"a fixed plan with chunk 2 is inconsistent",
    ),
    (
        "batch_plan_claims_any_batch",
        _meta_edit(lambda m: m["batch_plan"].update(mode="chunked", batch=2, chunk=2, any_batch=True)),
        r"dynamic_batch None does not match the batch_plan",
    ),
    ("no_saved_model_pb", _delete("saved_model.pb"), r"lacks saved_model.pb, which was saved with the model"),
    (
        "truncated_saved_model_pb",
        _truncate("saved_model.pb"),
        r"saved_model.pb is not the file saved with the model",
    ),
    ("no_variables", _delete("variables"), r"lacks variables/variables"),
    ("no_variables_index", _delete("variables/variables.index"), r"lacks variables/variables.index"),
    (
        "truncated_variables_data",
        _truncate("variables/variables.data-*"),
        r"variables.data-.* is not the file saved",
    ),
    ("digests_not_a_map", _meta_edit(lambda m: m.update(sha256=[1])), r"sha256 is not a map of file digests"),
    ("digest_path_escapes", _meta_edit(lambda m: m["sha256"].update({"../x": "0"})), r"lacks \.\./x"),
    (
        "digest_edited",
        _meta_edit(lambda m: m["sha256"].update({"saved_model.pb": "0" * 64})),
        r"is not the file saved",
    ),
]


@pytest.mark.parametrize("mutate,pattern", [pytest.param(*c[1:], id=c[0]) for c in LOAD_ERRORS])
def test_load_time_damage_is_a_clear_error(saved, mutate, pattern, tmp_path):
    _, path = saved
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    mutate(copy)
    with pytest.raises(ExportError, match=pattern):
        tfaccel.load(copy)


def test_metadata_written_before_the_batch_plan_loads_and_answers_the_same(saved, tmp_path):
    # tfaccel.json without "batch_plan" (saved by an earlier tfaccel): the plan follows from dynamic_batch
    model, path = saved
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    _meta_edit(lambda m: m.pop("batch_plan") and None)(copy)
    again = tfaccel.load(copy)
    assert not again.tfaccel_executable.batch_plan.any_batch
    np.testing.assert_array_equal(again(X).numpy(), model(X).numpy())


def test_the_saved_batch_plan_is_the_traced_one(saved):
    model, path = saved
    assert tfaccel.load(path).tfaccel_executable.batch_plan == model.tfaccel_executable.batch_plan


def test_load_time_bad_paths_are_clear_errors(tmp_path):
    module = tf.Module()
    module.f = tf.function(lambda x: x + 1, input_signature=[tf.TensorSpec([1])])
    tf.saved_model.save(module, str(tmp_path / "plain"))
    (tmp_path / "file").write_text("")
    for path, pattern in (
        (tmp_path / "missing", r"does not exist"),
        (tmp_path / "file", r"is not a directory"),
        (tmp_path / "plain", r"was not saved by tfaccel.*tf\.saved_model\.load"),
        (123, r"load: the path must be a str or os.PathLike"),
        (None, r"load: the path must be a str or os.PathLike"),
    ):
        with pytest.raises(ExportError, match=pattern):
            tfaccel.load(path)
    with pytest.raises(ExportError, match=r"load_report: the path must be"):
        tfaccel.load_report(3.5)


#: (id, call given (model, tmp_path), error type, pattern): saving wrongly never writes a broken model
SAVE_ERRORS: list[tuple[str, Callable[[Any, Any], Any], type[Exception], str]] = [
    ("keras_file", lambda m, d: m.save(str(d / "m.keras")), ExportError, r"save it to a directory"),
    (
        "keras_save_model",
        lambda m, d: keras.saving.save_model(m, str(d / "m.keras")),
        KerasFormatError,
        r"cannot be saved in Keras' format.*model.save\(dir\)",
    ),
    ("keras_h5", lambda m, d: keras.saving.save_model(m, str(d / "m.h5")), KerasFormatError, r"save\(dir\)"),
    ("save_weights", lambda m, d: m.save_weights(str(d / "w.weights.h5")), KerasFormatError, r"save\(dir\)"),
    ("get_config", lambda m, d: m.get_config(), KerasFormatError, r"rebuilt from a config"),
    (
        "export_onnx",
        lambda m, d: m.export(str(d / "e"), format="onnx"),
        ExportError,
        r"format='tf_saved_model'",
    ),
    ("into_a_file", lambda m, d: ((d / "f").write_text(""), m.save(str(d / "f"))), ExportError, r"is a file"),
    (
        "into_a_busy_directory",
        lambda m, d: ((d / "notes.txt").write_text("x"), m.save(str(d))),
        ExportError,
        r"is not empty and holds no SavedModel \(notes.txt\)",
    ),
    (
        "under_a_file",
        lambda m, d: ((d / "f").write_text(""), m.save(str(d / "f" / "m"))),
        ExportError,
        r"cannot write the traced model next to",
    ),
    ("int_path", lambda m, d: m.save(7), ExportError, r"save: the path must be a str or os.PathLike"),
]


@pytest.mark.parametrize("call,error,pattern", [pytest.param(*c[1:], id=c[0]) for c in SAVE_ERRORS])
def test_save_time_misuse_is_a_clear_error_and_writes_no_model(saved, call, error, pattern, tmp_path):
    model, _ = saved
    before = set(os.listdir(tmp_path))
    with pytest.raises(error, match=pattern):
        call(model, tmp_path)
    written = set(os.listdir(tmp_path)) - before - {"f", "notes.txt"}
    # Keras opens a .keras/.h5 file before it asks for the config: an empty file at most, never a model
    assert not [
        n
        for n in written
        if b"model_config" in (tmp_path / n).read_bytes()
        or (n.endswith(".keras") and (tmp_path / n).stat().st_size)
    ], written
    assert not list(tmp_path.rglob("saved_model.pb"))
