"""The partition and compile stages, and the fallback loop between them.

A subgraph the backend cannot compile is never fatal: the node the compiler blamed (or the whole subgraph
if it blamed none) goes back to the TensorFlow runtime with the compiler's message as its reason, the graph
is partitioned again, and the fallback is noted. Every failing round moves at least one node to TF, so the
loop ends within as many rounds as the graph has nodes.

Compilations are cached by a cluster's contents and backend (not its name): a fallback round or the
measured re-partition renumbers clusters, and an unchanged one must not be compiled again.
"""

from __future__ import annotations

from dataclasses import replace

from tfaccel.backends.base import CompiledSubgraph, SubgraphCompileError
from tfaccel.compiler import progress
from tfaccel.compiler.artefacts import Compiled, Partitioned, Placed
from tfaccel.compiler.assemble import extract_subgraph
from tfaccel.compiler.core_stages import split_balanced
from tfaccel.compiler.hints import compile_hint
from tfaccel.compiler.opclasses import COMPUTE_HEAVY_OPS
from tfaccel.compiler.partition import Cluster, partition
from tfaccel.compiler.placement import Decision, Reason, boundary_violations
from tfaccel.compiler.run import CompileFailure, NoteKind, TraceRun
from tfaccel.errors import CompileError

__all__ = ["compile_cluster", "compile_stage", "partition_stage", "split_stage"]


def compile_cluster(run: TraceRun, placed: Placed, cluster: Cluster) -> CompiledSubgraph:
    """``cluster`` compiled on the backend named by its group (cached on the run); raises
    :class:`SubgraphCompileError`.
    """
    key = replace(cluster, name="")
    if key not in run.compile_cache:
        captured = placed.captured
        subgraph = extract_subgraph(cluster, captured.graph, captured.graph_def.library)
        backend = run.backend_by_name[cluster.group]
        run.compile_cache[key] = backend.compile(subgraph, artifacts=bool(run.workdir))
    return run.compile_cache[key].for_cluster(cluster)


def partition_stage(
    run: TraceRun, placed: Placed, decisions: dict[str, Decision] | None = None
) -> Partitioned:
    """Cluster the accelerated nodes by backend without cycles; a list or handle that would cross a
    cluster's boundary keeps its end on TF and the graph is partitioned again.
    """
    graph = placed.captured.graph
    decisions = dict(placed.decisions if decisions is None else decisions)
    forced = run.callback is not None
    for _ in range(len(graph) + 1):
        assignment = {n: d.backend for n, d in decisions.items() if d.accelerated and d.backend}
        result = partition(
            graph,
            assignment,
            min_size=run.options.min_segment_size,
            forced=forced,
            anchor_ops=COMPUTE_HEAVY_OPS,
        )
        for name, why in result.rejected.items():
            decisions[name] = decisions[name].to_runtime(Reason.SMALL_SUBGRAPH, why)
        crossing = boundary_violations(graph, result.clusters)
        if not crossing:
            return Partitioned(placed, decisions, tuple(result.clusters))
        for name, why in crossing.items():
            decisions[name] = decisions[name].to_runtime(Reason.DTYPE, why)
    raise CompileError(
        f"partitioning kept moving string/resource tensors' ends to TF after {len(graph) + 1} rounds "
        "(a tfaccel bug: please report it with the --workdir artifacts)"
    )


