"""``--quantize=int8`` (issue 19 item 1): NNCF calibrated at each openvino subgraph's boundary, kept only
within ``--quantize-tolerance`` of fp32 on held-out inputs, saved and reloaded like any traced model.

Numbers are checked against the original model: an int8 subgraph by the same relative RMS error the
tolerance bounds (:func:`quantization_error`), an fp32 one with the suite's RTOL/ATOL. The speed-up and the
top-1 agreement on a trained model are measured by ``benchmarks/bench_quantize.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

import tfaccel
from conftest import SRC, assert_close, run_python
from tfaccel.backends.openvino_quantize import quantization_error

#: the default --quantize-tolerance: what an int8 answer may differ from fp32 (relative RMS)
TOLERANCE = 0.05


def _cnn(seed: int = 19) -> tf.keras.Model:
    """Two convolutions and a dense head, with fixed weights."""
    inputs = tf.keras.Input((24, 24, 3))
    h = tf.keras.layers.Conv2D(16, 3, activation="relu")(inputs)
    h = tf.keras.layers.Conv2D(32, 3, strides=2, activation="relu")(h)
    outputs = tf.keras.layers.Dense(10)(tf.keras.layers.GlobalAveragePooling2D()(h))
    model = tf.keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    model.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.3 for w in model.get_weights()])
    return model


def _samples(count: int, seed: int = 0, batch: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((batch, 24, 24, 3), dtype=np.float32) for _ in range(count)]


X = _samples(1, seed=99)[0]


@pytest.fixture(scope="module")
def cnn() -> tf.keras.Model:
    return _cnn()


@pytest.fixture(scope="module")
def quantized(cnn):
    return tfaccel.trace(cnn, X, calibration_inputs=_samples(10), quantize="int8", backend="openvino")


def test_an_int8_subgraph_answers_within_the_tolerance_and_the_report_says_so(cnn, quantized):
    (note,) = [n for n in quantized.placement_report.fallbacks if n.startswith("--quantize=int8")]
    assert "tfaccel_sg_0 runs int8: error" in note and "on 2 held-out calibration input(s)" in note, note
    assert "--quantize=int8" in quantized.placement_report.options
    for x in _samples(5, seed=7):
        error = quantization_error([cnn(x).numpy()], [quantized(x).numpy()])
        assert 0 < error <= TOLERANCE, error  # int8 differs from fp32, within the tolerance
    lines: list[str] = []
    quantized.summary(print_fn=lines.append)
    assert any(line.startswith("  note: --quantize=int8: tfaccel_sg_0 runs int8") for line in lines), lines


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_a_call_with_a_non_finite_input_gets_tensorflows_answer(cnn, quantized, bad):
    """A quantizer has no NaN or infinity: such a call runs the fp32 subgraph (NaN guards and all)."""
    x = X.copy()
    x[0, 5, 5, 1] = bad
    want = cnn(x).numpy()
    assert not np.isfinite(want).all()  # TF's answer is not a number here: the int8 model alone gave numbers
    assert_close(quantized(x), want)  # NaN where TF has NaN, inf where it has inf


def test_a_reloaded_int8_model_answers_bit_for_bit_in_a_fresh_process(quantized, tmp_path):
    quantized.save(str(tmp_path / "m"))
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", quantized(X).numpy())
    code = """
