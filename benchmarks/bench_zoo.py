"""The zoo benchmark: tfaccel next to the tools a user would pick instead, model by model, on this machine.

For every zoo model (``tfaccel.tools.zoo``) at batch 1 and 8, one process per model, interleaved runs after a
warm-up, medians:

* ``tf``           the original, ``tf.function`` graph mode (the baseline of every ratio)
* ``tf_copy``      the same again, built separately: its distance from 1.00x is the measured noise
* ``xla_jit``      the whole model under ``tf.function(jit_compile=True)``
* ``ort``          ONNX Runtime (CPU) on the model converted by tf2onnx (thread spinning off: spinning
                   threads would slow whichever tool runs after it in the interleaved order)
* ``ov_own``       OpenVINO's own path: ``openvino.convert_model(model)`` + compile (fp32; ``_bf16``: bf16)
* ``tfaccel_xla``  ``tfaccel.trace(backend="xla")`` (``_bf16``: ``--fp32-cast=matmult``)
* ``tfaccel_ov``   ``tfaccel.trace(backend="openvino")`` (``_bf16``: ``--fp32-cast=matmult``)
* ``tfaccel_static`` ``tfaccel.trace(placement="static")``: the default placement before it was measured
                   (issue 6's), so one run shows what measuring gains or costs on this machine
* ``tfaccel``      ``tfaccel.trace`` with the default options (``--backend=auto --placement=profile``)

plus, per tool, convert/trace time, peak RSS growth while converting, max relative error against the
original, and the fraction of this machine's measured peak GEMM rate achieved (model FLOPs from
TensorFlow's profiler; fp32 peak for fp32 tools, bf16 peak for bf16 ones). A tool that fails on a model is
reported with its error. Writes ``OUT/benchmarks.md``, ``.json`` and ``.png`` (default ``docs/zoo``; the
report ``docs/benchmarks.md`` is assembled from these and the other benchmarks, so a run never overwrites it).

    python benchmarks/bench_zoo.py                         # the whole zoo, 20 timed runs (~40 min)
    python benchmarks/bench_zoo.py --models gpt recommender --runs 10
    python benchmarks/bench_zoo.py --tools tf_copy xla_jit ort ov_own tfaccel --out docs/default
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

TOOLS = [
    "tf",
    "tf_copy",
    "xla_jit",
    "ort",
    "ov_own",
    "ov_own_bf16",
    "ov_own_int8",
    "tfaccel_xla",
    "tfaccel_xla_bf16",
    "tfaccel_ov",
    "tfaccel_ov_bf16",
    "tfaccel_static",
    "tfaccel",
    "tfaccel_relaxed",
    "tfaccel_relaxed_bf16",
    "tfaccel_int8",
    "tfaccel_relaxed_int8",
]
#: calibration inputs for the int8 tools: the zoo's own example generator with other seeds (random weights
#: make the accuracy meaningless here: benchmarks/bench_quantize.py measures it on a trained model)
CALIBRATION_SAMPLES = 16
#: the peers the default trace is compared with (issue 6): fp32, each a whole-model tool
PEERS = ("xla_jit", "ort", "ov_own")
BF16_TOOLS = {"ov_own_bf16", "tfaccel_xla_bf16", "tfaccel_ov_bf16", "tfaccel_relaxed_bf16"}
#: int8 tools: no GEMM peak to compare with (the report's efficiency column leaves them out)
INT8_TOOLS = {"ov_own_int8", "tfaccel_int8", "tfaccel_relaxed_int8"}
#: each tfaccel mode next to the OpenVINO peer with the same precision (and, for relaxed, its NaN handling)
PAIRS = (
    ("tfaccel_relaxed", "ov_own"),
    ("tfaccel_ov_bf16", "ov_own_bf16"),
    ("tfaccel_relaxed_bf16", "ov_own_bf16"),
    ("tfaccel_int8", "ov_own_int8"),
    ("tfaccel_relaxed_int8", "ov_own_int8"),
)
ROOT = Path(__file__).resolve().parents[1]


# -- one model, in its own process --------------------------------------------------------------------------
class PeakRss:
    """Peak resident-memory growth while the block runs (sampled every 5 ms), in MiB."""

    def __enter__(self) -> PeakRss:
        import psutil

        self._process = psutil.Process()
        self._base = self._peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._peak = max(self._peak, self._process.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._process.memory_info().rss)

    @property
    def mib(self) -> float:
        return (self._peak - self._base) / 2**20


def _flat(x: Any) -> list[Any]:
    import tensorflow as tf

    return list(x.values()) if isinstance(x, dict) else tf.nest.flatten(x)


def _caller(model: Any, x: Any) -> Callable[..., Any]:
    """``f(*flat_inputs)`` calling the model the way trace does (a dict goes to a Keras model whole)."""
    keys = list(x) if isinstance(x, dict) else None
    keras_model = hasattr(model, "layers")

    def call(*flat: Any) -> Any:
        args = dict(zip(keys, flat, strict=True)) if keys else flat[0]
        return model(args, training=False) if keras_model else model(args)

    return call


def _specs(x: Any, dynamic: bool = False) -> list[Any]:
    import tensorflow as tf

    return [
        tf.TensorSpec([None, *t.shape[1:]] if dynamic else t.shape, t.dtype, name=f"input_{i}")
        for i, t in enumerate(_flat(x))
    ]


def _to_numpy(out: Any) -> list[np.ndarray]:
    import tensorflow as tf

    return [np.asarray(t) for t in tf.nest.flatten(out)]


def build_tool(
    tool: str, model: Any, x: Any, calibration: list[Any] | None = None
) -> Callable[[], list[np.ndarray]]:
    """A zero-argument callable running ``tool`` on ``x`` (conversion happens here); the int8 tools
    calibrate on ``calibration`` (inputs like ``x``).
    """
    import tensorflow as tf

    flat = _flat(x)
    call = _caller(model, x)
    if tool in ("tf", "tf_copy", "xla_jit"):
        fn = tf.function(call, input_signature=_specs(x), jit_compile=tool == "xla_jit", autograph=False)
        fn.get_concrete_function()
        return lambda: _to_numpy(fn(*flat))
    if tool == "ort":
        import onnxruntime as ort
        import tf2onnx

        fn = tf.function(call, input_signature=_specs(x), autograph=False)
        proto, _ = tf2onnx.convert.from_function(fn, input_signature=_specs(x), opset=17)
        # ORT's pool threads spin for a while after each run by default: in this one-process, interleaved
        # harness they take the 2 cores from whichever tool runs next (measured: OpenVINO on MobileNetV2
        # drops from 3.6x to 2.1x behind a spinning ORT), so spinning is off, for a fair comparison
        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        # by name; tf2onnx leaves tensors the function captured (not variables) as extra graph inputs,
        # so feed those their captured values (without that, tf2onnx fails on such models)
        ours = {f"input_{i}": np.asarray(t) for i, t in enumerate(flat)}
        for external, internal in fn.get_concrete_function().graph.captures:
            if external.dtype != tf.resource:
                ours[internal.name.split(":")[0]] = np.asarray(external)
        feeds = {i.name: ours[i.name.split(":")[0]] for i in session.get_inputs()}
        return lambda: session.run(None, feeds)
    if tool.startswith("ov_own"):
        import openvino as ov

        converted = (
            ov.convert_model(model)
            if hasattr(model, "layers")
            else ov.convert_model(tf.function(call, input_signature=_specs(x), autograph=False))
        )
        precision = "bf16" if tool.endswith("bf16") else "f32"
        keys = list(x) if isinstance(x, dict) else None

        def port_feeds(sample: Any, ports: Any) -> dict[Any, np.ndarray]:
            sample_flat = _flat(sample)
            feeds: dict[Any, np.ndarray] = {}
            for i, port in enumerate(ports):
                names = port.get_names()
                match = [k for k in (keys or []) if k in names or f"{k}:0" in names]
                feeds[i] = np.asarray(sample[match[0]] if match else sample_flat[i])
            return feeds

        if tool.endswith("int8"):  # NNCF on OpenVINO's own conversion: what an OpenVINO user would do
            import nncf

            ports = converted.inputs
            dataset = nncf.Dataset(calibration or [x], lambda sample: port_feeds(sample, ports))
            converted = nncf.quantize(converted, dataset, subset_size=len(calibration or [x]))
        compiled = ov.Core().compile_model(
            converted, "CPU", {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
        )
        request = compiled.create_infer_request()
        feeds = port_feeds(x, compiled.inputs)

        def run() -> list[np.ndarray]:
            request.infer(feeds)
            return [request.get_output_tensor(k).data.copy() for k in range(len(compiled.outputs))]

        return run
    if tool.startswith("tfaccel"):
        import tfaccel

        if tool == "tfaccel":  # what a user gets without options
            traced = tfaccel.trace(model, x)
        elif tool == "tfaccel_static":  # the default before measured placement (issue 6's): no timing
            traced = tfaccel.trace(model, x, placement="static")
        elif tool == "tfaccel_relaxed":  # default options but OpenVINO's own NaN handling
            traced = tfaccel.trace(model, x, nan_semantics="relaxed")
        elif tool == "tfaccel_relaxed_bf16":
            traced = tfaccel.trace(model, x, backend="openvino", fp32_cast="matmult", nan_semantics="relaxed")
        elif tool.endswith("int8"):  # every openvino subgraph in int8 (tolerance 1: speed, not accuracy)
            semantics = "relaxed" if tool == "tfaccel_relaxed_int8" else "tensorflow"
            traced = tfaccel.trace(
                model,
                x,
                quantize="int8",
                calibration_inputs=calibration or [x, x],
                quantize_tolerance=1.0,
                nan_semantics=semantics,
            )
        else:
            backend = "xla" if tool.startswith("tfaccel_xla") else "openvino"
            cast = "matmult" if tool.endswith("bf16") else "none"
            traced = tfaccel.trace(model, x, backend=backend, fp32_cast=cast)
        ratio = traced.on_neuron_ratio
        run_traced = lambda: _to_numpy(traced(x))  # noqa: E731
        run_traced.ratio = ratio  # type: ignore[attr-defined]
        return run_traced
    raise ValueError(tool)


def count_flops(model: Any, x: Any) -> float | None:
    """FLOPs of one sample, from TensorFlow's profiler on the frozen graph (ops in loops counted once)."""
    import tensorflow as tf

    from tfaccel.compiler.capture import capture

    one = {k: v[:1] for k, v in x.items()} if isinstance(x, dict) else x[:1]
    try:
        graph_def = capture(model, one).graph_def
        graph = tf.Graph()
        with graph.as_default():
            tf.graph_util.import_graph_def(graph_def, name="")
        options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        options["output"] = "none"
        return float(tf.compat.v1.profiler.profile(graph, options=options).total_float_ops)
    except Exception as err:  # reported, not fatal: the latency numbers stand without it
        print(f"flops: {type(err).__name__}: {err}", file=sys.stderr)
        return None


