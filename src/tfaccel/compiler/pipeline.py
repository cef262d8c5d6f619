"""``trace``: capture -> place -> partition -> compile (with fallback) -> assemble -> model.

Each stage is a function of the previous stage's value, so the pipeline reads top to bottom here and each
stage can be tested alone. A subgraph the backend cannot compile is never fatal: the node the compiler
blamed (or the whole subgraph if it blamed none) goes back to the TensorFlow runtime with the compiler's
message as its reason, the graph is partitioned again, and the fallback is logged and reported.
"""

from __future__ import annotations

import copy
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2

from tfaccel import _tf_compat
from tfaccel.backends import candidate_backends
from tfaccel.backends.base import Backend, CompiledSubgraph, SubgraphCompileError
from tfaccel.compiler import progress
from tfaccel.compiler.assemble import assemble, extract_subgraph, resources_of
from tfaccel.compiler.capture import CapturedFunction, capture, feed_values, split_examples
from tfaccel.compiler.core_stages import split_balanced
from tfaccel.compiler.ir import Graph, Node
from tfaccel.compiler.options import TraceOptions, resolve_options
from tfaccel.compiler.partition import Cluster, contract, is_acyclic, partition
from tfaccel.compiler.placement import COMPUTE_HEAVY_OPS, Decision, Reason, boundary_violations, decide_across
from tfaccel.compiler.profiling import cluster_inputs, compiled_runner, tf_runner, time_variants
from tfaccel.compiler.report import PlacementReport, SubgraphSummary
from tfaccel.compiler.selection import Measurement, choose
from tfaccel.compiler.workdir import write_capture, write_workdir
from tfaccel.errors import CaptureTypeError, CompileError, PartitionError, TraceError
from tfaccel.runtime.batching import batch_size_of, micro_batch, run_in_chunks, same_batch, with_batch
from tfaccel.runtime.model import Executable, checked_inputs, loose_specs, make_model

__all__ = ["capture_for_backends", "trace"]

logger = logging.getLogger(__name__)


