"""The openvino backend's numbers, side by side with plain TensorFlow in one process.

1. fp32, batch 1: speed-up over TF (tf.function) and max relative error, per example model.
2. --fp32-cast=matmult (bf16 inside OpenVINO): speed-up over TF, and top-1 agreement with the fp32
   original on random inputs.
3. Per-call overhead of tfaccel's op against OpenVINO's own Python API running the same compiled model
   (same IR, same precision and latency hint): the traced model's graph function, and the whole Keras call.
   Then the small models where it matters (``--only small``): the reference's one ``Dense(3)`` and the zoo's
   recommender and control-flow function, each as TF, through the traced graph (the op) and called eagerly
   (a direct call, runtime/direct.py), next to OpenVINO's own API on the same compiled model.
4. Concurrency: 8 threads x 100 calls each on distinct inputs give bit-identical results to serial calls.

    python benchmarks/bench_openvino.py                  # everything, 30 interleaved runs
    python benchmarks/bench_openvino.py --runs 10 --samples 40
"""

from __future__ import annotations

import argparse
import os
import platform
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import openvino as ov
import tensorflow as tf

import tfaccel
from tfaccel.compiler.timing import interleaved
from tfaccel.tools.examples import EXAMPLES, example_input
from tfaccel.tools.zoo import relative_error


def fp32_speed(runs: int) -> None:
    print("\n## fp32, batch 1: speed-up over TF (medians of interleaved runs)")
    print(f"{'model':<12} {'ratio':>6} {'max rel err':>11} {'TF ms':>8} {'tfaccel ms':>10} {'speed-up':>8}")
    for name in ("resnet50", "mobilenetv2", "bert"):
        _fp32_row(name, runs)


def _fp32_row(name: str, runs: int) -> None:
    model = EXAMPLES[name]()
    original = tf.function(lambda t: model(t, training=False))
    x = example_input(name, 1)
    traced = tfaccel.trace(model, x, backend="openvino")
    err = relative_error(traced(x).numpy(), original(x).numpy())
    times = interleaved({"tf": lambda: original(x).numpy(), "ov": lambda: traced(x).numpy()}, runs=runs)
    tf_ms, ov_ms = times["tf"].median_ms, times["ov"].median_ms
    print(
        f"{name:<12} {traced.on_neuron_ratio:>6.3f} {err:>11.2e} {tf_ms:>8.2f} {ov_ms:>10.2f} "
        f"{tf_ms / ov_ms:>7.2f}x",
        flush=True,
    )


def bf16_speed_and_agreement(runs: int, samples: int) -> None:
    print(f"\n## --fp32-cast=matmult: speed-up over TF at batch 1, top-1 agreement on {samples} inputs")
    print(
        f"{'model':<12} {'max rel err':>11} {'top-1 agree':>11} {'TF ms':>8} {'bf16 ms':>8} {'speed-up':>8}"
    )
    name = "resnet50"
    model = EXAMPLES[name]()
    original = tf.function(lambda t: model(t, training=False))
    x = example_input(name, 1)
    traced = tfaccel.trace(model, x, backend="openvino", fp32_cast="matmult")
    times = interleaved({"tf": lambda: original(x).numpy(), "ov": lambda: traced(x).numpy()}, runs=runs)
    batch = 8  # agreement over many inputs: a batch-8 trace, so the 200 inputs take 25 calls
    traced8 = tfaccel.trace(model, example_input(name, batch), backend="openvino", fp32_cast="matmult")
    rng = np.random.default_rng(1)
    agree, worst = 0, 0.0
    for start in range(0, samples, batch):
        xs = tf.constant(rng.uniform(0, 1, (batch, *x.shape[1:])).astype(np.float32))
        expected, got = original(xs).numpy(), traced8(xs).numpy()
        n = min(batch, samples - start)
        agree += int(np.sum(np.argmax(got[:n], -1) == np.argmax(expected[:n], -1)))
        worst = max(worst, relative_error(got, expected))
    tf_ms, ov_ms = times["tf"].median_ms, times["ov"].median_ms
    print(
        f"{name:<12} {worst:>11.2e} {100 * agree / samples:>10.1f}% {tf_ms:>8.2f} {ov_ms:>8.2f} "
        f"{tf_ms / ov_ms:>7.2f}x",
        flush=True,
    )


