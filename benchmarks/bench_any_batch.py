"""Automatic dynamic batch: a model traced at batch 4 run at batch 1 and 7, on each backend, against TF.

openvino runs one graph compiled with a dynamic dim 0; xla runs chunks of the traced batch (7 rows: two
chunks of 4, the last padded; 1 row: one chunk of 4, padded). Next to them, the same model traced at exactly
that batch ("exact": no padding, the same kind of plan) and plain TensorFlow at that batch, interleaved;
medians.

    python benchmarks/bench_any_batch.py                        # mobilenetv2 and bert, batches 1 and 7
    python benchmarks/bench_any_batch.py --models resnet50 --runs 30
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

TRACED_AT = 4


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["mobilenetv2", "bert"], choices=list(EXAMPLES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 7])
    parser.add_argument("--backends", nargs="+", default=["openvino", "xla"])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    print(f"# {os.cpu_count()} cores; traced at batch {TRACED_AT}; {args.runs} interleaved runs, medians")
    print(
        f"{'model':<12} {'backend':<9} {'batch':>5} {'plan':<8} {'TF ms':>8} {'any ms':>8} {'vs TF':>6} "
        f"{'exact ms':>9} {'vs TF':>6}"
    )
    for name in args.models:
        model = EXAMPLES[name]()
        original = tf.function(lambda t, m=model: m(t, training=False))
        for backend in args.backends:
            traced = tfaccel.trace(model, example_input(name, TRACED_AT), backend=backend)
            plan = traced.tfaccel_executable.batch_plan
            for batch in args.batches:
                x = example_input(name, batch, seed=batch)
                exact = tfaccel.trace(model, x, backend=backend)
                expected = original(x).numpy()
                for variant in (traced, exact):
                    got = variant(x).numpy()
                    error = float(
                        np.max(np.abs(got - expected)) / max(1e-12, float(np.max(np.abs(expected))))
                    )
                    assert error < 1e-3, f"{name} {backend} batch {batch}: relative error {error:.2e}"
                times = interleaved(
                    {
                        "tf": lambda f=original, v=x: f(v).numpy(),
                        "any": lambda f=traced, v=x: f(v).numpy(),
                        "fixed": lambda f=exact, v=x: f(v).numpy(),
                    },
                    runs=args.runs,
                )
                tf_ms, any_ms, fixed_ms = (times[k].median_ms for k in ("tf", "any", "fixed"))
                print(
                    f"{name:<12} {backend:<9} {batch:>5} {plan.mode.value:<8} {tf_ms:>8.2f} {any_ms:>8.2f} "
                    f"{tf_ms / any_ms:>5.2f}x {fixed_ms:>9.2f} {tf_ms / fixed_ms:>5.2f}x",
                    flush=True,
                )


if __name__ == "__main__":
    main()
