"""The backend contract: what a backend is given (:class:`SubgraphDef`), what it answers (:class:`Call` inside
a :class:`CompiledSubgraph`, or :class:`SubgraphCompileError`), and the :class:`Backend` protocol itself.

Why one module: the compiler's stages and the backends meet only here. A backend says *what* runs in place
of a cluster (an op or a library function, its attributes, the functions and resources it needs) and never
builds graph nodes: :mod:`tfaccel.compiler.assemble` alone turns a :class:`Call` into the node spliced into
the outer graph, so the splicing conventions (the call is named after its cluster, output ``k`` is
``cluster.outputs[k]``, resources are read before the cluster's inputs) live in one place. This module
imports only the compiler's TF-free IR besides TensorFlow's protos, so a backend and ``assemble`` can both
import it without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeAlias

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import attr_value_pb2, function_pb2, graph_pb2

from tfaccel.compiler.ir import Graph, Node, TensorInfo
from tfaccel.compiler.partition import Cluster

__all__ = [
    "AttrLike",
    "Backend",
    "BackendSettings",
    "Call",
    "QuantizeOutcome",
    "CompiledSubgraph",
    "SubgraphCompileError",
    "SubgraphDef",
    "input_placeholder",
]

_Scalar: TypeAlias = bool | int | float | str | bytes | tf.DType | tf.TensorShape
#: an attribute value as a backend gives it: a plain value, a list of them, or an ``AttrValue`` proto
#: (str -> ``s``, bool -> ``b``, ``tf.TensorShape`` -> ``shape``, a list -> ``list``, ...)
AttrLike: TypeAlias = _Scalar | Sequence[_Scalar] | attr_value_pb2.AttrValue


def input_placeholder(index: int) -> str:
    """The name of the Placeholder that carries a cluster's input ``index`` in its :class:`SubgraphDef`."""
    return f"tfaccel_in_{index}"


@dataclass(frozen=True)
class SubgraphDef:
    """What a backend compiles: one cluster as a self-contained graph, Placeholders in, named tensors out.

    Input ``i`` is the Placeholder :func:`input_placeholder` ``(i)`` and reads ``cluster.inputs[i]``;
    ``outputs[k]`` (a tensor name inside ``graph_def``) is ``cluster.outputs[k]``.
    """

    cluster: Cluster
    graph_def: graph_pb2.GraphDef
    input_infos: tuple[TensorInfo, ...]
    outputs: tuple[str, ...]  # tensor names inside ``graph_def``, in ``cluster.outputs`` order
    output_infos: tuple[TensorInfo, ...]
    stateful: bool

    @property
    def name(self) -> str:
        return self.cluster.name

    def input_specs(self) -> list[tf.TensorSpec]:
        return [
            tf.TensorSpec(info.shape, tf.as_dtype(info.dtype), name=input_placeholder(i))
            for i, info in enumerate(self.input_infos)
        ]


@dataclass(frozen=True)
class Call:
    """What runs in place of a compiled cluster: exactly one of ``op`` (an op type) or ``function`` (a
    function of the compiled subgraph's ``functions``, run by ``PartitionedCall``, or by
    ``StatefulPartitionedCall`` when ``stateful``).

    ``attrs`` are the op's own attributes; ``assemble`` adds ``Tin``/``Tout`` (the dtypes of the cluster's
    inputs and outputs, which every call takes) and, for a function, ``f``. The call reads the compiled
    subgraph's resources first, then the cluster's inputs in order.
    """

    op: str | None = None
    function: str | None = None
    stateful: bool = False
    attrs: Mapping[str, AttrLike] = field(default_factory=dict)
    #: attributes that differ when the call is timed alone for placement: placement compares one call's
    #: time with TF's, so a setting made for many concurrent callers (OpenVINO's execution streams, which
    #: give each call a share of the cores) is timed as for one caller
    measured_attrs: Mapping[str, AttrLike] = field(default_factory=dict)

    def for_measuring(self) -> Call:
        """The call as placement times it (``attrs`` updated by ``measured_attrs``)."""
        if not self.measured_attrs:
            return self
        return replace(self, attrs={**self.attrs, **self.measured_attrs}, measured_attrs={})

    def __post_init__(self) -> None:
        if (self.op is None) == (self.function is None):
            raise ValueError(
                f"a Call names exactly one of op= and function=, got op={self.op!r}, "
                f"function={self.function!r}"
            )
        reserved = {"Tin", "Tout", *(("f",) if self.function is not None else ())} & set(self.attrs)
        if reserved:
            raise ValueError(f"Call attrs {sorted(reserved)} are set by assemble, not by a backend")


