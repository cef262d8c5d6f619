"""The assemble and verify stages: splice one call per compiled subgraph into the graph, then check it.

Verification is cheap insurance: the partitioner guarantees a cycle-free graph, and a graph with a cycle
between subgraphs would deadlock instead of failing, so it is checked on every trace, not only in debug
runs.
"""

from __future__ import annotations

from tfaccel.compiler.artefacts import Assembled, Compiled
from tfaccel.compiler.assemble import assemble, resources_of
from tfaccel.compiler.partition import contract, is_acyclic
from tfaccel.compiler.run import TraceRun
from tfaccel.errors import PartitionError

__all__ = ["assemble_stage", "verify_stage"]


def assemble_stage(run: TraceRun, compiled: Compiled) -> Assembled:
    """The outer graph with every cluster replaced by its call, and the resources the calls read."""
    captured = compiled.captured
    outer, outputs = assemble(captured.graph, captured.graph_def, list(compiled.subgraphs))
    return Assembled(compiled, outer, outputs, resources_of(list(compiled.subgraphs)))


def verify_stage(run: TraceRun, assembled: Assembled) -> Assembled:
    """Refuse to build a graph that would deadlock (see the module docstring)."""
    compiled = assembled.compiled
    if not is_acyclic(contract(compiled.captured.graph, [item.cluster for item in compiled.subgraphs])):
        raise PartitionError(
            "the partitioned graph has a cycle between subgraphs (a tfaccel bug: please report it with the "
            "--workdir artifacts and the model)"
        )
    return assembled
