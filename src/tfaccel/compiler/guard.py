"""The guard stage: the traced model, whole, timed against the original before it is handed back.

Why: measured placement decides subgraph by subgraph, and the burden of proof is on TF (an inconclusive
measurement keeps the backend), so the sum can still come out slower than the original: calls between the
subgraphs and TF cost time no single measurement saw, and small losses the rule tolerated add up. The user
must never get a slower model without being told. The guard times both the same way the measure stage
times subgraphs (warm, then interleaved rounds, lower quartiles with intervals); if the traced model is
slower beyond noise, the report and one warning line say so and name the subgraphs most likely
responsible. It reports; it does not re-place (that would be a second, unmeasured placement).

It runs after measured placement only (``--placement=static`` and a ``subgraph_builder_function`` are the
user's explicit choices, and not timed), never on a machine found busy (the timings would describe the
moment). Its samples go to the timing cache like the subgraphs', so a re-trace costs no guard time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import tensorflow as tf

from tfaccel import _tf_compat
from tfaccel.compiler.capture import feed_values
from tfaccel.compiler.machine import LoadMonitor
from tfaccel.compiler.measure import canonical_nodes, machine_key, model_digest, open_timings, versions
from tfaccel.compiler.package import Packaged
from tfaccel.compiler.profiling import try_warm
from tfaccel.compiler.report import PlacementReport
from tfaccel.compiler.run import NoteKind, TraceRun
from tfaccel.compiler.selection import (
    WholeModelCheck,
    estimate,
    guard_settled,
)
from tfaccel.compiler.timing import sample
from tfaccel.compiler.timing_cache import TimingCache, TimingKey

__all__ = ["guard_stage"]

logger = logging.getLogger("tfaccel.compiler.pipeline")

#: samples per variant: at least, at most; and the sampling budget in seconds (a whole model per call)
MIN_SAMPLES, MAX_SAMPLES, BUDGET_S = 8, 40, 3.0


def _keys(run: TraceRun, packaged: Packaged) -> dict[str, TimingKey]:
    """Timing-cache keys: the original by its captured graph, the traced model by that and its placement."""
    captured = packaged.assembled.compiled.captured
    original = model_digest(run, captured)
    names = canonical_nodes(captured.graph_def)  # not the counter-numbered names (see model_digest)
    placement = sorted(
        (s.backend, sorted(names.get(n, n) for n in s.nodes)) for s in packaged.report.subgraphs
    )
    traced = hashlib.sha256(original.encode())
    # what quantizing did depends on the calibration data, not only on the flags: its outcome is part of it
    quantized = [note for note in run.notes if note.startswith("--quantize=")]
    traced.update(json.dumps([placement, run.options.flag_text(), str(run.batch_plan), quantized]).encode())
    machine, library = machine_key(), versions()
    return {
        "original": TimingKey(original, "original", "fp32", machine, library),
        "traced": TimingKey(traced.hexdigest(), "traced", run.options.fp32_cast, machine, library),
    }


def _from_the_measurement(report: PlacementReport) -> WholeModelCheck | None:
    """The check, read from the measurement when one compiled subgraph holds every op of the model."""
    if len(report.subgraphs) != 1 or len(report.measurements) != 1:
        return None
    (m,) = report.measurements
    if report.accelerated_ops != report.total_ops or m.chosen is None or m.chosen not in m.estimates:
        return None
    return WholeModelCheck.judge(m.estimates["tf"], m.estimates[m.chosen], report.measurements, "subgraph")


def guard_stage(run: TraceRun, packaged: Packaged) -> Packaged:
    """Time the traced model against the original (see the module docstring); the report says how it went
    (the check, and every note made here: the report was built before this stage ran).
    """
    report = packaged.report
    if report.placement != "profile" or run.callback is not None or run.options.openvino_streams != 1:
        return packaged  # (the throughput setting makes one call slower by design: the report says so)
    start = time.perf_counter()
    # a model called directly (runtime/direct.py), or one with int8 subgraphs, is not what the measure
    # stage timed (fp32, through the op): time it whole
    direct = packaged.executable.direct is not None
    quantized = any(n.startswith("--quantize=") and " runs int8" in n for n in run.notes)
    check = (None if direct or quantized else _from_the_measurement(report)) or _timed_check(run, packaged)
    spent = time.perf_counter() - start
    if check is not None and check.slower:
        sentence = f"whole-model check: {check.sentence()}"
        logger.warning("%s", sentence)
        run.note(NoteKind.GUARD, sentence, log=False)
    measuring = (report.profile_seconds or 0.0) + spent  # the report's "time measuring added" includes this
    packaged.executable.report = replace(
        report, guard=check, fallbacks=tuple(run.notes), profile_seconds=measuring
    )
    return packaged


def _timed_check(run: TraceRun, packaged: Packaged) -> WholeModelCheck | None:
    """Both models timed whole (or their samples from the timing cache); None when that cannot be done."""
    timings = open_timings(run)
    keys = _keys(run, packaged)
    cached = [timings.get(keys["original"]), timings.get(keys["traced"])]
    if cached[0] is not None and cached[1] is not None:
        samples = {"original": list(cached[0]), "traced": list(cached[1])}
    elif run.busy is not None:  # the timings would describe the moment (the busy warning said so)
        return None
    elif run.traced_examples is not None:  # the captured graph takes micro-batches: no like-for-like
        run.note(
            NoteKind.GUARD,
            "whole-model check not made: the graph was captured on micro-batches "
            "(--neuroncore-pipeline-cores), so the original cannot be run like for like",
            log=False,
        )
        return None
    else:
        taken = _measure(run, packaged)
        if taken is None:
            return None
        samples = {name: list(TimingCache.as_stored(values)) for name, values in taken.items()}
        for name, values in samples.items():
            timings.put(keys[name], values)
        for problem in timings.save():
            run.note(NoteKind.PLACEMENT, problem)
    original, traced = estimate(samples["original"]), estimate(samples["traced"])
    return WholeModelCheck.judge(original, traced, packaged.report.measurements, "timed")


def _measure(run: TraceRun, packaged: Packaged) -> dict[str, list[float]] | None:
    """Samples of both models on the examples; None (noted) if the machine turned busy or a call failed.

    The original is the captured graph as TF runs it (what the measure stage's TF variants are cut from,
    and no second trace of the user's function); the traced model is called as the user calls it.
    """
    captured = packaged.assembled.compiled.captured
    graph = captured.graph
    function = _tf_compat.function_from_graph_def(
        captured.graph_def, [f"{name}:0" for name in graph.inputs], [str(ref) for ref in graph.outputs]
    )
    feeds = [*run.examples.tensors(captured.layout), *feed_values(captured.weights)]
    original_function = tf.function(lambda *args: function(*args), autograph=False)
    args, kwargs = packaged.executable.layout.pack(run.examples.leaves)
    model = packaged.model

    def block(result: Any) -> None:
        for leaf in tf.nest.flatten(result):
            if isinstance(leaf, tf.Tensor):
                leaf.numpy()

    def run_original() -> None:
        block(original_function(*feeds))

    def run_traced() -> None:
        block(model(*args, **kwargs))

    failed: dict[str, str] = {}
    monitor = LoadMonitor()
    if not (try_warm("original", run_original, failed) and try_warm("traced", run_traced, failed)):
        run.note(NoteKind.GUARD, f"whole-model check not made: {'; '.join(failed.values())}", log=False)
        return None

    def enough(taken: Mapping[str, list[float]]) -> bool:
        return guard_settled(estimate(taken["original"]), estimate(taken["traced"]))

    samples = sample(
        {"original": run_original, "traced": run_traced},
        enough,
        min_samples=MIN_SAMPLES,
        max_samples=MAX_SAMPLES,
        budget_s=BUDGET_S,
    )
    reading = monitor.reading()
    if reading.busy:
        run.busy = reading
        sentence = f"whole-model check not made: machine busy ({reading.describe()})"
        logger.warning("%s", sentence)
        run.note(NoteKind.GUARD, sentence, log=False)
        return None
    return samples
