"""What measured placement costs and how stable it is.

1. Trace time with ``--placement=profile`` (the default) next to ``--placement=static``, traces interleaved
   (static, profile, static, profile, ...) in one process, medians: issue 6 asks for at most 3x on
   ResNet50. Each trace builds the model afresh from the same weights, so no compiled-model cache is hit
   that the other variant filled... except OpenVINO's own process-wide cache of identical models, which
   both variants hit alike after the first round (the first round is reported apart).
2. Stability: each model traced ``--repeats`` times with the default options; the chosen placement (which
   backend each candidate subgraph went to, or TF) is compared across traces, next to the measured times,
   so a flip can be matched with times that moved across a margin.

    python benchmarks/bench_placement.py                                  # ResNet50 x3, zoo stability
    python benchmarks/bench_placement.py --trace-model mobilenetv2 --rounds 2 --stability gpt recommender
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from typing import Any

import tfaccel
from tfaccel.tools.zoo import ZOO


def _trace(name: str, placement: str) -> tuple[float, Any]:
    import keras

    entry = ZOO[name]
    keras.utils.set_random_seed(0)
    model = entry.build()
    x = entry.example(1, 0)
    start = time.perf_counter()
    traced = tfaccel.trace(model, x, placement=placement)
    return time.perf_counter() - start, traced


def trace_time(name: str, rounds: int) -> None:
    times: dict[str, list[float]] = {"static": [], "profile": []}
    added: list[float] = []
    for k in range(rounds):
        for placement in ("static", "profile"):
            seconds, traced = _trace(name, placement)
            times[placement].append(seconds)
            if placement == "profile":
                added.append(traced.placement_report.profile_seconds or 0.0)
            print(
                f"round {k}: {placement:<7} {seconds:6.1f} s (ratio {traced.on_neuron_ratio:.3f})", flush=True
            )
    static, profile = statistics.median(times["static"]), statistics.median(times["profile"])
    print(
        f"{name}: trace time, median of {rounds}: static {static:.1f} s, profile {profile:.1f} s "
        f"(profiling itself {statistics.median(added):.1f} s) -> {profile / static:.2f}x "
        f"(issue 6: at most 3x)"
    )


def stability(names: list[str], repeats: int) -> None:
    for name in names:
        choices: list[tuple[Any, ...]] = []
        rows: list[str] = []
        for _ in range(repeats):
            _, traced = _trace(name, "profile")
            measured = traced.placement_report.measurements
            choices.append(tuple((m.ops, m.chosen) for m in measured))
            rows.append(
                "; ".join(
                    f"{m.subgraph}->{m.chosen or 'TF'} "
                    + " ".join(f"{k}={v:.3f}" for k, v in sorted(m.times_ms.items()))
                    for m in measured
                )
            )
        same = all(c == choices[0] for c in choices)
        print(f"{name}: {'same placement' if same else 'PLACEMENT DIFFERS'} in {repeats} traces")
        for row in rows:
            print(f"    {row}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trace-model", default="resnet50", choices=list(ZOO))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stability", nargs="*", default=list(ZOO), choices=list(ZOO))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.rounds:
        trace_time(args.trace_model, args.rounds)
    stability(args.stability, args.repeats)


if __name__ == "__main__":
    main()
