"""Placement: one decision, with a reason, for every node of the optimized graph.

Why decisions carry reasons: users judge a compiler by whether it tells them what ran where and why. The
report, ``summary()`` and the low-ratio warning are all rendered from these records, so a node can never
be on the runtime "for no reason". Policies are small functions composed in order; the first one that has
an opinion decides (the shape of torch.fx's composable operator-support checks).

This module must not import TensorFlow: backends answer support questions through :class:`SupportQuery`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from tfaccel.compiler.ir import Graph, Node
from tfaccel.compiler.partition import Cluster

__all__ = [
    "COMPUTE_HEAVY_OPS",
    "Decision",
    "Placement",
    "Reason",
    "SupportQuery",
    "decide",
    "decide_across",
    "STRUCTURAL_RUNTIME_OPS",
    "UNPLACEABLE_DTYPES",
    "boundary_violations",
]

#: Tensors of these dtypes cannot live inside a compiled subgraph (the design's rule for every backend).
UNPLACEABLE_DTYPES = frozenset({"string", "resource", "variant"})

#: Ops that always stay where they are: graph inputs, pure ordering nodes and constants (which are copied
#: into each subgraph that reads them instead of being placed).
STRUCTURAL_RUNTIME_OPS = frozenset({"Placeholder", "NoOp", "Const"})


#: Ops whose arithmetic outweighs a subgraph call even when alone: a subgraph holding one is never dropped
#: for being small (the seed's single Dense layer compiles).
COMPUTE_HEAVY_OPS = frozenset(
    {
        "MatMul",
        "BatchMatMul",
        "BatchMatMulV2",
        "BatchMatMulV3",
        "Einsum",
        "Conv2D",
        "Conv3D",
        "Conv2DBackpropInput",
        "Conv3DBackpropInputV2",
        "DepthwiseConv2dNative",
    }
)


class Placement(enum.Enum):
    """Where a node runs."""

    ACCELERATOR = "accelerator"
    RUNTIME = "runtime"


class Reason(enum.Enum):
    """Why a node went where it did (a closed set, so reports can group and count them)."""

    SUPPORTED = "supported by the backend"
    STRUCTURAL = "graph input, constant or ordering node"
    DTYPE = "dtype the backend cannot hold"
    UNKNOWN_SHAPE = "unknown shape"
    UNSUPPORTED = "not supported by the backend"
    SLOWER = "slower on the backend than on TensorFlow"
    MEASURED = "measured faster on the backend than on TensorFlow"
    CALLBACK_TRUE = "subgraph_builder_function returned True"
    CALLBACK_FALSE = "subgraph_builder_function returned False"
    SMALL_SUBGRAPH = "subgraph below the minimum size"
    COMPILE_FAILURE = "compilation failed"


@dataclass(frozen=True)
class Decision:
    """Where one node goes, on which backend, and why (``detail`` is the human sentence)."""

    node: str
    op: str
    placement: Placement
    reason: Reason
    detail: str
    backend: str | None = None

    @property
    def accelerated(self) -> bool:
        return self.placement is Placement.ACCELERATOR

    def to_runtime(self, reason: Reason, detail: str) -> Decision:
        return replace(self, placement=Placement.RUNTIME, reason=reason, detail=detail, backend=None)


class SupportQuery(Protocol):
    """What placement needs from a backend: its name and a yes/no with a reason for one node."""

    @property
    def name(self) -> str: ...

    #: True when the backend compiles tensors of unknown dimensions (then such nodes are not refused)
    dynamic_shapes: bool
    #: dtypes of :data:`UNPLACEABLE_DTYPES` the backend can hold *inside* a subgraph (e.g. XLA compiles a
    #: TensorList loop whole); they still never cross a subgraph's boundary (the partitioner's caller
    #: enforces that with :func:`boundary_violations`)
    internal_dtypes: frozenset[str]

    def supports(self, node: Node) -> tuple[bool, str]: ...

    def avoids(self, node: Node) -> str | None: ...


Callback = Callable[[Node], bool]


def decide(graph: Graph, backend: SupportQuery, callback: Callback | None = None) -> dict[str, Decision]:
    """Decide every node. Without ``callback`` the backend's support answer decides (automatic placement);
    with one, the callback decides and the backend can only refuse what it cannot run at all.
    """
    decisions: dict[str, Decision] = {}
    for node in graph:
        input_dtypes = {graph[ref.node].outputs[ref.port].dtype for ref in node.inputs if ref.node in graph}
        decisions[node.name] = _decide_one(node, backend, callback, input_dtypes)
    return decisions


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


def _decide_one(
    node: Node, backend: SupportQuery, callback: Callback | None, input_dtypes: set[str]
) -> Decision:
    runtime = Placement.RUNTIME
    if node.op in STRUCTURAL_RUNTIME_OPS:
        what = {"Placeholder": "a graph input", "NoOp": "an ordering node", "Const": "a constant"}[node.op]
        detail = f"{node.op} is {what}" + (
            ", copied into each subgraph that reads it" if node.op == "Const" else ""
        )
        return Decision(node.name, node.op, runtime, Reason.STRUCTURAL, detail)
    chosen_by_user = False
    if callback is not None:
        if not callback(node):
            return Decision(
                node.name, node.op, runtime, Reason.CALLBACK_FALSE, "subgraph_builder_function returned False"
            )
        chosen_by_user = True
    prefix = "subgraph_builder_function returned True, but " if chosen_by_user else ""
    unplaceable = UNPLACEABLE_DTYPES - backend.internal_dtypes
    bad_dtypes = sorted({t.dtype for t in node.outputs if t.dtype in unplaceable})
    if bad_dtypes:
        detail = f"{prefix}its output dtype {', '.join(bad_dtypes)} cannot be held by a compiled subgraph"
        return Decision(node.name, node.op, runtime, Reason.DTYPE, detail)
    # such a tensor comes from a node that stays on the runtime, so it would have to enter the subgraph
    bad_inputs = sorted(input_dtypes & unplaceable)
    if bad_inputs:
        detail = f"{prefix}its input dtype {', '.join(bad_inputs)} cannot enter a compiled subgraph"
        return Decision(node.name, node.op, runtime, Reason.DTYPE, detail)
    unknown = [i for i, t in enumerate(node.outputs) if not t.fully_defined]
    if unknown and not backend.dynamic_shapes:
        detail = (
            f"{prefix}output {unknown[0]} has an unknown (data-dependent) shape, "
            f"which {backend.name} cannot compile"
        )
        return Decision(node.name, node.op, runtime, Reason.UNKNOWN_SHAPE, detail)
    ok, why = backend.supports(node)
    if not ok:
        return Decision(node.name, node.op, runtime, Reason.UNSUPPORTED, prefix + why)
    if not chosen_by_user and (slower := backend.avoids(node)) is not None:
        return Decision(node.name, node.op, runtime, Reason.SLOWER, slower)
    if chosen_by_user:
        return Decision(
            node.name,
            node.op,
            Placement.ACCELERATOR,
            Reason.CALLBACK_TRUE,
            "subgraph_builder_function returned True",
            backend.name,
        )
    return Decision(node.name, node.op, Placement.ACCELERATOR, Reason.SUPPORTED, why, backend.name)


def reasons_summary(decisions: Mapping[str, Decision], limit: int = 3) -> str:
    """The most common reasons ops stayed on the runtime, e.g. ``"12 x not supported by the backend (Foo)"``.

    Structural nodes and Identity are left out: they are never worth mentioning.
    """
    groups: dict[Reason, list[Decision]] = {}
    for d in decisions.values():
        if not d.accelerated and d.reason is not Reason.STRUCTURAL and d.op not in ("Identity", "IdentityN"):
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