def trace(
    func: Callable[..., Any],
    example_inputs: Any,
    subgraph_builder_function: Callable[[Any], bool] | None = None,
    **options: Any,
) -> Any:
    """Trace ``func`` on ``example_inputs`` and return an inference-only Keras model that runs the
    supported part of the graph compiled.

    ``example_inputs``: a Tensor or a list is passed as ``func(x)``, a tuple as ``func(*x)``, a dict as
    ``func(**x)``; numpy arrays are accepted. ``subgraph_builder_function(node_def) -> bool`` decides
    placement per node of the frozen, optimized graph instead of the automatic placement.

    Options come from ``NEURON_CC_FLAGS``, then ``TFACCEL_CC_FLAGS``, then keywords (each overriding the
    one before): ``workdir``, ``dynamic_batch_size``, ``extract_weights``, ``neuroncore_pipeline_cores``,
    ``min_segment_size``, ``verbose``, ``backend``, ``fp32_cast`` and ``placement`` (flags spelled
    ``--dynamic-batch-size`` and so on; see the README). By default (``--placement=profile``) each
    candidate subgraph is timed on every available backend and on TF and goes to the fastest
    (:mod:`tfaccel.compiler.selection`); ``--placement=static`` places by the support rules alone.

    Example::

        import tfaccel as tfn
        model_neuron = tfn.trace(model, tf.random.uniform([1, 3]))
        print(model_neuron.on_neuron_ratio)
        model_neuron.summary()
    """
    opts = resolve_options(options)
    backends, backend_notes = candidate_backends(opts.backend, opts.fp32_cast)
    for note in backend_notes:
        logger.warning("backend: %s", note)
    primary = backends[0]
    capture_for = capture_for_backends(backends, opts)
    stages = opts.neuroncore_pipeline_cores
    any_batch: CapturedFunction | None = None
    examples = example_inputs  # what the captured graph was traced on (profiling feeds these)
    if stages > 1:
        user_batch, examples = micro_batch(example_inputs, stages)
        captured = capture_for(func, examples)
        chunk: int | None = batch_size_of(captured, flag=f"--neuroncore-pipeline-cores={stages}")
        captured = with_batch(captured, user_batch)
    else:
        if opts.dynamic_batch_size and primary.dynamic_shapes:
            any_batch, why_chunks = _capture_any_batch(capture_for, func, example_inputs)
            if why_chunks:
                backend_notes.append(why_chunks)
                logger.warning("dynamic batch fallback: %s", why_chunks)
        captured = any_batch or capture_for(func, example_inputs)
        chunk = batch_size_of(captured) if opts.dynamic_batch_size else None
    if opts.workdir:
        write_capture(opts.workdir, captured, opts)
    callback = _node_callback(subgraph_builder_function)
    queries = [b.support_for(captured.graph, captured.graph_def) for b in backends]
    decisions, takes = decide_across(captured.graph, queries, callback)
    plan = _Plan(captured, {b.name: b for b in backends}, opts.min_segment_size, bool(opts.workdir))
    compiled, decisions, fallbacks = plan.partition_and_compile(decisions, forced=callback is not None)
    measurements: list[Measurement] = []
    profile_seconds: float | None = None
    placement = opts.placement
    if placement == "profile" and callback is not None:
        placement = "static"
        backend_notes.append(
            "--placement=profile: subgraph_builder_function decides the placement; not profiled"
        )
    elif placement == "profile" and compiled:
        start = time.perf_counter()
        try:
            compiled, decisions, measurements, more = _profile(plan, examples, takes, compiled, decisions)
        except (tf.errors.OpError, ValueError) as err:  # the static placement stands, and says so
            placement = "static"
            sentence = (
                f"--placement=profile could not measure the subgraphs ({type(err).__name__}: "
                f"{str(err).strip().splitlines()[0][:300]}); the static placement is kept"
            )
            logger.warning("placement fallback: %s", sentence)
            backend_notes.append(sentence)
            more = []
        profile_seconds = time.perf_counter() - start
        fallbacks.extend(more)
    fallbacks = [*backend_notes, *captured.notes, *fallbacks]
    if stages > 1:
        compiled = _split_into_stages(plan, compiled, stages, fallbacks)
    _check_acyclic(captured.graph, compiled)
    outer, outputs = assemble(captured.graph, captured.graph_def, compiled)
    label = "+".join(dict.fromkeys(c.cluster.group for c in compiled)) or "+".join(b.name for b in backends)
    report = _report(
        label, captured.graph, decisions, compiled, fallbacks, opts, placement, measurements, profile_seconds
    )
    resources = resources_of(compiled)
    executable = _executable(
        captured,
        outer,
        outputs,
        report,
        chunk,
        opts.dynamic_batch_size,
        stages,
        resources,
        any_batch is not None,
    )
    model = make_model(executable)
    args, kwargs = captured.layout.pack(split_examples(example_inputs)[2])  # called as func would be
    model(*args, **kwargs)  # compiles XLA now, not on the user's first call
    if opts.workdir:
        flat_examples = executable.flatten(args, kwargs)
        if stages > 1:  # the captured graph is the micro-batch graph
            flat_examples = [e[:chunk] for e in flat_examples]
        write_workdir(opts.workdir, captured, outer, compiled, report, flat_examples)
    if report.total_ops and report.ratio < 0.5:
        logger.warning(
            "only %.0f%% of the ops (%d of %d) run on the %s backend: %s. Call model.summary() for the "
            "full placement table.",
            100 * report.ratio,
            report.accelerated_ops,
            report.total_ops,
            label,
            report.why_low(),
        )
    if opts.verbose >= 1:
        model.summary()
    return model


