"""Side-by-side timing: interleaved runs, medians and ratios (the only way numbers are quoted here).

Why interleaved: this machine is shared and noisy, and a call after an idle pause runs slower (CPU
wake-up). Running the variants A B A B ... after a warm-up exposes them to the same noise, and medians
ignore the outliers.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Timing", "interleaved"]


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