import numpy as np, tfaccel
m = tfaccel.load("m")
assert np.array_equal(m(np.load("x.npy")).numpy(), np.load("y.npy")), "answers differ"
print([n for n in m.placement_report.fallbacks if n.startswith("--quantize=int8")][0])
"""
    out = run_python(code, cwd=tmp_path, env={"PYTHONPATH": SRC})
    assert "tfaccel_sg_0 runs int8" in out


def test_relaxed_nan_semantics_run_the_int8_op_alone_and_directly(cnn):
    """``--nan-semantics=relaxed``: no finiteness check around the int8 op, so an eager call of a
    one-subgraph model goes straight to OpenVINO (the NaN then comes out as int8's number)."""
    traced = tfaccel.trace(
        cnn, X, calibration_inputs=_samples(10), quantize="int8", backend="openvino", nan_semantics="relaxed"
    )
    (note,) = [n for n in traced.placement_report.fallbacks if n.startswith("--quantize=int8")]
    assert "tfaccel_sg_0 runs int8" in note, note
    direct = traced.tfaccel_executable.direct
    assert direct is not None
    before = direct.calls
    for x in _samples(3, seed=8):
        assert 0 < quantization_error([cnn(x).numpy()], [traced(x).numpy()]) <= TOLERANCE
    assert direct.calls == before + 3
    x = X.copy()
    x[0, 5, 5, 1] = np.nan
    assert np.isfinite(traced(x).numpy()).all()  # the quantizer clamps the NaN (the user's choice)


def test_a_subgraph_above_the_tolerance_stays_fp32_and_the_report_says_why(cnn):
    traced = tfaccel.trace(
        cnn, X, calibration_inputs=_samples(10), quantize="int8", quantize_tolerance=1e-6, backend="openvino"
    )
    (note,) = [n for n in traced.placement_report.fallbacks if n.startswith("--quantize=int8")]
    assert "tfaccel_sg_0 stays fp32: int8 error" in note and "above --quantize-tolerance=1e-06" in note, note
    assert_close(traced(X), cnn(X))


def test_the_same_model_and_calibration_give_the_same_int8_bytes(cnn, tmp_path):
    irs = []
    for k in range(2):
        tfaccel.trace(
            cnn,
            X,
            calibration_inputs=_samples(6),
            quantize="int8",
            backend="openvino",
            workdir=tmp_path / str(k),
        )
        folder = tmp_path / str(k) / "subgraphs" / "tfaccel_sg_0"
        irs.append(((folder / "openvino-int8.xml").read_bytes(), (folder / "openvino-int8.bin").read_bytes()))
        record = json.loads((folder / "quantize.json").read_text())
        assert record["calibration_inputs"] == 5 and record["held_out_inputs"] == 1
    assert irs[0] == irs[1]


def test_two_processes_save_the_same_int8_graph(tmp_path):
    """Determinism across processes: the int8 call's function names come from its content, not from TF's
    process-wide counters, so two fresh processes tracing the same model and calibration save the same
    graph (same function names, same nodes)."""
    code = """
import sys, numpy as np, tensorflow as tf, tfaccel
from tensorflow.core.protobuf import saved_model_pb2
sys.path.insert(0, {tests!r})
from test_quantize import X, _cnn, _samples
tf.constant(1.0) + 1  # the processes differ in what ran before the trace
traced = tfaccel.trace(_cnn(), X, calibration_inputs=_samples(6), quantize="int8", backend="openvino",
                       placement="static", timing_cache="off")
traced.save("{name}")
proto = saved_model_pb2.SavedModel.FromString(open("{name}/saved_model.pb", "rb").read())
names = sorted(f.signature.name for f in proto.meta_graphs[0].graph_def.library.function
               if f.signature.name.startswith("tfaccel_ov_int8"))
print(names)
"""
    outputs = []
    for name in ("a", "b"):
        script = code.format(tests=str(Path(__file__).parent), name=name)
        if name == "b":  # another history in the second process: TF's counters are elsewhere
            script = script.replace("tf.constant(1.0) + 1", "[tf.function(lambda: 1.0)() for _ in range(3)]")
        outputs.append(run_python(script, cwd=tmp_path, env={"PYTHONPATH": SRC}))
    assert outputs[0] == outputs[1] and "tfaccel_ov_int8_" in outputs[0], outputs
    graphs = []
    for name in ("a", "b"):
        proto = saved_model_pb2.SavedModel.FromString((tmp_path / name / "saved_model.pb").read_bytes())
        library = proto.meta_graphs[0].graph_def.library.function
        graphs.append(
            sorted(
                f.SerializeToString(deterministic=True)
                for f in library
                if "tfaccel_ov_int8" in f.signature.name
            )
        )
    assert graphs[0] == graphs[1]


def test_elementwise_subgraphs_and_xla_subgraphs_stay_fp32_with_a_reason():
    def f(x):
        return tf.nn.relu(x * 2.0 + 1.0)

    x = tf.constant(_samples(1)[0])
    plain = tfaccel.trace(f, x, calibration_inputs=_samples(3), quantize="int8", backend="openvino")
    (note,) = [n for n in plain.placement_report.fallbacks if n.startswith("--quantize=int8")]
    assert "stays fp32: NNCF found nothing in it worth quantizing" in note, note
    assert_close(plain(x), f(x))
    on_xla = tfaccel.trace(f, x, calibration_inputs=_samples(3), quantize="int8", backend="xla")
    (note,) = [n for n in on_xla.placement_report.fallbacks if n.startswith("--quantize=int8")]
    assert "(xla) stays fp32: only openvino subgraphs are quantized" in note, note
    assert_close(on_xla(x), f(x))


def test_dict_inputs_calibrate_in_any_key_order_and_a_missing_key_is_named():
    w = tf.constant(np.random.default_rng(5).standard_normal((8, 4)), tf.float32)

    def f(a, b):  # a dict of example inputs is passed as f(**inputs)
        return tf.matmul(a + 2.0 * b, w)

    rng = np.random.default_rng(6)
    example = {"a": rng.random((2, 8), dtype=np.float32), "b": rng.random((2, 8), dtype=np.float32)}
    reordered = [
        {"b": rng.random((2, 8), dtype=np.float32), "a": rng.random((2, 8), dtype=np.float32)}
        for _ in range(6)
    ]
    traced = tfaccel.trace(f, example, calibration_inputs=reordered, quantize="int8", backend="openvino")
    assert quantization_error([f(**example).numpy()], [traced(**example).numpy()]) <= TOLERANCE
    with pytest.raises(tfaccel.OptionsError, match=r"calibration_inputs\[1\].*'b'"):
        tfaccel.trace(f, example, calibration_inputs=[example, {"a": example["a"]}], quantize="int8")


def test_dynamic_batch_calibration_takes_any_batch(cnn):
    calibration = [*_samples(3, batch=2), *_samples(3, seed=1, batch=5)]
    traced = tfaccel.trace(
        cnn, X, calibration_inputs=calibration, quantize="int8", backend="openvino", dynamic_batch_size=True
    )
    x = _samples(1, seed=3, batch=7)[0]
    assert quantization_error([cnn(x).numpy()], [traced(x).numpy()]) <= TOLERANCE


@pytest.mark.parametrize(
    ("keywords", "message"),
    [
        ({"quantize": "int8"}, r"--quantize=int8 needs calibration data: pass calibration_inputs="),
        ({"calibration_inputs": _samples(3)}, r"calibration_inputs were given but --quantize is none"),
        ({"quantize": "int8", "calibration_inputs": _samples(1)}, r"needs at least 2 calibration inputs"),
        ({"quantize": "int8", "calibration_inputs": X}, r"calibration_inputs must be an iterable"),
        (
            {"quantize": "int8", "calibration_inputs": [X, X[:, :8]]},
            r"calibration_inputs\[1\] has shape \[1, 8, 24, 3\], the example input \[1, 24, 24, 3\]",
        ),
        (
            {"quantize": "int8", "calibration_inputs": [X, X.astype(np.float64)]},
            r"calibration_inputs\[1\] is float64, the example input float32",
        ),
        (
            {"quantize": "int8", "calibration_inputs": [X, [X]]},
            r"calibration_inputs\[1\] has shape \[1, 1, 24, 24, 3\], the example input \[1, 24, 24, 3\]",
        ),
        (
            {"quantize": "int4", "calibration_inputs": _samples(3)},
            r"--quantize=int4 must be one of none, int8",
        ),
        (
            {"quantize": "int8", "quantize_tolerance": 0, "calibration_inputs": _samples(3)},
            r"--quantize-tolerance=0.0 must be more than 0",
        ),
        (
            {"quantize": "int8", "quantize_tolerance": "tight", "calibration_inputs": _samples(3)},
            r"--quantize-tolerance=tight is not a number",
        ),
    ],
)
def test_bad_calibration_or_options_are_clear_errors(cnn, keywords, message):
    with pytest.raises(tfaccel.OptionsError, match=message):
        tfaccel.trace(cnn, X, backend="openvino", **keywords)


@pytest.mark.parametrize(
    ("reference", "got", "error"),
    [
        ([np.ones(4, np.float32)], [np.ones(4, np.float32)], 0.0),
        ([np.array([3.0, 4.0])], [np.array([3.0, 4.5])], 0.1),  # |0.5| / |(3, 4)| = 0.1
        ([np.zeros(2)], [np.array([0.0, 0.5])], 0.5),  # all-zero reference: absolute RMS
        ([np.array([1.0, np.nan])], [np.array([1.0, np.nan])], 0.0),  # NaN where fp32 has NaN
        ([np.array([1.0, 2.0])], [np.array([1.0, np.inf])], 1.0),  # inf where fp32 is finite: the worst
        ([np.array([1.0, np.nan])], [np.array([1.0, 3.0])], 1.0),  # a NaN lost (clamped): the worst
        ([np.array([1.0, -np.inf])], [np.array([1.0, -1e4])], 1.0),  # an infinity lost: the worst
        ([np.array([2.0, np.inf])], [np.array([2.0, np.inf])], 0.0),  # the same infinity: no error
        ([np.array([1, 2, 3, 4])], [np.array([1, 2, 3, 5])], 0.25),  # integers: fraction that differ
        ([np.ones(3), np.ones(2)], [np.ones(3), np.array([1.0, 1.5])], 0.5 / np.sqrt(2)),  # the worst output
        ([np.ones(3)], [np.ones(4)], 1.0),  # another shape: the worst
    ],
)
def test_quantization_error(reference, got, error):
    assert quantization_error(reference, got) == pytest.approx(error, abs=1e-12)
