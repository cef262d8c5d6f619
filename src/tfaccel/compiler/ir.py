"""A small, typed graph model of a frozen inference graph.

Why a separate IR: placement and partitioning are graph algorithms that must be testable on thousands of
random graphs in milliseconds, without TensorFlow. The capture stage converts a ``GraphDef`` into this
model once; every later decision is made here, and only the assembly stage goes back to ``GraphDef``.

This module must never import TensorFlow. A node keeps its original ``NodeDef`` as an opaque
``payload`` so that the assembly stage can rebuild the graph without a second source of truth.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from tfaccel.compiler.opclasses import UNCOUNTED_OPS
from tfaccel.errors import PartitionError

__all__ = [
    "Graph",
    "IRError",
    "Node",
    "TensorInfo",
    "TensorRef",
]


class IRError(PartitionError, ValueError):
    """The graph breaks an invariant of the IR; the message says which node and how to fix it."""


@dataclass(frozen=True, order=True)
class TensorRef:
    """Output ``port`` of node ``node`` (what TensorFlow writes as ``"node:port"``)."""

    node: str
    port: int = 0

    def __str__(self) -> str:
        return f"{self.node}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> TensorRef:
        """Parse ``"name"`` or ``"name:3"`` (a GraphDef data input, never a ``^control`` input)."""
        if text.startswith("^"):
            raise IRError(f"{text!r} is a control input, not a tensor reference")
        name, sep, port = text.rpartition(":")
        if sep and port.isdigit():
            return cls(name, int(port))
        return cls(text, 0)


@dataclass(frozen=True)
class TensorInfo:
    """Static facts about one output tensor: dtype name (``"float32"``) and shape (``None`` = unknown
    rank, ``None`` inside the tuple = unknown dimension).
    """

    dtype: str
    shape: tuple[int | None, ...] | None

    @property
    def fully_defined(self) -> bool:
        return self.shape is not None and all(d is not None for d in self.shape)


@dataclass(frozen=True)
class Node:
    """One operation. ``inputs`` are data edges in port order; ``control_inputs`` are node names."""

    name: str
    op: str
    inputs: tuple[TensorRef, ...] = ()
    control_inputs: tuple[str, ...] = ()
    outputs: tuple[TensorInfo, ...] = ()
    payload: object = field(default=None, compare=False, repr=False)

    @property
    def counted(self) -> bool:
        """True when the node does real work (it counts in ratios and subgraph sizes; ``UNCOUNTED_OPS``)."""
        return self.op not in UNCOUNTED_OPS


class Graph:
    """An immutable directed acyclic graph of :class:`Node` with named inputs and outputs.

    ``inputs`` are the Placeholder node names in signature order; ``outputs`` the tensors the caller gets
    back, in flattened output order. Node order is the order given (the GraphDef's), which makes every
    traversal below deterministic.
    """

    def __init__(
        self,
        nodes: Iterable[Node],
        inputs: Iterable[str] = (),
        outputs: Iterable[TensorRef] = (),
    ) -> None:
        self._nodes: dict[str, Node] = {}
        for node in nodes:
            if node.name in self._nodes:
                raise IRError(f"duplicate node name {node.name!r}: node names must be unique")
            self._nodes[node.name] = node
        self.inputs: tuple[str, ...] = tuple(inputs)
        self.outputs: tuple[TensorRef, ...] = tuple(outputs)
        self._index = {name: i for i, name in enumerate(self._nodes)}
        self._consumers: dict[str, list[str]] | None = None
        self._topo: tuple[str, ...] | None = None

    # -- access -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self._nodes.values())

    def __contains__(self, name: object) -> bool:
        return name in self._nodes

    def __getitem__(self, name: str) -> Node:
        try:
            return self._nodes[name]
        except KeyError:
            raise IRError(f"no node named {name!r} in the graph") from None

    @property
    def nodes(self) -> Mapping[str, Node]:
        return self._nodes

    def index(self, name: str) -> int:
        """Position of the node in the original order (used to break ties deterministically)."""
        return self._index[name]

    def predecessors(self, name: str) -> list[str]:
        """Distinct producer nodes of data and control inputs, in input order."""
        node = self[name]
        seen: dict[str, None] = {}
        for ref in node.inputs:
            seen.setdefault(ref.node, None)
        for ctl in node.control_inputs:
            seen.setdefault(ctl, None)
        return list(seen)

    def consumers(self, name: str) -> list[str]:
        """Distinct nodes that read any output of ``name`` (data or control), in graph order."""
        if self._consumers is None:
            table: dict[str, list[str]] = {n: [] for n in self._nodes}
            for node in self._nodes.values():
                for pred in self.predecessors(node.name):
                    if pred in table:
                        table[pred].append(node.name)
            self._consumers = table
        return list(self._consumers[name])

    def topological_order(self) -> tuple[str, ...]:
        """Kahn's algorithm; among ready nodes the one earliest in the original order goes first."""
        if self._topo is None:
            import heapq

            indegree = {n: len(self.predecessors(n)) for n in self._nodes}
            ready = [self._index[n] for n, d in indegree.items() if d == 0]
            heapq.heapify(ready)
            names = list(self._nodes)
            order: list[str] = []
            while ready:
                name = names[heapq.heappop(ready)]
                order.append(name)
                for succ in self.consumers(name):
                    indegree[succ] -= 1
                    if indegree[succ] == 0:
                        heapq.heappush(ready, self._index[succ])
            if len(order) != len(self._nodes):
                stuck = sorted(n for n, d in indegree.items() if d > 0)[:5]
                raise IRError(
                    f"the graph has a cycle through {stuck}; an inference graph must be acyclic "
                    "(control-flow loops belong inside While ops, not as back edges)"
                )
            self._topo = tuple(order)
        return self._topo

    def lint(self) -> None:
        """Check the invariants every pass relies on; raise :class:`IRError` naming the first problem."""
        for node in self._nodes.values():
            for ref in node.inputs:
                if ref.node not in self._nodes:
                    raise IRError(
                        f"node {node.name!r} reads {ref} but no node {ref.node!r} exists; "
                        "was the GraphDef pruned without its inputs?"
                    )
                producer = self._nodes[ref.node]
                if producer.outputs and not 0 <= ref.port < len(producer.outputs):
                    raise IRError(
                        f"node {node.name!r} reads {ref} but {ref.node!r} has only "
                        f"{len(producer.outputs)} outputs"
                    )
            for ctl in node.control_inputs:
                if ctl not in self._nodes:
                    raise IRError(f"node {node.name!r} has control input ^{ctl} that does not exist")
        for name in self.inputs:
            if name not in self._nodes:
                raise IRError(f"graph input {name!r} is not a node of the graph")
        for ref in self.outputs:
            if ref.node not in self._nodes:
                raise IRError(f"graph output {ref} is produced by no node")
        self.topological_order()
