"""The measured-placement rule (``tfaccel.compiler.selection``) on given numbers: no TensorFlow, no timing.

The rule: each variant is its samples' lower quartile with an order-statistic interval; a backend keeps a
subgraph unless TF is faster by a clear, significant margin (intervals apart by more than
``max(TF_REL_MARGIN * tf, TF_ABS_MARGIN_MS)``); between backends the preferred one keeps it unless another
is clearly faster.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tfaccel.compiler.selection import (
    BACKEND_REL_MARGIN,
    CONFIDENCE,
    QUANTILE,
    TF_ABS_MARGIN_MS,
    Estimate,
    Measurement,
    Verdict,
    WholeModelCheck,
    choose,
    compare,
    estimate,
    settled,
    slower_beyond_noise,
    suspects,
    tf_margin_ms,
)

ORDER = ["openvino", "xla"]

times = st.floats(min_value=0.001, max_value=500.0, allow_nan=False, allow_infinity=False)
sample_lists = st.lists(times, min_size=1, max_size=60)


def exact(ms: float, samples: int = 20) -> Estimate:
    """A variant measured without noise."""
    return Estimate(ms, ms, ms, samples)


estimates = sample_lists.map(estimate)
backend_estimates = st.dictionaries(st.sampled_from(ORDER), estimates, max_size=2)


# -- the estimator ----------------------------------------------------------------------------------------
@given(sample_lists)
def test_the_estimate_is_a_sample_inside_its_interval(samples):
    e = estimate(samples)
    assert e.samples == len(samples)
    assert min(samples) <= e.low_ms <= e.ms <= e.high_ms <= max(samples)
    assert e.ms in samples


def test_the_estimate_ignores_one_sided_interference():
    """Interference only adds time: a quarter of the calls slowed 10x leaves the estimate where it was."""
    quiet = [10.0 + 0.01 * i for i in range(40)]
    noisy = quiet[:30] + [100.0] * 10
    assert estimate(noisy).ms == pytest.approx(estimate(quiet).ms, rel=0.02)
    assert estimate(noisy).high_ms < 11.0  # the interval too


def _coverage(n: int, low_rank: int, high_rank: int) -> float:
    """P(x_(low) <= Q < x_(high)) for the QUANTILE of a continuous distribution, n samples."""
    return sum(math.comb(n, i) * QUANTILE**i * (1 - QUANTILE) ** (n - i) for i in range(low_rank, high_rank))


@pytest.mark.parametrize("n", [16, 30, 60])
def test_the_interval_covers_the_quartile_at_the_stated_confidence(n):
    ranked = [float(i) for i in range(1, n + 1)]  # x_(k) == k
    e = estimate(ranked)
    assert _coverage(n, int(e.low_ms), int(e.high_ms)) >= CONFIDENCE


def test_few_samples_give_a_wide_interval_not_a_confident_one():
    e = estimate([1.0, 2.0, 3.0])
    assert (e.low_ms, e.high_ms) == (1.0, 3.0)


def test_no_samples_is_an_error():
    with pytest.raises(ValueError, match="at least one sample"):
        estimate([])


# -- burden of proof on TF --------------------------------------------------------------------------------
def test_a_clear_win_goes_to_the_backend_and_says_by_how_much():
    chosen, why = choose(exact(10.0), {"openvino": exact(4.0), "xla": exact(8.0)}, ORDER)
    assert chosen == "openvino"
    assert "openvino 4.000 ms vs TF 10.000 ms (2.50x)" in why and "xla 8.000 ms" in why


def test_a_tie_or_a_small_loss_keeps_the_backend():
    """What compiles runs on the accelerator unless TF proves itself faster by the margin."""
    assert choose(exact(10.0), {"openvino": exact(10.0)}, ORDER)[0] == "openvino"
    small_loss = 10.0 + 0.9 * tf_margin_ms(10.0)
    assert choose(exact(10.0), {"xla": exact(small_loss)}, ORDER)[0] == "xla"


def test_the_per_call_floor_keeps_a_tiny_subgraph_that_costs_less_than_a_call():
    """The reference's first example: one Dense(3), 0.6 ms on TF and 1.0 ms compiled (measured here)."""
    assert tf_margin_ms(0.6) == TF_ABS_MARGIN_MS
    assert choose(exact(0.6), {"openvino": exact(1.0)}, ORDER)[0] == "openvino"


def test_tf_clearly_faster_by_the_margin_keeps_it_and_calls_it_a_speed_decision():
    chosen, why = choose(exact(10.0), {"openvino": exact(10.0 + 1.1 * tf_margin_ms(10.0))}, ORDER)
    assert chosen is None
    assert why.startswith("speed decision (it compiled): TF 10.000 ms is faster than openvino")


def test_an_inconclusive_measurement_keeps_the_backend_and_says_so():
    """TF looks faster, but the intervals overlap: not proven, so the backend keeps it."""
    tf = Estimate(10.0, 9.0, 14.0, 8)
    backend = Estimate(12.0, 10.0, 16.0, 8)
    assert compare(tf, backend) is Verdict.INCONCLUSIVE
    chosen, why = choose(tf, {"openvino": backend}, ORDER)
    assert chosen == "openvino" and "TF not shown faster by the margin" in why
    assert not settled(tf, {"openvino": backend})


def test_verdicts_on_clear_numbers():
    assert compare(exact(10.0), exact(5.0)) is Verdict.KEEP
    assert compare(exact(10.0), exact(30.0)) is Verdict.TF_FASTER
    assert settled(exact(10.0), {"openvino": exact(5.0), "xla": exact(30.0)})


