"""The measure stage (``--placement=profile``, the default): time each compiled subgraph and keep it where
it runs fastest, TensorFlow included.

Each statically placed subgraph is timed on TF and on every backend that takes all its nodes; the rule of
:func:`tfaccel.compiler.selection.choose` picks the winner, and the graph is partitioned and compiled again
so that neighbours now on the same backend merge into one call. With a ``subgraph_builder_function`` the
user decides, so nothing is measured; a measurement that fails keeps the static placement. Both are noted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import tensorflow as tf

from tfaccel.backends.base import SubgraphCompileError
from tfaccel.compiler import progress
from tfaccel.compiler.artefacts import Compiled
from tfaccel.compiler.assemble import extract_subgraph
from tfaccel.compiler.compilation import compile_cluster, compile_stage, partition_stage
from tfaccel.compiler.placement import Reason
from tfaccel.compiler.profiling import cluster_inputs, compiled_runner, tf_runner, time_variants
from tfaccel.compiler.run import NoteKind, TraceRun
from tfaccel.compiler.selection import Measurement, choose

__all__ = ["measure_stage"]

logger = logging.getLogger(__name__)


def measure_stage(run: TraceRun, compiled: Compiled) -> Compiled:
    """``compiled`` re-placed by measurement, or as it is under static placement (see the module doc)."""
    placement = run.options.placement
    if placement != "profile":
        return compiled
    if run.callback is not None:
        run.note(
            NoteKind.PLACEMENT,
            "--placement=profile: subgraph_builder_function decides the placement; not profiled",
            log=False,
        )
        return compiled
    if not compiled.subgraphs:
        return replace(compiled, placement="profile")
    start = time.perf_counter()
    mark = run.mark()
    try:
        measured = _measure(run, compiled)
    except (tf.errors.OpError, ValueError) as err:  # the static placement stands, and says so
        run.rollback(mark)  # the fallbacks of the discarded re-placement are not this model's
        run.note(
            NoteKind.PLACEMENT,
            f"--placement=profile could not measure the subgraphs ({type(err).__name__}: "
            f"{str(err).strip().splitlines()[0][:300]}); the static placement is kept",
        )
        return replace(compiled, profile_seconds=time.perf_counter() - start)
    return replace(measured, placement="profile", profile_seconds=time.perf_counter() - start)


def _measure(run: TraceRun, compiled: Compiled) -> Compiled:
    placed = compiled.placed
    captured = placed.captured
    graph = captured.graph
    order = [b.name for b in run.backends]
    values = cluster_inputs(captured, run.examples_as_traced, [item.cluster for item in compiled.subgraphs])
    decisions = dict(compiled.decisions)
    measurements: list[Measurement] = []
    for index, item in enumerate(compiled.subgraphs, 1):
        cluster = item.cluster
        progress.emit(
            "measuring", index, len(compiled.subgraphs), cluster.name, "+".join(order), len(cluster.nodes)
        )
        subgraph = extract_subgraph(cluster, graph, captured.graph_def.library)
        inputs = [values[ref] for ref in cluster.inputs]
        variants = {"tf": tf_runner(subgraph, inputs)}
        failed: dict[str, str] = {}
        for name in order:
            refused = [placed.takes[name][n] for n in cluster.nodes if not placed.takes[name][n].accelerated]
            if refused:
                first = refused[0]
                failed[name] = f"does not take node {first.node!r} ({first.op}): {first.detail}"
                continue
            try:
                candidate = (
                    item
                    if name == cluster.group
                    else compile_cluster(run, placed, replace(cluster, group=name))
                )
            except SubgraphCompileError as err:
                failed[name] = f"compile failed: {err.message}"
                continue
            variants[name] = compiled_runner(subgraph, candidate, inputs)
        times, runs, broken = time_variants(variants)
        failed.update(broken)
        if "tf" in times:
            chosen, why = choose(times["tf"], {k: v for k, v in times.items() if k != "tf"}, order)
        else:  # TF could not run the subgraph alone (never seen): keep the static choice, and say so
            chosen, why = (
                cluster.group,
                f"TF could not run it alone ({failed['tf']}); kept on {cluster.group}",
            )
        measurements.append(
            Measurement(cluster.name, cluster.effective_size, times, failed, chosen, why, runs)
        )
        logger.info("profile %s: %s", cluster.name, why)
        detail = f"{cluster.name}: {why}"
        for node in cluster.nodes:
            if chosen is None:
                decisions[node] = decisions[node].to_runtime(Reason.SLOWER, detail)
            else:
                decisions[node] = replace(
                    decisions[node], backend=chosen, reason=Reason.MEASURED, detail=detail
                )
    final = compile_stage(run, partition_stage(run, placed, decisions))
    return replace(final, measurements=tuple(measurements))