def _openvino_request(traced: object) -> ov.InferRequest:
    """OpenVINO's Python API on the traced model's own IR (its only subgraph), compiled as the op does."""
    variables = {v.name.split(":")[0]: v for v in traced.tfaccel_executable.weights}
    (xml_name,) = [n for n in variables if n.endswith("_xml")]
    xml = variables[xml_name].numpy()
    weights = variables[xml_name[: -len("_xml")] + "_bin"].numpy()
    core = ov.Core()
    model = core.read_model(xml.decode(), ov.Tensor(np.frombuffer(weights, np.uint8).copy()))
    compiled = core.compile_model(
        model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    )
    return compiled.create_infer_request()


def overhead(runs: int) -> None:
    print("\n## per-call overhead of the op vs OpenVINO's Python API on the same compiled model")
    print(
        f"{'model':<12} {'OV API ms':>9} {'graph fn ms':>11} {'overhead':>8} {'Keras call ms':>13} "
        f"{'overhead':>8}"
    )
    for name in ("mobilenetv2", "bert"):
        _overhead_row(name, runs)


def _overhead_row(name: str, runs: int) -> None:
    model = EXAMPLES[name]()
    x = example_input(name, 1)
    traced = tfaccel.trace(model, x, backend="openvino")
    assert len(traced.placement_report.subgraphs) == 1 and traced.on_neuron_ratio == 1.0
    request = _openvino_request(traced)
    x_np = x.numpy()
    function = traced.tfaccel_executable.call_flat

    def ov_call() -> object:
        request.infer({0: x_np}, share_inputs=True)
        return request.get_output_tensor(0).data

    np.testing.assert_allclose(ov_call(), traced(x).numpy(), rtol=0, atol=1e-5)
    times = interleaved(
        {
            "ov": ov_call,
            "fn": lambda: tf.nest.flatten(function(x))[0].numpy(),
            "keras": lambda: traced(x).numpy(),
        },
        runs=runs,
    )
    ov_ms, fn_ms, keras_ms = (times[k].median_ms for k in ("ov", "fn", "keras"))
    print(
        f"{name:<12} {ov_ms:>9.2f} {fn_ms:>11.2f} {fn_ms - ov_ms:>7.2f}ms {keras_ms:>13.2f} "
        f"{keras_ms - ov_ms:>7.2f}ms",
        flush=True,
    )


def small(runs: int) -> None:
    import keras

    from tfaccel.tools.zoo import ZOO

    print(
        "\n## small models: TF, the traced graph (the op), an eager (direct) call, OpenVINO's API on the "
        "same compiled model, ONNX Runtime (tf2onnx, spinning off); ms per call, batch 1. overhead = eager "
        "- OV API (issue 19's target: at most 0.05 ms)"
    )
    head = f"{'model':<13} {'TF':>7} {'graph fn':>9} {'eager':>7} {'OV API':>7} {'ORT':>7}"
    print(f"{head} {'eager vs TF':>12} {'overhead':>9} {'direct':>7}")
    inputs = keras.Input([3])
    dense3 = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    _small_row("dense3", dense3, tf.random.stateless_uniform([1, 3], seed=[1, 2]), runs)
    for name in ("recommender", "control_flow"):
        _small_row(name, ZOO[name].build(), ZOO[name].example(1, 0), runs)


