"""``--nan-semantics``: TensorFlow's NaN answers by default, the backends' own (faster) ones when asked.

Why both directions are tested: the default must keep TF's answer for a NaN input (OpenVINO's ReLU and
XLA's max turn it into a number; the guards of ``backends/openvino_semantics.py`` stop that), and
``relaxed`` must really drop the guards (else the option is a no-op that the benchmarks would credit with a
speed-up it does not give): a NaN then comes out as the backend's number, while every finite input keeps
TF's answer within the suite's tolerance. The speed-up is measured by ``benchmarks/bench_zoo.py``
(tools ``tfaccel_relaxed``, ``tfaccel_relaxed_bf16``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import tfaccel
from conftest import ATOL, RTOL, assert_close
from tfaccel.errors import OptionsError

STATIC = {"placement": "static", "timing_cache": "off"}


def _relu_net() -> tf.keras.Model:
    """A convolution, ReLU and a dense head: the fused conv+ReLU loses a NaN on OpenVINO unless guarded."""
    inputs = tf.keras.Input((8, 8, 3))
    h = tf.keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    outputs = tf.keras.layers.Dense(3)(tf.keras.layers.Flatten()(h))
    model = tf.keras.Model(inputs, outputs)
    rng = np.random.default_rng(7)
    model.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.5 for w in model.get_weights()])
    return model


def _inputs(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, 8, 8, 3)).astype(np.float32)


def _with_nan() -> np.ndarray:
    x = _inputs(1)
    x[0, 3, 3, 0] = np.nan  # row 0 only: row 1 stays finite in every answer
    return x


@pytest.fixture(scope="module")
def net() -> tf.keras.Model:
    return _relu_net()


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("nan")


@pytest.fixture(scope="module")
def traced(net, workdirs) -> dict[str, tf.keras.Model]:
    return {
        mode: tfaccel.trace(
            net,
            _inputs(0),
            backend="openvino",
            nan_semantics=mode,
            workdir=str(workdirs / mode),
            **STATIC,
        )
        for mode in ("tensorflow", "relaxed")
    }


def _ir_ops(workdir: Path) -> list[str]:
    """The op types of the one openvino IR a trace kept in ``workdir``."""
    (xml,) = workdir.glob("**/openvino.xml")
    text = xml.read_text()
    return [part.split('"', 1)[0] for part in text.split(' type="')[1:]]


def test_both_modes_give_tensorflows_numbers_for_finite_inputs(net, traced):
    for seed in (2, 3):
        x = _inputs(seed)
        want = net(x).numpy()
        for mode, model in traced.items():
            assert_close(model(x), want, RTOL, ATOL), mode


def test_the_default_keeps_tensorflows_nan_and_relaxed_gives_openvinos_number(net, traced):
    x = _with_nan()
    want = net(x).numpy()
    assert np.isnan(want[0]).any() and np.isfinite(want[1]).all()
    assert_close(traced["tensorflow"](x), want, RTOL, ATOL)  # NaN where TF has NaN
    relaxed = traced["relaxed"](x).numpy()
    if np.isnan(relaxed[0]).any():  # the IR test below still shows the guards are gone
        pytest.skip("this CPU's OpenVINO keeps the NaN through a fused ReLU even unguarded")
    # OpenVINO's ReLU turns the NaN into a number: the guards are really gone (the option is not a no-op)
    assert np.isfinite(relaxed[0]).all(), relaxed
    assert_close(relaxed[1], want[1], RTOL, ATOL)  # the finite row is unaffected


def test_relaxed_compiles_without_the_guard_arithmetic(traced, workdirs):
    guarded, relaxed = _ir_ops(workdirs / "tensorflow"), _ir_ops(workdirs / "relaxed")
    assert "Divide" in guarded and "Divide" not in relaxed, (guarded, relaxed)  # 0 / (x * x + 1)
    assert len(relaxed) < len(guarded)


def test_the_report_notes_the_choice_and_the_options_line_names_it(traced):
    report = traced["relaxed"].placement_report
    assert "--nan-semantics=relaxed" in report.options
    lines: list[str] = []
    traced["relaxed"].summary(print_fn=lines.append)
    assert any(line.startswith("  note: --nan-semantics=relaxed: compiled subgraphs use") for line in lines)
    assert not any("nan-semantics" in n for n in traced["tensorflow"].placement_report.fallbacks)


def test_relaxed_on_xla_drops_the_max_guard():
    """XLA:CPU's reduce_max skips a NaN: guarded by default, XLA's own answer when relaxed."""

    def row_max(x):
        return tf.reduce_max(x * 2.0, axis=1)

    x = tf.constant([[1.0, np.nan, -3.0], [4.0, 5.0, -6.0]], tf.float32)
    want = row_max(x).numpy()
    assert np.isnan(want[0])
    exact = tfaccel.trace(row_max, x, backend="xla", **STATIC)
    relaxed = tfaccel.trace(row_max, x, backend="xla", nan_semantics="relaxed", **STATIC)
    np.testing.assert_array_equal(exact(x).numpy(), want)
    got = relaxed(x).numpy()
    if np.isnan(got[0]):
        pytest.skip("this XLA keeps NaN through reduce_max (its fast min/max is off): nothing to relax")
    assert np.isfinite(got).all(), got  # XLA's max gave a number for the NaN: no guard
    np.testing.assert_array_equal(got[1], want[1])


def test_relaxed_survives_save_and_load(net, traced, tmp_path):
    traced["relaxed"].save(str(tmp_path / "m"))
    loaded = tfaccel.load(str(tmp_path / "m"))
    for x in (_inputs(4), _with_nan()):  # the unguarded model is what was saved: a NaN answers the same
        np.testing.assert_array_equal(loaded(x).numpy(), traced["relaxed"](x).numpy())
    assert "--nan-semantics=relaxed" in loaded.placement_report.options


@pytest.mark.parametrize(
    ("keywords", "environ", "message"),
    [
        ({"nan_semantics": "fast"}, {}, r"nan_semantics.*must be one of tensorflow, relaxed"),
        ({}, {"NEURON_CC_FLAGS": "--nan-semantics=none"}, r"NEURON_CC_FLAGS: --nan-semantics=.*tensorflow"),
    ],
)
def test_an_unknown_value_is_a_clear_error(keywords, environ, message, monkeypatch):
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(OptionsError, match=message):
        tfaccel.trace(lambda x: x + 1.0, tf.ones([1, 2]), **keywords, **STATIC)
