"""Placement: one decision, with a reason, for every node of the optimized graph.

Why decisions carry reasons: users judge a compiler by whether it tells them what ran where and why. The
report, ``summary()`` and the low-ratio warning are all rendered from these records, so a node can never
be on the runtime "for no reason". The decisions come from a chain of small rules, assembled per backend
and options (:mod:`tfaccel.compiler.support`); the measured-speed choice of ``--placement=profile`` is made
later, per subgraph (:mod:`tfaccel.compiler.selection`).

This module must not import TensorFlow: backends answer support questions through :class:`SupportQuery`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from tfaccel.compiler.ir import Graph, Node
from tfaccel.compiler.opclasses import (
    DATAFLOW_CONTROL_OPS,
    DATAFLOW_MERGE_OPS,
    FORWARDING_OPS,
    UNPLACEABLE_DTYPES,
)
from tfaccel.compiler.partition import Cluster
from tfaccel.compiler.support import (
    Callback,
    Decision,
    NodeFacts,
    Placement,
    Reason,
    SupportQuery,
    chain_for,
)

__all__ = [
    # the stage's vocabulary, defined with the rules that produce it
    "Decision",
    "Placement",
    "Reason",
    "SupportQuery",
    "LoweredControlFlow",
    "boundary_violations",
    "decide",
    "decide_across",
    "lowered_branches",
    "reasons_summary",
]


def decide(graph: Graph, backend: SupportQuery, callback: Callback | None = None) -> dict[str, Decision]:
    """Decide every node. Without ``callback`` the backend's support answer decides (automatic placement);
    with one, the callback decides and the backend can only refuse what it cannot run at all.
    """
    chain = chain_for(backend, callback)
    branches = lowered_branches(graph)
    if branches:
        chain = chain.with_rule(LoweredControlFlow(branches), before=1)
    decisions: dict[str, Decision] = {}
    for node in graph:
        dtypes = frozenset(graph[r.node].outputs[r.port].dtype for r in node.inputs if r.node in graph)
        decisions[node.name] = chain.decide(NodeFacts(node, backend, dtypes))
    return decisions


def lowered_branches(graph: Graph) -> frozenset[str]:
    """The nodes of TensorFlow's lowered control flow and of the branches between them: every node
    reachable from a switch (or a loop's ``Enter``) before the ``Merge``/``Exit`` that ends its region,
    those included. They may receive dead tensors, which only TF's executor handles.
    """
    starts = [n.name for n in graph if n.op in DATAFLOW_CONTROL_OPS]
    if not starts:
        return frozenset()
    consumers: dict[str, list[str]] = {}
    for node in graph:
        for ref in node.inputs:
            consumers.setdefault(ref.node, []).append(node.name)
        for name in node.control_inputs:
            consumers.setdefault(name, []).append(node.name)
    found = set(starts)
    stack = [n for n in starts if graph[n].op not in DATAFLOW_MERGE_OPS]
    while stack:
        for after in consumers.get(stack.pop(), ()):
            if after not in found:
                found.add(after)
                if graph[after].op not in DATAFLOW_MERGE_OPS:
                    stack.append(after)
    return frozenset(found)


@dataclass(frozen=True)
class LoweredControlFlow:
    """Nodes of lowered control flow (:func:`lowered_branches`) stay on TF, whoever asks otherwise."""

    nodes: frozenset[str]

    def __call__(self, facts: NodeFacts) -> Decision | None:
        if facts.node.name not in self.nodes:
            return None
        what = "is" if facts.node.op in DATAFLOW_CONTROL_OPS else "runs inside"
        return facts.runtime(
            Reason.UNSUPPORTED,
            f"{what} TensorFlow's lowered control flow (Switch/Merge): a branch not taken gets dead tensors, "
            "which only TensorFlow's executor handles",
        )


def decide_across(
    graph: Graph, backends: Sequence[SupportQuery], callback: Callback | None = None
) -> tuple[dict[str, Decision], dict[str, dict[str, Decision]]]:
    """Decide every node for several backends at once: a node goes to the first backend, in the order
    given (the order of preference), that takes it.

    Returns the merged decisions and, per backend name, that backend's own decision for every node
    (profiled placement uses them to know on which backends a subgraph could run, or why not). A node
    no backend takes keeps the first backend's reason, with the others' reasons added when they differ.
    ``callback`` is asked once per node, however many backends there are.
    """
    if callback is not None:
        answers: dict[str, bool] = {}
        user_callback = callback

        def once(node: Node) -> bool:
            if node.name not in answers:
                answers[node.name] = user_callback(node)
            return answers[node.name]

        callback = once
    each = [decide(graph, backend, callback) for backend in backends]
    by_backend = {backend.name: per for backend, per in zip(backends, each, strict=True)}
    merged: dict[str, Decision] = {}
    for name, first in each[0].items():
        options = [per[name] for per in each]
        chosen = next((d for d in options if d.accelerated), None)
        if chosen is None:
            details = list(dict.fromkeys(d.detail for d in options))
            if len(details) > 1:
                named = [f"{b.name}: {d.detail}" for b, d in zip(backends, options, strict=True)]
                chosen = replace(first, detail="; ".join(named))
            else:
                chosen = first
        elif chosen is not options[0] and options[0].reason is not Reason.STRUCTURAL:
            chosen = replace(
                chosen,
                detail=f"{chosen.detail} (on {chosen.backend}; {backends[0].name}: {options[0].detail})",
            )
        merged[name] = chosen
    return merged, by_backend


def reasons_summary(decisions: Mapping[str, Decision], limit: int = 3) -> str:
    """The most common reasons ops stayed on the runtime, e.g. ``"12 x not supported by the backend (Foo)"``.

    Structural nodes and Identity are left out: they are never worth mentioning.
    """
    groups: dict[Reason, list[Decision]] = {}
    for d in decisions.values():
        if not d.accelerated and d.reason is not Reason.STRUCTURAL and d.op not in FORWARDING_OPS:
            groups.setdefault(d.reason, []).append(d)
    ranked = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0].value))[:limit]
    parts = []
    for reason, items in ranked:
        ops = sorted({d.op for d in items})
        shown = ", ".join(ops[:4]) + (", ..." if len(ops) > 4 else "")
        parts.append(f"{len(items)} x {reason.value} ({shown})")
    return "; ".join(parts) if parts else "no op was refused"


def boundary_violations(graph: Graph, clusters: Sequence[Cluster]) -> dict[str, str]:
    """Nodes that would pass a string, resource or variant tensor across a subgraph's boundary, each with
    the sentence saying so: the consumer inside when such a tensor comes in, the producer inside when one
    goes out. A backend may hold such a tensor inside a subgraph (``internal_dtypes``), never at its edge.
    """
    moved: dict[str, str] = {}
    for cluster in clusters:
        members = set(cluster.nodes)
        for name in cluster.nodes:
            for ref in graph[name].inputs:
                dtype = graph[ref.node].outputs[ref.port].dtype
                if ref.node not in members and dtype in UNPLACEABLE_DTYPES:
                    moved.setdefault(
                        name, f"it reads the {dtype} tensor {ref} from outside its subgraph ({cluster.name})"
                    )
        for ref in cluster.outputs:
            dtype = graph[ref.node].outputs[ref.port].dtype
            if dtype in UNPLACEABLE_DTYPES:
                moved.setdefault(
                    ref.node, f"its {dtype} output {ref} is read outside its subgraph ({cluster.name})"
                )
    return moved
