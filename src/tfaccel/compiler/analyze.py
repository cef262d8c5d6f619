"""``analyze_model``: which ops of a model the backends can take, and why not, without compiling anything.

Why it exists: before a long trace (or before rewriting a model to suit the accelerator) a user wants to
know what will stay on TensorFlow. The answer comes from the first three stages of ``trace``'s pipeline
(capture, optimize, place: the same options, graph and support rules), so the two can never disagree;
only partitioning (the minimum subgraph size), compilation and measured placement are left out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from tfaccel.compiler.artefacts import Placed
from tfaccel.compiler.options import resolve_options
from tfaccel.compiler.pipeline import run_stages, stages_through
from tfaccel.compiler.run import NoteKind, TraceRun

__all__ = ["analyze_model", "render"]


def analyze_model(
    func: Callable[..., Any],
    example_inputs: Any,
    print_fn: Callable[[str], Any] | None = print,
    **options: Any,
) -> dict[str, Any]:
    """Analyze ``func`` on ``example_inputs`` (the calling conventions of ``trace``) and print a summary.

    Returns the reference's keys: ``percent_supported`` (0-100), ``supported_count`` and ``total_count``
    (op instances, counted as ``on_neuron_ratio`` counts them: Placeholder, Const, Identity and NoOp
    left out), ``supported_operators`` and ``unsupported_operators`` (op types; a type is unsupported when
    any of its instances is), ``operators`` (every op type) and ``operator_count`` (instances per type).
    Also ``unsupported``: per unsupported op type, the reasons and the node names; ``backends``: per
    supported op type, the backends that take it; and ``candidate_backends``. ``print_fn=None`` prints
    nothing. Options are ``trace``'s (``backend``, ``fp32_cast``, ...), from the same flags.

    Example::

        import tfaccel as tfn
        results = tfn.analyze_model(model, tf.random.uniform([1, 3]))
        print(results["percent_supported"], results["unsupported_operators"])
    """
    resolved = resolve_options(options)
    ignored = None
    if resolved.quantize != "none":  # placement does not depend on it; it would only ask for calibration
        ignored = (
            f"--quantize={resolved.quantize} ({resolved.sources.get('quantize', 'keyword')}) is ignored: "
            "analyze_model places the ops and quantizes nothing"
        )
        resolved = replace(resolved, quantize="none")
    run = TraceRun.start(func, example_inputs, resolved)
    if ignored is not None:
        run.note(NoteKind.OPTIONS, ignored, log=False)
    placed: Placed = run_stages(run, stages_through("batch"))  # as trace runs them
    graph, decisions, backends = placed.captured.graph, placed.decisions, run.backends
    counted = [node for node in graph if node.counted]
    operator_count = Counter(node.op for node in counted)
    unsupported: dict[str, dict[str, list[str]]] = {}
    placed_on: dict[str, set[str]] = {}
    supported_count = 0
    for node in counted:
        decision = decisions[node.name]
        if decision.accelerated:
            supported_count += 1
            placed_on.setdefault(node.op, set()).add(decision.backend or "")
            continue
        entry = unsupported.setdefault(node.op, {"reasons": [], "nodes": []})
        if decision.detail not in entry["reasons"]:
            entry["reasons"].append(decision.detail)
        entry["nodes"].append(node.name)
    total = len(counted)
    results: dict[str, Any] = {
        "percent_supported": 100.0 * supported_count / total if total else 0.0,
        "supported_count": supported_count,
        "total_count": total,
        "supported_operators": sorted(set(operator_count) - set(unsupported)),
        "unsupported_operators": sorted(unsupported),
        "operators": sorted(operator_count),
        "operator_count": dict(sorted(operator_count.items())),
        "unsupported": {op: unsupported[op] for op in sorted(unsupported)},
        "backends": {op: sorted(names) for op, names in sorted(placed_on.items())},
        "candidate_backends": [b.name for b in backends],
        "notes": run.notes,
    }
    if print_fn is not None:
        render(results, print_fn)
    return results


def render(results: dict[str, Any], print_fn: Callable[[str], Any] = print, max_nodes: int = 3) -> None:
    """Print an ``analyze_model`` result as a table: op types, counts, where each would run or why not."""
    total = results["total_count"]
    print_fn(
        f"tfaccel analyze_model ({'+'.join(results['candidate_backends'])}): "
        f"{results['supported_count']}/{total} ops supported ({results['percent_supported']:.1f}%), "
        f"{len(results['operators'])} op types"
    )
    if not total:
        print_fn("  the graph has no op that computes (only inputs, constants and identities)")
    for op, count in sorted(results["operator_count"].items(), key=lambda kv: (-kv[1], kv[0])):
        if op in results["unsupported"]:
            entry = results["unsupported"][op]
            nodes = entry["nodes"]
            shown = ", ".join(nodes[:max_nodes]) + (
                f" (+{len(nodes) - max_nodes} more)" if len(nodes) > max_nodes else ""
            )
            print_fn(f"  {op:<24} x{count:<5} NOT SUPPORTED x{len(nodes)}: {entry['reasons'][0]}")
            for reason in entry["reasons"][1:]:
                print_fn(f"  {'':<31} also: {reason}")
            print_fn(f"  {'':<31} nodes: {shown}")
        else:
            print_fn(f"  {op:<24} x{count:<5} supported ({', '.join(results['backends'].get(op, []))})")
    for note in results["notes"]:
        print_fn(f"  note: {note}")
