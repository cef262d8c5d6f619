"""The package stage: the assembled graph becomes the model ``trace`` returns.

The placement report is built here, once, from the final decisions and the run's notes; the graph becomes a
``tf.function`` over flat inputs that runs the batch as the run's :class:`~tfaccel.runtime.batching.BatchPlan`
says; the model is called once on the examples, so XLA compiles now and not on the user's first call.
"""

from __future__ import annotations

import logging
from typing import Any

import tensorflow as tf

from tfaccel import _tf_compat
from tfaccel.compiler.artefacts import Assembled
from tfaccel.compiler.capture import feed_values
from tfaccel.compiler.report import PlacementReport, SubgraphSummary
from tfaccel.compiler.run import TraceRun
from tfaccel.runtime.batching import BatchMode, run_in_chunks, same_batch
from tfaccel.runtime.direct import DirectCall, find_direct
from tfaccel.runtime.model import Executable, TracedModel, checked_inputs, loose_specs, make_model

__all__ = ["Packaged", "package_stage"]

logger = logging.getLogger("tfaccel.compiler.pipeline")


class Packaged:
    """The package stage's artefact: the returned model, with the executable and report behind it."""

    def __init__(self, assembled: Assembled, executable: Executable, model: TracedModel) -> None:
        self.assembled = assembled
        self.executable = executable
        self.model = model

    @property
    def report(self) -> PlacementReport:
        return self.executable.report


def build_report(run: TraceRun, assembled: Assembled) -> PlacementReport:
    """The placement report: every node's decision, the subgraphs, the notes and the measurements."""
    compiled = assembled.compiled
    graph = compiled.captured.graph
    label = "+".join(dict.fromkeys(c.cluster.group for c in compiled.subgraphs)) or "+".join(
        b.name for b in run.backends
    )
    subs = [
        SubgraphSummary(
            c.cluster.name,
            c.cluster.group,
            c.cluster.nodes,
            c.cluster.effective_size,
            len(c.cluster.inputs),
            len(c.cluster.outputs),
        )
        for c in compiled.subgraphs
    ]
    counted = {n.name: n.counted for n in graph}
    return PlacementReport.build(
        label,
        compiled.decisions,
        subs,
        counted,
        run.notes,
        options=run.options.flag_text(),
        placement=compiled.placement,
        measurements=list(compiled.measurements),
        profile_seconds=compiled.profile_seconds,
        batch=run.batch_plan.describe(),
    )


def package_stage(run: TraceRun, assembled: Assembled) -> Packaged:
    """Build the report and the executable, wrap it in the Keras model, and call it once."""
    report = build_report(run, assembled)
    executable = _executable(run, assembled, report)
    model = make_model(executable)
    args, kwargs = executable.layout.pack(run.examples.leaves)  # called as func would be
    model(*args, **kwargs)  # compiles XLA now, not on the user's first call
    if report.total_ops and report.ratio < 0.5:
        logger.warning(
            "only %.0f%% of the ops (%d of %d) run on the %s backend: %s. Call model.summary() for the "
            "full placement table.",
            100 * report.ratio,
            report.accelerated_ops,
            report.total_ops,
            report.backend,
            report.why_low(),
        )
    return Packaged(assembled, executable, model)


def _executable(run: TraceRun, assembled: Assembled, report: PlacementReport) -> Executable:
    """The traced graph as a ``tf.function`` over flat inputs, running the batch as the plan says.

    ``FIXED``: one call. ``ANY``: one call on any batch, after the in-graph check that every input has the
    same batch. ``CHUNKED`` / ``PIPELINED``: the batch runs as chunks of ``plan.chunk`` rows
    (``run_in_chunks``); pipelined, the graph is inlined into the loop body so that stage k of chunk i and
    stage k+1 of chunk i-1 are separate ops the executor runs concurrently, ``plan.stages`` chunks in
    flight.

    The compiled models the backends' ops read (``assembled.resources``) become string variables fed to
    their Placeholders, like the ``--extract-weights`` variables.
    """
    captured = assembled.compiled.captured
    plan = run.batch_plan
    outer, outputs, resources = assembled.graph_def, assembled.outputs, assembled.resources
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
    dynamic = plan.any_batch

    def wrapped(*flat: tf.Tensor) -> Any:
        return graph_function(*flat, *feed_values(weights))

    def inlined(*flat: tf.Tensor) -> Any:
        # tf.identity captures tensors of enclosing graphs (cond/loop bodies); import_graph_def does not
        values = [tf.identity(t) for t in (*flat, *feed_values(weights))]
        feeds = dict(zip(inputs, values, strict=True))
        return tf.graph_util.import_graph_def(outer, input_map=feeds, return_elements=list(outputs))

    names = [s.name for s in layout.specs]
    if plan.mode is BatchMode.FIXED:

        def call_flat(*flat: tf.Tensor) -> Any:
            flat = tuple(checked_inputs(flat, layout, dynamic))
            return tf.nest.pack_sequence_as(structure, wrapped(*flat))

    elif plan.mode is BatchMode.ANY:

        def call_flat(*flat: tf.Tensor) -> Any:
            flat = tuple(checked_inputs(flat, layout, dynamic))
            n = same_batch(flat, names)
            with tf.control_dependencies([n]):
                flat = tuple(tf.identity(t) for t in flat)
            return tf.nest.pack_sequence_as(structure, wrapped(*flat))

    else:
        assert plan.chunk is not None  # a chunked plan names its chunk (BatchPlan's invariant)
        chunk = plan.chunk
        out_specs = [tf.TensorSpec(s.shape, s.dtype) for s in tf.nest.flatten(structure)]
        body = inlined if plan.mode is BatchMode.PIPELINED else wrapped

        def call_flat(*flat: tf.Tensor) -> Any:
            flat = tuple(checked_inputs(flat, layout, dynamic))
            results = run_in_chunks(body, flat, chunk, names, out_specs, in_flight=plan.stages)
            return tf.nest.pack_sequence_as(structure, results)

    # every dim unknown, so the in-graph checks are not folded away (see loose_specs)
    function = tf.function(call_flat, input_signature=loose_specs(layout), autograph=False)
    direct, why = None, f"the batch runs {plan.mode.value}"
    if plan.mode in (BatchMode.FIXED, BatchMode.ANY):  # one call of the graph per call of the model
        model_inputs = list(captured.graph.inputs)[: len(layout.specs)]  # then --extract-weights' ones
        found, why = find_direct(outer, model_inputs, outputs, resources)
        direct = DirectCall(found) if found is not None else None
    return Executable(
        function,
        layout,
        captured.output_names,
        report,
        graph_def=outer,
        batch_plan=plan,
        weights=weights,
        direct=direct,
        output_structure=structure,
        direct_why=why,
    )
