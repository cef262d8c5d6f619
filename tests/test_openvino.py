"""The openvino backend end to end: the op library, placement from OpenVINO's frontend, numerics, save and
fresh-process load, the kernel's own checks, concurrency, fp32-cast, dynamic batch and workdir artifacts.

Everything runs the real op on real OpenVINO; models are small so the default suite stays fast (the model
zoo runs with ``pytest -m slow``).
"""

from __future__ import annotations

import json
import threading

import keras
import numpy as np
import openvino as ov
import pytest
import tensorflow as tf

import tfaccel
from conftest import SRC, assert_close, run_python
from tfaccel import native
from tfaccel.compiler.placement import Placement, Reason

#: bf16 inside OpenVINO (--fp32-cast): relative error bound on logits of the small models here
BF16_RELATIVE_ERROR = 3e-2
W = tf.constant(np.random.default_rng(0).standard_normal((4, 4)), tf.float32)


def _rows(model):
    return {r.node: r for r in model.placement_report.decisions}


def _subgraphs(model):
    return {s.name: list(s.nodes) for s in model.placement_report.subgraphs}


def _relative_error(got, expected):
    got, expected = np.asarray(got), np.asarray(expected)
    return float(np.max(np.abs(got - expected)) / np.max(np.abs(expected)))


def _call_flat_ops(traced):
    return {
        op.type for op in traced.tfaccel_executable.call_flat.get_concrete_function().graph.get_operations()
    }


def small_cnn():
    keras.utils.set_random_seed(3)
    inp = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(10)(x))


@pytest.fixture(scope="module")
def cnn():
    model = small_cnn()
    x = tf.random.uniform([2, 16, 16, 3], seed=4)
    return model, x, tfaccel.trace(model, x, backend="openvino")


def test_op_library_is_built_for_these_wheels_and_auto_picks_openvino():
    library = native.load()
    assert library.available, library.error
    folder = library.path.split("/")[-2]
    assert folder.startswith(f"tf{tf.__version__}-ov{ov.__version__.split('-')[0]}")
    from tfaccel.backends import resolve_auto

    assert resolve_auto() == ("openvino", None)


def test_whole_cnn_runs_in_one_openvino_subgraph_with_equal_answers(cnn):
    model, x, traced = cnn
    assert_close(traced(x), model(x, training=False))
    assert traced.on_neuron_ratio == 1.0
    rows = _rows(traced)
    # unlike xla, the depthwise convolution is compiled (OpenVINO runs it fast)
    (depthwise,) = [r for r in rows.values() if r.op == "DepthwiseConv2dNative"]
    assert depthwise.placement is Placement.ACCELERATOR and depthwise.subgraph == "tfaccel_sg_0"
    (subgraph,) = traced.placement_report.subgraphs
    assert subgraph.backend == "openvino"
    ops = [n.op for n in traced.tfaccel_executable.graph_def.node]
    assert ops.count(native.OP_TYPE) == 1
    other = rows.keys() - set(subgraph.nodes)
    assert all(rows[n].op in ("Placeholder", "Const", "NoOp", "Identity") for n in other), other


def test_string_ops_split_the_graph_and_say_why():
    def f(x):
        h = tf.nn.relu(tf.matmul(x, W, name="mm1") + 1.0, name="relu1")
        back = tf.strings.to_number(tf.strings.as_string(h, name="to_text"), name="from_text")
        return tf.tanh(tf.matmul(back, W, name="mm2") * 3.0, name="out")

    x = tf.random.uniform([2, 4], seed=1)
    traced = tfaccel.trace(f, x, backend="openvino")
    assert_close(traced(x), f(x))
    assert _subgraphs(traced) == {
        "tfaccel_sg_0": ["mm1", "add", "relu1"],
        "tfaccel_sg_1": ["mm2", "mul", "out", "Identity"],
    }
    rows = _rows(traced)
    assert rows["to_text"].placement is rows["from_text"].placement is Placement.RUNTIME
    assert "string" in rows["to_text"].detail
    assert rows["from_text"].detail == "its input dtype string cannot enter a compiled subgraph"


def test_float64_stays_on_tf_because_openvino_computes_it_in_float32():
    def f(x):
        y = tf.matmul(x, W, name="mm")
        return tf.cast(tf.sqrt(tf.cast(tf.abs(y), tf.float64), name="sqrt64"), tf.float32) + 1.0

    x = tf.random.uniform([2, 4], seed=11)
    traced = tfaccel.trace(f, x, backend="openvino")
    assert_close(traced(x), f(x))
    row = _rows(traced)["sqrt64"]
    assert row.placement is Placement.RUNTIME
    assert row.detail == "OpenVINO's CPU plugin computes float64 in float32 (not exact)"


