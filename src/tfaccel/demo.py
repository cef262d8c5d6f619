"""The main job: trace a bundled example model, print what ran where and the measured speed-up.

Run it with ``python -m tfaccel.demo`` (see the README); ``--model`` picks another example.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np


def main(argv: Sequence[str] | None = None) -> int:
    from tfaccel.tools.examples import EXAMPLES

    parser = argparse.ArgumentParser(prog="python -m tfaccel.demo", description=__doc__)
    parser.add_argument("--model", choices=sorted(EXAMPLES), default="mobilenetv2")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=30, help="timed calls per variant (interleaved)")
    parser.add_argument(
        "--backend", default="auto", help="openvino (fast), xla (portable) or auto (every available one)"
    )
    parser.add_argument(
        "--placement", default="profile", help="profile (measure, keep the fastest) or static (rules only)"
    )
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's start-up and trace logs")
    args = parser.parse_args(argv)

    from tfaccel.cli.startup import load_tensorflow, stderr_held

    # TensorFlow's start-up and trace-time chatter (C++ logs on descriptor 2) stays out of the report;
    # tfaccel's own warnings still reach stderr, and so does a traceback (the descriptor is back by then)
    if not load_tensorflow(parser.prog, verbose=args.verbose):
        return 1
    if args.verbose:
        return _run(args)
    with stderr_held():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    import tensorflow as tf

    import tfaccel
    from tfaccel.compiler.timing import interleaved
    from tfaccel.tools.examples import EXAMPLES, example_input

    model = EXAMPLES[args.model]()
    x = example_input(args.model, args.batch)
    start = time.perf_counter()
    traced = tfaccel.trace(model, x, backend=args.backend, placement=args.placement)
    trace_s = time.perf_counter() - start
    print(f"traced {args.model} (batch {args.batch}) in {trace_s:.1f} s")
    traced.summary()
    original = tf.function(lambda t: model(t, training=False))
    expected = original(x).numpy()
    got = traced(x).numpy()
    rel = float(np.max(np.abs(got - expected)) / max(float(np.max(np.abs(expected))), 1e-30))
    print(f"on_neuron_ratio: {traced.on_neuron_ratio:.3f}   max relative error vs original: {rel:.2e}")
    times = interleaved(
        {"tensorflow": lambda: original(x).numpy(), "tfaccel": lambda: traced(x).numpy()}, runs=args.runs
    )
    tf_ms, ours_ms = times["tensorflow"].median_ms, times["tfaccel"].median_ms
    print(
        f"median latency over {args.runs} interleaved runs: "
        f"TensorFlow {tf_ms:.2f} ms, tfaccel {ours_ms:.2f} ms -> speed-up {tf_ms / ours_ms:.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
