"""Traced model vs the original (tf.function graph mode), side by side in one process.

For each example model and batch size: trace time, on_neuron_ratio, max relative error against the
original, and median latency of both over interleaved runs (A B A B ...), with the speed-up ratio.

    python benchmarks/bench_trace.py                      # all models, batch 1 and 8, 30 runs
    python benchmarks/bench_trace.py --models mobilenetv2 --batches 1 --runs 20
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

import tfaccel
from tfaccel.compiler.timing import interleaved
from tfaccel.tools.examples import EXAMPLES, example_input


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models", nargs="+", default=["resnet50", "mobilenetv2", "bert"], choices=sorted(EXAMPLES)
    )
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--placement", default="profile", choices=["profile", "static"])
    args = parser.parse_args()

    print(
        f"# tfaccel {tfaccel.__version__}, TensorFlow {tf.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"backend {args.backend}, placement {args.placement}, {args.runs} interleaved runs, medians"
    )
    header = (
        f"{'model':<12} {'batch':>5} {'trace s':>8} {'ratio':>6} {'max rel err':>11} {'TF ms':>8} "
        f"{'tfaccel ms':>10} {'speed-up':>8}"
    )
    print(header)
    print("-" * len(header))
    for name in args.models:
        model = EXAMPLES[name]()
        original = tf.function(lambda t, m=model: m(t, training=False))
        for batch in args.batches:
            x = example_input(name, batch)
            start = time.perf_counter()
            traced = tfaccel.trace(model, x, backend=args.backend, placement=args.placement)
            trace_s = time.perf_counter() - start
            expected = original(x).numpy()
            got = traced(x).numpy()
            rel = float(np.max(np.abs(got - expected)) / max(float(np.max(np.abs(expected))), 1e-30))
            variants = {
                "tf": lambda f=original, t=x: f(t).numpy(),
                "tfaccel": lambda f=traced, t=x: f(t).numpy(),
            }
            times = interleaved(variants, runs=args.runs)
            tf_ms, ours_ms = times["tf"].median_ms, times["tfaccel"].median_ms
            print(
                f"{name:<12} {batch:>5} {trace_s:>8.1f} {traced.on_neuron_ratio:>6.3f} {rel:>11.2e} "
                f"{tf_ms:>8.2f} {ours_ms:>10.2f} {tf_ms / ours_ms:>7.2f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
