"""Measured placement (``--placement=profile``, the default users get), end to end on real backends.

The rest of the suite traces with static placement (conftest), because timings decide here. So these
tests assert what must hold whatever the timings: every candidate's measurements are in the report, each
choice is the rule's (``selection.choose``) on those numbers, each node's reason names its candidate's
measurement, and the answers are the original's. A placement itself is asserted only where the decision is
clear-cut. Next to real busy processes (one per core) the trace must not trust its timings: it places by
the static rules or the timing cache, says so, and so gives the placement an idle trace gives.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

import tfaccel
from conftest import assert_close, busy_loops, machine_was_busy, skip_if_busy, stop_busy_loops
from tfaccel.compiler.placement import Reason
from tfaccel.compiler.profiling import MIN_SAMPLES
from tfaccel.compiler.selection import Verdict, choose, compare, slower_beyond_noise

RNG = np.random.default_rng(3)
W = tf.constant(RNG.standard_normal((64, 64)) / 8, tf.float32)


def chain(x):
    """64 element-wise ops over 2 MB: TF makes 64 passes over memory, a compiler fuses them into one."""
    for _ in range(16):
        x = tf.nn.relu(x * 0.9 + 0.1) - 0.05
    return x


def two_candidates(x):
    """A matmul block, a TF-only string round trip, then the element-wise chain: two candidates."""
    h = tf.nn.relu(tf.matmul(x, W) + 1.0)
    back = tf.strings.to_number(tf.strings.as_string(h))
    return chain(back)


def conv_net() -> tf.keras.Model:
    """A small conv net on which OpenVINO clearly beats TF (the busy-machine tests' model)."""
    tf.keras.utils.set_random_seed(7)
    inputs = tf.keras.Input((64, 64, 16))
    h = tf.keras.layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
    h = tf.keras.layers.Conv2D(32, 3, padding="same", activation="relu")(h)
    h = tf.keras.layers.Conv2D(32, 3, padding="same", activation="relu")(h)
    return tf.keras.Model(inputs, tf.keras.layers.GlobalAveragePooling2D()(h))


def assert_explained(report, order):
    """Every measurement follows the rule, and every node of a candidate says which choice put it where."""
    assert report.placement == "profile" and report.profile_seconds > 0
    assert report.measurements
    rows = report.decisions
    backend_of = {s.name: s.backend for s in report.subgraphs}
    for m in report.measurements:
        estimates = m.estimates
        assert estimates["tf"].ms > 0 and m.runs >= MIN_SAMPLES, m
        measured = {k: v for k, v in estimates.items() if k != "tf"}
        assert set(measured) | set(m.failed) == set(order), m  # each backend timed, or why not
        assert m.times_ms == {k: v.ms for k, v in estimates.items()}
        chosen, why = choose(estimates["tf"], measured, order)
        assert m.chosen == chosen and m.why.startswith(why), m
        if m.chosen is None:  # TF only on proof: every backend clearly slower by the margin
            assert all(compare(estimates["tf"], e) is Verdict.TF_FASTER for e in measured.values()), m
        members = [r for r in rows if r.detail == f"{m.subgraph}: {m.why}"]
        assert sum(1 for r in members if r.counted) == m.ops, (m, members)
        for r in members:
            if m.chosen is None:
                assert r.reason is Reason.SLOWER and r.subgraph is None, r
            else:
                assert r.reason is Reason.MEASURED and backend_of[r.subgraph] == m.chosen, r
    lines: list[str] = []
    report.render(print_fn=lines.append)
    assert any(line.startswith("  measured placement (") for line in lines)
    for m in report.measurements:
        assert any(line.split()[:1] == [m.subgraph] and line.endswith(m.chosen or "TF") for line in lines)
        assert f"    why: {m.why}" in lines


def _nodes(traced):
    """The placement: each subgraph's backend and node set."""
    return sorted((s.backend, tuple(sorted(s.nodes))) for s in traced.placement_report.subgraphs)


def test_every_candidate_is_measured_chosen_by_the_rule_and_explained():
    x = tf.random.uniform([128, 64], seed=1)
    traced = tfaccel.trace(two_candidates, x, placement="profile")
    report = traced.placement_report
    skip_if_busy(report)
    assert len(report.measurements) == 2
    assert_explained(report, ["openvino", "xla"])
    assert "--placement=static" not in report.options  # the keyword overrode the suite's flag
    assert all(m.source == "measured" for m in report.measurements)  # the suite's --timing-cache=off
    assert_close(traced(x), two_candidates(x))


def test_a_clear_cut_choice_is_the_same_on_every_trace():
    x = tf.random.uniform([512, 1024], seed=2)
    traces = [tfaccel.trace(chain, x, placement="profile", backend="xla") for _ in range(2)]
    for traced in traces:
        skip_if_busy(traced.placement_report)
        (m,) = traced.placement_report.measurements
        assert m.chosen == "xla", m  # one fused pass against 64: about 2x on this CPU
        assert_explained(traced.placement_report, ["xla"])
        assert_close(traced(x), chain(x))
    assert _nodes(traces[0]) == _nodes(traces[1])


def test_static_placement_is_identical_on_every_trace():
    x = tf.random.uniform([8, 64], seed=3)
    first, second = (tfaccel.trace(two_candidates, x, placement="static").placement_report for _ in range(2))
    assert first.to_json() == second.to_json()


@pytest.mark.parametrize("backend", ["openvino", "xla"])
def test_the_reference_first_example_compiles_fully_with_default_options(backend):
    """The reference's first example, with the default (measured) placement: ratio 1.0, as there. The
    compiled Dense(3) may cost a fraction of a millisecond more per call than TF; that is no proof that TF
    is faster by the margin, so it stays compiled (and the whole-model check says what it costs).
    """
    tf.keras.utils.set_random_seed(0)
    input0 = tf.keras.layers.Input((3,))
    dense0 = tf.keras.layers.Dense(3)(input0)
    model = tf.keras.Model(inputs=[input0], outputs=[dense0])
    example_inputs = tf.random.uniform([1, 3])
    traced = tfaccel.trace(model, example_inputs, placement="profile", backend=backend)
    assert traced.on_neuron_ratio == 1.0
    assert_close(traced(example_inputs), model(example_inputs))
    guard = traced.placement_report.guard
    if guard is not None:  # not measured when the machine was busy
        assert guard.slower == slower_beyond_noise(guard.original, guard.traced)
        said = [f for f in traced.placement_report.fallbacks if f.startswith("whole-model check:")]
        assert bool(said) == guard.slower


def _trace_conv(model, x, **options):
    return tfaccel.trace(model, x, placement="profile", backend="openvino", **options)


def test_next_to_busy_processes_the_trace_places_by_static_rules_and_says_so():
    """One busy-looping process per core while measuring: the timings are not trusted. The placement is
    the static one (what an idle trace gives, where the backend wins clearly), the report and one warning
    line say why, and the answers stay the original's.
    """
    x = tf.random.uniform([1, 64, 64, 16], seed=4)
    model = conv_net()
    static = tfaccel.trace(model, x, placement="static", backend="openvino")
    loops = busy_loops()
    try:
        busy = _trace_conv(model, x)
    finally:
        stop_busy_loops(loops)
    report = busy.placement_report
    assert machine_was_busy(report), report.fallbacks
    (sentence,) = [f for f in report.fallbacks if f.startswith("machine busy:")]
    assert "placed by static rules; trace on an idle machine or ship a timing cache" in sentence
    assert "other processes used" in sentence
    assert report.placement == "static" and report.measurements == () and report.guard is None
    assert _nodes(busy) == _nodes(static)
    assert_close(busy(x), model(x), rtol=1e-4, atol=1e-4)
    idle = _trace_conv(model, x)  # the same model on the (now idle) machine: the same placement, measured
    if not machine_was_busy(idle.placement_report):
        assert idle.placement_report.placement == "profile"
        assert _nodes(idle) == _nodes(busy)


def test_the_timing_cache_gives_a_retrace_the_same_placement_without_measuring(tmp_path):
    path = tmp_path / "timings.json"
    x = tf.random.uniform([128, 64], seed=5)
    first = tfaccel.trace(two_candidates, x, placement="profile", timing_cache=str(path))
    skip_if_busy(first.placement_report)
    assert all(m.source == "measured" for m in first.placement_report.measurements)
    written = json.loads(path.read_text())
    assert written["format"] == "tfaccel-timing-cache" and written["entries"]
    second = tfaccel.trace(two_candidates, x, placement="profile", timing_cache=str(path))
    report = second.placement_report
    assert [m.source for m in report.measurements] == ["timing cache"] * len(report.measurements)
    assert [m.why for m in report.measurements] == [
        f"{m.why} (timing cache)" for m in first.placement_report.measurements
    ]
    assert _nodes(second) == _nodes(first)
    guard = first.placement_report.guard
    assert guard is not None and guard.basis == "timed"  # two subgraphs: both models timed whole
    assert report.guard == guard  # and cached too: the re-trace times nothing
    assert_close(second(x), two_candidates(x))
    # next to busy processes the cache still decides: nothing needs measuring, nothing is static
    loops = busy_loops()
    try:
        third = tfaccel.trace(two_candidates, x, placement="profile", timing_cache=str(path))
    finally:
        stop_busy_loops(loops)
    assert not machine_was_busy(third.placement_report)
    assert _nodes(third) == _nodes(first)
    assert all(m.source == "timing cache" for m in third.placement_report.measurements)


@pytest.mark.parametrize("kind", ["directory", "garbage", "unwritable", "foreign"])
def test_a_bad_timing_cache_warns_and_the_trace_succeeds(tmp_path, kind):
    path = tmp_path / "timings.json"
    if kind == "directory":
        path.mkdir()
    elif kind == "garbage":
        path.write_bytes(b"\x00\xffnot json")
    elif kind == "foreign":
        path.write_text('{"some": "other tool"}')
    else:
        path = tmp_path / "a-file" / "timings.json"
        (tmp_path / "a-file").write_text("")
    before = path.read_bytes() if path.is_file() else None
    x = tf.random.uniform([8, 64], seed=6)
    traced = tfaccel.trace(two_candidates, x, placement="profile", timing_cache=str(path))
    assert_close(traced(x), two_candidates(x))
    report = traced.placement_report
    skip_if_busy(report)  # nothing measured: nothing to save, so nothing to warn about
    warnings = [f for f in report.fallbacks if f.startswith("timing cache ")]
    assert warnings and all(str(path) in w for w in warnings), report.fallbacks
    if before is not None:
        assert path.read_bytes() == before  # not ours: never overwritten


def test_timing_cache_off_measures_every_time_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("TFACCEL_CACHE_DIR", str(tmp_path))  # where the default cache would go
    monkeypatch.setenv("TFACCEL_CC_FLAGS", "--timing-cache=off")
    x = tf.random.uniform([8, 64], seed=7)
    traced = tfaccel.trace(two_candidates, x)  # default placement: profile
    assert not list(tmp_path.iterdir())
    assert all(m.source == "measured" for m in traced.placement_report.measurements)


@pytest.mark.slow
def test_resnet50_gets_the_same_placement_in_fresh_processes_idle_and_busy(tmp_path):
    """Issue 14's report: ResNet50 traced first in a process next to busy processes gave 0 of 124 ops on
    the accelerator. Two fresh processes idle and two next to one busy loop per core must agree.
    """
    from conftest import run_python

    script = """
        import json, keras, tfaccel
        keras.utils.set_random_seed(0)
        model = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3))
        x = keras.random.uniform((1, 224, 224, 3), seed=0)
        traced = tfaccel.trace(model, x, placement="profile", timing_cache="off")
        report = traced.placement_report
        print(json.dumps([report.accelerated_ops, report.total_ops,
                          sorted((s.backend, sorted(s.nodes)) for s in report.subgraphs)]))
    """
    results = []
    for busy in (False, True, False, True):
        loops = busy_loops() if busy else []
        try:
            out = run_python(script, cwd=tmp_path, env={"TFACCEL_CC_FLAGS": ""}, timeout=900)
        finally:
            stop_busy_loops(loops)
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert results[0][0] == results[0][1], results[0][:2]  # everything on the backend
    assert all(r == results[0] for r in results), [r[:2] for r in results]


def test_a_read_only_home_still_traces_with_measured_placement_and_warns(tmp_path):
    """--placement=profile with the default timing cache under a home nobody can write: the trace works
    (xla: the openvino op library cannot be built there either, and says so) and the timing cache warns.
    """
    from conftest import run_python

    script = """
        import tensorflow as tf, tfaccel
        x = tf.random.uniform([8, 64], seed=1)
        traced = tfaccel.trace(lambda t: tf.nn.relu(t * 2.0 + 1.0) * 3.0, x, backend="xla")
        report = traced.placement_report
        print("WARNED", any(f.startswith("timing cache ") and "/proc/" in f for f in report.fallbacks)
              or any("machine busy" in f for f in report.fallbacks))
        print("RATIO", report.ratio)
    """
    home = "/proc/tfaccel-read-only-home"  # nothing can be created under /proc, also as root
    env = {"HOME": home, "XDG_CACHE_HOME": f"{home}/.cache", "TFACCEL_CACHE_DIR": "", "TFACCEL_CC_FLAGS": ""}
    out = run_python(script, cwd=tmp_path, env=env)
    assert "WARNED True" in out, out
    assert "RATIO 1.0" in out, out


def loop_model(x):
    """A while loop: its body is a library function TensorFlow names with a process-wide counter."""
    _, total = tf.while_loop(lambda i, t: i < 4, lambda i, t: (i + 1, tf.nn.relu(t * 1.1 + 0.1)), (0, x))
    return total * 2.0


def test_the_timing_cache_finds_a_model_with_loops_again_in_the_same_process(tmp_path):
    """The cache key must not include TensorFlow's numbering of traced functions (each trace of a loop
    gets a new body name): the second trace reads every candidate from the cache.
    """
    path = str(tmp_path / "timings.json")
    x = tf.random.uniform([16, 32], seed=8)
    first = tfaccel.trace(tf.function(loop_model), x, placement="profile", timing_cache=path)
    skip_if_busy(first.placement_report)
    second = tfaccel.trace(tf.function(loop_model), x, placement="profile", timing_cache=path)
    assert second.placement_report.measurements
    assert {m.source for m in second.placement_report.measurements} == {"timing cache"}
    assert _nodes(second) == _nodes(first)
    assert_close(second(x), loop_model(x))


def test_a_loop_model_captured_twice_in_one_process_has_one_digest():
    """lstm_gru re-measured on every re-trace: TF names loop functions' arguments after the function's
    process-wide number, so the timing cache never found the second trace. Weights still count.
    """
    from tfaccel.compiler.capture import capture
    from tfaccel.compiler.measure import graph_digest

    def lstm(units):
        layer = tf.keras.layers.LSTM(units, kernel_initializer="ones", recurrent_initializer="zeros")
        return tf.keras.Sequential([tf.keras.Input((5, 3)), layer])

    x, model = tf.ones([2, 5, 3]), lstm(4)
    first, second = (capture(model, x).graph_def for _ in range(2))
    assert any("while" in f.signature.name for f in first.library.function)
    assert {f.signature.name for f in first.library.function}.isdisjoint(
        f.signature.name for f in second.library.function
    )  # the names differ ...
    assert graph_digest(first) == graph_digest(second)  # ... the content does not
    assert graph_digest(capture(lstm(5), x).graph_def) != graph_digest(first)
