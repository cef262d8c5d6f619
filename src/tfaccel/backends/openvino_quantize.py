"""Post-training int8 of one openvino subgraph with NNCF, and the accuracy check that decides on it.

Why NNCF: it is the OpenVINO project's own quantizer. It inserts FakeQuantize nodes into the IR (the CPU
plugin then runs convolutions and matrix products on the int8 units: AVX-512 VNNI, AMX), with ranges taken
from statistics over calibration inputs. tfaccel gives it the values the traced graph feeds the subgraph
(its boundary, not the model's inputs), so each subgraph is calibrated on what it will really see.

Why a check: int8 changes answers, by how much depends on the model and the data. The quantized IR and the
fp32 IR are both compiled (with the op's configuration) and run on held-out calibration inputs, never used
for the statistics; :func:`quantization_error` compares them. Above the tolerance the caller keeps fp32.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["INT8_COMPUTE", "QuantizedIR", "quantization_error", "quantize_ir"]

logger = logging.getLogger(__name__)

#: the OpenVINO ops int8 speeds up (NNCF may also quantize element-wise ops, which only loses accuracy)
INT8_COMPUTE = frozenset(
    {"Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData", "MatMul"}
)

#: a flat list of one call's inputs, in the subgraph's input order
Sample = Sequence[np.ndarray]


@dataclass(frozen=True)
class QuantizedIR:
    """The int8 IR and how far its answers are from fp32's on the held-out inputs."""

    xml: bytes
    weights: bytes
    #: :func:`quantization_error` over the held-out inputs
    error: float
    #: FakeQuantize nodes NNCF inserted
    fake_quantize: int
    #: convolutions and matrix products fed by them: what runs on the int8 units (0: nothing gains)
    int8_compute: int


def quantization_error(reference: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> float:
    """The worst output's error: relative RMS for floats, the fraction of differing elements otherwise.

    Relative RMS (``||got - ref|| / ||ref||`` over every element of every held-out call) is scale-free, so
    one tolerance fits logits and embeddings alike; an all-zero reference falls back to the absolute RMS.
    A NaN or infinity on one side only (int8 clamps them into its range) counts as an error of 1 (the
    worst); matching ones count as no error.
    """
    worst = 0.0
    for ref, out in zip(reference, got, strict=True):
        ref = np.asarray(ref)
        out = np.asarray(out)
        if ref.shape != out.shape:
            return 1.0
        if ref.size == 0:
            continue
        if not np.issubdtype(ref.dtype, np.floating):
            worst = max(worst, float(np.mean(ref != out)))
            continue
        ref64, out64 = ref.astype(np.float64), out.astype(np.float64)
        same_special = (np.isnan(ref64) & np.isnan(out64)) | (np.isinf(ref64) & (ref64 == out64))
        finite = np.isfinite(ref64)
        if np.any(~finite & ~same_special) or np.any(finite & ~np.isfinite(out64)):
            return 1.0  # a NaN or infinity lost, or one where fp32 has a number
        diff = np.where(finite, out64 - ref64, 0.0)
        scale = float(np.sqrt(np.sum(np.where(finite, ref64, 0.0) ** 2)))
        rms = float(np.sqrt(np.sum(diff**2)))
        worst = max(worst, rms / scale if scale > 0 else rms)
    return min(worst, 1.0)


def quantize_ir(
    plain: Any,
    xml: bytes,
    weights: bytes,
    precision: str,
    calibration: Sequence[Sample],
    held_out: Sequence[Sample],
    stable_names: Callable[[Any, set[str]], None],
) -> QuantizedIR:
    """Quantize ``plain`` (the subgraph without NaN guards) with NNCF on ``calibration``; measure it on
    ``held_out`` against the compiled subgraph's own IR ``xml``/``weights`` (guarded fp32).

    The int8 model must only see finite inputs: a quantizer has no NaN or infinity (FakeQuantize clamps
    them to its range), so it would answer a NaN input with numbers where TensorFlow answers NaN; the
    backend's call runs the fp32 IR for any other input (``openvino.py``). (An OpenVINO ``If`` choosing
    between the two inside one model was tried: the CPU plugin then ran the int8 body at fp32 speed.)
    ``precision`` is
    the op's inference precision (``f32``/``bf16``), used for both compilations so the error is int8's
    alone; ``stable_names(model, kept)`` renames counter-numbered nodes (the backend's rule for
    deterministic IR). Raises what NNCF or OpenVINO raise (the caller keeps fp32 and says why).
    """
    import nncf
    import openvino as ov

    core = ov.Core()
    blob = ov.Tensor(np.frombuffer(weights, np.uint8)) if weights else ov.Tensor()
    guarded = core.read_model(xml.decode(), blob)
    quiet = io.StringIO()
    nncf_logger = logging.getLogger("nncf")
    level = nncf_logger.level
    nncf_logger.setLevel(logging.ERROR)
    try:  # NNCF draws progress bars on stdout and logs at INFO: neither belongs in the user's output
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            quantized = nncf.quantize(
                plain, nncf.Dataset([list(s) for s in calibration]), subset_size=len(calibration)
            )
    finally:
        nncf_logger.setLevel(level)
    logger.debug("NNCF: %s", quiet.getvalue())
    fake_quantize = sum(1 for op in quantized.get_ordered_ops() if op.get_type_name() == "FakeQuantize")
    int8_compute = sum(
        1
        for op in quantized.get_ordered_ops()
        if op.get_type_name() in INT8_COMPUTE
        and any(value.get_node().get_type_name() == "FakeQuantize" for value in op.input_values())
    )
    # NNCF names its nodes from OpenVINO's process-wide counter: named by position instead, the same model
    # and calibration give the same bytes (and the op's cache finds a live compilation of them)
    stable_names(quantized, {op.get_friendly_name() for op in plain.get_ordered_ops()})
    model = quantized
    config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
    reference = core.compile_model(guarded, "CPU", config)
    candidate = core.compile_model(model, "CPU", config)
    ref_out: list[list[np.ndarray]] = [[] for _ in reference.outputs]
    got_out: list[list[np.ndarray]] = [[] for _ in reference.outputs]
    for sample in held_out:
        for k, value in enumerate(_run(reference, sample)):
            ref_out[k].append(value)
        for k, value in enumerate(_run(candidate, sample)):
            got_out[k].append(value)
    error = quantization_error(
        [np.concatenate([v.ravel() for v in vs]) for vs in ref_out],
        [np.concatenate([v.ravel() for v in vs]) for vs in got_out],
    )
    with tempfile.TemporaryDirectory() as tmp:
        ov.save_model(model, str(Path(tmp) / "model.xml"), compress_to_fp16=False)
        int8_xml = (Path(tmp) / "model.xml").read_bytes()
        int8_weights = (Path(tmp) / "model.bin").read_bytes()
    return QuantizedIR(int8_xml, int8_weights, error, fake_quantize, int8_compute)


def _run(compiled: Any, sample: Sample) -> list[np.ndarray]:
    """One call of a compiled model; outputs copied (the request reuses its buffers)."""
    request = compiled.create_infer_request()
    request.infer(list(sample))
    return [np.array(request.get_output_tensor(k).data, copy=True) for k in range(len(compiled.outputs))]
