"""Backends: a support query for placement and a compiler for subgraphs, behind one protocol.

A registry keyed by name keeps the rest of tfaccel free of backend-specific imports; the XLA backend is
registered lazily so that ``import tfaccel`` stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from tensorflow.core.framework import function_pb2, graph_pb2, node_def_pb2

from tfaccel.compiler.ir import Graph, Node
from tfaccel.compiler.partition import Cluster
from tfaccel.errors import OptionsError

if TYPE_CHECKING:
    from tfaccel.compiler.assemble import SubgraphDef

__all__ = [
    "Backend",
    "CompiledSubgraph",
    "SubgraphCompileError",
    "available_backends",
    "candidate_backends",
    "get_backend",
]


@dataclass(frozen=True)
class CompiledSubgraph:
    """A compiled cluster, ready to be spliced into the outer graph.

    ``call`` is the NodeDef that replaces the cluster's members (its name is the cluster's name, its
    outputs are ``cluster.outputs`` in order); ``functions`` must be added to the outer graph's library.
    ``artifacts`` maps a file name to the text or bytes the workdir keeps (e.g. the HLO). ``resources`` are
    ``(placeholder name, bytes)`` pairs the call reads as scalar string inputs (a compiled model too big,
    or too costly to re-hash, for a node attribute): the traced model feeds each from a string variable,
    so it is saved once as a SavedModel variable.
    """

    cluster: Cluster
    call: node_def_pb2.NodeDef
    functions: tuple[function_pb2.FunctionDef, ...]
    artifacts: dict[str, str | bytes] = field(default_factory=dict)
    resources: tuple[tuple[str, bytes], ...] = ()


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

    #: True when ``--fp32-cast`` is the compiler's job (then the captured graph is not rewritten)
    casts_in_compiler: bool
    #: grappler passes (``RewriterConfig`` field names) to skip when capturing for this backend: a pass
    #: whose rewrites the backend's frontend mishandles
    grappler_off: frozenset[str]
    #: True when compiled subgraphs accept unknown dimensions (``--dynamic-batch-size`` then traces one
    #: graph with an unknown batch instead of running chunks of the traced batch)
    dynamic_shapes: bool
    #: string/resource/variant dtypes a subgraph may hold inside (never at its boundary)
    internal_dtypes: frozenset[str]
    #: sentences for the placement report's fallbacks: what the backend cannot do as asked on this machine
    #: (logged when the backend is made; never a silent downgrade)
    notes: tuple[str, ...]

    def support_for(self, graph: Graph, graph_def: graph_pb2.GraphDef) -> Backend:
        """The backend ready to answer ``supports`` for nodes of this graph (a backend whose support
        query looks at the whole graph runs it here).
        """
        ...

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


def _make_xla(fp32_cast: str) -> Backend:
    from tfaccel.backends.xla import XlaBackend

    return XlaBackend()


def _make_openvino(fp32_cast: str) -> Backend:
    from tfaccel.backends.openvino import OpenVinoBackend

    return OpenVinoBackend(fp32_cast)


_FACTORIES: dict[str, Callable[[str], Backend]] = {"openvino": _make_openvino, "xla": _make_xla}

#: ``--backend=auto`` (the default): the first of these that is available
AUTO_ORDER = ("openvino", "xla")


def available_backends() -> tuple[str, ...]:
    return tuple(sorted(_FACTORIES))


def resolve_auto() -> tuple[str, str | None]:
    """What ``--backend=auto`` means here: ``openvino`` when its op library loads, else ``xla`` and why."""
    from tfaccel import native

    library = native.load()
    if library.available:
        return "openvino", None
    return "xla", f"the openvino backend is unavailable ({library.error}); using xla"


def get_backend(name: str, fp32_cast: str = "none") -> Backend:
    """The backend called ``name``; an unknown name is an :class:`OptionsError` listing the known ones."""
    if name not in _FACTORIES:
        raise OptionsError(
            f"unknown backend {name!r}; available backends: auto, {', '.join(available_backends())}"
        )
    return _FACTORIES[name](fp32_cast)


def candidate_backends(name: str, fp32_cast: str = "none") -> tuple[list[Backend], list[str]]:
    """The backends one trace may use, in order of preference, and sentences on what was left out.

    ``auto`` means every available backend (openvino first, then xla): static placement gives each node
    to the first one that takes it, profiled placement times each subgraph on each. A named backend is
    the only candidate. With ``--fp32-cast`` only the first available backend is a candidate: openvino
    casts inside its compiler while xla needs the captured graph rewritten, and one capture cannot serve
    both.
    """
    if name != "auto":
        backend = get_backend(name, fp32_cast)
        return [backend], list(backend.notes)
    names = list(AUTO_ORDER)
    notes: list[str] = []
    first, why_not = resolve_auto()
    if why_not:
        notes.append(why_not)
        names = [first]
    elif fp32_cast != "none" and len(names) > 1:
        notes.append(
            f"--fp32-cast={fp32_cast}: only {names[0]} is a candidate backend ({names[0]} casts in its "
            f"compiler, {', '.join(names[1:])} would need a differently captured graph)"
        )
        names = names[:1]
    backends = [get_backend(n, fp32_cast) for n in names]
    return backends, [*notes, *(note for b in backends for note in b.notes)]
