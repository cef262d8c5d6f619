"""``trace`` as a pipeline: named stages in order, each a function from one typed artefact to the next.

    capture -> optimize -> place -> batch -> partition -> compile -> measure -> split -> quantize -> assemble
    -> verify -> package -> guard

Why data and not a function body: the stages read top to bottom in :data:`STAGES`, each stage module can be
tested alone, and the things every stage needs done around it are done here once: progress of the run, the
``--workdir`` dump after the stages that produce something to keep, and, in a debug run
(``TFACCEL_CHECK_STAGES=1``, which the test suite sets), each stage's pre- and postconditions, so a stage
that breaks its contract fails where it broke it instead of three stages later. A failed condition is a
tfaccel bug, reported as such.

The artefacts are :mod:`tfaccel.compiler.artefacts`; what a run knows besides them (options, backends,
examples, the batch plan, the notes for the report) is :class:`~tfaccel.compiler.run.TraceRun`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tfaccel.compiler import progress
from tfaccel.compiler.artefacts import Assembled, Compiled, Partitioned, Placed
from tfaccel.compiler.capture import CapturedFunction, FrozenFunction
from tfaccel.compiler.compilation import compile_stage, partition_stage, split_stage
from tfaccel.compiler.frontend import batch_stage, capture_stage, optimize_stage
from tfaccel.compiler.guard import guard_stage
from tfaccel.compiler.measure import measure_stage
from tfaccel.compiler.options import resolve_options
from tfaccel.compiler.package import Packaged, package_stage
from tfaccel.compiler.partition import Cluster, contract, is_acyclic
from tfaccel.compiler.place import place_stage
from tfaccel.compiler.placement import Decision
from tfaccel.compiler.quantize import quantize_stage
from tfaccel.compiler.run import TraceRun
from tfaccel.compiler.splice import assemble_stage, verify_stage
from tfaccel.compiler.workdir import write_capture, write_workdir
from tfaccel.errors import TraceError
from tfaccel.runtime.model import TracedModel

__all__ = ["STAGES", "Stage", "run_stages", "stages_through", "trace"]


#: a condition returns the sentences it found violated (empty: it holds)
Condition = Callable[[TraceRun, Any], list[str]]


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline: ``run(trace_run, artefact) -> artefact``, its contract and its dump."""

    name: str
    run: Callable[[TraceRun, Any], Any]
    takes: type | None
    gives: type
    pre: Condition | None = None
    post: Condition | None = None
    dump: Callable[[TraceRun, Any], None] | None = None


# -- conditions (checked in debug runs) -------------------------------------------------------------------
def _frozen_ok(run: TraceRun, frozen: FrozenFunction) -> list[str]:
    problems = []
    if not frozen.layout.specs:
        problems.append("the captured function has no inputs")
    if len(frozen.fetches) != len(frozen.output_names):
        problems.append(f"{len(frozen.fetches)} fetches for {len(frozen.output_names)} output names")
    if run.options.dynamic_batch_size and not run.batch_plan.any_batch:
        problems.append(f"batch plan {run.batch_plan} disagrees with --dynamic-batch-size")
    return problems


def _captured_ok(run: TraceRun, captured: CapturedFunction) -> list[str]:
    graph = captured.graph
    problems = [
        f"graph input {name!r} is not a Placeholder"
        for name in graph.inputs
        if graph[name].op != "Placeholder"
    ]
    if len(graph.outputs) != len(captured.output_names):
        problems.append(f"{len(graph.outputs)} graph outputs for {len(captured.output_names)} output names")
    return problems


def _placed_ok(run: TraceRun, placed: Placed) -> list[str]:
    names = {node.name for node in placed.captured.graph}
    backends = {b.name for b in run.backends}
    problems = [f"node {n!r} has no decision" for n in sorted(names - set(placed.decisions))]
    problems += [
        f"node {d.node!r} is placed on {d.backend!r}, not a candidate backend"
        for d in placed.decisions.values()
        if d.accelerated and d.backend not in backends
    ]
    return problems


