"""Support rules: small policies that each look at one node and decide its placement, or have no opinion.

Why rules rather than one function: what keeps a node off a backend comes from different places (the
graph's structure, the user's ``subgraph_builder_function``, dtypes no subgraph may hold, shapes the
backend cannot compile, its kernels, what is known to run slower on it), and which of them apply depends
on the backend and the options. As an ordered chain of rules (the shape of torch.fx's composable
``operator_support`` checks, with a third answer, "no opinion"), each policy is a few lines that can be
read and tested alone, and :func:`chain_for` says in one place which apply when. The first rule with an
opinion decides; a node no rule refuses is accepted by the chain's last rule, which always decides.

A rule is any callable ``rule(facts) -> Decision | None``: :class:`NodeFacts` holds the node, the
backend's :class:`SupportQuery` and the dtypes the node reads. Whether the user chose the node is known
when the chain is built: past the callback's rule, every node is one the callback returned True for.

Not here: the measured-speed decision of ``--placement=profile``. It compares timed subgraphs, not nodes,
so it is :func:`tfaccel.compiler.selection.choose`, which the pipeline applies to the subgraphs these
rules produced.

This module must not import TensorFlow: backends answer support questions through :class:`SupportQuery`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Protocol

from tfaccel.compiler.ir import Node
from tfaccel.compiler.opclasses import (
    CONSTANT_OPS,
    GRAPH_INPUT_OPS,
    ORDERING_OPS,
    UNPLACEABLE_DTYPES,
)

__all__ = [
    "Accept",
    "BackendKernels",
    "Callback",
    "Decision",
    "NodeFacts",
    "Placement",
    "Reason",
    "Rule",
    "SupportChain",
    "SupportQuery",
    "UnknownShapes",
    "UnplaceableDtypes",
    "UserCallback",
    "chain_for",
    "known_slower",
    "structural",
]


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
    SLOWER = "kept on TF for speed: it compiles, but TF runs it faster"
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
    """What placement needs from a backend: its name, two capabilities and a yes/no with a reason for one
    node.
    """

    @property
    def name(self) -> str: ...

    #: True when the backend compiles tensors of unknown dimensions (then such nodes are not refused)
    dynamic_shapes: bool
    #: dtypes of :data:`~tfaccel.compiler.opclasses.UNPLACEABLE_DTYPES` the backend can hold *inside* a
    #: subgraph (e.g. XLA compiles a TensorList loop whole); they still never cross a subgraph's boundary
    #: (the partitioner's caller enforces that with ``placement.boundary_violations``)
    internal_dtypes: frozenset[str]

    def supports(self, node: Node) -> tuple[bool, str]: ...

    def avoids(self, node: Node) -> str | None: ...


#: ``subgraph_builder_function`` as placement sees it: True to compile the node, False to keep it on TF
Callback = Callable[[Node], bool]


@dataclass(frozen=True)
class NodeFacts:
    """What the rules may look at for one node: the node, the backend asked, and the dtypes it reads."""

    node: Node
    backend: SupportQuery
    input_dtypes: frozenset[str]

    @cached_property
    def kernel(self) -> tuple[bool, str]:
        """The backend's own answer, asked once (the kernel rule refuses with it, :class:`Accept` quotes
        it).
        """
        return self.backend.supports(self.node)

    def runtime(self, reason: Reason, detail: str) -> Decision:
        return Decision(self.node.name, self.node.op, Placement.RUNTIME, reason, detail)

    def accelerator(self, reason: Reason, detail: str) -> Decision:
        return Decision(
            self.node.name, self.node.op, Placement.ACCELERATOR, reason, detail, self.backend.name
        )


class Rule(Protocol):
    """A support policy: a decision for the node, or ``None`` when it has no opinion."""

    def __call__(self, facts: NodeFacts, /) -> Decision | None: ...


#: what each class of :data:`~tfaccel.compiler.opclasses.STRUCTURAL_OPS` is, in the report's words
_WHAT = ((GRAPH_INPUT_OPS, "a graph input"), (ORDERING_OPS, "an ordering node"), (CONSTANT_OPS, "a constant"))


def structural(facts: NodeFacts) -> Decision | None:
    """Graph inputs, ordering nodes and constants stay where they are, whoever asks otherwise."""
    op = facts.node.op
    for ops, what in _WHAT:
        if op in ops:
            copied = ", copied into each subgraph that reads it" if op in CONSTANT_OPS else ""
            return facts.runtime(Reason.STRUCTURAL, f"{op} is {what}{copied}")
    return None


def _but(chosen_by_user: bool) -> str:
    """How a refusal starts when the user's callback had chosen the node (so the report says who lost)."""
    return "subgraph_builder_function returned True, but " if chosen_by_user else ""


@dataclass(frozen=True)
class UserCallback:
    """The user's ``subgraph_builder_function``: False keeps the node on TF; True is no decision yet, since
    the backend may still be unable to run the node (the rules after this one say so).
    """

    callback: Callback

    def __call__(self, facts: NodeFacts) -> Decision | None:
        if self.callback(facts.node):
            return None
        return facts.runtime(Reason.CALLBACK_FALSE, "subgraph_builder_function returned False")


