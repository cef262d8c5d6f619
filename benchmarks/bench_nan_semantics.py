"""What keeping TF's NaN semantics costs on openvino: speed-up over TF at batch 1, before and after the fix.

Why: OpenVINO's Relu/Clamp/Maximum/Minimum/ReduceMax/Exp/Softmax turn NaN into numbers; tfaccel rewrites
them before conversion (``tfaccel.backends.openvino_semantics.preserve_nan``: ``op(x) + 0 / (x * x + 1)``
for the elementwise ones). This prints, per zoo model, plain TF, the traced model without the
rewrite (``--nan-semantics=relaxed``: "before", the old numerics), the default traced model ("after")
and OpenVINO's own conversion of the model (``openvino.convert_model`` + compile, fp32, latency hint:
the peer whose numerics "before" reproduces), timed interleaved in one process (medians), and whether a
NaN pixel's NaN reaches the output in TF, before, after and in OpenVINO's own (TF's own MaxPool skips
NaN, so ResNet50's logits stay finite in TF too; MobileNetV2 has no MaxPool). The gap between "after"
and OpenVINO's own is what keeping TF's answers on NaN inputs costs against the peer.

    python benchmarks/bench_nan_semantics.py              # resnet50 and mobilenetv2, 30 interleaved runs
    python benchmarks/bench_nan_semantics.py --runs 50 --models resnet50
"""

from __future__ import annotations

import argparse
import os
import platform

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

import tfaccel
from tfaccel.compiler.timing import interleaved
from tfaccel.tools.zoo import ZOO


def _trace(model: object, x: tf.Tensor, rewrite: bool) -> object:
    """The traced model with TF's NaN semantics (``rewrite``) or ``--nan-semantics=relaxed``."""
    semantics = "tensorflow" if rewrite else "relaxed"
    return tfaccel.trace(model, x, backend="openvino", placement="static", nan_semantics=semantics)


def _ov_own(model: object) -> object:
    import openvino as ov

    compiled = ov.Core().compile_model(
        ov.convert_model(model), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    )
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> np.ndarray:
        request.infer({0: np.asarray(x)})
        return np.asarray(request.get_output_tensor(0).data.copy())

    return run


def row(name: str, runs: int) -> None:
    entry = ZOO[name]
    model = entry.build()
    x = tf.constant(entry.example(1, 0))
    original = tf.function(lambda t: model(t, training=False))
    before, after = _trace(model, x, rewrite=False), _trace(model, x, rewrite=True)
    own = _ov_own(model)
    poisoned = x.numpy().copy()
    poisoned[0, 0, 0, 0] = np.nan
    nan_tf = np.isnan(original(poisoned).numpy()).any()
    nan_before = np.isnan(np.asarray(before(poisoned))).any()  # type: ignore[operator]
    nan_after = np.isnan(np.asarray(after(poisoned))).any()  # type: ignore[operator]
    nan_own = np.isnan(own(poisoned)).any()  # type: ignore[operator]
    expected = original(x).numpy()
    error = float(np.max(np.abs(own(x) - expected)) / np.max(np.abs(expected)))  # type: ignore[operator]
    times = interleaved(
        {
            "tf": lambda: original(x).numpy(),
            "before": lambda: np.asarray(before(x)),  # type: ignore[operator]
            "after": lambda: np.asarray(after(x)),  # type: ignore[operator]
            "ov_own": lambda: own(x),  # type: ignore[operator]
        },
        runs=runs,
    )
    tf_ms, b_ms, a_ms, o_ms = (times[k].median_ms for k in ("tf", "before", "after", "ov_own"))
    print(
        f"{name:<12} {tf_ms:>8.2f} {b_ms:>10.2f} {a_ms:>9.2f} {o_ms:>9.2f} {tf_ms / b_ms:>9.2f}x "
        f"{tf_ms / a_ms:>8.2f}x {tf_ms / o_ms:>8.2f}x {100 * (a_ms / b_ms - 1):>+7.1f}%   NaN kept: TF "
        f"{nan_tf}, before {nan_before}, after {nan_after}, ov_own {nan_own} (ov_own error {error:.1e})",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=30, help="interleaved runs per variant (default 30)")
    parser.add_argument("--models", nargs="+", default=["resnet50", "mobilenetv2"], choices=sorted(ZOO))
    args = parser.parse_args()
    print(f"# NaN semantics on openvino: batch 1, medians of {args.runs} interleaved runs")
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, TF {tf.__version__}")
    print(
        f"{'model':<12} {'TF ms':>8} {'before ms':>10} {'after ms':>9} {'own ms':>9} {'before':>10} "
        f"{'after':>9} {'ov_own':>9} {'cost':>8}"
    )
    for name in args.models:
        row(name, args.runs)


if __name__ == "__main__":
    main()