def test_op_without_a_frontend_conversion_stays_on_tf_naming_the_op():
    def f(x):
        y = tf.matmul(x, W, name="mm1")
        z = tf.math.lgamma(tf.abs(y) + 1.0, name="lg")
        return tf.matmul(z, W, name="mm2") + 1.0

    x = tf.random.uniform([2, 4], seed=2)
    traced = tfaccel.trace(f, x, backend="openvino")
    assert_close(traced(x), f(x))
    row = _rows(traced)["lg"]
    assert row.placement is Placement.RUNTIME and row.reason is Reason.UNSUPPORTED
    assert row.detail == "OpenVINO's TensorFlow frontend has no conversion for Lgamma"
    assert {"mm1", "mm2"} <= {n for nodes in _subgraphs(traced).values() for n in nodes}


def test_a_loop_whose_body_cannot_convert_stays_on_tf():
    def f(x):
        def body(i, y):
            return i + 1, tf.math.lgamma(tf.abs(tf.matmul(y, W)) + 1.0)

        _, y = tf.while_loop(lambda i, y: i < 2, body, (0, x))
        return tf.matmul(y, W, name="after")

    x = tf.random.uniform([2, 4], seed=3)
    traced = tfaccel.trace(f, x, backend="openvino")
    assert_close(traced(x), f(x))
    (loop,) = [r for r in traced.placement_report.decisions if r.op == "StatelessWhile"]
    assert loop.placement is Placement.RUNTIME
    assert "body holds" in loop.detail and "cannot convert" in loop.detail
    assert _rows(traced)["after"].placement is Placement.ACCELERATOR


def test_control_flow_converts_when_its_bodies_do():
    def f(x, n):
        y = tf.cond(tf.reduce_sum(x) > 0, lambda: tf.matmul(x, W), lambda: x * 2.0)
        _, y = tf.while_loop(lambda i, y: i < n, lambda i, y: (i + 1, tf.tanh(tf.matmul(y, W))), (0, y))
        return y

    x, n = tf.random.uniform([2, 4]), tf.constant(3)
    traced = tfaccel.trace(f, (x, n), backend="openvino")
    ops = {r.op: r.placement for r in traced.placement_report.decisions}
    assert ops["StatelessWhile"] is ops["StatelessIf"] is Placement.ACCELERATOR
    for args in ((x, n), (-x, tf.constant(5)), (x, tf.constant(0))):
        assert_close(traced(*args), f(*args))


def test_callback_decides_placement_node_by_node():
    model = small_cnn()
    x = tf.random.uniform([1, 16, 16, 3], seed=5)
    traced = tfaccel.trace(
        model, x, backend="openvino", subgraph_builder_function=lambda node: node.op == "Conv2D"
    )
    assert_close(traced(x), model(x, training=False))
    rows = traced.placement_report.decisions
    assert [r.op for r in rows if r.placement is Placement.ACCELERATOR] == ["Conv2D"]
    assert traced.placement_report.subgraphs[0].backend == "openvino"
    assert 0 < traced.on_neuron_ratio < 0.5


def test_save_then_fresh_process_import_tfaccel_and_load(cnn, tmp_path):
    model, x, traced = cnn
    traced.save(str(tmp_path / "ov"))
    # the compiled model is a variable, never a node attribute: the graph stays small
    (xml_var,) = [v for v in traced.tfaccel_executable.weights if v.name.endswith("_xml:0")]
    (bin_var,) = [v for v in traced.tfaccel_executable.weights if v.name.endswith("_bin:0")]
    weights = bin_var.numpy()
    assert len(weights) > 1000 and weights not in (tmp_path / "ov" / "saved_model.pb").read_bytes()
    assert weights in b"".join(p.read_bytes() for p in (tmp_path / "ov" / "variables").iterdir())
    assert xml_var.numpy().startswith(b"<?xml")
    np.savez(tmp_path / "io.npz", x=x.numpy(), y=model(x, training=False).numpy())
    code = f"""
import numpy as np, tensorflow as tf
import tfaccel
io = np.load({str(tmp_path / "io.npz")!r})
again = tfaccel.load({str(tmp_path / "ov")!r})
np.testing.assert_allclose(again(io['x']).numpy(), io['y'], rtol=1e-5, atol=1e-5)
sig = tf.saved_model.load({str(tmp_path / "ov")!r}).signatures['serving_default']
np.testing.assert_allclose(sig(image=tf.constant(io['x']))['output_0'].numpy(), io['y'], rtol=1e-5, atol=1e-5)
print('ok')
"""
    assert run_python(code, cwd=tmp_path, env={"PYTHONPATH": SRC}).strip().endswith("ok")
    without = f"import tensorflow as tf\ntf.saved_model.load({str(tmp_path / 'ov')!r})"
    with pytest.raises(AssertionError, match="Op type not registered 'TfaccelOpenvino'"):
        run_python(without, cwd=tmp_path, env={"PYTHONPATH": ""})


