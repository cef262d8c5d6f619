"""Backends: a support query for placement and a compiler for subgraphs, behind one protocol.

A registry keyed by name keeps the rest of tfaccel free of backend-specific imports; the XLA backend is
registered lazily so that ``import tfaccel`` stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from tensorflow.core.framework import function_pb2, node_def_pb2

from tfaccel.errors import OptionsError
from tfaccel.ir import Node
from tfaccel.partition import Cluster

if TYPE_CHECKING:
    from tfaccel.assemble import SubgraphDef

__all__ = ["Backend", "CompiledSubgraph", "SubgraphCompileError", "available_backends", "get_backend"]


@dataclass(frozen=True)
class CompiledSubgraph:
    """A compiled cluster, ready to be spliced into the outer graph.

    ``call`` is the NodeDef that replaces the cluster's members (its name is the cluster's name, its
    outputs are ``cluster.outputs`` in order); ``functions`` must be added to the outer graph's library.
    ``artifacts`` maps a file name to text the workdir keeps (e.g. the HLO).
    """

    cluster: Cluster
    call: node_def_pb2.NodeDef
    functions: tuple[function_pb2.FunctionDef, ...]
    artifacts: dict[str, str] = field(default_factory=dict)


class SubgraphCompileError(Exception):
    """The backend's compiler rejected a subgraph; ``node`` names the culprit when the compiler said."""

    def __init__(self, cluster: str, message: str, node: str | None = None) -> None:
        super().__init__(f"{cluster}: {message}")
        self.cluster = cluster
        self.message = message
        self.node = node


class Backend(Protocol):
    """What trace needs from an accelerator backend."""

    @property
    def name(self) -> str: ...

    def supports(self, node: Node) -> tuple[bool, str]:
        """Can this node run on the backend? ``(False, why)`` says why not, in a user's words."""
        ...

    def avoids(self, node: Node) -> str | None:
        """A reason to keep a supported node on TF under automatic placement (it runs slower here)."""
        ...

    def compile(self, subgraph: SubgraphDef, artifacts: bool = False) -> CompiledSubgraph:
        """Compile one extracted subgraph, or raise :class:`SubgraphCompileError`.

        With ``artifacts`` the result carries the compiler's IR, options and log for ``--workdir``.
        """
        ...


def _make_xla() -> Backend:
    from tfaccel.backends.xla import XlaBackend

    return XlaBackend()


_FACTORIES: dict[str, Callable[[], Backend]] = {"xla": _make_xla}
_INSTANCES: dict[str, Backend] = {}


def available_backends() -> tuple[str, ...]:
    return tuple(sorted(_FACTORIES))


def get_backend(name: str) -> Backend:
    """The backend called ``name``; an unknown name is an :class:`OptionsError` listing the known ones."""
    if name not in _FACTORIES:
        raise OptionsError(f"unknown backend {name!r}; available backends: {', '.join(available_backends())}")
    if name not in _INSTANCES:
        _INSTANCES[name] = _FACTORIES[name]()
    return _INSTANCES[name]
