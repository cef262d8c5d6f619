"""Options: NEURON_CC_FLAGS / TFACCEL_CC_FLAGS / keywords, parsed into one model with clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import tfaccel
from conftest import STATIC
from tfaccel.compiler.options import TraceOptions, parse_flags, resolve_options

W = tf.constant(np.random.default_rng(0).standard_normal((4, 4)), tf.float32)


def test_flags_parse_shell_style():
    values = parse_flags("--workdir 'my dir' --dynamic-batch-size --min-segment-size=3 --verbose 1", "X")
    assert values == {"workdir": "my dir", "dynamic_batch_size": True, "min_segment_size": 3, "verbose": 1}
    assert parse_flags("--dynamic-batch-size=false", "X") == {"dynamic_batch_size": False}


def test_precedence_keyword_over_tfaccel_over_neuron():
    env = {"NEURON_CC_FLAGS": "--min-segment-size=5 --verbose=1", "TFACCEL_CC_FLAGS": "--min-segment-size=4"}
    opts = resolve_options({}, env)
    assert (opts.min_segment_size, opts.verbose) == (4, 1)
    assert opts.sources == {"min_segment_size": "TFACCEL_CC_FLAGS", "verbose": "NEURON_CC_FLAGS"}
    assert resolve_options({"min_segment_size": 3}, env).min_segment_size == 3
    assert resolve_options({}, {}) == TraceOptions()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            "--fast-math",
            r"NEURON_CC_FLAGS: unknown flag --fast-math\. Accepted: --workdir=<str>, --dynamic-batch",
        ),
        ("--min-segment-size=0", r"NEURON_CC_FLAGS: --min-segment-size=0 must be a positive integer"),
        ("--min-segment-size=two", r"--min-segment-size=two is not an integer"),
        ("--min-segment-size=-1", r"--min-segment-size=-1 must be a positive integer"),
        ("--workdir", r"--workdir needs a value"),
        ("--backend=tpu", r"--backend=tpu must be one of the backends: auto, openvino, xla"),
        ("--dynamic-batch-size=maybe", r"is not a boolean"),
        ("workdir", r"'workdir' is not a flag; flags start with '--'"),
        ("--workdir 'unclosed", r"NEURON_CC_FLAGS cannot be parsed"),
        ("--performance-hint=fast", r"--performance-hint=fast must be one of latency, throughput"),
        ("--num-streams=-1", r"--num-streams=-1 must be from 0 \(the hint decides\) to 256"),
        ("--num-streams=257", r"--num-streams=257 must be from 0"),
        (
            "--num-streams=2 --performance-hint=latency",
            r"--num-streams=2 runs several calls at once, which is the throughput hint, but NEURON_CC_FLAGS "
            r"asks for --performance-hint=latency",
        ),
    ],
)
def test_bad_flags_name_the_flag_and_the_variable(env, message):
    with pytest.raises(tfaccel.OptionsError, match=message):
        resolve_options({}, {"NEURON_CC_FLAGS": env})


@pytest.mark.parametrize(
    ("text", "keywords", "streams"),
    [
        ("", {}, 1),
        ("--performance-hint=throughput", {}, 0),
        ("--performance-hint=throughput --num-streams=4", {}, 4),
        ("--num-streams=3", {}, 3),
        ("--num-streams=1", {}, 1),
        ("--performance-hint=latency --num-streams=1", {}, 1),
        ("--performance-hint=throughput", {"performance_hint": "latency"}, 1),  # the keyword wins
        ("--num-streams=2", {"num_streams": 0}, 1),
    ],
)
def test_the_openvino_streams_come_from_the_hint_and_the_stream_count(text, keywords, streams):
    assert resolve_options(keywords, {"TFACCEL_CC_FLAGS": text}).openvino_streams == streams


@pytest.mark.parametrize("text", ["--extract-weights inf1.2xlarge", "--extract-weights=inf1.2xlarge"])
def test_extract_weights_takes_the_references_instance_type_and_says_it_has_no_meaning(text):
    opts = resolve_options({}, {"NEURON_CC_FLAGS": f"{text} --verbose=1"})
    assert opts.extract_weights is True and opts.verbose == 1
    (remark,) = opts.remarks
    assert remark.startswith("NEURON_CC_FLAGS: --extract-weights inf1.2xlarge: the instance type")
    assert "no meaning here" in remark


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("--extract-weights large", r"'large' is not a flag"),
        ("--extract-weights=inf1", r"--extract-weights=inf1 is not a boolean"),
        ("--dynamic-batch-size inf1.2xlarge", r"'inf1.2xlarge' is not a flag"),
    ],
)
def test_other_tokens_after_a_switch_are_still_errors(text, message):
    with pytest.raises(tfaccel.OptionsError, match=message):
        resolve_options({}, {"NEURON_CC_FLAGS": text})


def test_the_instance_type_remark_reaches_the_report(monkeypatch):
    monkeypatch.setenv("NEURON_CC_FLAGS", "--extract-weights inf1.2xlarge")
    traced = tfaccel.trace(lambda x: tf.matmul(x, W), tf.ones([2, 4]), backend="xla")
    notes = [f for f in traced.placement_report.fallbacks if "inf1.2xlarge" in f]
    assert notes and "no meaning here" in notes[0]
    np.testing.assert_allclose(traced(tf.ones([2, 4])), tf.matmul(tf.ones([2, 4]), W), rtol=1e-5)


def test_unknown_keyword_lists_the_accepted_ones():
    with pytest.raises(
        tfaccel.OptionsError, match=r"unknown option fast_math=; accepted keyword options: backend"
    ):
        tfaccel.trace(lambda x: x, tf.ones([1]), fast_math=True)


def test_trace_reads_neuron_cc_flags_and_records_the_options(monkeypatch, tmp_path):
    monkeypatch.setenv("NEURON_CC_FLAGS", "--min-segment-size=4")

    def f(x):
        return tf.nn.relu(tf.reduce_sum(x, axis=1, keepdims=True) + 1.0)  # 3 ops, no compute-heavy one

    model = tfaccel.trace(f, tf.ones([2, 4]))
    assert model.on_neuron_ratio == 0.0  # below the minimum size of 4
    assert model.placement_report.options == f"--min-segment-size=4 {STATIC}"
    lines: list[str] = []
    model.summary(print_fn=lines.append)
    assert f"  options: --min-segment-size=4 {STATIC}" in lines
    model.save(str(tmp_path / "m"))
    assert tfaccel.load(str(tmp_path / "m")).placement_report.options == f"--min-segment-size=4 {STATIC}"
    # the keyword wins over the environment
    assert tfaccel.trace(f, tf.ones([2, 4]), min_segment_size=2).on_neuron_ratio == 1.0


def test_verbose_prints_the_placement_summary(capsys):
    tfaccel.trace(lambda x: tf.matmul(x, W), tf.ones([2, 4]), verbose=1)
    assert "tfaccel placement (openvino): 1/1 ops on the accelerator" in capsys.readouterr().out


def test_tf_keras_with_neuron_cc_flags_workdir_verbose_min_segment(tmp_path):
    from conftest import SRC, run_python

    code = """