def test_the_kernel_refuses_a_wrong_shape_naming_the_input(cnn):
    _, _, traced = cnn
    variables = {v.name.split(":")[0]: v for v in traced.tfaccel_executable.weights}
    (xml_name,) = [n for n in variables if n.endswith("_xml")]
    (call,) = [n for n in traced.tfaccel_executable.graph_def.node if n.op == native.OP_TYPE]
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        native.ops().tfaccel_openvino(
            model_xml=variables[xml_name],
            model_weights=variables[xml_name[: -len("_xml")] + "_bin"],
            args=[tf.zeros([3, 15, 16, 3])],  # any batch (dim 0 is dynamic: the batch propagates), not H
            Tout=[tf.float32],
            model_key=call.attr["model_key"].s.decode(),
            precision="f32",
            input_names=["image:0"],
            output_shapes=[tf.TensorShape([None, 10])],
        )
    message = str(info.value)
    assert "input 'image:0' has shape [3,15,16,3]" in message and "expects [?,16,16,3]" in message


def test_concurrent_calls_are_bit_identical_to_serial(cnn):
    model, x, traced = cnn
    rng = np.random.default_rng(7)
    inputs = [
        [tf.constant(rng.uniform(size=x.shape).astype(np.float32)) for _ in range(25)] for _ in range(8)
    ]
    serial = [[traced(t).numpy() for t in row] for row in inputs]
    results: list[list[np.ndarray]] = [[] for _ in inputs]
    failures: list[BaseException] = []

    def work(i):
        try:
            results[i] = [traced(t).numpy() for t in inputs[i]]
        except BaseException as err:
            failures.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    for row_serial, row_concurrent in zip(serial, results, strict=True):
        for a, b in zip(row_serial, row_concurrent, strict=True):
            np.testing.assert_array_equal(a, b)
    for row, row_serial in zip(inputs, serial, strict=True):  # and the answers are the model's
        assert_close(row_serial[0], model(row[0], training=False))
        assert_close(row_serial[-1], model(row[-1], training=False))


@pytest.mark.parametrize("mode", ["matmult", "all"])
def test_fp32_cast_runs_openvino_in_bf16(mode):
    model = small_cnn()
    x = tf.random.uniform([2, 16, 16, 3], seed=6)
    traced = tfaccel.trace(model, x, backend="openvino", fp32_cast=mode)
    (call,) = [n for n in traced.tfaccel_executable.graph_def.node if n.op == native.OP_TYPE]
    assert call.attr["precision"].s == b"bf16"
    # the TF graph is not rewritten: OpenVINO's precision hint does the cast
    assert not any(n.op == "Cast" for n in traced.tfaccel_executable.graph_def.node)
    assert f"--fp32-cast={mode}" in traced.placement_report.options.split()
    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("OpenVINO's CPU plugin has no bf16 on this CPU: it compiles f32 whatever the hint")
    err = _relative_error(traced(x), model(x, training=False))
    assert 1e-4 < err <= BF16_RELATIVE_ERROR  # fp32 stays below 1e-6 here: the arithmetic is bf16


def test_dynamic_batch_is_one_graph_for_any_batch(cnn):
    model = small_cnn()
    traced = tfaccel.trace(
        model, tf.random.uniform([2, 16, 16, 3]), backend="openvino", dynamic_batch_size=True
    )
    graph_def = traced.tfaccel_executable.graph_def
    (call,) = [n for n in graph_def.node if n.op == native.OP_TYPE]
    assert call.attr["output_shapes"].list.shape[0].dim[0].size == -1  # OpenVINO's dynamic dim
    assert "If" not in _call_flat_ops(traced)  # no cond + map_fn over chunks: one call for any batch
    assert traced.placement_report.fallbacks == ()
    for n in (1, 2, 5, 9):
        x = tf.random.uniform([n, 16, 16, 3], seed=n)
        assert_close(traced(x), model(x, training=False))


def test_dynamic_batch_falls_back_to_chunks_when_the_model_fixes_its_batch(caplog):
    def f(x):
        return tf.reshape(tf.matmul(x, W), [2, 4]) * 2.0

    traced = tfaccel.trace(f, tf.ones([2, 4]), backend="openvino", dynamic_batch_size=True)
    (note,) = traced.placement_report.fallbacks
    assert "does not keep an unknown batch dimension" in note and "chunks of the traced batch" in note
    assert "dynamic batch fallback" in caplog.text
    assert "If" in _call_flat_ops(traced)  # cond(batch == traced batch, direct, map_fn over chunks)
    x = tf.random.uniform([5, 4], seed=9)
    assert_close(traced(x), tf.matmul(x, W) * 2.0)