@dataclass(frozen=True)
class CompiledSubgraph:
    """A compiled cluster: what to call in its place, and what the call needs.

    ``functions`` must be added to the outer graph's library. ``resources`` are ``(placeholder name,
    bytes)`` pairs the call reads as scalar string inputs (a compiled model too big, or too costly to
    re-hash, for a node attribute): the traced model feeds each from a string variable, so it is saved
    once as a SavedModel variable. ``artifacts`` maps a file name to the text or bytes the workdir keeps
    (e.g. the HLO). Nothing here depends on the cluster's name, so a compilation cached for one cluster
    serves an identical cluster under another name (:meth:`for_cluster`).
    """

    cluster: Cluster
    call: Call
    functions: tuple[function_pb2.FunctionDef, ...] = ()
    artifacts: dict[str, str | bytes] = field(default_factory=dict)
    resources: tuple[tuple[str, bytes], ...] = ()

    def for_cluster(self, cluster: Cluster) -> CompiledSubgraph:
        """The same compilation in place of ``cluster`` (identical contents under another name)."""
        return self if cluster == self.cluster else replace(self, cluster=cluster)


@dataclass(frozen=True)
class BackendSettings:
    """What a trace's options ask of every backend it makes (derived from ``TraceOptions`` in one place,
    :meth:`tfaccel.compiler.run.TraceRun.start`); a backend ignores what has no meaning for it.
    """

    #: ``--fp32-cast``: ``none``, ``matmult`` or ``all``
    fp32_cast: str = "none"
    #: the openvino op's ``streams`` (``TraceOptions.openvino_streams``): 1 latency, N or 0 throughput
    streams: int = 1
    #: ``--nan-semantics=tensorflow``: the backend's NaN-losing ops are guarded so NaN and infinity give
    #: TF's answers (:mod:`tfaccel.backends.openvino_semantics`); False for ``relaxed``
    nan_guards: bool = True


@dataclass(frozen=True)
class QuantizeOutcome:
    """What quantizing one compiled subgraph gave: the subgraph to run (quantized or as it was) and the
    report's sentence saying which and why.
    """

    item: CompiledSubgraph
    quantized: bool
    sentence: str


class SubgraphCompileError(Exception):
    """The backend's compiler rejected a subgraph; ``node`` names the culprit when the compiler said.

    ``message`` is one line for the report; ``log`` is everything the compiler said (often the cause is
    lines below the first), kept in the ``--workdir`` folder of the failed subgraph.
    """

    def __init__(self, cluster: str, message: str, node: str | None = None, log: str = "") -> None:
        super().__init__(f"{cluster}: {message}")
        self.cluster = cluster
        self.message = message
        self.node = node
        self.log = log or message


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

    def quantize(
        self,
        item: CompiledSubgraph,
        subgraph: SubgraphDef,
        calibration: Sequence[Sequence[np.ndarray]],
        held_out: Sequence[Sequence[np.ndarray]],
        tolerance: float,
    ) -> QuantizeOutcome:
        """``item`` (compiled from ``subgraph``) in int8 (``--quantize=int8``), calibrated on
        ``calibration`` (each one call's inputs, in the cluster's input order) and kept only if its error on
        ``held_out`` is at most ``tolerance``; otherwise ``item`` unchanged, with the reason. A backend that
        does not quantize says so.
        """
        ...

    def compile(self, subgraph: SubgraphDef, artifacts: bool = False) -> CompiledSubgraph:
        """Compile one extracted subgraph, or raise :class:`SubgraphCompileError`.

        With ``artifacts`` the result carries the compiler's IR, options and log for ``--workdir``.
        """
        ...
