"""Throughput at 1, 2 and 4 concurrent callers: the latency hint, auto_multicore's N streams, and
``--performance-hint=throughput`` (the streams OpenVINO picks), one mechanism (the op's ``streams``).

Each model is traced with the openvino backend at batch 1, saved, copied by ``auto_multicore`` (N streams),
traced again with ``performance_hint="throughput"`` and saved, and all three are loaded with
``tfaccel.load`` in this process. One timed round is C threads each making
``--calls`` calls on its own input; rounds of every (model, C) are interleaved, ``--runs`` times, and the
throughput is inferences per second of the median round. The ratios are over the source's (latency hint).
Expect the stream variants to be slower at C=1 (one call gets 1/N of the cores) and faster from C=N on.

    python benchmarks/bench_multicore.py                      # mobilenetv2 and resnet50, N=2, 10 runs
    python benchmarks/bench_multicore.py --models mobilenetv2 --runs 20 --num-cores 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

import tfaccel
from tfaccel.compiler.timing import interleaved
from tfaccel.tools.examples import EXAMPLES, example_input

CONCURRENCY = (1, 2, 4)


def _round(model: Any, pool: ThreadPoolExecutor, inputs: list[tf.Tensor], calls: int) -> Callable[[], None]:
    """One timed round: every thread of ``pool`` makes ``calls`` calls on its own input."""

    def work(x: tf.Tensor) -> None:
        for _ in range(calls):
            model(x).numpy()

    def run() -> None:
        for future in [pool.submit(work, x) for x in inputs]:
            future.result()

    return run


def bench(name: str, cores: int, runs: int, calls: int, root: str) -> None:
    model = EXAMPLES[name]()
    x = example_input(name, 1)
    traced = tfaccel.trace(model, x, backend="openvino", placement="static")  # the whole model on openvino
    source, copy = os.path.join(root, f"{name}-source"), os.path.join(root, f"{name}-x{cores}")
    traced.save(source)
    tfaccel.auto_multicore(source, copy, num_cores=cores)
    hinted = os.path.join(root, f"{name}-throughput")
    throughput = tfaccel.trace(
        model, x, backend="openvino", placement="static", performance_hint="throughput"
    )
    throughput.save(hinted)
    loaded = {"source": tfaccel.load(source), f"x{cores}": tfaccel.load(copy), "hint": tfaccel.load(hinted)}
    inputs = [example_input(name, 1, seed=i) for i in range(max(CONCURRENCY))]
    original = tf.function(lambda t: model(t, training=False))
    for label, m in loaded.items():  # both answer like the original before anything is timed
        for v in inputs:
            want, got = original(v).numpy(), m(v).numpy()
            scale = max(1.0, float(np.max(np.abs(want))))
            assert np.max(np.abs(got - want)) <= 1e-4 * scale, f"{name} {label} differs from the original"
    pools = {c: ThreadPoolExecutor(max_workers=c) for c in CONCURRENCY}
    try:
        variants = {
            f"{label}@{c}": _round(m, pools[c], inputs[:c], calls)
            for c in CONCURRENCY
            for label, m in loaded.items()
        }
        times = interleaved(variants, runs=runs)
    finally:
        for pool in pools.values():
            pool.shutdown()
    for c in CONCURRENCY:
        per_s = {label: c * calls / (times[f"{label}@{c}"].median_ms / 1000.0) for label in loaded}
        src, multi, hint = per_s["source"], per_s[f"x{cores}"], per_s["hint"]
        print(
            f"{name:<12} {c:>4} {src:>12.1f} {multi:>12.1f} {multi / src:>6.2f}x {hint:>14.1f} "
            f"{hint / src:>6.2f}x",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["mobilenetv2", "resnet50"], choices=list(EXAMPLES))
    parser.add_argument("--num-cores", type=int, default=2, help="streams of the copy (default 2)")
    parser.add_argument("--runs", type=int, default=10, help="interleaved rounds per variant")
    parser.add_argument("--calls", type=int, default=8, help="calls per thread in one round")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    print(
        f"# {os.cpu_count()} cores, batch 1, openvino fp32; source (latency hint, 1 stream) vs "
        f"auto_multicore(num_cores={args.num_cores}); {args.runs} interleaved rounds of {args.calls} "
        f"calls per thread; inferences/s of the median round; load average {load:.2f} at start"
    )
    print(
        f"{'model':<12} {'C':>4} {'source /s':>12} {f'x{args.num_cores} /s':>12} {'ratio':>7} "
        f"{'throughput /s':>14} {'ratio':>7}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-multicore-") as root:
        for name in args.models:
            bench(name, args.num_cores, args.runs, args.calls, root)
    print(f"# load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
