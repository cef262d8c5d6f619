"""The quantize stage (``--quantize=int8``): each compiled subgraph calibrated on what the graph feeds it.

Why here, after ``split`` and before ``assemble``: placement is final (measured placement timed fp32, the
model the user asked to be faithful to), and each subgraph's inputs can still be computed by running the
captured graph, which is what calibration needs: the values at the subgraph's boundary, not the model's
inputs. The user's calibration inputs (shaped like ``example_inputs``) are run through the captured graph
once each; for every subgraph the first ones calibrate and the last fifth (at least one) are held out to
check the result. Each backend decides for its own subgraphs (:meth:`Backend.quantize`); a subgraph whose
error is above ``--quantize-tolerance`` stays fp32, and every subgraph's outcome is a sentence in the report.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from tfaccel.compiler import progress
from tfaccel.compiler.artefacts import Compiled
from tfaccel.compiler.assemble import extract_subgraph
from tfaccel.compiler.calibration import held_out_count
from tfaccel.compiler.profiling import cluster_inputs_of
from tfaccel.compiler.run import NoteKind, TraceRun

__all__ = ["quantize_stage"]

logger = logging.getLogger(__name__)


def quantize_stage(run: TraceRun, compiled: Compiled) -> Compiled:
    """Quantize every compiled subgraph its backend can (see the module docstring)."""
    if run.options.quantize == "none" or not compiled.subgraphs:
        return compiled
    captured = compiled.placed.captured
    clusters = [item.cluster for item in compiled.subgraphs]
    per_sample = cluster_inputs_of(captured, run.calibration, clusters)
    held = held_out_count(len(per_sample))
    backends = run.backend_by_name
    subgraphs = []
    for index, item in enumerate(compiled.subgraphs, start=1):
        inputs: list[Sequence[np.ndarray]] = [
            [np.asarray(values[ref]) for ref in item.cluster.inputs] for values in per_sample
        ]
        cluster = item.cluster
        progress.emit(
            "quantizing", index, len(compiled.subgraphs), cluster.name, cluster.group, len(cluster.nodes)
        )
        subgraph = extract_subgraph(cluster, captured.graph, captured.graph_def.library)
        outcome = backends[cluster.group].quantize(
            item, subgraph, inputs[:-held], inputs[-held:], run.options.quantize_tolerance
        )
        sentence = f"--quantize={run.options.quantize}: {outcome.sentence}"
        run.note(NoteKind.QUANTIZE, sentence, log=not outcome.quantized)
        if outcome.quantized:
            logger.info("%s", sentence)
        subgraphs.append(outcome.item)
    return replace(compiled, subgraphs=tuple(subgraphs))