@dataclass(frozen=True)
class UnplaceableDtypes:
    """A node that outputs or reads a tensor of ``dtypes`` stays on TF: such a tensor cannot be held by a
    compiled subgraph, and one it reads comes from a node that stays on TF, so it would have to enter.
    """

    dtypes: frozenset[str]
    chosen_by_user: bool = False

    def __call__(self, facts: NodeFacts) -> Decision | None:
        bad = sorted({t.dtype for t in facts.node.outputs if t.dtype in self.dtypes})
        if bad:
            detail = f"its output dtype {', '.join(bad)} cannot be held by a compiled subgraph"
            return facts.runtime(Reason.DTYPE, _but(self.chosen_by_user) + detail)
        bad = sorted(facts.input_dtypes & self.dtypes)
        if bad:
            detail = f"its input dtype {', '.join(bad)} cannot enter a compiled subgraph"
            return facts.runtime(Reason.DTYPE, _but(self.chosen_by_user) + detail)
        return None


@dataclass(frozen=True)
class UnknownShapes:
    """A node with an output of unknown (data-dependent) dimensions stays on TF (for a backend that
    compiles static shapes only; :func:`chain_for` leaves the rule out for the others).
    """

    chosen_by_user: bool = False

    def __call__(self, facts: NodeFacts) -> Decision | None:
        unknown = [i for i, t in enumerate(facts.node.outputs) if not t.fully_defined]
        if not unknown:
            return None
        detail = (
            f"output {unknown[0]} has an unknown (data-dependent) shape, "
            f"which {facts.backend.name} cannot compile"
        )
        return facts.runtime(Reason.UNKNOWN_SHAPE, _but(self.chosen_by_user) + detail)


@dataclass(frozen=True)
class BackendKernels:
    """The backend's own answer: a node it cannot run stays on TF, with the backend's sentence."""

    chosen_by_user: bool = False

    def __call__(self, facts: NodeFacts) -> Decision | None:
        ok, why = facts.kernel
        return None if ok else facts.runtime(Reason.UNSUPPORTED, _but(self.chosen_by_user) + why)


def known_slower(facts: NodeFacts) -> Decision | None:
    """A supported node the backend knows it runs slower than TF stays on TF (automatic placement only:
    a user's callback may still choose it).
    """
    slower = facts.backend.avoids(facts.node)
    return None if slower is None else facts.runtime(Reason.SLOWER, slower)


@dataclass(frozen=True)
class Accept:
    """The chain's last rule, which always decides: the node goes to the backend. Chosen by the user, the
    reason is the callback; otherwise the backend's sentence of support.
    """

    chosen_by_user: bool = False

    def __call__(self, facts: NodeFacts) -> Decision:
        if self.chosen_by_user:
            return facts.accelerator(Reason.CALLBACK_TRUE, "subgraph_builder_function returned True")
        return facts.accelerator(Reason.SUPPORTED, facts.kernel[1])


@dataclass(frozen=True)
class SupportChain:
    """Rules asked in order; the first decision wins, and ``accept`` decides when no rule had an opinion."""

    rules: tuple[Rule, ...]
    accept: Accept

    def decide(self, facts: NodeFacts) -> Decision:
        for rule in self.rules:
            decision = rule(facts)
            if decision is not None:
                return decision
        return self.accept(facts)

    def with_rule(self, rule: Rule, before: int) -> SupportChain:
        """A copy of the chain that asks ``rule`` just before the rule now at position ``before``
        (``len(rules)`` puts it last, just before ``accept``).
        """
        return replace(self, rules=(*self.rules[:before], rule, *self.rules[before:]))

    @property
    def names(self) -> tuple[str, ...]:
        """The rules' names in order, ``accept`` last (what a log or a test shows of the chain)."""
        return tuple(_name(rule) for rule in (*self.rules, self.accept))


def _name(rule: object) -> str:
    return getattr(rule, "__name__", None) or type(rule).__name__


def chain_for(backend: SupportQuery, callback: Callback | None = None) -> SupportChain:
    """The rules that decide for ``backend``, in order.

    Without ``callback`` the backend's support decides (automatic placement), and what it knows to run
    slower stays on TF. With one, the callback decides and the backend can only refuse what it cannot run
    at all (so no known-slower rule). A backend that compiles unknown dimensions gets no shape rule, and
    the dtypes it can hold inside a subgraph are left out of the dtype rule.
    """
    chosen = callback is not None
    rules: list[Rule] = [structural]
    if callback is not None:
        rules.append(UserCallback(callback))
    rules.append(UnplaceableDtypes(UNPLACEABLE_DTYPES - backend.internal_dtypes, chosen))
    # the backend's own refusal first: an op it has no kernel for is "unsupported" whatever its shape (a
    # shape reason would send the user to fix shapes that would not help)
    rules.append(BackendKernels(chosen))
    if not backend.dynamic_shapes:
        rules.append(UnknownShapes(chosen))
    if not chosen:
        rules.append(known_slower)
    return SupportChain(tuple(rules), Accept(chosen))