def bench_model(name: str, batches: list[int], runs: int, tools: list[str]) -> dict[str, Any]:
    from tfaccel.compiler.timing import interleaved
    from tfaccel.tools.zoo import ZOO, relative_error

    entry = ZOO[name]
    model = entry.build()
    result: dict[str, Any] = {"model": name, "description": entry.description, "batches": {}}
    result["flops"] = count_flops(model, entry.example(1, 0))
    for batch in batches:
        x = entry.example(batch, 0)
        expected = _to_numpy(_caller(model, x)(*_flat(x)))
        calibration = [entry.example(batch, seed) for seed in range(1, 1 + CALIBRATION_SAMPLES)]
        runners: dict[str, Callable[[], Any]] = {}
        rows: dict[str, dict[str, Any]] = {}
        for tool in tools:
            row: dict[str, Any] = {}
            try:
                with PeakRss() as memory:
                    start = time.perf_counter()
                    runner = build_tool(tool, model, x, calibration)
                    got = runner()  # the first call compiles where compiling is lazy
                    row["convert_s"] = time.perf_counter() - start
                row["rss_mib"] = memory.mib
                row["rel_err"] = relative_error(got, expected)
                row["ratio"] = getattr(runner, "ratio", None)
                runners[tool] = runner
            except Exception as err:  # every peer failure is reported, never dropped
                text = str(err).strip().splitlines()
                row["error"] = f"{type(err).__name__}: {text[-1] if text else ''}"[:300]
            rows[tool] = row
            print(f"{name} b{batch} {tool}: {row}", file=sys.stderr, flush=True)
        timings = interleaved(runners, runs=runs)
        for tool, timing in timings.items():
            rows[tool]["ms"] = timing.median_ms
            rows[tool]["p10_ms"] = timing.p10_ms
            rows[tool]["p90_ms"] = timing.p90_ms
        result["batches"][str(batch)] = rows
        del runners
    return result