def capture_for_backends(backends: Sequence[Backend], opts: TraceOptions) -> Callable[..., CapturedFunction]:
    """``capture`` set up for these candidate backends: ``capture_for(func, example_inputs, ...)``.

    One captured graph serves every candidate, so grappler skips the passes any of them mishandles, and
    ``--fp32-cast`` rewrites the graph only when the first backend does not cast in its compiler
    (:func:`tfaccel.backends.candidate_backends` keeps one backend when the cast is on).
    """
    return functools.partial(
        capture,
        extract_weights=opts.extract_weights,
        fp32_cast="none" if backends[0].casts_in_compiler else opts.fp32_cast,
        grappler_off=frozenset().union(*(b.grappler_off for b in backends)),
    )


def _node_callback(user_fn: Callable[[Any], bool] | None) -> Callable[[Node], bool] | None:
    """Adapt the user's ``subgraph_builder_function(NodeDef)`` to IR nodes, with clear errors."""
    if user_fn is None:
        return None
    if not callable(user_fn):
        raise CaptureTypeError(
            f"subgraph_builder_function must be callable (NodeDef -> bool), got {type(user_fn).__name__}"
        )

    def callback(node: Node) -> bool:
        try:
            result = user_fn(copy.deepcopy(node.payload))  # a callback must not edit the traced graph
        except Exception as err:
            raise TraceError(
                f"subgraph_builder_function raised {type(err).__name__} on node {node.name!r} "
                f"(op {node.op}): {err}"
            ) from err
        if not isinstance(result, (bool, np.bool_)):
            raise CaptureTypeError(
                f"subgraph_builder_function must return True or False; it returned {result!r} "
                f"({type(result).__name__}) for node {node.name!r} (op {node.op})"
            )
        return bool(result)

    return callback


class _Plan:
    """Partitioning and compiling for one captured graph, with a cache of compiled clusters.

    The cache is keyed by a cluster's contents and backend (not its name): a fallback round or the
    profiled re-partition renumbers clusters, and an unchanged one must not be compiled again.
    """

    def __init__(
        self, captured: CapturedFunction, backends: dict[str, Backend], min_size: int, artifacts: bool
    ) -> None:
        self.captured = captured
        self.backends = backends
        self.min_size = min_size
        self.artifacts = artifacts
        self.cache: dict[Cluster, CompiledSubgraph] = {}

    def compile(self, cluster: Cluster) -> CompiledSubgraph:
        """``cluster`` compiled on the backend named by its group (cached); raises SubgraphCompileError."""
        key = replace(cluster, name="")
        if key not in self.cache:
            graph, library = self.captured.graph, self.captured.graph_def.library
            subgraph = extract_subgraph(cluster, graph, library)
            self.cache[key] = self.backends[cluster.group].compile(subgraph, artifacts=self.artifacts)
        return _renamed(self.cache[key], cluster)

    def partition_and_compile(
        self, decisions: dict[str, Decision], forced: bool
    ) -> tuple[list[CompiledSubgraph], dict[str, Decision], list[str]]:
        """Partition by the decisions' backends and compile every cluster; a cluster the compiler
        refuses gives its culprit (or all its nodes) back to TF, and the graph is partitioned again.
        """
        graph = self.captured.graph
        fallbacks: list[str] = []
        decisions = dict(decisions)
        # every failing round moves at least one node to the runtime, so this ends within len(graph) rounds
        for _ in range(len(graph) + 1):
            assignment = {n: d.backend for n, d in decisions.items() if d.accelerated and d.backend}
            result = partition(
                graph, assignment, min_size=self.min_size, forced=forced, anchor_ops=COMPUTE_HEAVY_OPS
            )
            for name, why in result.rejected.items():
                decisions[name] = decisions[name].to_runtime(Reason.SMALL_SUBGRAPH, why)
            crossing = boundary_violations(graph, result.clusters)
            if crossing:  # a list or handle would leave a subgraph: keep its end on TF, partition again
                for name, why in crossing.items():
                    decisions[name] = decisions[name].to_runtime(Reason.DTYPE, why)
                continue
            compiled: list[CompiledSubgraph] = []
            failed = False
            for index, cluster in enumerate(result.clusters, 1):
                progress.emit(
                    "compiling", index, len(result.clusters), cluster.name, cluster.group, len(cluster.nodes)
                )
                try:
                    compiled.append(self.compile(cluster))
                except SubgraphCompileError as err:
                    failed = True
                    backend = cluster.group
                    blamed = [err.node] if err.node in cluster.nodes else list(cluster.nodes)
                    for name in blamed:
                        decisions[name] = decisions[name].to_runtime(
                            Reason.COMPILE_FAILURE, f"{backend} could not compile it: {err.message}"
                        )
                    what = f"node {err.node!r}" if err.node in cluster.nodes else f"all {len(blamed)} nodes"
                    sentence = f"{cluster.name}: {backend} failed ({err.message}); {what} moved to TF"
                    fallbacks.append(sentence)
                    logger.warning("compile fallback: %s", sentence)
            if not failed:
                return compiled, decisions, fallbacks
        raise CompileError(
            f"compilation kept failing after {len(graph) + 1} fallback rounds (a tfaccel bug: please report "
            f"it with the --workdir artifacts); last: {fallbacks[-1] if fallbacks else None}"
        )