import os, json, numpy as np, tensorflow as tf, tfaccel
inp = tf.keras.layers.Input(3)
model = tf.keras.Model(inp, tf.keras.layers.Dense(2)(tf.keras.layers.Dense(4, activation='relu')(inp)))
x = tf.random.uniform([2, 3])
traced = tfaccel.trace(model, x)
np.testing.assert_allclose(traced(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
assert os.path.exists('art/subgraphs/tfaccel_sg_0/openvino.xml')
print(json.load(open('art/options.json'))['sources'])
"""
    env = {
        "TF_USE_LEGACY_KERAS": "1",
        "PYTHONPATH": SRC,
        "NEURON_CC_FLAGS": "--workdir art --verbose=1 --min-segment-size 3",
    }
    out = run_python(code, cwd=tmp_path, env=env)
    assert (
        "tfaccel placement (openvino)" in out
        and "options: --workdir=art --min-segment-size=3 --verbose=1" in out
    )
    assert "'workdir': 'NEURON_CC_FLAGS'" in out.strip().splitlines()[-1]


def test_path_workdir_and_quoted_flag_text(tmp_path):
    opts = resolve_options({"workdir": tmp_path / "my dir"}, {})
    assert opts.workdir == str(tmp_path / "my dir")
    assert parse_flags(opts.flag_text(), "X") == {"workdir": str(tmp_path / "my dir")}
