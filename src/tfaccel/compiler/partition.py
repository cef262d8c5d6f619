"""Group the nodes proposed for acceleration into subgraphs without creating cycles.

Why this pass exists: each accelerator subgraph is later replaced by one opaque op. That op can only run
once *all* of its inputs exist, so if some path leaves a subgraph, passes through the runtime and comes back
in, the rebuilt graph would wait on itself. Merging two neighbouring groups is therefore safe only when no
other path joins them; this module decides merges with that rule and describes every resulting cluster's
boundary (inputs, outputs, control edges, copied constants) so that the assembly stage need not re-derive it.

This module is TensorFlow-free on purpose: it is exercised on thousands of random graphs in the tests.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from tfaccel.compiler.ir import Graph, IRError, Node, TensorRef
from tfaccel.compiler.opclasses import CONSTANT_OPS, GRAPH_INPUT_OPS

__all__ = ["Cluster", "PartitionResult", "contract", "is_acyclic", "partition"]

#: Cluster names are ``_CLUSTER_PREFIX + index``; the index follows the topological order of first members.
_CLUSTER_PREFIX = "tfaccel_sg_"

_MAX_NAMES_IN_REASON = 8


@dataclass(frozen=True)
class Cluster:
    """One accelerator subgraph and its boundary, everything the assembly stage needs to cut it out."""

    name: str
    group: str
    nodes: tuple[str, ...]
    consts: tuple[str, ...]
    inputs: tuple[TensorRef, ...]
    outputs: tuple[TensorRef, ...]
    control_inputs: tuple[str, ...]
    control_outputs: tuple[str, ...]
    forced: bool
    effective_size: int


@dataclass(frozen=True)
class PartitionResult:
    """The kept clusters, plus a reason for every assigned node that ended in none (for the report)."""

    clusters: tuple[Cluster, ...]
    rejected: Mapping[str, str]


def _is_copyable_const(node: Node, graph: Graph) -> bool:
    """A Const without data inputs can be duplicated freely: it costs nothing to rebuild, so every cluster
    gets its own copy instead of a tensor crossing the boundary (and XLA sees a compile-time constant).

    Control inputs from graph inputs do not stop the copy: inlining a function (e.g. a SavedModel
    signature) gives its constants a control edge from the Placeholders, which orders nothing, since a
    fed input is always available. Any other control input may order real work, so such a Const stays.
    """
    return (
        node.op in CONSTANT_OPS
        and not node.inputs
        and all(c in graph and graph[c].op in GRAPH_INPUT_OPS for c in node.control_inputs)
    )


class _DynamicOrder:
    """A DAG over integer ids that keeps a topological rank per live id while edges are added and contracted.

    Why: "would merging a and b create a cycle?" is "is b reachable from a without the direct edge?".
    Answered by a plain traversal it costs O(graph) per merge, quadratic on long chains. With a maintained
    order (Pearce & Kelly, 2006; the scheme XLA's GraphCycles uses), a path a->b can only visit ids ranked
    between a and b, so searches stay inside that window, and an inserted edge that goes against the order
    only renumbers the ids inside the window it violates.
    """

    def __init__(self, size: int) -> None:
        self.rank = list(range(size))
        self.succ: list[set[int]] = [set() for _ in range(size)]
        self.pred: list[set[int]] = [set() for _ in range(size)]

    def add_edge(self, x: int, y: int) -> None:
        if x == y or y in self.succ[x]:
            return
        self.succ[x].add(y)
        self.pred[y].add(x)
        if self.rank[x] > self.rank[y]:
            self._reorder(x, y)

    def _window(self, start: int, edges: list[set[int]], low: int, high: int) -> list[int]:
        """Ids reachable from ``start`` along ``edges`` without leaving the rank window [low, high]."""
        rank = self.rank
        seen = {start}
        stack = [start]
        found = []
        while stack:
            v = stack.pop()
            found.append(v)
            for w in edges[v]:
                if w not in seen and low <= rank[w] <= high:
                    seen.add(w)
                    stack.append(w)
        return found

    def _reorder(self, x: int, y: int) -> None:
        """Restore the order after inserting x->y with rank[x] > rank[y]: everything that reaches x inside
        the window moves before everything y reaches, reusing the same set of rank slots.
        """
        low, high = self.rank[y], self.rank[x]
        ahead = self._window(y, self.succ, low, high)
        if x in ahead:
            raise IRError("internal error: partition tried to insert an edge that closes a cycle")
        behind = self._window(x, self.pred, low, high)
        ahead.sort(key=self.rank.__getitem__)
        behind.sort(key=self.rank.__getitem__)
        slots = sorted(self.rank[v] for v in ahead + behind)
        for v, slot in zip(behind + ahead, slots, strict=True):
            self.rank[v] = slot

    def _steps(self, start: int, target: int, edges: list[set[int]], low: int, high: int) -> Iterator[bool]:
        """Search from ``start`` for ``target`` through ids ranked strictly inside (low, high), one edge per
        step: yields True once found, False after every other edge, and stops when the window is exhausted.
        """
        rank = self.rank
        seen = {start}
        stack = [start]
        while stack:
            for w in edges[stack.pop()]:
                if w == target:
                    yield True
                    return
                if w not in seen and low < rank[w] < high:
                    seen.add(w)
                    stack.append(w)
                yield False

    def reachable(self, a: int, b: int) -> bool:
        """Is there a path a->...->b? Searched forwards from a and backwards from b in lockstep, because
        either search alone answers, and one side is often far cheaper: a hub feeding thousands of nodes is
        expensive to expand forwards, while the node trying to join it usually has only a few inputs.
        """
        if a == b:
            return True
        low, high = self.rank[a], self.rank[b]
        if low > high:
            return False
        forward = self._steps(a, b, self.succ, low, high)
        backward = self._steps(b, a, self.pred, low, high)
        while True:
            for search in (forward, backward):
                found = next(search, None)
                if found is None:  # this side exhausted its window without meeting the other end
                    return False
                if found:
                    return True

    def contract(self, a: int, b: int) -> int | None:
        """Merge the ends of edge a->b into one id and return it, or return None (graph unchanged) when
        another path a->...->b exists, because the merged id would then lie on a cycle.
        """
        self.succ[a].discard(b)
        self.pred[b].discard(a)
        if self.reachable(a, b):
            self.succ[a].add(b)
            self.pred[b].add(a)
            return None
        if len(self.succ[b]) + len(self.pred[b]) > len(self.succ[a]) + len(self.pred[a]):
            a, b = b, a  # move the smaller edge set: amortised O(E log E) edge moves over all merges
        outs, ins = self.succ[b], self.pred[b]
        self.succ[b], self.pred[b] = set(), set()
        for y in outs:
            self.pred[y].discard(b)
        for y in ins:
            self.succ[y].discard(b)
        for y in outs:
            self.add_edge(a, y)
        for y in ins:
            self.add_edge(y, a)
        return a


def _check_assignment(graph: Graph, assignment: Mapping[str, str]) -> None:
    for name in assignment:
        if name not in graph:
            raise IRError(f"assignment names {name!r}, which is not a node of the graph")
        op = graph[name].op
        if op in GRAPH_INPUT_OPS | CONSTANT_OPS:
            raise IRError(
                f"node {name!r} is a {op} and cannot be assigned to a backend: placeholders are fed by "
                "the runtime and constants are copied into every cluster that reads them"
            )


def _cluster_nodes(
    graph: Graph, assignment: Mapping[str, str], position: Mapping[str, int]
) -> list[list[str]]:
    """Maximal merges along same-group edges, tried in a fixed order so the result is reproducible."""
    order = graph.topological_order()
    dag = _DynamicOrder(len(order))
    for name in order:
        for pred in graph.predecessors(name):
            dag.add_edge(position[pred], position[name])  # already in order: no renumbering happens here
    parent = list(range(len(order)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for name in order:
        group = assignment.get(name)
        if group is None:
            continue
        for pred in graph.predecessors(name):
            if assignment.get(pred) != group:
                continue
            a, b = find(position[pred]), find(position[name])
            if a != b and (survivor := dag.contract(a, b)) is not None:
                parent[a] = parent[b] = survivor
    members: dict[int, list[str]] = {}
    for name in order:
        if name in assignment:
            members.setdefault(find(position[name]), []).append(name)
    return list(members.values())


def _rejection_reason(members: Sequence[str], name: str, size: int, min_size: int) -> str:
    reason = (
        f"subgraph of {size} op{'' if size == 1 else 's'} is below the minimum size {min_size} "
        "and has no compute-heavy op"
    )
    others = [m for m in members if m != name]
    if not others:
        return reason
    shown = ", ".join(others[:_MAX_NAMES_IN_REASON])
    if len(others) > _MAX_NAMES_IN_REASON:
        shown += f" and {len(others) - _MAX_NAMES_IN_REASON} more"
    return f"{reason} (merged with: {shown})"


def _describe(
    graph: Graph,
    kept: Sequence[Sequence[str]],
    assignment: Mapping[str, str],
    position: Mapping[str, int],
    forced: bool,
) -> tuple[Cluster, ...]:
    """Compute every cluster's boundary; consumers are found in one pass over the graph, not per cluster."""
    owner = {m: i for i, members in enumerate(kept) for m in members}
    outputs: list[set[TensorRef]] = [set() for _ in kept]
    control_outputs: list[set[str]] = [set() for _ in kept]
    for node in graph:
        here = owner.get(node.name)
        for ref in node.inputs:
            there = owner.get(ref.node)
            if there is not None and there != here:
                outputs[there].add(ref)
        for ctl in node.control_inputs:
            there = owner.get(ctl)
            if there is not None and there != here:
                control_outputs[there].add(node.name)
    for ref in graph.outputs:
        there = owner.get(ref.node)
        if there is not None:
            outputs[there].add(ref)

    by_position = position.__getitem__
    clusters = []
    for i, members in enumerate(kept):
        member_set = set(members)
        consts: dict[str, None] = {}
        inputs: dict[TensorRef, None] = {}
        for m in members:
            for ref in graph[m].inputs:
                if ref.node in member_set:
                    continue
                if _is_copyable_const(graph[ref.node], graph):
                    consts.setdefault(ref.node)
                else:
                    inputs.setdefault(ref)
        control_inputs = {
            ctl
            for m in members
            for ctl in graph[m].control_inputs
            if ctl not in member_set and ctl not in consts  # the copy makes the edge pointless
        }
        clusters.append(
            Cluster(
                name=f"{_CLUSTER_PREFIX}{i}",
                group=assignment[members[0]],
                nodes=tuple(members),
                consts=tuple(sorted(consts, key=by_position)),
                inputs=tuple(inputs),
                outputs=tuple(sorted(outputs[i], key=lambda r: (position[r.node], r.port))),
                control_inputs=tuple(sorted(control_inputs, key=by_position)),
                control_outputs=tuple(sorted(control_outputs[i], key=by_position)),
                forced=forced,
                effective_size=sum(graph[m].counted for m in members),
            )
        )
    return tuple(clusters)


def partition(
    graph: Graph,
    assignment: Mapping[str, str],
    *,
    min_size: int = 2,
    forced: bool = False,
    anchor_ops: frozenset[str] = frozenset(),
) -> PartitionResult:
    """Cluster the nodes of ``assignment`` (node name -> backend) into cycle-free subgraphs.

    Nodes are merged across every data or control edge whose two ends share a group, unless another path
    joins them. Unless ``forced``, clusters with fewer than ``min_size`` counted ops are dropped, because a
    tiny subgraph costs more in boundary transfers than it saves; their nodes are listed in ``rejected``.
    A cluster holding one of ``anchor_ops`` (compute-heavy ops such as MatMul) is kept whatever its size:
    its arithmetic, not the call overhead, dominates.
    """
    graph.lint()
    _check_assignment(graph, assignment)
    position = {name: i for i, name in enumerate(graph.topological_order())}
    kept: list[list[str]] = []
    rejected: dict[str, str] = {}
    for members in _cluster_nodes(graph, assignment, position):
        size = sum(graph[m].counted for m in members)
        if forced or size >= min_size or any(graph[m].op in anchor_ops for m in members):
            kept.append(members)
        else:
            for m in members:
                rejected[m] = _rejection_reason(members, m, size, min_size)
    return PartitionResult(
        clusters=_describe(graph, kept, assignment, position, forced),
        rejected=MappingProxyType(dict(sorted(rejected.items(), key=lambda item: position[item[0]]))),
    )


def contract(graph: Graph, clusters: Sequence[Cluster]) -> dict[str, list[str]]:
    """The graph seen by the runtime once every cluster is one op: unit -> distinct successor units.

    A unit is a cluster name, or the node name of a non-member. Units are listed in the topological order
    of their first node, successors in order of first discovery. Edges from a Const a cluster copies into
    that cluster are left out, since the rebuilt cluster does not read the original Const.
    """
    unit_of: dict[str, str] = {}
    copied: dict[str, frozenset[str]] = {}
    for cluster in clusters:
        copied[cluster.name] = frozenset(cluster.consts)
        for m in cluster.nodes:
            if m not in graph:
                raise IRError(f"cluster {cluster.name!r} lists {m!r}, which is not a node of the graph")
            if m in unit_of:
                raise IRError(f"node {m!r} is a member of both {unit_of[m]!r} and {cluster.name!r}")
            unit_of[m] = cluster.name
    for name in copied:
        if name in graph and name not in unit_of:
            raise IRError(f"cluster name {name!r} collides with a node of the graph")
    order = graph.topological_order()
    adjacency: dict[str, dict[str, None]] = {}
    for name in order:
        adjacency.setdefault(unit_of.get(name, name), {})
    for name in order:
        unit = unit_of.get(name, name)
        consts = copied.get(unit, frozenset())
        for pred in graph.predecessors(name):
            source = unit_of.get(pred, pred)
            if source != unit and pred not in consts:
                adjacency[source].setdefault(unit)
    return {unit: list(successors) for unit, successors in adjacency.items()}


def is_acyclic(adjacency: Mapping[str, Sequence[str]]) -> bool:
    """Kahn's algorithm; a successor that is not a key counts as a unit without successors."""
    indegree = dict.fromkeys(adjacency, 0)
    for successors in adjacency.values():
        for v in successors:
            indegree[v] = indegree.get(v, 0) + 1
    ready = [u for u, d in indegree.items() if d == 0]
    visited = 0
    while ready:
        u = ready.pop()
        visited += 1
        for v in adjacency.get(u, ()):
            indegree[v] -= 1
            if indegree[v] == 0:
                ready.append(v)
    return visited == len(indegree)
