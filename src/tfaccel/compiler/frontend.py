"""The capture and optimize stages: the user's function becomes one optimized graph, and its batch plan.

Why the batch plan is decided here: how a model takes its batch decides how it is traced (with an unknown
batch for one graph that takes any batch, on a micro-batch for pipelined stages, or as is), so the capture
stage is the one reader of ``--dynamic-batch-size`` and ``--neuroncore-pipeline-cores``; every later stage,
the runtime, the save format and the CLI read the :class:`~tfaccel.runtime.batching.BatchPlan`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import tensorflow as tf

from tfaccel.backends.base import Backend
from tfaccel.compiler.artefacts import Placed
from tfaccel.compiler.batch_analysis import common_batch, rows_independent
from tfaccel.compiler.capture import CapturedFunction, FrozenFunction, call_as_traced, freeze, optimize
from tfaccel.compiler.examples import InputLayout, InputSpec
from tfaccel.compiler.options import TraceOptions
from tfaccel.compiler.place import place_stage
from tfaccel.compiler.placement import Reason
from tfaccel.compiler.run import NoteKind, TraceRun
from tfaccel.errors import OptionsError, TraceError
from tfaccel.runtime.batching import BatchMode, BatchPlan

__all__ = ["batch_stage", "capture_settings", "capture_stage", "optimize_stage"]

logger = logging.getLogger(__name__)


def capture_settings(backends: Sequence[Backend], opts: TraceOptions) -> dict[str, Any]:
    """The :func:`~tfaccel.compiler.capture.optimize` keywords for these candidate backends.

    One captured graph serves every candidate, so grappler skips the passes any of them mishandles, and
    ``--fp32-cast`` rewrites the graph only when the first backend does not cast in its compiler
    (:func:`tfaccel.backends.candidate_backends` keeps one backend when the cast is on).
    """
    return {
        "fp32_cast": "none" if backends[0].casts_in_compiler else opts.fp32_cast,
        "grappler_off": frozenset().union(*(b.grappler_off for b in backends)),
    }


def capture_stage(run: TraceRun, _: None = None) -> FrozenFunction:
    """Trace and freeze ``run.func`` and decide ``run.batch_plan`` (see the module docstring)."""
    opts = run.options
    extract = opts.extract_weights
    stages = opts.neuroncore_pipeline_cores
    if stages > 1:
        user_batch, micro = run.examples.micro_batch(stages)
        frozen = freeze(run.func, micro, extract_weights=extract)
        flag = f"--neuroncore-pipeline-cores={stages}"
        chunk = batch_size_of(frozen, flag=flag)
        run.traced_examples = micro
        run.batch_plan = BatchPlan(
            BatchMode.PIPELINED, user_batch, chunk, stages, any_batch=opts.dynamic_batch_size
        )
        return with_batch(frozen, user_batch)
    if opts.dynamic_batch_size and run.backends[0].dynamic_shapes:
        any_batch, why = _freeze_any_batch(run, extract)
        if any_batch is not None:
            batch = batch_size_of(any_batch)
            run.batch_plan = BatchPlan(BatchMode.ANY, batch, batch, any_batch=True)
            return any_batch
        run.note(NoteKind.BATCH, why)
        frozen = freeze(run.func, run.examples, extract_weights=extract)
        batch = batch_size_of(frozen)
        run.batch_plan = BatchPlan(BatchMode.CHUNKED, batch, batch, any_batch=True, why=why)
        return frozen
    if opts.dynamic_batch_size:
        frozen = freeze(run.func, run.examples, extract_weights=extract)
        batch = batch_size_of(frozen)
        run.batch_plan = BatchPlan(BatchMode.CHUNKED, batch, batch, any_batch=True, why=_static(run, batch))
        return frozen
    return _capture_automatic(run, extract)


def _capture_automatic(run: TraceRun, extract: bool) -> FrozenFunction:
    """Without ``--dynamic-batch-size``: any batch when the batch propagates, as in the reference.

    The model is traced for an unknown batch and checked (:mod:`tfaccel.compiler.batch_analysis`). When the
    batch propagates, a backend that compiles dynamic dims takes that graph (one call for any batch) and
    one that does not runs chunks of the traced batch; when it does not, the model keeps the traced batch
    and the plan says why (the report shows it), naming the input, output or node.
    """
    try:
        any_batch: FrozenFunction | None = freeze(
            run.func, run.examples, extract_weights=extract, unknown_batch=True
        )
    except TraceError as err:
        any_batch, why = None, f"the model cannot be traced for an unknown batch size ({err})"
    batch = None
    if any_batch is not None:
        batch, why = common_batch(any_batch.layout)
        if batch is not None:
            layout = any_batch.layout
            inputs = run.examples.tensors(layout)
            why = rows_independent(
                any_batch, lambda flat: tf.nest.flatten(call_as_traced(run.func, layout, flat)), inputs
            )
    if any_batch is not None and batch is not None and not why and run.backends[0].dynamic_shapes:
        run.batch_plan = BatchPlan(BatchMode.ANY, batch, batch, any_batch=True)
        return any_batch
    frozen = freeze(run.func, run.examples, extract_weights=extract)
    if batch is not None and not why:
        run.batch_plan = BatchPlan(BatchMode.CHUNKED, batch, batch, any_batch=True, why=_static(run, batch))
    else:
        logger.info("the traced model takes its traced batch only: %s", why)
        run.batch_plan = BatchPlan(BatchMode.FIXED, batch, why=why)
    return frozen


def _static(run: TraceRun, batch: int) -> str:
    return f"{run.backends[0].name} compiles static shapes only: any batch runs as chunks of {batch}"


def optimize_stage(run: TraceRun, frozen: FrozenFunction) -> CapturedFunction:
    """Grappler and the ``--fp32-cast`` rewrite, set up for the run's backends."""
    captured = optimize(frozen, **capture_settings(run.backends, run.options))
    for sentence in captured.notes:  # capture logged them
        run.note(NoteKind.CAPTURE, sentence, log=False)
    return captured


