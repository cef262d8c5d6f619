"""--extract-weights on a model past protobuf's 2 GB limit: trace, save, reload, run; peak memory.

python benchmarks/bench_extract_weights.py            # two 16384x16384 fp32 layers: 2.0 GiB of weights
python benchmarks/bench_extract_weights.py --width 8192   # a smaller, faster variant (0.5 GiB)
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

import tfaccel


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--width", type=int, default=16384)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--backend", default="xla")
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    inp = keras.Input((args.width,))
    h = inp
    for _ in range(args.layers):
        h = keras.layers.Dense(args.width, activation="relu", use_bias=False)(h)
    model = keras.Model(inp, h)
    size = sum(int(np.prod(v.shape)) * 4 for v in model.weights)
    x = tf.random.uniform([1, args.width])
    expected = model(x).numpy()
    print(
        f"model: {args.layers} x Dense({args.width}), weights {size / 2**30:.2f} GiB; "
        f"peak RSS {peak_gib():.2f} GiB"
    )

    start = time.perf_counter()
    try:
        tfaccel.trace(model, x, backend=args.backend)
        print("without --extract-weights: traced (the weights fit in a GraphDef)")
    except tfaccel.TraceError as err:
        print(f"without --extract-weights ({time.perf_counter() - start:.1f} s): {type(err).__name__}: {err}")

    start = time.perf_counter()
    traced = tfaccel.trace(model, x, extract_weights=True, backend=args.backend)
    print(
        f"with --extract-weights: traced in {time.perf_counter() - start:.1f} s, "
        f"ratio {traced.on_neuron_ratio:.2f}, "
        f"graph {traced.tfaccel_executable.graph_def.ByteSize() / 2**10:.1f} KiB; "
        f"peak RSS {peak_gib():.2f} GiB"
    )
    err = float(np.max(np.abs(traced(x).numpy() - expected)) / np.max(np.abs(expected)))
    folder = tempfile.mkdtemp(prefix="tfaccel-extract-")
    try:
        start = time.perf_counter()
        traced.save(folder)
        pb = os.path.getsize(os.path.join(folder, "saved_model.pb"))
        variables = sum(
            os.path.getsize(os.path.join(folder, "variables", f))
            for f in os.listdir(os.path.join(folder, "variables"))
        )
        print(
            f"saved in {time.perf_counter() - start:.1f} s: saved_model.pb {pb / 2**10:.1f} KiB, "
            f"variables {variables / 2**30:.2f} GiB; peak RSS {peak_gib():.2f} GiB"
        )
        start = time.perf_counter()
        again = tfaccel.load(folder)
        err2 = float(np.max(np.abs(again(x).numpy() - expected)) / np.max(np.abs(expected)))
        print(
            f"reloaded and ran in {time.perf_counter() - start:.1f} s; max relative error traced {err:.2e}, "
            f"reloaded {err2:.2e}; peak RSS {peak_gib():.2f} GiB"
        )
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