def test_backends_within_noise_of_each_other_go_to_the_preferred_one():
    assert choose(exact(10.0), {"openvino": exact(5.1), "xla": exact(5.0)}, ORDER)[0] == "openvino"
    assert choose(exact(10.0), {"openvino": exact(6.0), "xla": exact(5.0)}, ORDER)[0] == "xla"
    assert choose(exact(10.0), {"openvino": exact(5.1), "xla": exact(5.0)}, ["xla", "openvino"])[0] == "xla"
    overlapping = {"openvino": Estimate(6.0, 4.0, 7.0, 8), "xla": Estimate(5.0, 4.5, 6.0, 8)}
    assert choose(exact(10.0), overlapping, ORDER)[0] == "openvino"  # not clearly faster: preference


def test_nothing_measured_stays_on_tf():
    assert choose(exact(1.0), {}, ORDER) == (None, "no backend could run it")


@given(tf=estimates, backends=backend_estimates)
def test_tf_keeps_a_subgraph_only_on_proof(tf, backends):
    chosen, _ = choose(tf, backends, ORDER)
    if chosen is None:
        assert all(b.low_ms - tf.high_ms > tf_margin_ms(tf.ms) for b in backends.values())
    else:
        assert compare(tf, backends[chosen]) is not Verdict.TF_FASTER
        for other, value in backends.items():  # nothing that may keep it is clearly faster than the choice
            if other != chosen and compare(tf, value) is not Verdict.TF_FASTER:
                clearly = value.high_ms < backends[chosen].low_ms
                assert not (
                    clearly and backends[chosen].ms - value.ms > BACKEND_REL_MARGIN * backends[chosen].ms
                )


@given(tf=estimates, backends=backend_estimates)
def test_the_choice_does_not_depend_on_the_order_of_the_measurements(tf, backends):
    reordered = dict(reversed(list(backends.items())))
    assert choose(tf, backends, ORDER) == choose(tf, reordered, ORDER)


@given(tf=estimates, backends=backend_estimates, extra=st.lists(times, min_size=1, max_size=20))
def test_worse_tf_times_never_take_a_subgraph_from_the_backends(tf, backends, extra):
    """Monotone: slowing TF down (the interference a busy machine adds) cannot move a subgraph to TF."""
    slower_tf = Estimate(tf.ms + max(extra), tf.low_ms + max(extra), tf.high_ms + max(extra), tf.samples)
    if choose(tf, backends, ORDER)[0] is not None:
        assert choose(slower_tf, backends, ORDER)[0] is not None


# -- the whole-model guard --------------------------------------------------------------------------------
def test_the_guard_calls_slower_only_beyond_noise():
    assert slower_beyond_noise(exact(10.0), exact(12.0))
    assert not slower_beyond_noise(exact(10.0), exact(10.3))  # within 5%
    assert not slower_beyond_noise(Estimate(10.0, 9.0, 12.0, 8), Estimate(11.0, 11.5, 13.0, 8))  # overlap


def test_the_guard_names_the_subgraphs_that_lost_time_worst_first():
    rows = [
        Measurement("sg_0", 3, {"tf": 1.0, "xla": 1.2}, chosen="xla"),
        Measurement("sg_1", 3, {"tf": 1.0, "openvino": 1.4}, chosen="openvino"),
        Measurement("sg_2", 3, {"tf": 2.0, "openvino": 1.0}, chosen="openvino"),  # a gain: not a suspect
        Measurement("sg_3", 3, {"tf": 1.0, "xla": 3.0}, chosen=None),  # on TF: not a suspect
    ]
    assert suspects(rows) == ("sg_1 (+0.400 ms on openvino)", "sg_0 (+0.200 ms on xla)")
    check = WholeModelCheck(exact(1.0), exact(2.0), True, suspects(rows))
    assert "SLOWER than the original beyond noise; most likely responsible: sg_1" in check.sentence()
    assert WholeModelCheck.from_json(check.to_json()) == check


# -- the record -------------------------------------------------------------------------------------------
def test_measurement_round_trips_through_json():
    m = Measurement.of(
        "tfaccel_sg_0",
        12,
        {"tf": estimate([2.0, 2.1, 2.2]), "openvino": estimate([1.0, 1.1])},
        {"xla": "why"},
        "openvino",
        "w",
        "timing cache",
    )
    assert m.runs == 2 and m.times_ms == {"tf": 2.0, "openvino": 1.0}
    assert Measurement.from_json(m.to_json()) == m


def test_a_measurement_written_before_estimates_existed_still_reads():
    old = {"subgraph": "s", "ops": 1, "times_ms": {"tf": 1.0}, "chosen": None, "why": "w", "runs": 5}
    m = Measurement.from_json(old)
    assert m.estimates == {} and m.source == "measured"


def test_a_bad_estimate_in_a_file_is_named():
    data = Measurement.of("s", 1, {"tf": exact(1.0)}, {}, None, "w").to_json()
    data["estimates"]["tf"]["low_ms"] = 5.0
    with pytest.raises(ValueError, match=r"measurement.estimates.tf: expected 0 <= low_ms <= ms <= high_ms"):
        Measurement.from_json(data)


def test_backends_a_fraction_of_a_call_apart_keep_the_preferred_one():
    """Tiny subgraphs (the zoo's recurrent model): openvino 0.63 ms, xla 0.47 ms: intervals apart, 25% apart,
    but less than the per-call floor, so the preferred backend (the static choice) keeps it every time.
    """
    assert choose(exact(0.48), {"openvino": exact(0.63), "xla": exact(0.47)}, ORDER)[0] == "openvino"
    assert choose(exact(9.0), {"openvino": exact(6.3), "xla": exact(4.7)}, ORDER)[0] == "xla"
