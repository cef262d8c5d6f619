"""Closed-loop load test for ``tfaccel bench``: N threads call a model back to back for a while.

Why closed loop and slices: a user asking "how fast is it under N concurrent clients" wants the latency
each client sees and the throughput all of them get; and on a shared machine two models are only
comparable when they run under the same load, so several models run in alternating slices of the
duration (A B A B ...) rather than one after the other.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LoadResult", "first_call_ms", "percentile", "run"]


def percentile(ordered: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of an ascending list, by linear interpolation."""
    if not ordered:
        raise ValueError("no samples")
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class LoadResult:
    """Latencies (ms) of every call of one model and the wall time its slices took."""

    name: str
    batch: int
    concurrency: int
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    errors: int = 0
    first_error: str = ""

    @property
    def calls(self) -> int:
        return len(self.latencies_ms)

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms)
        return {
            "model": self.name,
            "batch": self.batch,
            "concurrency": self.concurrency,
            "calls": self.calls,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "calls_per_s": self.calls / self.seconds if self.seconds else 0.0,
            "inferences_per_s": self.calls * self.batch / self.seconds if self.seconds else 0.0,
            "mean_ms": sum(ordered) / len(ordered) if ordered else None,
            "min_ms": ordered[0] if ordered else None,
            "p50_ms": percentile(ordered, 50) if ordered else None,
            "p90_ms": percentile(ordered, 90) if ordered else None,
            "p99_ms": percentile(ordered, 99) if ordered else None,
            "max_ms": ordered[-1] if ordered else None,
        }


def first_call_ms(fn: Callable[[], Any]) -> float:
    """The first call's latency (ms): what a user waits for after loading, compilation on first use
    included (OpenVINO's ``benchmark_app`` prints it as the first inference). Raises what the call raises.
    """
    begin = time.perf_counter()
    fn()
    return (time.perf_counter() - begin) * 1000.0


def _slice(fn: Callable[[], Any], result: LoadResult, seconds: float) -> None:
    """Run ``fn`` from ``result.concurrency`` threads for ``seconds``; append to ``result``."""
    lock = threading.Lock()
    start_gate = threading.Barrier(result.concurrency + 1)
    deadline = [0.0]

    def worker() -> None:
        mine: list[float] = []
        errors, first = 0, ""
        start_gate.wait()
        while True:
            begin = time.perf_counter()
            if begin >= deadline[0]:
                break
            try:
                fn()
            except Exception as err:  # counted and reported, never hidden: bench says how many failed
                errors += 1
                first = first or f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"
                continue
            mine.append((time.perf_counter() - begin) * 1000.0)
        with lock:
            result.latencies_ms.extend(mine)
            result.errors += errors
            result.first_error = result.first_error or first

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(result.concurrency)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    deadline[0] = began + seconds
    start_gate.wait()
    for thread in threads:
        thread.join()
    result.seconds += time.perf_counter() - began


def run(
    models: Mapping[str, Callable[[], Any]],
    batch: int,
    concurrency: int,
    duration: float,
    warmup: int = 5,
    rounds: int = 3,
) -> dict[str, LoadResult]:
    """Load-test each model for ``duration`` seconds in total, in ``rounds`` alternating slices when
    there is more than one model, after ``warmup`` untimed calls each.
    """
    for fn in models.values():
        for _ in range(warmup):
            fn()
    results = {name: LoadResult(name, batch, concurrency) for name in models}
    slices = rounds if len(models) > 1 else 1
    for _ in range(slices):
        for name, fn in models.items():
            _slice(fn, results[name], duration / slices)
    return results
