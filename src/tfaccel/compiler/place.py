"""The place stage: every node of the optimized graph gets a decision, with a reason.

The rules themselves are TF-free (:mod:`tfaccel.compiler.placement` and its support rules); this stage asks
each candidate backend about this graph and adapts the user's ``subgraph_builder_function(NodeDef)`` to the
graph's nodes, with clear errors when the callback misbehaves.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np

from tfaccel.compiler.artefacts import Placed
from tfaccel.compiler.capture import CapturedFunction
from tfaccel.compiler.ir import Node
from tfaccel.compiler.placement import decide_across
from tfaccel.compiler.run import TraceRun
from tfaccel.errors import CaptureTypeError, TraceError

__all__ = ["node_callback", "place_stage"]


def place_stage(run: TraceRun, captured: CapturedFunction) -> Placed:
    """Decide every node across the run's backends (the first that takes a node gets it)."""
    run.callback = node_callback(run.user_callback)
    queries = [b.support_for(captured.graph, captured.graph_def) for b in run.backends]
    decisions, takes = decide_across(captured.graph, queries, run.callback)
    return Placed(captured, decisions, takes)


def node_callback(user_fn: Callable[[Any], bool] | None) -> Callable[[Node], bool] | None:
    """Adapt the user's ``subgraph_builder_function(NodeDef)`` to IR nodes, with clear errors."""
    if user_fn is None:
        return None
    if not callable(user_fn):
        raise CaptureTypeError(
            f"subgraph_builder_function must be callable (NodeDef -> bool), got {type(user_fn).__name__}"
        )

    def callback(node: Node) -> bool:
        try:
            result = user_fn(copy.deepcopy(node.payload))  # a callback must not edit the traced graph
        except Exception as err:
            raise TraceError(
                f"subgraph_builder_function raised {type(err).__name__} on node {node.name!r} "
                f"(op {node.op}): {err}"
            ) from err
        if not isinstance(result, (bool, np.bool_)):
            raise CaptureTypeError(
                f"subgraph_builder_function must return True or False; it returned {result!r} "
                f"({type(result).__name__}) for node {node.name!r} (op {node.op})"
            )
        return bool(result)

    return callback