def _clusters_ok(graph_of: Placed, decisions: dict[str, Decision], clusters: Iterable[Cluster]) -> list[str]:
    problems = []
    seen: dict[str, str] = {}
    for cluster in clusters:
        for name in cluster.nodes:
            if name in seen:
                problems.append(f"node {name!r} is in both {seen[name]} and {cluster.name}")
            seen[name] = cluster.name
            decision = decisions.get(name)
            if decision is None:
                problems.append(f"node {name!r} in {cluster.name} is not a node of the graph")
            elif not decision.accelerated or decision.backend != cluster.group:
                problems.append(f"node {name!r} in {cluster.name} ({cluster.group}) is decided {decision}")
    if not problems and not is_acyclic(contract(graph_of.captured.graph, list(clusters))):
        problems.append("the clusters form a cycle")
    return problems


def _partitioned_ok(run: TraceRun, partitioned: Partitioned) -> list[str]:
    return _clusters_ok(partitioned.placed, partitioned.decisions, partitioned.clusters)


def _compiled_ok(run: TraceRun, compiled: Compiled) -> list[str]:
    return _clusters_ok(compiled.placed, compiled.decisions, [s.cluster for s in compiled.subgraphs])


def _assembled_ok(run: TraceRun, assembled: Assembled) -> list[str]:
    members = {name for item in assembled.compiled.subgraphs for name in item.cluster.nodes}
    calls = {item.cluster.name for item in assembled.compiled.subgraphs}
    present = {node.name for node in assembled.graph_def.node}
    problems = [f"member {name!r} is still in the outer graph" for name in sorted(members & present)]
    problems += [f"call {name!r} is missing from the outer graph" for name in sorted(calls - present)]
    if len(assembled.outputs) != len(assembled.compiled.captured.output_names):
        problems.append("the outer graph's outputs do not match the function's")
    return problems


def _packaged_ok(run: TraceRun, packaged: Packaged) -> list[str]:
    report = packaged.report
    counted = sum(1 for node in packaged.assembled.compiled.captured.graph if node.counted)
    if report.total_ops != counted:
        return [f"the report counts {report.total_ops} ops, the graph has {counted}"]
    return []


# -- dumps (with --workdir) ---------------------------------------------------------------------------------
def _dump_captured(run: TraceRun, captured: CapturedFunction) -> None:
    # written as soon as the graph is captured: a trace that fails later still leaves them for a bug report
    assert run.workdir is not None
    write_capture(run.workdir, captured, run.options)


def _dump_packaged(run: TraceRun, packaged: Packaged) -> None:
    assert run.workdir is not None
    assembled = packaged.assembled
    executable = packaged.executable
    flat = executable.flatten(*executable.layout.pack(run.examples.leaves))
    plan = run.batch_plan
    if plan.stages > 1:  # the captured graph is the micro-batch graph
        flat = [e[: plan.chunk] for e in flat]
    compiled = list(assembled.compiled.subgraphs)
    write_workdir(
        run.workdir,
        assembled.compiled.captured,
        assembled.graph_def,
        compiled,
        packaged.report,
        flat,
        run.compile_failures,
    )


#: the pipeline, in order
STAGES: tuple[Stage, ...] = (
    Stage("capture", capture_stage, None, FrozenFunction, post=_frozen_ok),
    Stage(
        "optimize", optimize_stage, FrozenFunction, CapturedFunction, post=_captured_ok, dump=_dump_captured
    ),
    Stage("place", place_stage, CapturedFunction, Placed, post=_placed_ok),
    Stage("batch", batch_stage, Placed, Placed, post=_placed_ok),
    Stage("partition", partition_stage, Placed, Partitioned, post=_partitioned_ok),
    Stage("compile", compile_stage, Partitioned, Compiled, post=_compiled_ok),
    Stage("measure", measure_stage, Compiled, Compiled, pre=_compiled_ok, post=_compiled_ok),
    Stage("split", split_stage, Compiled, Compiled, post=_compiled_ok),
    Stage("quantize", quantize_stage, Compiled, Compiled, post=_compiled_ok),
    Stage("assemble", assemble_stage, Compiled, Assembled, post=_assembled_ok),
    Stage("verify", verify_stage, Assembled, Assembled),
    Stage("package", package_stage, Assembled, Packaged, post=_packaged_ok),
    Stage("guard", guard_stage, Packaged, Packaged, post=_packaged_ok, dump=_dump_packaged),
)


