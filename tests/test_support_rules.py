"""The support rules as data: (node, backend capabilities, callback answer) -> (placement, reason, detail).

Each row builds a two-node IR graph (a Placeholder feeding the node under test) and asks placement's own
``decide``, so the rows pin the order of the rules (callback False beats dtype, structural beats the
callback, the known-slower rule is skipped when the user chose the node) and their exact sentences, which
the report shows. ``TableBackend`` is a SupportQuery whose answers come from a table: the protocol itself,
no TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from tfaccel.compiler import opclasses
from tfaccel.compiler.ir import Graph, Node, TensorInfo, TensorRef
from tfaccel.compiler.placement import Placement, Reason, decide
from tfaccel.compiler.support import (
    BackendKernels,
    Decision,
    NodeFacts,
    SupportChain,
    UnknownShapes,
    chain_for,
)

ACC, TF = Placement.ACCELERATOR, Placement.RUNTIME
KNOWN = (2, 3)
UNKNOWN = (None, 3)


@dataclass
class TableBackend:
    """A SupportQuery answering from tables: ``unsupported`` and ``slow`` map an op to the backend's
    sentence; every question is recorded."""

    dynamic_shapes: bool = False
    internal_dtypes: frozenset[str] = frozenset()
    unsupported: dict[str, str] = field(default_factory=dict)
    slow: dict[str, str] = field(default_factory=dict)
    asked: list[tuple[str, str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return "table"

    def supports(self, node: Node) -> tuple[bool, str]:
        self.asked.append(("supports", node.name))
        if node.op in self.unsupported:
            return False, self.unsupported[node.op]
        return True, f"table compiles {node.op}"

    def avoids(self, node: Node) -> str | None:
        self.asked.append(("avoids", node.name))
        return self.slow.get(node.op)


def _graph(
    op: str, out_dtype: str = "float32", shape: tuple[int | None, ...] = KNOWN, reads: str = "float32"
):
    x = Node("x", "Placeholder", outputs=(TensorInfo(reads, KNOWN),))
    n = Node("n", op, (TensorRef("x"),), outputs=(TensorInfo(out_dtype, shape),))
    return Graph([x, n], ["x"], [TensorRef("n")])


BUT = "subgraph_builder_function returned True, but "
TRUE, FALSE = "subgraph_builder_function returned True", "subgraph_builder_function returned False"
STRING_OUT = "its output dtype string cannot be held by a compiled subgraph"
SHAPE = "output 0 has an unknown (data-dependent) shape, which table cannot compile"
NO_KERNEL = {"Foo": "table has no kernel for Foo"}
SLOW = {"Slow": "Slow runs slower on table", "Foo": "Foo runs slower on table"}
VARIANT = {"internal_dtypes": frozenset({"variant"})}


def case(name, graph, expected, answer=None, **backend):
    """One row: the node (``_graph``'s arguments), the callback's answer (None: no callback), the backend's
    capabilities, and the expected (placement, reason, detail)."""
    return pytest.param(graph, backend, answer, expected, id=name)


CASES = [
    case("supported", {"op": "Relu"}, (ACC, Reason.SUPPORTED, "table compiles Relu")),
    case("chosen", {"op": "Relu"}, (ACC, Reason.CALLBACK_TRUE, TRUE), answer=True),
    case("refused by user", {"op": "Relu"}, (TF, Reason.CALLBACK_FALSE, FALSE), answer=False),
    case(
        "constant",
        {"op": "Const"},
        (TF, Reason.STRUCTURAL, "Const is a constant, copied into each subgraph that reads it"),
    ),
    case("input", {"op": "Placeholder"}, (TF, Reason.STRUCTURAL, "Placeholder is a graph input")),
    case(
        "structural beats callback",
        {"op": "NoOp"},
        (TF, Reason.STRUCTURAL, "NoOp is an ordering node"),
        answer=True,
    ),
    case("string out", {"op": "AsString", "out_dtype": "string"}, (TF, Reason.DTYPE, STRING_OUT)),
    case(
        "string in",
        {"op": "StringToNumber", "reads": "string"},
        (TF, Reason.DTYPE, "its input dtype string cannot enter a compiled subgraph"),
    ),
    case(
        "callback False beats dtype",
        {"op": "AsString", "out_dtype": "string"},
        (TF, Reason.CALLBACK_FALSE, FALSE),
        answer=False,
    ),
    case(
        "chosen, string out",
        {"op": "AsString", "out_dtype": "string"},
        (TF, Reason.DTYPE, BUT + STRING_OUT),
        answer=True,
    ),
    case(
        "chosen, resource in",
        {"op": "Relu", "reads": "resource"},
        (TF, Reason.DTYPE, BUT + "its input dtype resource cannot enter a compiled subgraph"),
        answer=True,
    ),
    case(
        "variant held inside",
        {"op": "TensorListReserve", "out_dtype": "variant"},
        (ACC, Reason.SUPPORTED, "table compiles TensorListReserve"),
        **VARIANT,
    ),
    case(
        "variant not held",
        {"op": "TensorListReserve", "out_dtype": "variant"},
        (TF, Reason.DTYPE, "its output dtype variant cannot be held by a compiled subgraph"),
    ),
    case(
        "variant held, string still not",
        {"op": "AsString", "out_dtype": "string"},
        (TF, Reason.DTYPE, STRING_OUT),
        **VARIANT,
    ),
    case("unknown shape", {"op": "Unique", "shape": UNKNOWN}, (TF, Reason.UNKNOWN_SHAPE, SHAPE)),
    case(
        "chosen, unknown rank",
        {"op": "Unique", "shape": None},
        (TF, Reason.UNKNOWN_SHAPE, BUT + SHAPE),
        answer=True,
    ),
    case(
        "unknown shape, dynamic backend",
        {"op": "Unique", "shape": UNKNOWN},
        (ACC, Reason.SUPPORTED, "table compiles Unique"),
        dynamic_shapes=True,
    ),
    case(
        "dtype beats shape",
        {"op": "AsString", "out_dtype": "string", "shape": UNKNOWN},
        (TF, Reason.DTYPE, STRING_OUT),
    ),
    case(
        "kernel beats shape",
        {"op": "Foo", "shape": UNKNOWN},
        (TF, Reason.UNSUPPORTED, "table has no kernel for Foo"),
        unsupported=NO_KERNEL,
    ),
    case(
        "no kernel",
        {"op": "Foo"},
        (TF, Reason.UNSUPPORTED, "table has no kernel for Foo"),
        unsupported=NO_KERNEL,
    ),
    case(
        "chosen, no kernel",
        {"op": "Foo"},
        (TF, Reason.UNSUPPORTED, BUT + "table has no kernel for Foo"),
        answer=True,
        unsupported=NO_KERNEL,
    ),
    case("known slower", {"op": "Slow"}, (TF, Reason.SLOWER, "Slow runs slower on table"), slow=SLOW),
    case(
        "known slower skipped when chosen",
        {"op": "Slow"},
        (ACC, Reason.CALLBACK_TRUE, TRUE),
        answer=True,
        slow=SLOW,
    ),
    case(
        "kernel beats known slower",
        {"op": "Foo"},
        (TF, Reason.UNSUPPORTED, "table has no kernel for Foo"),
        unsupported=NO_KERNEL,
        slow=SLOW,
    ),
]


@pytest.mark.parametrize(("graph_kw", "backend_kw", "answer", "expected"), CASES)
def test_rule_chain_decides(graph_kw, backend_kw, answer, expected):
    graph = _graph(**graph_kw)
    backend = TableBackend(**backend_kw)
    called: list[str] = []

    def callback(node: Node) -> bool:
        called.append(node.name)
        return bool(answer)

    decisions = decide(graph, backend, None if answer is None else callback)
    got = decisions["n"]
    assert (got.placement, got.reason, got.detail) == expected
    assert got.backend == ("table" if got.accelerated else None)
    # the graph input is structural: never put to the user, never to the backend
    assert decisions["x"].reason is Reason.STRUCTURAL and "x" not in called
    assert all(name == "n" for _, name in backend.asked)
    # the backend is asked at most once per question (the accepting rule quotes the kernel rule's answer)
    assert len(backend.asked) == len(set(backend.asked))
    if answer is not None and graph_kw["op"] not in opclasses.STRUCTURAL_OPS:
        assert called == ["n"]


@pytest.mark.parametrize(
    ("callback", "dynamic", "names"),
    [
        (
            False,
            False,
            ("structural", "UnplaceableDtypes", "BackendKernels", "UnknownShapes", "known_slower"),
        ),
        (False, True, ("structural", "UnplaceableDtypes", "BackendKernels", "known_slower")),
        (True, False, ("structural", "UserCallback", "UnplaceableDtypes", "BackendKernels", "UnknownShapes")),
        (True, True, ("structural", "UserCallback", "UnplaceableDtypes", "BackendKernels")),
    ],
)
def test_the_chain_is_assembled_from_backend_and_options(callback, dynamic, names):
    chain = chain_for(TableBackend(dynamic_shapes=dynamic), (lambda node: True) if callback else None)
    assert chain.names == (*names, "Accept")


def test_the_dtype_rule_leaves_out_what_the_backend_holds_inside():
    chain = chain_for(TableBackend(internal_dtypes=frozenset({"variant"})))
    dtype_rule = chain.rules[1]
    assert dtype_rule.dtypes == opclasses.UNPLACEABLE_DTYPES - {"variant"}


@dataclass(frozen=True)
class KeepNamed:
    """A custom rule: nodes whose name starts with ``prefix`` stay on TF (e.g. a layer the user pins)."""

    prefix: str

    def __call__(self, facts: NodeFacts) -> Decision | None:
        if not facts.node.name.startswith(self.prefix):
            return None
        return facts.runtime(Reason.UNSUPPORTED, f"{facts.node.name} is pinned to TF")


def _facts(node: Node, backend: TableBackend) -> NodeFacts:
    return NodeFacts(node, backend, frozenset({"float32"}))


def test_a_custom_rule_inserted_into_the_chain_decides():
    backend = TableBackend(unsupported=NO_KERNEL)
    base = chain_for(backend)
    kernels = next(i for i, rule in enumerate(base.rules) if isinstance(rule, BackendKernels))
    chain = base.with_rule(KeepNamed("pinned"), before=kernels)
    assert chain.names.index("KeepNamed") == chain.names.index("BackendKernels") - 1
    out = (TensorInfo("float32", KNOWN),)

    pinned = chain.decide(_facts(Node("pinned/relu", "Relu", outputs=out), backend))
    assert (pinned.placement, pinned.detail) == (TF, "pinned/relu is pinned to TF")
    assert backend.asked == []  # decided before the backend was asked
    # a node the custom rule has no opinion on goes on down the chain
    assert chain.decide(_facts(Node("free/relu", "Relu", outputs=out), backend)).accelerated
    # a rule asked earlier wins over the custom one: first decision wins
    text = chain.decide(_facts(Node("pinned/s", "AsString", outputs=(TensorInfo("string", KNOWN),)), backend))
    assert text.reason is Reason.DTYPE
    # without the custom rule the same node is accepted
    assert base.decide(_facts(Node("pinned/relu", "Relu", outputs=out), backend)).accelerated


def test_a_chain_without_rules_accepts_with_the_backends_sentence():
    backend = TableBackend()
    chain = SupportChain((), chain_for(backend).accept).with_rule(UnknownShapes(), before=0)
    facts = _facts(Node("n", "Relu", outputs=(TensorInfo("float32", KNOWN),)), backend)
    assert chain.decide(facts).detail == "table compiles Relu"


def test_every_op_class_names_registered_tensorflow_ops():
    """A misspelt op name in the table would silently never match; TensorFlow's registry says."""
    from tfaccel import _tf_compat

    classes = {name: getattr(opclasses, name) for name in opclasses.__all__ if name.endswith("_OPS")}
    unknown = {
        name: sorted(op for op in ops if _tf_compat.op_def(op) is None) for name, ops in classes.items()
    }
    assert not any(unknown.values()), unknown
    assert len(classes) == len(opclasses.__all__) - 1  # every class but the dtypes one is checked