def _profile(
    plan: _Plan,
    examples: Any,
    takes: dict[str, dict[str, Decision]],
    compiled: list[CompiledSubgraph],
    decisions: dict[str, Decision],
) -> tuple[list[CompiledSubgraph], dict[str, Decision], list[Measurement], list[str]]:
    """``--placement=profile``: time each statically placed subgraph on TF and on every backend that
    takes all its nodes, move it to the fastest by :func:`.selection.choose` (TF included), then
    partition again so that neighbours now on the same backend merge into one call.
    """
    captured = plan.captured
    graph = captured.graph
    order = list(plan.backends)
    values = cluster_inputs(captured, examples, [item.cluster for item in compiled])
    decisions = dict(decisions)
    measurements: list[Measurement] = []
    for index, item in enumerate(compiled, 1):
        cluster = item.cluster
        progress.emit("measuring", index, len(compiled), cluster.name, "+".join(order), len(cluster.nodes))
        subgraph = extract_subgraph(cluster, graph, captured.graph_def.library)
        inputs = [values[ref] for ref in cluster.inputs]
        variants = {"tf": tf_runner(subgraph, inputs)}
        failed: dict[str, str] = {}
        for name in order:
            refused = [takes[name][n] for n in cluster.nodes if not takes[name][n].accelerated]
            if refused:
                first = refused[0]
                failed[name] = f"does not take node {first.node!r} ({first.op}): {first.detail}"
                continue
            try:
                candidate = item if name == cluster.group else plan.compile(replace(cluster, group=name))
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
        record = Measurement(cluster.name, cluster.effective_size, times, failed, chosen, why, runs)
        measurements.append(record)
        logger.info("profile %s: %s", cluster.name, why)
        detail = f"{cluster.name}: {why}"
        for node in cluster.nodes:
            if chosen is None:
                decisions[node] = decisions[node].to_runtime(Reason.SLOWER, detail)
            else:
                decisions[node] = replace(
                    decisions[node], backend=chosen, reason=Reason.MEASURED, detail=detail
                )
    final, decisions, fallbacks = plan.partition_and_compile(decisions, forced=False)
    return final, decisions, measurements, fallbacks


def _check_acyclic(graph: Graph, compiled: list[CompiledSubgraph]) -> None:
    """Refuse to build a graph that would deadlock (cheap insurance: the partitioner guarantees it)."""
    if not is_acyclic(contract(graph, [item.cluster for item in compiled])):
        raise PartitionError(
            "the partitioned graph has a cycle between subgraphs (a tfaccel bug: please report it with the "
            "--workdir artifacts and the model)"
        )


