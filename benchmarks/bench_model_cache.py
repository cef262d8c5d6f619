"""OpenVINO's model cache (issue 19 item 4): load-to-first-answer of a traced model in a fresh process,
with the cache off (every process compiles) and warm (a process before this one left the blobs).

Each model is traced once (openvino, default options) and saved. Then fresh processes, alternating off /
warm, ``--runs`` each: import tfaccel (not counted), ``tfaccel.load``, the first call. Medians, seconds.
The warm cache is a temporary folder filled by one untimed process first.

    python benchmarks/bench_model_cache.py                   # resnet50, bert, mobilenetv2; 5 runs each
    python benchmarks/bench_model_cache.py --models bert --runs 9
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfaccel.tools.examples import EXAMPLES

_CHILD = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    import tfaccel
    from tfaccel import native
    x = np.load(sys.argv[2])
    start = time.perf_counter()
    model = tfaccel.load(sys.argv[1])
    loaded = time.perf_counter()
    model(x).numpy()
    done = time.perf_counter()
    stats = native.compile_cache_stats()
    print(json.dumps({"load_s": loaded - start, "first_call_s": done - loaded, **stats}))
    """
)


def _child(model_dir: str, x_path: str, cache: str) -> dict[str, float]:
    env = {**os.environ, "TFACCEL_MODEL_CACHE": cache, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, model_dir, x_path], env=env, capture_output=True, text=True, check=True
    )
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def bench(name: str, runs: int, root: str) -> None:
    import numpy as np

    import tfaccel
    from tfaccel.tools.examples import example_input

    model = EXAMPLES[name]()
    x = example_input(name, 1)
    model_dir = os.path.join(root, name)
    tfaccel.trace(model, x, backend="openvino").save(model_dir)
    x_path = os.path.join(root, f"{name}.npy")
    np.save(x_path, np.asarray(x))
    cache = os.path.join(root, f"{name}-cache")
    warming = _child(model_dir, x_path, cache)  # fills the cache (untimed)
    assert warming["from_disk"] == 0, warming
    samples: dict[str, list[float]] = {"off": [], "warm": []}
    for _ in range(runs):
        for label, folder in (("off", "off"), ("warm", cache)):
            got = _child(model_dir, x_path, folder)
            assert (got["from_disk"] > 0) == (label == "warm"), (label, got)
            samples[label].append(got["load_s"] + got["first_call_s"])
    off, warm = statistics.median(samples["off"]), statistics.median(samples["warm"])
    print(f"{name:<12} {off:>10.2f} {warm:>10.2f} {off - warm:>9.2f} {off / warm:>6.2f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models", nargs="+", default=["resnet50", "bert", "mobilenetv2"], choices=list(EXAMPLES)
    )
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per setting")
    args = parser.parse_args()
    print(
        f"# {os.cpu_count()} cores; load-to-first-answer (tfaccel.load + first call) in a fresh process, "
        f"median of {args.runs}, seconds"
    )
    print(f"{'model':<12} {'cache off':>10} {'warm':>10} {'saved':>9} {'ratio':>7}")
    with tempfile.TemporaryDirectory(prefix="bench-model-cache-") as root:
        for name in args.models:
            bench(name, args.runs, root)


if __name__ == "__main__":
    main()
