"""Start-up cost: wall time of fresh processes that only import tfaccel, print help, read a report or
reject a server flag.

Why: issue 17 asks that ``tfaccel --help``, ``tfaccel report`` and the server's flag errors answer in well
under a second, which they can only do without importing TensorFlow; ``import tfaccel`` itself must still
register the op library (so it imports TensorFlow) but nothing more. The tests check what each command
imports (tests/test_import_cost.py, never wall-clock); this prints the times they buy.

python benchmarks/bench_startup.py               # median of 5 fresh processes per command
python benchmarks/bench_startup.py --runs 9
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

#: a tiny traced model for ``tfaccel report`` (traced once, with xla: no op library needed to read it)
_SETUP = textwrap.dedent(
    """
    import sys
    import tensorflow as tf
    import tfaccel

    @tf.function
    def f(x):
        return tf.nn.relu(tf.matmul(x, tf.ones([4, 4])))

    tfaccel.trace(f, tf.ones([2, 4]), backend="xla").save(sys.argv[1])
    """
)


def _script(name: str, module_args: list[str]) -> list[str]:
    """The installed console script next to this interpreter, else the same entry point by ``-c``/``-m``
    (a pyenv shim on PATH would add its own start-up to every number).
    """
    beside = os.path.join(os.path.dirname(sys.executable), name)
    return [beside] if os.path.isfile(beside) else [sys.executable, *module_args]


def _time(command: list[str], runs: int, env: dict[str, str], expect: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        times.append(time.perf_counter() - start)
        if proc.returncode != expect:
            raise SystemExit(
                f"{' '.join(command)} exited {proc.returncode} (expected {expect}):\n{proc.stderr}"
            )
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per command (default 5)")
    args = parser.parse_args()

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["TFACCEL_CC_FLAGS"] = "--placement=static"
    tfaccel = _script("tfaccel", ["-m", "tfaccel_cli"])
    server = _script(
        "tfaccel-model-server", ["-c", "import sys, tfaccel_cli; sys.exit(tfaccel_cli.serve_main())"]
    )
    with tempfile.TemporaryDirectory() as tmp:
        traced = os.path.join(tmp, "traced")
        setup = {**env, "TF_CPP_MIN_LOG_LEVEL": "3"}
        subprocess.run([sys.executable, "-c", _SETUP, traced], check=True, env=setup, capture_output=True)
        cases = [
            ("python -c pass (the interpreter alone)", [sys.executable, "-c", "pass"], 0),
            ("python -c 'import tfaccel'", [sys.executable, "-c", "import tfaccel"], 0),
            ("tfaccel --help", [*tfaccel, "--help"], 0),
            ("tfaccel trace --help", [*tfaccel, "trace", "--help"], 0),
            ("tfaccel report DIR", [*tfaccel, "report", traced], 0),
            ("tfaccel-model-server --no_such_flag", [*server, "--no_such_flag"], 2),
            ("tfaccel-model-server (no model flag)", [*server, "--port=0"], 2),
        ]
        print(f"median wall time of {args.runs} fresh processes (min-max):")
        for label, command, expect in cases:
            times = _time(command, args.runs, env, expect)
            print(f"  {label:<42} {statistics.median(times):6.2f} s  ({min(times):.2f}-{max(times):.2f})")


if __name__ == "__main__":
    main()