def stages_through(name: str) -> tuple[Stage, ...]:
    """The pipeline's stages from the first up to and including the one called ``name``."""
    names = [stage.name for stage in STAGES]
    return STAGES[: names.index(name) + 1]


def run_stages(run: TraceRun, stages: tuple[Stage, ...] = STAGES, artefact: Any = None) -> Any:
    """Run ``stages`` in order from ``artefact``; checks and dumps as the module docstring says."""
    for stage in stages:
        if run.check_stages:
            _check(stage, "input", stage.takes, stage.pre, run, artefact)
        artefact = stage.run(run, artefact)
        if run.check_stages:
            _check(stage, "output", stage.gives, stage.post, run, artefact)
        if run.workdir and stage.dump is not None:
            stage.dump(run, artefact)
    return artefact


def _check(
    stage: Stage, which: str, kind: type | None, condition: Condition | None, run: TraceRun, value: Any
) -> None:
    problems = []
    if kind is not None and not isinstance(value, kind):
        problems.append(f"expected a {kind.__name__}, got {type(value).__name__}")
    elif condition is not None:
        problems = condition(run, value)
    if problems:
        raise TraceError(
            f"stage {stage.name!r}: its {which} breaks the stage's contract ({'; '.join(problems)}); this is "
            "a tfaccel bug: please report it with the model and the --workdir artifacts"
        )


def trace(
    func: Callable[..., Any],
    example_inputs: Any,
    subgraph_builder_function: Callable[[Any], bool] | None = None,
    calibration_inputs: Iterable[Any] | None = None,
    **options: Any,
) -> TracedModel:
    """Trace ``func`` on ``example_inputs`` and return an inference-only Keras model that runs the
    supported part of the graph compiled.

    ``example_inputs``: a Tensor or a list is passed as ``func(x)``, a tuple as ``func(*x)``, a dict as
    ``func(**x)``, with any nesting of lists, tuples and dicts inside; numpy arrays are accepted.
    ``subgraph_builder_function(node_def) -> bool`` decides placement per node of the frozen, optimized graph
    instead of the automatic placement.

    Options come from ``NEURON_CC_FLAGS``, then ``TFACCEL_CC_FLAGS``, then keywords (each overriding the
    one before): ``workdir``, ``dynamic_batch_size``, ``extract_weights``, ``neuroncore_pipeline_cores``,
    ``min_segment_size``, ``verbose``, ``backend``, ``fp32_cast``, ``placement`` and ``timing_cache``
    (flags spelled ``--dynamic-batch-size`` and so on; see the README). By default
    (``--placement=profile``) each candidate subgraph is timed against TF and stays on its backend unless
    TF is clearly faster (:mod:`tfaccel.compiler.selection`), with the times kept in a timing cache;
    ``--placement=static`` places by the support rules alone.

    ``quantize="int8"`` (``--quantize=int8``) quantizes the openvino subgraphs with NNCF, calibrated on
    ``calibration_inputs`` (an iterable of inputs shaped like ``example_inputs``, at least two: the last
    fifth is held out to check the answers); a subgraph whose error against fp32 is above
    ``quantize_tolerance`` stays fp32, and the report says which and why.

    ``nan_semantics="relaxed"`` (``--nan-semantics=relaxed``) compiles without the NaN guards that keep
    TensorFlow's answers for NaN and infinity (faster on CNNs): for models whose values are always finite.

    Example::

        import tfaccel as tfn
        model_neuron = tfn.trace(model, tf.random.uniform([1, 3]))
        print(model_neuron.on_neuron_ratio)
        model_neuron.summary()
    """
    run = TraceRun.start(
        func, example_inputs, resolve_options(options), subgraph_builder_function, calibration_inputs
    )
    with progress.automatic():  # a tqdm bar in a notebook, if the caller installed no progress sink
        packaged: Packaged = run_stages(run)
    if run.options.verbose >= 1:
        packaged.model.summary()
    return packaged.model
