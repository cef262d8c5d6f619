"""The sampler behind measured placement (``tfaccel.compiler.timing.warm`` and ``sample``): how many calls,
in which order, when it stops. Behaviour only: what is timed is recorded, no wall-clock assertion.
"""

from __future__ import annotations

import time

from tfaccel.compiler.timing import WARM_MAX_CALLS, WARM_SETTLED, sample, warm


def test_warm_up_lasts_until_the_slow_first_calls_are_over():
    """The first calls of a compiled model are slow (OpenVINO's first inferences): they are not samples."""
    calls = []

    def model() -> None:
        calls.append(1)
        time.sleep(0.03 if len(calls) <= 3 else 0.001)

    times = warm(model)
    assert len(times) == len(calls)
    assert len(calls) >= 3 + WARM_SETTLED  # every slow call, then enough settled ones
    assert len(calls) <= WARM_MAX_CALLS
    assert min(times[:3]) > max(times[3 : 3 + WARM_SETTLED])


def test_warm_up_gives_up_on_a_variant_that_never_settles():
    calls = []

    def erratic() -> None:
        calls.append(1)
        time.sleep(0.001 if len(calls) % 2 else 0.01)

    warm(erratic)
    assert 3 <= len(calls) <= WARM_MAX_CALLS


def _recorder(log: list[str], name: str):
    def call() -> None:
        log.append(name)

    return call


def test_rounds_interleave_rotate_and_reheat_each_variant():
    log: list[str] = []
    variants = {name: _recorder(log, name) for name in ("tf", "a", "b")}
    taken = sample(variants, lambda s: True, min_samples=4, budget_s=60)
    assert {k: len(v) for k, v in taken.items()} == {"tf": 4, "a": 4, "b": 4}  # 2 rounds of 2 timed calls
    # each variant: one untimed call then two timed ones; the order of variants rotates between rounds
    assert log == ["tf"] * 3 + ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3 + ["tf"] * 3


def test_sampling_stops_when_the_decision_is_clear_and_not_before_the_minimum():
    log: list[str] = []
    asked: list[int] = []

    def enough(taken) -> bool:
        asked.append(min(len(v) for v in taken.values()))
        return len(asked) >= 3

    taken = sample({"tf": _recorder(log, "tf"), "a": _recorder(log, "a")}, enough, min_samples=6, budget_s=60)
    assert asked[0] == 6  # never asked below the minimum
    assert all(len(v) == 10 for v in taken.values())  # stopped at the third time it was asked


def test_sampling_stops_at_the_maximum_or_the_budget_when_never_clear():
    variants = {"tf": lambda: None, "a": lambda: None}
    taken = sample(variants, lambda s: False, min_samples=4, max_samples=12, budget_s=60)
    assert all(len(v) == 12 for v in taken.values())
    slow = {"tf": lambda: time.sleep(0.01), "a": lambda: time.sleep(0.01)}
    taken = sample(slow, lambda s: False, min_samples=4, max_samples=10_000, budget_s=0.2)
    assert all(4 <= len(v) < 10_000 for v in taken.values())


def test_sampling_continues_earlier_samples_with_a_new_variant():
    first = sample({"tf": lambda: None}, lambda s: True, min_samples=4)
    more = sample({"tf": lambda: None, "a": lambda: None}, lambda s: True, min_samples=4, samples=first)
    assert len(more["tf"]) > len(first["tf"]) and len(more["a"]) == 4