def _renamed(item: CompiledSubgraph, cluster: Cluster) -> CompiledSubgraph:
    """A cached compilation under ``cluster``'s name (assemble names the call node after its cluster)."""
    return item.for_cluster(cluster)


def _report(
    label: str,
    graph: Graph,
    decisions: dict[str, Decision],
    compiled: list[CompiledSubgraph],
    fallbacks: list[str],
    options: TraceOptions,
    placement: str,
    measurements: list[Measurement],
    profile_seconds: float | None,
) -> PlacementReport:
    subs = [
        SubgraphSummary(
            c.cluster.name,
            c.cluster.group,
            c.cluster.nodes,
            c.cluster.effective_size,
            len(c.cluster.inputs),
            len(c.cluster.outputs),
        )
        for c in compiled
    ]
    counted = {n.name: n.counted for n in graph}
    return PlacementReport.build(
        label,
        decisions,
        subs,
        counted,
        fallbacks,
        options=options.flag_text(),
        placement=placement,
        measurements=measurements,
        profile_seconds=profile_seconds,
    )


def _executable(
    captured: CapturedFunction,
    outer: graph_pb2.GraphDef,
    outputs: tuple[str, ...],
    report: PlacementReport,
    chunk: int | None,
    dynamic: bool,
    stages: int,
    resources: dict[str, bytes],
    any_batch: bool = False,
) -> Executable:
    """The traced graph as a ``tf.function`` over flat inputs.

    With ``chunk`` a batch runs as chunks of that size (``run_in_chunks``): any batch
    size when ``dynamic``, the traced one otherwise. With ``stages > 1`` the chunks are pipelined: the
    graph is inlined into the loop body so that stage k of chunk i and stage k+1 of chunk i-1 are separate
    ops the executor runs concurrently, up to ``stages`` chunks in flight.

    With ``any_batch`` the graph itself takes any batch (traced with an unknown dim 0): no chunks, only
    the in-graph check that every input has the same batch.

    ``resources`` (compiled models the backend's ops read) become string variables fed to their
    Placeholders, like the ``--extract-weights`` variables.
    """
    inputs = [f"{name}:0" for name in (*captured.graph.inputs, *resources)]
    graph_function = _tf_compat.function_from_graph_def(outer, inputs, outputs)
    structure = captured.output_structure
    layout = captured.layout
    weights = (
        *captured.weights,
        *(
            tf.Variable(value, dtype=tf.string, trainable=False, name=name)
            for name, value in resources.items()
        ),
    )

    def wrapped(*flat: tf.Tensor) -> Any:
        return graph_function(*flat, *feed_values(weights))

    def inlined(*flat: tf.Tensor) -> Any:
        # tf.identity captures tensors of enclosing graphs (cond/loop bodies); import_graph_def does not
        values = [tf.identity(t) for t in (*flat, *feed_values(weights))]
        feeds = dict(zip(inputs, values, strict=True))
        return tf.graph_util.import_graph_def(outer, input_map=feeds, return_elements=list(outputs))

    names = [s.name for s in layout.specs]
    if chunk is None:

        def call_flat(*flat: tf.Tensor) -> Any:
            flat = tuple(checked_inputs(flat, layout, dynamic))
            return tf.nest.pack_sequence_as(structure, wrapped(*flat))

    elif any_batch:

        def call_flat(*flat: tf.Tensor) -> Any:
            flat = tuple(checked_inputs(flat, layout, dynamic))
            n = same_batch(flat, names)
            with tf.control_dependencies([n]):
                flat = tuple(tf.identity(t) for t in flat)
            return tf.nest.pack_sequence_as(structure, wrapped(*flat))

    else:
        out_specs = [tf.TensorSpec(s.shape, s.dtype) for s in tf.nest.flatten(structure)]
        body = inlined if stages > 1 else wrapped

        def call_flat(*flat: tf.Tensor) -> Any:
            flat = tuple(checked_inputs(flat, layout, dynamic))
            results = run_in_chunks(body, flat, chunk, names, out_specs, in_flight=stages)
            return tf.nest.pack_sequence_as(structure, results)

    # every dim unknown, so the in-graph checks are not folded away (see loose_specs)
    function = tf.function(call_flat, input_signature=loose_specs(layout), autograph=False)
    return Executable(
        function,
        layout,
        captured.output_names,
        report,
        graph_def=outer,
        batch=chunk if dynamic else None,
        weights=weights,
    )


