"""``trace``: capture -> place -> partition -> compile (with fallback) -> assemble -> model.

Each stage is a function of the previous stage's value, so the pipeline reads top to bottom here and each
stage can be tested alone. A subgraph the backend cannot compile is never fatal: the node the compiler
blamed (or the whole subgraph if it blamed none) goes back to the TensorFlow runtime with the compiler's
message as its reason, the graph is partitioned again, and the fallback is logged and reported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2

from tfaccel import _tf_compat
from tfaccel.assemble import assemble, extract_subgraph
from tfaccel.backends import Backend, CompiledSubgraph, SubgraphCompileError, get_backend
from tfaccel.capture import CapturedFunction, capture
from tfaccel.errors import CaptureTypeError, CompileError, OptionsError, TraceError
from tfaccel.ir import Graph, Node
from tfaccel.partition import Cluster, partition
from tfaccel.placement import COMPUTE_HEAVY_OPS, Decision, Reason, decide
from tfaccel.report import PlacementReport, SubgraphSummary
from tfaccel.runtime import Executable, make_model

__all__ = ["trace"]

logger = logging.getLogger(__name__)

#: A subgraph with fewer counted ops than this is left on the runtime: the call costs more than it saves.
DEFAULT_MIN_SEGMENT_SIZE = 2
_MAX_FALLBACK_ROUNDS = 50


def trace(
    func: Callable[..., Any],
    example_inputs: Any,
    subgraph_builder_function: Callable[[Any], bool] | None = None,
    *,
    backend: str = "xla",
    min_segment_size: int = DEFAULT_MIN_SEGMENT_SIZE,
) -> Any:
    """Trace ``func`` on ``example_inputs`` and return an inference-only Keras model that runs the
    supported part of the graph compiled.

    ``example_inputs``: a Tensor or a list is passed as ``func(x)``, a tuple as ``func(*x)``, a dict as
    ``func(**x)``; numpy arrays are accepted. ``subgraph_builder_function(node_def) -> bool`` decides
    placement per node of the frozen, optimized graph instead of the automatic placement.

    Example::

        import tfaccel as tfn
        model_neuron = tfn.trace(model, tf.random.uniform([1, 3]))
        print(model_neuron.on_neuron_ratio)
        model_neuron.summary()
    """
    if not isinstance(min_segment_size, int) or min_segment_size < 1:
        raise OptionsError(f"min_segment_size must be a positive integer, got {min_segment_size!r}")
    captured = capture(func, example_inputs)
    accel = get_backend(backend)
    callback = _node_callback(subgraph_builder_function)
    decisions = decide(captured.graph, accel, callback)
    compiled, decisions, fallbacks = _partition_and_compile(
        captured, accel, decisions, min_segment_size, forced=callback is not None
    )
    outer, outputs = assemble(captured.graph, captured.graph_def, compiled)
    report = _report(accel.name, captured.graph, decisions, compiled, fallbacks)
    executable = _executable(captured, outer, outputs, report)
    model = make_model(executable)
    _warm_up(model, example_inputs)  # compiles XLA now, not on the user's first call
    if report.total_ops and report.ratio < 0.5:
        logger.warning(
            "only %.0f%% of the ops (%d of %d) run on the %s backend: %s. Call model.summary() for the "
            "full placement table.",
            100 * report.ratio,
            report.accelerated_ops,
            report.total_ops,
            accel.name,
            report.why_low(),
        )
    return model


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
            result = user_fn(node.payload)
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


def _partition_and_compile(
    captured: CapturedFunction,
    accel: Backend,
    decisions: dict[str, Decision],
    min_size: int,
    forced: bool,
) -> tuple[list[CompiledSubgraph], dict[str, Decision], list[str]]:
    graph = captured.graph
    cache: dict[Cluster, CompiledSubgraph] = {}
    fallbacks: list[str] = []
    for _ in range(_MAX_FALLBACK_ROUNDS):
        assignment = {n: d.backend for n, d in decisions.items() if d.accelerated and d.backend}
        result = partition(graph, assignment, min_size=min_size, forced=forced, anchor_ops=COMPUTE_HEAVY_OPS)
        for name, why in result.rejected.items():
            decisions[name] = decisions[name].to_runtime(Reason.SMALL_SUBGRAPH, why)
        compiled: list[CompiledSubgraph] = []
        failed = False
        for cluster in result.clusters:
            if cluster not in cache:
                try:
                    cache[cluster] = accel.compile(
                        extract_subgraph(cluster, graph, captured.graph_def.library)
                    )
                except SubgraphCompileError as err:
                    failed = True
                    blamed = [err.node] if err.node in cluster.nodes else list(cluster.nodes)
                    for name in blamed:
                        decisions[name] = decisions[name].to_runtime(
                            Reason.COMPILE_FAILURE, f"{accel.name} could not compile it: {err.message}"
                        )
                    what = f"node {err.node!r}" if err.node in cluster.nodes else f"all {len(blamed)} nodes"
                    sentence = f"{cluster.name}: {accel.name} failed ({err.message}); {what} moved to TF"
                    fallbacks.append(sentence)
                    logger.warning("compile fallback: %s", sentence)
                    continue
            compiled.append(cache[cluster])
        if not failed:
            return compiled, decisions, fallbacks
    raise CompileError(
        f"compilation kept failing after {_MAX_FALLBACK_ROUNDS} fallback rounds; last: {fallbacks[-1]}"
    )


def _report(
    backend: str,
    graph: Graph,
    decisions: dict[str, Decision],
    compiled: list[CompiledSubgraph],
    fallbacks: list[str],
) -> PlacementReport:
    subs = [
        SubgraphSummary(
            c.cluster.name,
            backend,
            c.cluster.nodes,
            c.cluster.effective_size,
            len(c.cluster.inputs),
            len(c.cluster.outputs),
        )
        for c in compiled
    ]
    return PlacementReport.build(backend, decisions, subs, {n.name: n.counted for n in graph}, fallbacks)


def _executable(
    captured: CapturedFunction,
    outer: graph_pb2.GraphDef,
    outputs: tuple[str, ...],
    report: PlacementReport,
) -> Executable:
    inputs = [f"{name}:0" for name in captured.graph.inputs]
    wrapped = _tf_compat.function_from_graph_def(outer, inputs, outputs)
    structure = captured.output_structure

    def call_flat(*flat: tf.Tensor) -> Any:
        return tf.nest.pack_sequence_as(structure, wrapped(*flat))

    specs = [s.tensor_spec() for s in captured.layout.specs]
    function = tf.function(call_flat, input_signature=specs, autograph=False)
    return Executable(function, captured.layout, captured.output_names, report, graph_def=outer)


def _warm_up(model: Any, example_inputs: Any) -> None:
    """Call the traced model once on the example inputs, the way the user will call it."""
    if isinstance(example_inputs, Mapping):
        model(**example_inputs)
    elif isinstance(example_inputs, tuple):
        model(*example_inputs)
    else:
        model(example_inputs)
