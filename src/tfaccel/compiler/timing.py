"""Side-by-side timing: interleaved runs, medians and ratios (the only way numbers are quoted here), and the
adaptive sampler measured placement decides from.

Why interleaved: this machine is shared and noisy, and a call after an idle pause runs slower (CPU
wake-up). Running the variants A B A B ... after a warm-up exposes them to the same noise, and medians
ignore the outliers. Why adaptive (:func:`warm`, :func:`sample`): a fixed warm-up and run count biased the
first trace in a process (OpenVINO's first inferences are slow; a 46 ms subgraph got 5 samples), while a
clear-cut decision needs few samples; so each variant is warmed until its times settle, and sampling goes on
until the caller's decision is clear or a budget is spent.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Timing", "interleaved", "sample", "warm"]


@dataclass(frozen=True)
class Timing:
    """Median and spread of one variant's wall time per call, in milliseconds."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    runs: int


def interleaved(
    variants: Mapping[str, Callable[[], Any]], runs: int = 20, warmup: int = 3, discard: bool = True
) -> dict[str, Timing]:
    """Time each zero-argument callable ``runs`` times, interleaving the variants, after ``warmup`` calls.

    Each callable must block until its work is done (e.g. call ``.numpy()`` on a result). With
    ``discard`` each timed call follows an untimed one of the same variant (benchmarks: no cache effects
    of the switch); without, every call is timed (profiled placement: half the cost).
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(runs):
        for name, fn in variants.items():
            if discard:
                fn()  # the first call after switching variants pays cache effects
            start = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - start) * 1000.0)
    result = {}
    for name, values in samples.items():
        ordered = sorted(values)
        result[name] = Timing(
            statistics.median(ordered),
            ordered[int(0.1 * (len(ordered) - 1))],
            ordered[int(0.9 * (len(ordered) - 1))],
            len(ordered),
        )
    return result


#: warm-up: a variant is warm when its last WARM_SETTLED calls are each within WARM_TOLERANCE of its best
WARM_SETTLED, WARM_TOLERANCE = 3, 0.15
#: ... or after this many calls / seconds, whichever comes first (a variant that never settles)
WARM_MAX_CALLS, WARM_MAX_S = 25, 1.5


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def warm(fn: Callable[[], Any]) -> list[float]:
    """Call ``fn`` until its times settle (see the constants above); the ms of every call, first included.

    Why: the first calls of a compiled model are slow for reasons that have nothing to do with its steady
    cost (OpenVINO's first inferences, thread pools spinning up, caches filling); timing them as samples
    biased the first trace in a process against the backend.
    """
    times: list[float] = []
    start = time.perf_counter()
    while True:
        times.append(_timed(fn))
        best = min(times)
        recent = times[-WARM_SETTLED:]
        if len(times) > WARM_SETTLED and all(t <= (1 + WARM_TOLERANCE) * best for t in recent):
            return times
        if len(times) >= WARM_MAX_CALLS or (time.perf_counter() - start > WARM_MAX_S and len(times) > 2):
            return times


def sample(
    variants: Mapping[str, Callable[[], Any]],
    enough: Callable[[Mapping[str, list[float]]], bool],
    *,
    min_samples: int = 8,
    max_samples: int = 60,
    budget_s: float = 3.0,
    samples: Mapping[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Timed calls (ms) of each warm variant, in rounds, until ``enough(samples)`` or the budget is spent.

    A round calls each variant once untimed (its caches refill after the other variants ran) and twice
    timed; the order of the variants rotates from round to round, so none always runs right after the
    same neighbour. Sampling stops after a round in which every variant has ``min_samples`` and
    ``enough`` says the decision is clear, or once every variant has ``max_samples``, or once
    ``budget_s`` is spent (with ``min_samples`` at least). ``samples`` continues an earlier sampling.
    """
    names = list(variants)
    taken: dict[str, list[float]] = {name: list((samples or {}).get(name, [])) for name in names}
    start = time.perf_counter()
    turn = 0
    while True:
        order = names[turn % len(names) :] + names[: turn % len(names)]
        turn += 1
        for name in order:
            fn = variants[name]
            fn()
            taken[name].append(_timed(fn))
            taken[name].append(_timed(fn))
        fewest = min(len(v) for v in taken.values())
        if fewest < min_samples:
            continue
        if enough(taken) or fewest >= max_samples or time.perf_counter() - start > budget_s:
            return taken