def _freeze_any_batch(run: TraceRun, extract: bool) -> tuple[FrozenFunction | None, str]:
    """Trace ``func`` once for any batch size (dim 0 unknown), for a backend that compiles dynamic dims.

    Returns ``(None, why)`` when the function cannot be traced that way, or when an output does not keep
    the batch as an unknown dim 0 (e.g. a reshape that fixed it): such a graph may not be valid for other
    batch sizes, so the model runs chunks of the traced batch instead, and says so.
    """
    try:
        frozen = freeze(run.func, run.examples, extract_weights=extract, unknown_batch=True)
    except TraceError as err:
        return None, (
            f"--dynamic-batch-size: the model could not be traced for an unknown batch size ({err}); "
            "it runs chunks of the traced batch instead"
        )
    fixed = [
        name
        for name, spec in zip(frozen.output_names, tf.nest.flatten(frozen.output_structure), strict=True)
        if spec.shape.rank == 0 or spec.shape[0] is not None
    ]
    if fixed:
        return None, (
            f"--dynamic-batch-size: output {fixed[0]!r} does not keep an unknown batch dimension when traced "
            "for any batch size; the model runs chunks of the traced batch instead"
        )
    return frozen, ""


def batch_size_of(captured: FrozenFunction, flag: str = "--dynamic-batch-size") -> int:
    """The traced batch ``B``: dim 0 shared by every input and output, or an :class:`OptionsError` that
    names ``flag`` (the option that needs a batch dimension).
    """
    specs = captured.layout.specs
    for spec in specs:
        if not spec.shape:
            raise OptionsError(
                f"{flag}: input {spec.name!r} is a scalar; every input needs a batch "
                "dimension (dim 0) to use this flag"
            )
    batch = specs[0].shape[0]
    for spec in specs[1:]:
        if spec.shape[0] != batch:
            raise OptionsError(
                f"{flag}: the example inputs disagree on the batch size: {specs[0].name!r} "
                f"has {list(specs[0].shape)} and {spec.name!r} has {list(spec.shape)}; "
                "give them the same dim 0"
            )
    if batch < 1:
        raise OptionsError(f"{flag}: the example batch is empty; trace with at least one row")
    for name, spec in zip(captured.output_names, tf.nest.flatten(captured.output_structure), strict=True):
        # (dim 0 is unknown when the graph was traced for any batch)
        if spec.shape.rank == 0 or spec.shape[0] not in (batch, None):
            raise OptionsError(
                f"{flag}: output {name!r} has shape {spec.shape.as_list()}, whose dim 0 is not "
                f"the batch {batch}; the flag needs every output to keep the batch as dim 0 "
                "(a batch-wide reduction cannot be computed chunk by chunk)"
            )
    return int(batch)


def with_batch(captured: FrozenFunction, batch: int) -> FrozenFunction:
    """``captured`` with its input signature's dim 0 set to ``batch`` (the user's, not the micro-batch)."""
    layout: InputLayout = captured.layout
    specs: list[InputSpec] = []
    for spec in layout.specs:
        specs.append(InputSpec(spec.name, spec.dtype, (batch, *spec.shape[1:])))
    return replace(captured, layout=replace(layout, specs=tuple(specs)))


def batch_stage(run: TraceRun, placed: Placed) -> Placed:
    """Keep one graph for any batch only when it costs no compiled node.

    A backend that compiles static shapes only (xla) cannot take the nodes of a graph traced for an unknown
    batch; where the dynamic backend refused a node that such a backend would have taken, the graph traced
    for any batch would leave it on TF. Then the model is traced again at its batch and runs chunks of it
    (the plan says which node decided it), so that no subgraph is lost to the batch.
    """
    plan = run.batch_plan
    if plan.mode is not BatchMode.ANY:
        return placed
    captured = placed.captured
    lost: list[tuple[str, str]] = []  # (node, backend)
    for backend in run.backends:
        if backend.dynamic_shapes:
            continue
        query = backend.support_for(captured.graph, captured.graph_def)
        for name, decision in placed.takes[backend.name].items():
            node = captured.graph[name]
            if (
                decision.reason is Reason.UNKNOWN_SHAPE
                and not placed.decisions[name].accelerated
                and query.supports(node)[0]
                and query.avoids(node) is None
            ):
                lost.append((name, backend.name))
    if not lost:
        return placed
    assert plan.batch is not None  # an ANY plan names its batch
    (name, static), *_ = lost
    frozen = freeze(run.func, run.examples, extract_weights=run.options.extract_weights)
    why = (
        f"{placed.decisions[name].op} node {name!r} needs {static}, which compiles static shapes only: "
        f"any batch runs as chunks of {plan.batch}"
    )
    run.batch_plan = replace(plan, mode=BatchMode.CHUNKED, why=why)
    return place_stage(run, optimize_stage(run, frozen))