def _small_row(name: str, model: object, x: object, runs: int) -> None:
    traced = tfaccel.trace(model, x, backend="openvino")
    executable = traced.tfaccel_executable
    flat = executable.flatten((x,), {})
    keras_model = hasattr(model, "layers")

    def run_original(t: object) -> object:
        return model(t, training=False) if keras_model else model(t)  # type: ignore[operator]

    original = tf.function(run_original, autograph=False)
    variants = {
        "tf": lambda: tf.nest.flatten(original(x))[0].numpy(),
        "fn": lambda: tf.nest.flatten(executable.call_flat(*flat))[0].numpy(),
        "eager": lambda: tf.nest.flatten(traced(x))[0].numpy(),
    }
    if executable.direct is not None:  # one subgraph: OpenVINO's own API on the same IR
        request = _openvino_request(traced)
        order = executable.direct.plan.inputs  # the compiled model's inputs, in the op's order
        feeds = {j: np.asarray(flat[i]) for j, i in enumerate(order)}

        def ov_call() -> object:
            request.infer(feeds)
            return request.get_output_tensor(0).data

        variants["ov"] = ov_call
    try:  # the same harness as the zoo's ONNX Runtime column (benchmarks/bench_zoo.py)
        from bench_zoo import build_tool

        variants["ort"] = build_tool("ort", model, x)
    except Exception as err:  # a peer that cannot convert the model is reported, not fatal
        print(f"# {name}: ONNX Runtime could not run it: {str(err).splitlines()[-1][:200]}")
    times = interleaved(variants, runs=runs)
    ms = {k: t.median_ms for k, t in times.items()}
    ov = f"{ms['ov']:>7.3f}" if "ov" in ms else f"{'-':>7}"
    ort = f"{ms['ort']:>7.3f}" if "ort" in ms else f"{'-':>7}"
    over = f"{ms['eager'] - ms['ov']:>7.3f}ms" if "ov" in ms else f"{'-':>9}"
    print(
        f"{name:<13} {ms['tf']:>7.3f} {ms['fn']:>9.3f} {ms['eager']:>7.3f} {ov} {ort} "
        f"{ms['tf'] / ms['eager']:>11.2f}x {over} {'yes' if executable.direct else 'no':>7}",
        flush=True,
    )


def concurrency(threads: int = 8, calls: int = 100) -> None:
    print(f"\n## concurrency: {threads} threads x {calls} calls vs serial results")
    name = "mobilenetv2"
    model = EXAMPLES[name]()
    x = example_input(name, 1)
    traced = tfaccel.trace(model, x, backend="openvino")
    rng = np.random.default_rng(2)
    inputs = [
        [tf.constant(rng.uniform(0, 1, x.shape).astype(np.float32)) for _ in range(calls)]
        for _ in range(threads)
    ]
    serial = [[traced(t).numpy() for t in row] for row in inputs]
    results: list[list[np.ndarray]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = [traced(t).numpy() for t in inputs[i]]
        except BaseException as err:  # reported below, never swallowed
            errors.append(err)

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if errors:
        raise errors[0]
    same = sum(
        int(np.array_equal(a, b))
        for row_s, row_c in zip(serial, results, strict=True)
        for a, b in zip(row_s, row_c, strict=True)
    )
    print(f"{name}: {same}/{threads * calls} concurrent results bit-identical to serial")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--samples", type=int, default=200, help="random inputs for top-1 agreement")
    parser.add_argument("--only", choices=["fp32", "bf16", "overhead", "small", "concurrency"], nargs="+")
    args = parser.parse_args()
    print(
        f"# tfaccel {tfaccel.__version__}, TensorFlow {tf.__version__}, OpenVINO {ov.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.runs} interleaved runs"
    )
    only = set(args.only or ["fp32", "bf16", "overhead", "small", "concurrency"])
    if "fp32" in only:
        fp32_speed(args.runs)
    if "bf16" in only:
        bf16_speed_and_agreement(args.runs, args.samples)
    if "overhead" in only:
        overhead(args.runs)
    if "small" in only:
        small(args.runs)
    if "concurrency" in only:
        concurrency()


if __name__ == "__main__":
    main()
