"""The measure stage (``--placement=profile``, the default): time each compiled subgraph against TF and keep
it on its backend unless TF is clearly faster.

Each statically placed subgraph is timed on TF and on the backends that take all its nodes, in the order of
preference, stopping at the first backend that clearly beats TF; the rule of
:func:`tfaccel.compiler.selection.choose` decides, and the graph is partitioned and compiled again so that
neighbours now on the same backend merge into one call.

Why the rest of this module exists: the placement must describe the model, not the moment it was traced in.

* **Timing cache** (:mod:`tfaccel.compiler.timing_cache`): the samples are kept by the subgraph's content,
  the backend, its precision, the CPU and the library versions. A subgraph found there is not measured again:
  a second trace costs no measuring time and gives the same placement.
* **Busy machine** (:mod:`tfaccel.compiler.machine`): next to other busy processes OpenVINO's statically
  partitioned threads slow down far more than TF's (ResNet50: 60 vs 46 ms busy, 28 vs 40 idle), so a
  timing taken while other processes used a large share of the cores is not trusted: that subgraph (and every
  later one) takes its timing-cache entry if there is one, else the static choice, and one warning says so.

With a ``subgraph_builder_function`` the user decides, so nothing is measured; a measurement that fails keeps
the static placement. Both are noted.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import cache
from typing import Any

import tensorflow as tf

from tfaccel.backends.base import CompiledSubgraph, SubgraphCompileError, SubgraphDef
from tfaccel.compiler import progress
from tfaccel.compiler.artefacts import Compiled, Placed
from tfaccel.compiler.assemble import extract_subgraph
from tfaccel.compiler.capture import CapturedFunction
from tfaccel.compiler.compilation import compile_cluster, compile_stage, partition_stage
from tfaccel.compiler.ir import TensorRef
from tfaccel.compiler.machine import LoadMonitor, LoadReading, cpu_model, probe, usable_cores
from tfaccel.compiler.partition import Cluster
from tfaccel.compiler.placement import Reason
from tfaccel.compiler.profiling import (
    cluster_inputs,
    compiled_runner,
    sample_until_settled,
    tf_runner,
    try_warm,
)
from tfaccel.compiler.run import NoteKind, TraceRun
from tfaccel.compiler.selection import Measurement, Verdict, choose, compare, estimate
from tfaccel.compiler.timing import sample
from tfaccel.compiler.timing_cache import TimingCache, TimingKey
from tfaccel.native import cache_dir

__all__ = [
    "BUSY_ADVICE",
    "canonical_nodes",
    "machine_key",
    "measure_stage",
    "graph_digest",
    "model_digest",
    "open_timings",
    "versions",
]

logger = logging.getLogger(__name__)

#: the busy-machine warning's advice (the sentence starts "machine busy: 2 of 3 candidate subgraph(s)")
BUSY_ADVICE = "placed by static rules; trace on an idle machine or ship a timing cache (--timing-cache=PATH)"


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
    timings = open_timings(run)
    mark = run.mark()
    try:
        measured = _measure(run, compiled, timings)
    except (tf.errors.OpError, ValueError) as err:  # the static placement stands, and says so
        run.rollback(mark)  # the fallbacks of the discarded re-placement are not this model's
        run.note(
            NoteKind.PLACEMENT,
            f"--placement=profile could not measure the subgraphs ({type(err).__name__}: "
            f"{str(err).strip().splitlines()[0][:300]}); the static placement is kept",
        )
        return replace(compiled, profile_seconds=time.perf_counter() - start)
    for problem in timings.save():
        run.note(NoteKind.PLACEMENT, problem)
    return replace(measured, profile_seconds=time.perf_counter() - start)


def open_timings(run: TraceRun) -> TimingCache:
    """The run's timing cache (``--timing-cache``), opened once; its problems are noted, never raised."""
    if run.timings is None:
        run.timings, problems = TimingCache.open(run.options.timing_cache, cache_dir())
        for problem in problems:
            run.note(NoteKind.PLACEMENT, problem)
    return run.timings


def machine_key() -> str:
    """The CPU a timing was taken on (a cache entry from another CPU or core count is not used)."""
    return f"{cpu_model()} x{usable_cores()}"


@cache
def versions() -> str:
    """The library versions a timing depends on (a cache entry of other versions is not used)."""
    parts = [f"tensorflow {tf.__version__}"]
    for package in ("tfaccel", "openvino"):
        try:
            parts.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{package} none")
    return "; ".join(parts)


