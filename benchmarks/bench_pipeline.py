"""--neuroncore-pipeline-cores: throughput with N = 1 and N = 2 stages, interleaved in one process.

python benchmarks/bench_pipeline.py                    # an MLP (batch 64) and ResNet50 (batch 8)
python benchmarks/bench_pipeline.py --models mlp --runs 20
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

import tfaccel
from tfaccel.compiler.timing import interleaved
from tfaccel.tools.examples import example_input, resnet50


def mlp() -> keras.Model:
    keras.utils.set_random_seed(0)
    inp = keras.Input((1024,))
    h = inp
    for _ in range(8):
        h = keras.layers.Dense(1024, activation="relu")(h)
    return keras.Model(inp, keras.layers.Dense(10)(h))


MODELS = {
    "mlp": (mlp, lambda: tf.random.uniform([64, 1024], seed=0)),
    "resnet50": (resnet50, lambda: example_input("resnet50", 8)),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--backend", default="xla")
    args = parser.parse_args()
    print(f"# {os.cpu_count()} cores, {args.runs} interleaved runs, medians; throughput in samples/s")
    columns = ["TF ms", "N=1 ms", "N=2 ms", "N=1 /s", "N=2 /s"]
    print(f"{'model':<10} {'batch':>5} " + " ".join(f"{c:>8}" for c in columns) + f" {'N2/N1':>6}")
    for name in args.models:
        build, make_input = MODELS[name]
        model = build()
        x = make_input()
        original = tf.function(lambda t, m=model: m(t, training=False))
        one = tfaccel.trace(model, x, backend=args.backend)
        two = tfaccel.trace(model, x, neuroncore_pipeline_cores=2, backend=args.backend)
        expected = original(x).numpy()
        for traced in (one, two):
            got = traced(x).numpy()
            assert np.max(np.abs(got - expected)) <= 1e-4 * max(1.0, float(np.max(np.abs(expected))))
        t = interleaved(
            {
                "tf": lambda f=original, v=x: f(v).numpy(),
                "n1": lambda f=one, v=x: f(v).numpy(),
                "n2": lambda f=two, v=x: f(v).numpy(),
            },
            runs=args.runs,
        )
        b = int(x.shape[0])
        n1, n2 = t["n1"].median_ms, t["n2"].median_ms
        print(
            f"{name:<10} {b:>5} {t['tf'].median_ms:>8.2f} {n1:>8.2f} {n2:>8.2f} "
            f"{1000 * b / n1:>8.1f} {1000 * b / n2:>8.1f} {n1 / n2:>5.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