def test_workdir_holds_the_openvino_ir_that_reproduces_the_subgraph(tmp_path):
    model = small_cnn()
    x = tf.random.uniform([1, 16, 16, 3], seed=8)
    tfaccel.trace(model, x, backend="openvino", workdir=str(tmp_path))
    folder = tmp_path / "subgraphs" / "tfaccel_sg_0"
    options = json.loads((folder / "compile_options.json").read_text())
    assert options["INFERENCE_PRECISION_HINT"] == "f32" and options["backend"] == "openvino"
    core = ov.Core()
    ir = core.read_model(str(folder / "openvino.xml"), str(folder / "openvino.bin"))
    compiled = core.compile_model(ir, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    golden_in = np.load(folder / "golden_inputs.npz")
    golden_out = np.load(folder / "golden_outputs.npz")
    result = compiled([golden_in[k] for k in sorted(golden_in.files)])
    assert_close(result[0], golden_out["output_0"])
    assert "OpenVINO ops" in (folder / "compile.log").read_text()


def test_backend_flag_from_neuron_cc_flags(monkeypatch):
    monkeypatch.setenv("NEURON_CC_FLAGS", "--backend=xla")
    traced = tfaccel.trace(lambda x: tf.matmul(x, W), tf.ones([1, 4]))
    assert traced.placement_report.subgraphs[0].backend == "xla"
    monkeypatch.setenv("NEURON_CC_FLAGS", "--backend=openvino")
    traced = tfaccel.trace(lambda x: tf.matmul(x, W), tf.ones([1, 4]))
    assert traced.placement_report.subgraphs[0].backend == "openvino"


def test_a_subgraph_reading_a_shape_input_compiles_and_runs():
    # compiled at trace time without running on made-up inputs: zeros for `shape` would be an invalid reshape
    def f(x, shape):
        return tf.tanh(tf.reshape(tf.matmul(x, W), shape) * 2.0)

    args = (tf.random.uniform([2, 4], seed=10), tf.constant([4, 2]))
    traced = tfaccel.trace(f, args, backend="openvino")
    assert traced.placement_report.fallbacks == ()
    assert _rows(traced)["Reshape"].placement is Placement.ACCELERATOR
    assert_close(traced(*args), f(*args))
    assert_close(traced(args[0], tf.constant([8, 1])), f(args[0], tf.constant([8, 1])))


def test_without_a_compiler_auto_falls_back_to_xla_and_says_why(tmp_path):
    code = """
import tensorflow as tf, tfaccel
from tfaccel import native
library = native.load()
assert not library.available and "no C++ compiler ('/nonexistent/g++')" in library.error, library.error
traced = tfaccel.trace(lambda x: tf.matmul(x, x), tf.ones([2, 2]))
(note,) = traced.placement_report.fallbacks
assert traced.placement_report.subgraphs[0].backend == "xla" and "using xla" in note, note
try:
    tfaccel.trace(lambda x: tf.matmul(x, x), tf.ones([2, 2]), backend="openvino")
    raise SystemExit("--backend=openvino was accepted without the op library")
except tfaccel.OptionsError as err:
    assert "--backend=openvino is unavailable" in str(err) and "--backend=xla" in str(err), err
print("ok")
"""
    env = {"PYTHONPATH": SRC, "CXX": "/nonexistent/g++", "TFACCEL_CACHE_DIR": str(tmp_path / "cache")}
    assert run_python(code, cwd=tmp_path, env=env).strip().endswith("ok")


def test_an_input_the_frontend_dropped_becomes_an_unused_parameter(tmp_path):
    from tfaccel.backends.openvino import _in_call_order
    from tfaccel.compiler.ir import TensorInfo

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [2, 4], name="tfaccel_in_0")
        tf.identity(tf.matmul(x, tf.constant(W.numpy())), name="tfaccel_out_0")
    (tmp_path / "g.pb").write_bytes(graph.as_graph_def().SerializeToString())
    model = ov.convert_model(str(tmp_path / "g.pb"), output=["tfaccel_out_0:0"])
    infos = (TensorInfo("float32", (2, 4)), TensorInfo("int32", (None, 3)))
    ordered = _in_call_order(ov, model, infos, ["tfaccel_out_0:0"])
    assert [p.get_friendly_name() for p in ordered.get_parameters()] == ["tfaccel_in_0:0", "tfaccel_in_1:0"]
    assert str(ordered.get_parameters()[1].get_partial_shape()) == "[?,3]"
    compiled = ov.Core().compile_model(ordered, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    x = np.ones((2, 4), np.float32)
    assert_close(compiled([x, np.zeros((5, 3), np.int32)])[0], x @ W.numpy())