# -- the whole suite ---------------------------------------------------------------------------------------
def peak_gemm(dtype_name: str, n: int = 2048, runs: int = 15) -> float:
    """This machine's measured GEMM rate (GFLOP/s) with TensorFlow's oneDNN matmul, median of runs."""
    import tensorflow as tf

    dtype = tf.as_dtype(dtype_name)
    a = tf.cast(tf.random.uniform([n, n]), dtype)
    b = tf.cast(tf.random.uniform([n, n]), dtype)
    fn = tf.function(lambda: tf.matmul(a, b))
    for _ in range(3):
        fn().numpy()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn().numpy()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def tools_in(results: list[dict[str, Any]]) -> list[str]:
    """The tools the results hold, in :data:`TOOLS` order (``tf`` first)."""
    present = {t for r in results for rows in r["batches"].values() for t in rows}
    return [t for t in TOOLS if t in present]


def write_report(results: list[dict[str, Any]], peaks: dict[str, float], runs: int, out: Path) -> str:
    import tfaccel

    tools = tools_in(results)

    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Zoo benchmark",
        "",
        f"Written by `python benchmarks/bench_zoo.py` on {datetime.date.today().isoformat()}: "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, tfaccel {tfaccel.__version__}, {_versions()}. Measured peak GEMM "
        f"(TensorFlow matmul 2048^3): fp32 {peaks['float32']:.0f} GFLOP/s, "
        f"bf16 {peaks['bfloat16']:.0f} GFLOP/s.",
        "",
        f"Every model runs in its own process; the tools run interleaved (A B C ... A B C ...), {runs} timed "
        "runs each after a warm-up, and each cell is the median. Speed-up = TF graph-mode latency / the "
        "tool's latency at the same batch (higher is better). Models have random weights; errors are "
        "max |difference| / max |original output|. `failed` cells give the tool's error below the tables.",
        "",
    ]
    summary: list[str] = []
    for batch in sorted({b for r in results for b in r["batches"]}, key=int):
        lines += [f"## Speed-up vs TF, batch {batch}", ""]
        lines += [
            "| model | TF ms | " + " | ".join(tools[1:]) + " |",
            "|---|---:|" + "---:|" * (len(tools) - 1),
        ]
        speedups: dict[str, list[float]] = {t: [] for t in tools[1:]}
        for r in results:
            rows = r["batches"].get(batch)
            if not rows or "ms" not in rows["tf"]:
                continue
            cells = []
            for tool in tools[1:]:
                row = rows[tool]
                if "ms" in row:
                    speedup = rows["tf"]["ms"] / row["ms"]
                    speedups[tool].append(speedup)
                    cells.append(f"{speedup:.2f}x")
                else:
                    cells.append("failed")
            lines.append(f"| {r['model']} | {rows['tf']['ms']:.2f} | " + " | ".join(cells) + " |")
        lines += ["", "Geometric mean over the models each tool ran (how many):", ""]
        for tool, values in speedups.items():
            mean = f"{geomean(values):.2f}x" if values else "n/a"
            text = f"- `{tool}`: {mean} ({len(values)} of {len(results)} models)"
            lines.append(text)
            summary.append(f"batch {batch} {text[2:]}")
        lines.append("")
        if "tfaccel" in tools:
            verdict = _default_trace_verdict(results, batch, tools)
            lines += verdict
            summary += [f"batch {batch} {line[2:]}" for line in verdict if line.startswith("- ")]
    lines += ["## Details per model", ""]
    lines += [
        "Convert = conversion or trace time including the first (compiling) call; RSS = peak resident "
        "memory growth while converting; peak = achieved FLOP rate / the measured GEMM rate above; ratio = "
        "tfaccel's on_neuron_ratio. The FLOPs are TensorFlow's profiler count on the frozen graph (2 per "
        "multiply-add; ops inside loops counted once, so the recurrent model shows ~0%). The reference "
        "rate is TensorFlow's own 2048^3 matmul, not the CPU's theoretical FMA ceiling: a tool above "
        "100% (OpenVINO's convolutions) computes faster than that matmul, e.g. with fewer real FLOPs "
        "(Winograd) or better kernels.",
        "",
    ]
    errors: list[str] = []
    for r in results:
        flops = r.get("flops")
        flop_text = f"{flops / 1e9:.2f} GFLOP per sample" if flops else "FLOPs unknown"
        lines += [f"### {r['model']} ({r['description']}, {flop_text})", ""]
        lines += [
            "| batch | tool | ms (p10-p90) | items/s | convert s | RSS MiB | max rel err | peak | ratio |"
        ]
        lines += ["|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
        for batch, rows in sorted(r["batches"].items(), key=lambda kv: int(kv[0])):
            for tool in tools:
                row = rows[tool]
                if "error" in row:
                    lines.append(f"| {batch} | {tool} | failed | | | | | | |")
                    errors.append(f"- {r['model']}, batch {batch}, `{tool}`: {row['error']}")
                    continue
                ms = row.get("ms")
                peak = peaks["bfloat16" if tool in BF16_TOOLS else "float32"]
                fraction = (
                    f"{100 * flops * int(batch) / (ms / 1e3) / (peak * 1e9):.0f}%"
                    if flops and ms and tool not in INT8_TOOLS
                    else ""
                )
                ratio = f"{row['ratio']:.3f}" if row.get("ratio") is not None else ""
                lines.append(
                    f"| {batch} | {tool} | {ms:.2f} ({row['p10_ms']:.2f}-{row['p90_ms']:.2f}) | "
                    f"{int(batch) * 1000 / ms:.1f} | {row['convert_s']:.1f} | {row['rss_mib']:.0f} | "
                    f"{row['rel_err']:.1e} | {fraction} | {ratio} |"
                )
        lines.append("")
    if errors:
        lines += ["## Failures", "", *errors, ""]
    lines += ["![speed-up vs TF at batch 1](benchmarks.png)", ""]
    (out / "benchmarks.md").write_text("\n".join(lines))
    _chart(results, out / "benchmarks.png")
    return "\n".join(summary)


def _default_trace_verdict(results: list[dict[str, Any]], batch: str, tools: list[str]) -> list[str]:
    """Issue 6's two numbers for the default trace at one batch: is any model slower than TF by more than
    the measured noise (the largest distance of ``tf_copy`` from 1.00x), and its geo-mean next to each
    peer's, counted three ways (over the models each ran; a failure as 1.00x, the user staying on TF;
    over the models both ran).
    """
    ratios: dict[str, dict[str, float | None]] = {t: {} for t in tools[1:]}
    for r in results:
        rows = r["batches"].get(batch)
        if not rows or "ms" not in rows["tf"]:
            continue
        for tool in tools[1:]:
            ratios[tool][r["model"]] = rows["tf"]["ms"] / rows[tool]["ms"] if "ms" in rows[tool] else None
    copies = [v for v in ratios.get("tf_copy", {}).values() if v]
    noise = max((abs(1 - v) for v in copies), default=0.05)
    ours = ratios["tfaccel"]
    slower = [f"{m} {v:.2f}x" for m, v in ours.items() if v is not None and v < 1 - noise]
    lines = [
        f"Default trace (`tfaccel`), batch {batch}: measured noise (largest |1 - tf_copy|) "
        f"{100 * noise:.1f}%.",
        "",
        f"- slower than TF by more than the noise: {', '.join(slower) if slower else 'none'}",
    ]
    for peer in (p for p in (*PEERS, "tfaccel_static") if p in ratios):
        theirs = ratios[peer]
        ran = [v for v in theirs.values() if v]
        both = {m: (o, t) for m in theirs if (t := theirs[m]) and (o := ours.get(m))}
        as_tf = [v or 1.0 for v in theirs.values()]
        ours_both, theirs_both = [o for o, _ in both.values()], [t for _, t in both.values()]
        ours_all = [v for v in ours.values() if v]
        lines.append(
            f"- vs `{peer}`: {geomean(ours_all):.2f}x vs {geomean(ran):.2f}x over the models each ran; "
            f"{geomean([ours[m] or 1.0 for m in theirs]):.2f}x vs {geomean(as_tf):.2f}x with a failure as "
            f"1.00x; {geomean(ours_both):.2f}x vs {geomean(theirs_both):.2f}x "
            f"over the {len(both)} models both ran"
        )
    for mine, peer in PAIRS:
        if mine in ratios and peer in ratios:  # issue 19: each reduced precision next to OpenVINO's own
            both = {m: (o, t) for m in ratios[peer] if (t := ratios[peer][m]) and (o := ratios[mine].get(m))}
            lines.append(
                f"- `{mine}` vs `{peer}`: {geomean([o for o, _ in both.values()]):.2f}x vs "
                f"{geomean([t for _, t in both.values()]):.2f}x over the {len(both)} models both ran"
            )
    lines.append("")
    return lines


def _versions() -> str:
    import importlib.metadata as md

    names = ["tensorflow", "openvino", "onnxruntime", "tf2onnx"]
    return ", ".join(f"{n} {md.version(n)}" for n in names)


def _chart(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tools = tools_in(results)[1:]
    models = [r["model"] for r in results if "1" in r["batches"]]
    width = 0.8 / len(tools)
    fig, ax = plt.subplots(figsize=(max(10, 1.3 * len(models)), 5))
    for k, tool in enumerate(tools):
        values = []
        for r in results:
            rows = r["batches"].get("1")
            if rows is None:
                continue
            ok = "ms" in rows[tool] and "ms" in rows["tf"]
            values.append(rows["tf"]["ms"] / rows[tool]["ms"] if ok else 0.0)
        ax.bar([i + k * width for i in range(len(models))], values, width, label=tool)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(models))], models, rotation=30, ha="right")
    ax.set_ylabel("speed-up vs TF graph mode (batch 1; 0 = failed)")
    ax.set_title("Zoo, batch 1, median latency ratio (higher is better)")
    ax.legend(ncol=4, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    from tfaccel.tools.zoo import ZOO

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(ZOO), choices=list(ZOO))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", default=str(ROOT / "docs" / "zoo"))
    parser.add_argument(
        "--tools", nargs="+", default=TOOLS[1:], choices=TOOLS[1:], help="tools next to tf (default: all)"
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: benchmark one model, print JSON
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the report from OUT/benchmarks.json, no runs"
    )
    args = parser.parse_args()
    if args.report_only:
        saved = json.loads((Path(args.out) / "benchmarks.json").read_text())
        print(write_report(saved["results"], saved["peaks"], saved.get("runs", args.runs), Path(args.out)))
        return
    if args.one:
        print(json.dumps(bench_model(args.one, args.batches, args.runs, ["tf", *args.tools])))
        return
    peaks = {d: peak_gemm(d) for d in ("float32", "bfloat16")}
    print(f"peak GEMM: fp32 {peaks['float32']:.0f} GFLOP/s, bf16 {peaks['bfloat16']:.0f} GFLOP/s", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            command = [sys.executable, __file__, "--one", name, "--runs", str(args.runs), "--batches"]
            command += [str(b) for b in args.batches]
            command += ["--tools", *args.tools]
            log = Path(tmp) / f"{name}.log"
            with open(log, "w") as stderr:
                proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=stderr, text=True)
            if proc.returncode != 0:
                tail = log.read_text().strip().splitlines()[-5:]
                print(f"{name}: the benchmark process failed:\n" + "\n".join(tail), flush=True)
                continue
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(result)
            for batch, rows in result["batches"].items():
                cells = [
                    f"{t}={rows['tf']['ms'] / rows[t]['ms']:.2f}x" if "ms" in rows[t] else f"{t}=failed"
                    for t in args.tools
                ]
                print(f"{name} b{batch}: TF {rows['tf'].get('ms', float('nan')):.2f} ms; " + " ".join(cells))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    record = {"peaks": peaks, "results": results, "runs": args.runs}
    (Path(args.out) / "benchmarks.json").write_text(json.dumps(record, indent=1))
    print(write_report(results, peaks, args.runs, Path(args.out)))


if __name__ == "__main__":
    main()