def compile_stage(run: TraceRun, partitioned: Partitioned) -> Compiled:
    """Compile every cluster; a cluster the compiler refuses gives its culprit (or all its nodes) back to
    TF, and the graph is partitioned again (see the module docstring).
    """
    placed = partitioned.placed
    graph = placed.captured.graph
    last = ""
    for _ in range(len(graph) + 1):
        decisions = dict(partitioned.decisions)
        compiled: list[CompiledSubgraph] = []
        failed = False
        clusters = partitioned.clusters
        for index, cluster in enumerate(clusters, 1):
            progress.emit("compiling", index, len(clusters), cluster.name, cluster.group, len(cluster.nodes))
            try:
                compiled.append(compile_cluster(run, placed, cluster))
            except SubgraphCompileError as err:
                failed = True
                backend = cluster.group
                blamed = [err.node] if err.node in cluster.nodes else list(cluster.nodes)
                for name in blamed:
                    decisions[name] = decisions[name].to_runtime(
                        Reason.COMPILE_FAILURE, f"{backend} could not compile it: {err.message}"
                    )
                what = f"node {err.node!r}" if err.node in cluster.nodes else f"all {len(blamed)} nodes"
                last = f"{cluster.name}: {backend} failed ({err.message}); {what} moved to TF"
                run.note(NoteKind.COMPILE, last + _failure_detail(run, cluster, err))
        if not failed:
            return Compiled(placed, decisions, tuple(compiled))
        partitioned = partition_stage(run, placed, decisions)
    raise CompileError(
        f"compilation kept failing after {len(graph) + 1} fallback rounds (a tfaccel bug: please report "
        f"it with the --workdir artifacts); last: {last or None}"
    )


def _failure_detail(run: TraceRun, cluster: Cluster, err: SubgraphCompileError) -> str:
    """Records the failure on the run (for ``--workdir``) and returns what the report adds to its sentence:
    the suggested fix when the compiler's output shows a known cause, and where the full output is.
    """
    hint = compile_hint(err.log)
    folder = f"failed/{len(run.compile_failures) + 1:02d}-{cluster.name}-{cluster.group}"
    run.compile_failures.append(CompileFailure(cluster, err.message, err.log, hint, folder))
    where = (
        f"; the compiler's full output: {run.workdir}/{folder}/error.log"
        if run.workdir
        else "; --workdir keeps the subgraph and the compiler's full output"
    )
    return (f"; suggested fix: {hint}" if hint else "") + where


def split_stage(run: TraceRun, compiled: Compiled) -> Compiled:
    """``--neuroncore-pipeline-cores=N``: replace each compiled subgraph by up to N compiled stages of
    balanced estimated cost (:func:`tfaccel.compiler.core_stages.split_balanced`).

    A subgraph whose stages do not all compile (a stage may need a compile-time constant that another
    stage computes) stays whole, and the fallback is noted.
    """
    stages = run.batch_plan.stages
    if stages <= 1:
        return compiled
    placed = compiled.placed
    graph = placed.captured.graph
    assignment = {}
    for item in compiled.subgraphs:
        for k, nodes in enumerate(split_balanced(graph, item.cluster.nodes, stages)):
            assignment.update(dict.fromkeys(nodes, f"{item.cluster.name}#{k}"))
    pieces: dict[str, list[Cluster]] = {}
    backend_of = {item.cluster.name: item.cluster.group for item in compiled.subgraphs}
    seen: dict[str, int] = {}  # stage group -> clusters of it so far
    for cluster in partition(graph, assignment, forced=True).clusters:
        origin, stage = cluster.group.split("#")
        same = seen[cluster.group] = seen.get(cluster.group, 0) + 1
        name = f"{origin}_stage{stage}" + (f"_{same - 1}" if same > 1 else "")
        # a stage runs on its subgraph's backend (the report and the workdir name it)
        pieces.setdefault(origin, []).append(replace(cluster, name=name, group=backend_of[origin]))
    result: list[CompiledSubgraph] = []
    for item in compiled.subgraphs:
        try:
            result.extend(compile_cluster(run, placed, c) for c in pieces[item.cluster.name])
        except SubgraphCompileError as err:
            run.note(
                NoteKind.PIPELINE,
                f"{item.cluster.name}: a pipeline stage failed to compile ({err.message}); kept whole",
            )
            result = [r for r in result if not r.cluster.name.startswith(f"{item.cluster.name}_stage")]
            result.append(item)
    return replace(compiled, subgraphs=tuple(result))
