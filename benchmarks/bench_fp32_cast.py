"""--fp32-cast accuracy and speed: none / matmult / all against the fp32 original, side by side.

For each example model: max relative error (batch 1, on logits), top-1 agreement with the fp32 original
over random inputs, and median batch-1 latency interleaved with plain TensorFlow.

    python benchmarks/bench_fp32_cast.py                    # resnet50, mobilenetv2, bert; 200 samples
    python benchmarks/bench_fp32_cast.py --models bert --samples 64
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

import tfaccel
from tfaccel.compiler.timing import interleaved
from tfaccel.tools.examples import EXAMPLES, example_input

MODES = ("none", "matmult", "all")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models", nargs="+", default=["resnet50", "mobilenetv2", "bert"], choices=list(EXAMPLES)
    )
    parser.add_argument("--samples", type=int, default=200, help="random inputs for top-1 agreement")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--backend", default="xla", help="xla (the TF-graph rewrite) or openvino (bf16 hint)")
    args = parser.parse_args()
    print(f"# {os.cpu_count()} cores; latency: batch 1, {args.runs} interleaved runs, medians")
    print(f"{'model':<12} {'mode':<8} {'max rel err':>11} {'top-1 agree':>11} {'ms':>8} {'vs TF':>6}")
    for name in args.models:
        model = EXAMPLES[name]()
        original = tf.function(lambda t, m=model: m(t, training=False))
        x1 = example_input(name, 1)
        # batch 8 for the agreement over many inputs, batch 1 for latency (a model traced at 8 pads a batch
        # of 1 to 8 under --dynamic-batch-size, so it would not measure the same thing)
        eights = {
            m: tfaccel.trace(model, example_input(name, 8), fp32_cast=m, backend=args.backend) for m in MODES
        }
        ones = {m: tfaccel.trace(model, x1, fp32_cast=m, backend=args.backend) for m in MODES}
        batches = [example_input(name, 8, seed=100 + i) for i in range(-(-args.samples // 8))]
        reference = np.concatenate([original(b).numpy() for b in batches])[: args.samples]
        expected1 = original(x1).numpy()
        variants = {"tf": lambda f=original, v=x1: f(v).numpy()}
        rows = {}
        for mode, traced in ones.items():
            got = np.concatenate([eights[mode](b).numpy() for b in batches])[: args.samples]
            agree = float(np.mean(np.argmax(got, -1) == np.argmax(reference, -1)))
            err = float(np.max(np.abs(traced(x1).numpy() - expected1)) / np.max(np.abs(expected1)))
            rows[mode] = (err, agree)
            variants[mode] = lambda f=traced, v=x1: f(v).numpy()
        times = interleaved(variants, runs=args.runs)
        for mode in MODES:
            err, agree = rows[mode]
            ms = times[mode].median_ms
            ratio = times["tf"].median_ms / ms
            print(
                f"{name:<12} {mode:<8} {err:>11.2e} {100 * agree:>10.1f}% {ms:>8.2f} {ratio:>5.2f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