def _capture_any_batch(
    capture_for: Callable[..., CapturedFunction], func: Callable[..., Any], example_inputs: Any
) -> tuple[CapturedFunction | None, str | None]:
    """Trace ``func`` once for any batch size (dim 0 unknown), for a backend that compiles dynamic dims.

    Returns ``(None, why)`` when the function cannot be traced that way, or when an output does not keep
    the batch as an unknown dim 0 (e.g. a reshape that fixed it): such a graph may not be valid for other
    batch sizes, so ``trace`` falls back to running chunks of the traced batch, and says so.
    """
    try:
        captured = capture_for(func, example_inputs, unknown_batch=True)
    except TraceError as err:
        return None, (
            f"--dynamic-batch-size: the model could not be traced for an unknown batch size ({err}); "
            "it runs chunks of the traced batch instead"
        )
    fixed = [
        name
        for name, spec in zip(captured.output_names, tf.nest.flatten(captured.output_structure), strict=True)
        if spec.shape.rank == 0 or spec.shape[0] is not None
    ]
    if fixed:
        return None, (
            f"--dynamic-batch-size: output {fixed[0]!r} does not keep an unknown batch dimension when traced "
            "for any batch size; the model runs chunks of the traced batch instead"
        )
    return captured, None


def _split_into_stages(
    plan: _Plan, compiled: list[CompiledSubgraph], stages: int, fallbacks: list[str]
) -> list[CompiledSubgraph]:
    """Replace each compiled subgraph by up to ``stages`` compiled stages of balanced estimated cost.

    A subgraph whose stages do not all compile (a stage may need a compile-time constant that another
    stage computes) stays whole, and the fallback is logged and reported.
    """
    captured = plan.captured
    graph = captured.graph
    assignment = {}
    for item in compiled:
        for k, nodes in enumerate(split_balanced(graph, item.cluster.nodes, stages)):
            assignment.update(dict.fromkeys(nodes, f"{item.cluster.name}#{k}"))
    pieces: dict[str, list[Cluster]] = {}
    backend_of = {item.cluster.name: item.cluster.group for item in compiled}
    seen: dict[str, int] = {}  # stage group -> clusters of it so far
    for cluster in partition(graph, assignment, forced=True).clusters:
        origin, stage = cluster.group.split("#")
        same = seen[cluster.group] = seen.get(cluster.group, 0) + 1
        name = f"{origin}_stage{stage}" + (f"_{same - 1}" if same > 1 else "")
        # a stage runs on its subgraph's backend (the report and the workdir name it)
        pieces.setdefault(origin, []).append(replace(cluster, name=name, group=backend_of[origin]))
    result: list[CompiledSubgraph] = []
    for item in compiled:
        try:
            backend = plan.backends[item.cluster.group]
            result.extend(
                backend.compile(
                    extract_subgraph(c, graph, captured.graph_def.library), artifacts=plan.artifacts
                )
                for c in pieces[item.cluster.name]
            )
        except SubgraphCompileError as err:
            sentence = f"{item.cluster.name}: a pipeline stage failed to compile ({err.message}); kept whole"
            fallbacks.append(sentence)
            logger.warning("pipeline fallback: %s", sentence)
            result = [r for r in result if not r.cluster.name.startswith(f"{item.cluster.name}_stage")]
            result.append(item)
    return result