def model_digest(run: TraceRun, captured: CapturedFunction) -> str:
    """The captured graph's content (sha256 of its nodes, weights included, its functions and its input
    specs), once per run: the timing cache's keys are made from it.

    Names are left out: TensorFlow numbers the functions it traces (loop and branch bodies) and the
    constants freezing creates with process-wide counters, so the same model traced twice in one process
    would otherwise never find its own timings. Nodes are named by their position in the graph
    (:func:`canonical_nodes`), functions by their order of first call (:func:`_canonical_functions`).
    """
    if run.model_digest is None:
        specs = [(s.name, tuple(s.shape), s.dtype) for s in captured.layout.specs]
        run.model_digest = graph_digest(captured.graph_def, specs)
    return run.model_digest


def graph_digest(graph_def: Any, specs: Sequence[object] = ()) -> str:
    """sha256 of ``graph_def``'s content and ``specs``, names left out (see :func:`model_digest`)."""
    digest = hashlib.sha256()
    nodes = canonical_nodes(graph_def)
    functions = _canonical_functions(graph_def)
    for node in graph_def.node:
        digest.update(f"{nodes[node.name]}|{node.op}|{node.device}|".encode())
        for text in node.input:
            control, name, port = text.startswith("^"), *_split_input(text.lstrip("^"))
            digest.update(f"{'^' if control else ''}{nodes.get(name, name)}{port},".encode())
        renamed = _renamed(node, functions)
        for key in sorted(renamed.attr):
            digest.update(key.encode())
            digest.update(renamed.attr[key].SerializeToString(deterministic=True))
    by_name = {f.signature.name: f for f in graph_def.library.function}
    for name in functions:  # in canonical order
        digest.update(_canonical_function(by_name[name], functions).SerializeToString(deterministic=True))
    digest.update(repr(list(specs)).encode())
    return digest.hexdigest()


def _canonical_function(function: Any, functions: Mapping[str, str]) -> Any:
    """A copy of ``function`` named canonically: itself and the functions it calls (``functions``), its
    arguments by position (``a0``, ``o0``) and its nodes by position (``n0``), each reference rewritten.

    TF names the arguments of the loop conditions and bodies it traces after the function's numbered name
    (``..._while_cond_239___redundant_placeholder0``): without this an LSTM traced twice in one process has
    two digests and never finds its own timings.
    """
    function = copy.deepcopy(function)
    signature = function.signature
    signature.name = functions.get(signature.name, signature.name)
    args = {arg.name: f"a{i}" for i, arg in enumerate(signature.input_arg)}
    outs = {arg.name: f"o{i}" for i, arg in enumerate(signature.output_arg)}
    nodes = {node.name: f"n{i}" for i, node in enumerate(function.node_def)}

    def ref(text: str) -> str:
        control = text.startswith("^")
        head, colon, tail = text.lstrip("^").partition(":")
        name = nodes.get(head, head) if colon or control else args.get(head, nodes.get(head, head))
        return f"{'^' if control else ''}{name}{colon}{tail}"

    for arg in signature.input_arg:
        arg.name = args[arg.name]
    for arg in signature.output_arg:
        arg.name = outs[arg.name]
    for node in function.node_def:
        node.CopyFrom(_renamed(node, functions))
        node.name = nodes[node.name]
        inputs = [ref(text) for text in node.input]
        del node.input[:]
        node.input.extend(inputs)
    ret = {outs.get(key, key): ref(value) for key, value in function.ret.items()}
    function.ret.clear()
    function.ret.update(ret)
    control = {nodes.get(key, key): nodes.get(value, value) for key, value in function.control_ret.items()}
    function.control_ret.clear()
    function.control_ret.update(control)
    signature.control_output[:] = [nodes.get(name, name) for name in signature.control_output]
    return function


def canonical_nodes(graph_def: Any) -> dict[str, str]:
    """Each node's name by its position in the graph (``n0``, ``n1``, ...): the same model's graph has
    the same order in every trace, whatever counters named its nodes.
    """
    return {node.name: f"n{i}" for i, node in enumerate(graph_def.node)}


def _split_input(text: str) -> tuple[str, str]:
    name, colon, port = text.partition(":")
    return name, f":{port}" if colon else ""


def _called(node: Any) -> list[str]:
    """The functions a NodeDef's attributes name (``f``, ``body``, ``then_branch``, lists of them)."""
    found = []
    for key in sorted(node.attr):
        value = node.attr[key]
        if value.HasField("func"):
            found.append(value.func.name)
        elif value.HasField("list"):
            found.extend(f.name for f in value.list.func)
    return found


