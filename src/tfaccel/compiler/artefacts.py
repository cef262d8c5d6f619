"""The typed artefacts the pipeline's stages pass along (see :mod:`tfaccel.compiler.pipeline`).

Why explicit types: each stage states what it takes and what it gives, so a stage can be run and tested
alone, a debug run can check the contract between two stages, and a new option adds a field where its
stage is, not a parameter threaded through ``trace``. Each artefact carries what later stages still need
(an immutable record: a stage returns a new one, it never edits its input).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tfaccel.compiler.capture import CapturedFunction
from tfaccel.compiler.partition import Cluster
from tfaccel.compiler.placement import Decision
from tfaccel.compiler.selection import Measurement

if TYPE_CHECKING:
    from tensorflow.core.framework import graph_pb2

    from tfaccel.backends.base import CompiledSubgraph

__all__ = ["Assembled", "Compiled", "Partitioned", "Placed"]


@dataclass(frozen=True)
class Placed:
    """The place stage's artefact: one decision per node, and each candidate backend's own decisions."""

    captured: CapturedFunction
    decisions: dict[str, Decision]
    #: per backend name, that backend's decision for every node (what it would take, or why not)
    takes: dict[str, dict[str, Decision]]


@dataclass(frozen=True)
class Partitioned:
    """The partition stage's artefact: cycle-free clusters of accelerated nodes, each on one backend.

    ``decisions`` are the placed ones updated with what partitioning sent back to TF (subgraphs below the
    minimum size, ends of string/resource tensors that would cross a subgraph's boundary).
    """

    placed: Placed
    decisions: dict[str, Decision]
    clusters: tuple[Cluster, ...]


@dataclass(frozen=True)
class Compiled:
    """The compile stage's artefact (and the measure and split stages'): the compiled subgraphs.

    ``decisions`` include compile fallbacks and measured choices; ``placement`` is the placement mode
    that actually decided (``profile`` or ``static``), with the measurements behind it.
    """

    placed: Placed
    decisions: dict[str, Decision]
    subgraphs: tuple[CompiledSubgraph, ...]
    placement: str = "static"
    measurements: tuple[Measurement, ...] = ()
    profile_seconds: float | None = None

    @property
    def captured(self) -> CapturedFunction:
        return self.placed.captured


@dataclass(frozen=True)
class Assembled:
    """The assemble stage's artefact: the outer graph with one call per compiled subgraph spliced in."""

    compiled: Compiled
    graph_def: graph_pb2.GraphDef
    outputs: tuple[str, ...]
    #: compiled models the backends' ops read, by placeholder name (fed from string variables)
    resources: dict[str, bytes]
