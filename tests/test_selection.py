"""The measured-placement rule (``tfaccel.compiler.selection``) on given numbers: no TensorFlow, no timing."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tfaccel.compiler.selection import ABS_MARGIN_MS, REL_MARGIN, Measurement, choose, margin_ms

ORDER = ["openvino", "xla"]

times = st.floats(min_value=0.001, max_value=500.0, allow_nan=False, allow_infinity=False)
backend_times = st.dictionaries(st.sampled_from(ORDER), times, max_size=2)


def test_a_clear_win_goes_to_the_backend_and_says_by_how_much():
    chosen, why = choose(10.0, {"openvino": 4.0, "xla": 8.0}, ORDER)
    assert chosen == "openvino"
    assert "openvino 4.000 ms vs TF 10.000 ms (2.50x)" in why and "xla 8.000 ms" in why


def test_a_gain_inside_the_margin_stays_on_tf():
    assert margin_ms(10.0) == REL_MARGIN * 10.0
    chosen, why = choose(10.0, {"openvino": 10.0 - 0.9 * margin_ms(10.0)}, ORDER)
    assert chosen is None and "stays on TF" in why
    # below a millisecond the absolute floor decides
    assert margin_ms(0.1) == ABS_MARGIN_MS
    assert choose(0.1, {"xla": 0.1 - ABS_MARGIN_MS / 2}, ORDER)[0] is None
    assert choose(0.1, {"xla": 0.1 - 2 * ABS_MARGIN_MS}, ORDER)[0] == "xla"


def test_backends_within_noise_of_each_other_go_to_the_preferred_one():
    assert choose(10.0, {"openvino": 5.1, "xla": 5.0}, ORDER)[0] == "openvino"
    assert choose(10.0, {"openvino": 6.0, "xla": 5.0}, ORDER)[0] == "xla"  # 1 ms > 5% of 6 ms
    assert choose(10.0, {"openvino": 5.1, "xla": 5.0}, ["xla", "openvino"])[0] == "xla"


def test_nothing_measured_stays_on_tf():
    assert choose(1.0, {}, ORDER) == (None, "no backend could run it")


@given(tf_ms=times, backend_ms=backend_times)
def test_the_choice_is_never_slower_than_tf_by_the_rule(tf_ms, backend_ms):
    chosen, _ = choose(tf_ms, backend_ms, ORDER)
    if chosen is None:
        assert all(tf_ms - t <= margin_ms(tf_ms) for t in backend_ms.values())
    else:
        assert tf_ms - backend_ms[chosen] > margin_ms(tf_ms)
        # no other backend is faster than the chosen one by more than the margin
        assert all(backend_ms[chosen] - t <= margin_ms(backend_ms[chosen]) for t in backend_ms.values())


@given(tf_ms=times, backend_ms=backend_times)
def test_the_choice_does_not_depend_on_the_order_of_the_measurements(tf_ms, backend_ms):
    reversed_ms = dict(reversed(list(backend_ms.items())))
    assert choose(tf_ms, backend_ms, ORDER) == choose(tf_ms, reversed_ms, ORDER)


@given(tf_ms=times, backend_ms=backend_times, scale=st.floats(min_value=0.5, max_value=2.0))
def test_scaling_every_time_alike_keeps_the_choice_above_the_absolute_floor(tf_ms, backend_ms, scale):
    """The rule is relative (5%) wherever the absolute floor does not bind: a uniformly slower or faster
    machine gives the same placement.
    """
    if min([tf_ms, *backend_ms.values()]) * min(scale, 1.0) * REL_MARGIN <= ABS_MARGIN_MS:
        return
    scaled = {k: v * scale for k, v in backend_ms.items()}
    first, _ = choose(tf_ms, backend_ms, ORDER)
    second, _ = choose(tf_ms * scale, scaled, ORDER)
    assert first == second or _near_a_threshold(tf_ms, backend_ms)


def _near_a_threshold(tf_ms: float, backend_ms: dict[str, float]) -> bool:
    """Float rounding can flip a comparison that sits exactly on the margin."""
    points = [tf_ms - t - margin_ms(tf_ms) for t in backend_ms.values()]
    points += [a - b - margin_ms(a) for a in backend_ms.values() for b in backend_ms.values()]
    return any(abs(p) < 1e-9 * max(tf_ms, 1.0) for p in points)


def test_measurement_round_trips_through_json():
    m = Measurement("tfaccel_sg_0", 12, {"tf": 2.0, "openvino": 1.0}, {"xla": "why"}, "openvino", "w", 9)
    assert Measurement.from_json(m.to_json()) == m