def _canonical_functions(graph_def: Any) -> dict[str, str]:
    """Each library function's canonical name (``fn0``, ``fn1``, ...) by order of first call, graph first."""
    by_name = {f.signature.name: f for f in graph_def.library.function}
    names: dict[str, str] = {}
    pending = [name for node in graph_def.node for name in _called(node)]
    while pending:
        name = pending.pop(0)
        if name in names or name not in by_name:
            continue
        names[name] = f"fn{len(names)}"
        pending.extend(called for inner in by_name[name].node_def for called in _called(inner))
    for name in sorted(by_name):  # functions nothing calls still count, after the others
        names.setdefault(name, f"fn{len(names)}")
    return names


def _renamed(node: Any, names: Mapping[str, str]) -> Any:
    """``node``, or a copy whose function-valued attributes use the canonical names (Consts: never copied)."""
    if not _called(node):
        return node
    renamed = copy.deepcopy(node)
    for key in renamed.attr:
        value = renamed.attr[key]
        if value.HasField("func"):
            value.func.name = names.get(value.func.name, value.func.name)
        elif value.HasField("list"):
            for func in value.list.func:
                func.name = names.get(func.name, func.name)
    return renamed


def _keys(run: TraceRun, captured: CapturedFunction, cluster: Cluster) -> dict[str, TimingKey]:
    """The timing-cache key of each variant of ``cluster``: TF and every candidate backend.

    The subgraph's content is the model's (:func:`model_digest`) and which of its nodes it holds: its
    inputs' values and shapes, its weights and its ops all follow from those two.
    """
    content = hashlib.sha256(model_digest(run, captured).encode())
    names = canonical_nodes(captured.graph_def)
    content.update(json.dumps(sorted(names.get(n, n) for n in cluster.nodes)).encode())
    digest = content.hexdigest()
    machine = machine_key()
    cast = run.options.fp32_cast
    precision = "fp32" if cast == "none" else f"fp32-cast={cast}"
    if run.options.nan_semantics != "tensorflow":  # unguarded subgraphs are other (faster) programs
        precision += f" nan-semantics={run.options.nan_semantics}"
    keys = {"tf": TimingKey(digest, "tf", "fp32", machine, versions())}
    for backend in run.backends:
        keys[backend.name] = TimingKey(digest, backend.name, precision, machine, versions())
    return keys


def _untried(later: Sequence[str], winner: str, refused: Mapping[str, str]) -> dict[str, str]:
    """Why each backend after ``winner`` has no time: it refuses a node, or ``winner`` made it moot."""
    moot = f"not timed: {winner} (preferred) keeps it and ran it at least as fast as TF"
    return {name: refused.get(name, moot) for name in later}


def _beats_tf(samples: Mapping[str, list[float]], name: str) -> bool:
    """``name`` keeps the subgraph and is at least as fast as TF: later backends are not tried.

    Why stop there: the preferred backend then keeps the subgraph unless a later one is clearly faster
    than it, and compiling the alternatives (XLA compiles a large subgraph in seconds) to look for that
    would double the trace time for a gain the order of preference says is unlikely.
    """
    tf_estimate, backend = estimate(samples["tf"]), estimate(samples[name])
    return compare(tf_estimate, backend) is Verdict.KEEP and backend.ms <= tf_estimate.ms


def _from_cache(
    timings: TimingCache, keys: Mapping[str, TimingKey], order: Sequence[str], refused: Mapping[str, str]
) -> tuple[dict[str, list[float]], dict[str, str]] | None:
    """The samples a measurement would have taken, from the timing cache; None if any is missing."""
    found = timings.get(keys["tf"])
    if found is None:
        return None
    samples = {"tf": list(found)}
    failed: dict[str, str] = {}
    for position, name in enumerate(order):
        if name in refused:
            failed[name] = refused[name]
            continue
        found = timings.get(keys[name])
        if found is None:
            return None
        samples[name] = list(found)
        if _beats_tf(samples, name):
            failed.update(_untried(order[position + 1 :], name, refused))
            break
    return samples, failed


