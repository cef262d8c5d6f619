"""``--neuroncore-pipeline-cores=N``: cut each compiled subgraph into N stages of balanced cost.

Why contiguous ranges of the topological order: a range of a topological order of a convex subgraph is
itself convex (a path between two of its nodes only visits nodes ordered between them), so every stage can
be compiled alone and the stages never wait on each other in a cycle. Cost is estimated from static shapes
(multiply-adds for matmuls and convolutions, output elements otherwise), which is what dominates on CPU.

TF-free: this works on the IR only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tfaccel.compiler.ir import Graph, Node
from tfaccel.compiler.opclasses import CONV_OPS, MATMUL_OPS

__all__ = ["node_cost", "split_balanced"]


def _elements(shape: tuple[int | None, ...] | None) -> int:
    if shape is None:
        return 1
    return math.prod(d or 1 for d in shape)


def node_cost(graph: Graph, node: Node) -> int:
    """Estimated work of one node: multiply-adds for matmuls and convolutions, else output elements."""
    if not node.counted:
        return 0
    out = _elements(node.outputs[0].shape) if node.outputs else 1
    if node.op in MATMUL_OPS and node.inputs:
        lhs = graph[node.inputs[0].node].outputs[node.inputs[0].port].shape
        return out * (lhs[-1] or 1 if lhs else 1)
    if node.op in CONV_OPS and len(node.inputs) > 1:
        kernel = graph[node.inputs[1].node].outputs[node.inputs[1].port].shape
        return out * (_elements(kernel[:-1]) if kernel else 1)
    return out


def split_balanced(graph: Graph, nodes: Sequence[str], stages: int) -> list[list[str]]:
    """Cut ``nodes`` (in topological order) into at most ``stages`` contiguous, non-empty ranges whose
    estimated costs are as equal as a greedy cut at the running-sum quantiles makes them.

    A cut only falls between a range that has work and a node that has work: a stage of free ops only
    (an ``Identity`` after the last matmul) would be a call that computes nothing.
    """
    costs = [node_cost(graph, graph[n]) for n in nodes]
    total = sum(costs)
    if stages <= 1 or len(nodes) <= 1 or total == 0:
        return [list(nodes)]
    ranges: list[list[str]] = [[]]
    running = 0
    range_cost = 0
    for name, cost in zip(nodes, costs, strict=True):
        boundary = total * len(ranges) / stages
        if range_cost and cost and running + cost / 2 > boundary and len(ranges) < stages:
            ranges.append([])
            range_cost = 0
        ranges[-1].append(name)
        running += cost
        range_cost += cost
    return ranges