def _measure_cluster(
    run: TraceRun,
    placed: Placed,
    item: CompiledSubgraph,
    subgraph: SubgraphDef,
    inputs: Sequence[tf.Tensor],
    order: Sequence[str],
    refused: Mapping[str, str],
) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Samples of TF and of the backends in ``order``, stopping at the first that keeps the subgraph at
    TF's speed or better (:func:`_beats_tf`).
    """
    cluster = item.cluster
    failed: dict[str, str] = {}
    tf_call = tf_runner(subgraph, inputs)
    if not try_warm("tf", tf_call, failed):
        return {}, failed
    variants = {"tf": tf_call}
    samples: dict[str, list[float]] | None = None
    for position, name in enumerate(order):
        if name in refused:
            failed[name] = refused[name]
            continue
        try:
            candidate = (
                item if name == cluster.group else compile_cluster(run, placed, replace(cluster, group=name))
            )
        except SubgraphCompileError as err:
            failed[name] = f"compile failed: {err.message}"
            continue
        call = compiled_runner(subgraph, candidate, inputs)
        if not try_warm(name, call, failed):
            continue
        variants[name] = call
        samples = sample_until_settled(variants, samples)
        if _beats_tf(samples, name):
            failed.update(_untried(order[position + 1 :], name, refused))
            break
    if samples is None:  # no backend ran it: TF's time alone, for the report
        samples = sample(variants, lambda taken: True, min_samples=8)
    return samples, failed


def _measure(run: TraceRun, compiled: Compiled, timings: TimingCache) -> Compiled:
    placed = compiled.placed
    captured = placed.captured
    graph = captured.graph
    order = [b.name for b in run.backends]
    clusters = [item.cluster for item in compiled.subgraphs]
    values: dict[TensorRef, tf.Tensor] | None = None  # computed once, when a subgraph must be measured
    checked = False  # the machine is checked before the first measurement, then during each one
    busy: LoadReading | None = None
    decisions = dict(compiled.decisions)
    measurements: list[Measurement] = []
    static, cached = 0, 0
    for index, item in enumerate(compiled.subgraphs, 1):
        cluster = item.cluster
        keys = _keys(run, captured, cluster)
        refused = {}
        for name in order:
            missing = [placed.takes[name][n] for n in cluster.nodes if not placed.takes[name][n].accelerated]
            if missing:
                first_missing = missing[0]
                refused[name] = (
                    f"does not take node {first_missing.node!r} ({first_missing.op}): {first_missing.detail}"
                )
        source = "timing cache"
        found = _from_cache(timings, keys, order, refused)
        if found is None and not checked:
            checked = True
            first = probe()
            busy = first if first.busy else None
        if found is None and busy is not None:
            static += 1
            continue
        if found is None:
            progress.emit(
                "measuring", index, len(clusters), cluster.name, "+".join(order), len(cluster.nodes)
            )
            if values is None:
                values = dict(cluster_inputs(captured, run.examples_as_traced, clusters))
            inputs = [values[ref] for ref in cluster.inputs]
            subgraph = extract_subgraph(cluster, graph, captured.graph_def.library)
            monitor = LoadMonitor()
            samples, failed = _measure_cluster(run, placed, item, subgraph, inputs, order, refused)
            reading = monitor.reading()
            if reading.busy:
                busy = reading
                static += 1
                continue
            source = "measured"
            samples = {variant: list(TimingCache.as_stored(taken)) for variant, taken in samples.items()}
            for variant, taken in samples.items():
                timings.put(keys[variant], taken)
        else:
            samples, failed = found
            cached += 1
        estimates = {name: estimate(taken) for name, taken in samples.items()}
        if "tf" in estimates:
            chosen, why = choose(estimates["tf"], {k: v for k, v in estimates.items() if k != "tf"}, order)
        else:  # TF could not run the subgraph alone (never seen): keep the static choice, and say so
            chosen, why = (
                cluster.group,
                f"TF could not run it alone ({failed['tf']}); kept on {cluster.group}",
            )
        if source != "measured":
            why += f" ({source})"
        measurements.append(
            Measurement.of(cluster.name, cluster.effective_size, estimates, failed, chosen, why, source)
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
    run.busy = busy
    if busy is not None and static:
        from_cache = f", {cached} from the timing cache" if cached else ""
        run.note(
            NoteKind.PLACEMENT,
            f"machine busy: {static} of {len(clusters)} candidate subgraph(s) {BUSY_ADVICE} "
            f"({busy.describe()}{from_cache})",
        )
    if not measurements:
        return replace(compiled, placement="static")
    final = compile_stage(run, partition_stage(run, placed, decisions))
    return replace(final, placement="profile", measurements=tuple(measurements))
