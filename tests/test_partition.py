"""Tests of the cycle-free clustering pass: golden cases on small graphs, and properties on random DAGs.

The central property is behavioural: a toy interpreter runs the original graph and the graph rebuilt from
the clusters (each cluster may only see its declared boundary), and both must produce the same outputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfaccel.compiler.ir import Graph, IRError, Node, TensorRef
from tfaccel.compiler.partition import (
    Cluster,
    PartitionResult,
    _DynamicOrder,
    contract,
    is_acyclic,
    partition,
)

# -- helpers -------------------------------------------------------------------------------------------------


def node(name: str, op: str = "Relu", inputs: Sequence[str] = (), controls: Sequence[str] = ()) -> Node:
    return Node(name, op, tuple(TensorRef.parse(i) for i in inputs), tuple(controls))


def build(nodes: Sequence[Node], outputs: Sequence[str] = ()) -> Graph:
    graph = Graph(
        nodes,
        inputs=[n.name for n in nodes if n.op == "Placeholder"],
        outputs=[TensorRef.parse(o) for o in outputs],
    )
    graph.lint()
    return graph


def shape(result: PartitionResult) -> dict[str, list[str]]:
    return {c.name: list(c.nodes) for c in result.clusters}


def refs(*texts: str) -> tuple[TensorRef, ...]:
    return tuple(TensorRef.parse(t) for t in texts)


def by_name(result: PartitionResult) -> dict[str, Cluster]:
    return {c.name: c for c in result.clusters}


# -- golden tests --------------------------------------------------------------------------------------------


def test_chain_becomes_one_cluster() -> None:
    g = build(
        [node("x", "Placeholder"), node("a", inputs=["x"]), node("b", inputs=["a"]), node("c", inputs=["b"])],
        outputs=["c"],
    )
    result = partition(g, dict.fromkeys("abc", "neuron"))
    assert shape(result) == {"tfaccel_sg_0": ["a", "b", "c"]}
    (c,) = result.clusters
    assert (c.group, c.inputs, c.outputs, c.consts) == ("neuron", refs("x"), refs("c"), ())
    assert (c.effective_size, c.forced) == (3, False)
    assert dict(result.rejected) == {}


def test_diamond_with_unassigned_branch_cannot_close() -> None:
    # A->B->D and A->C->D with C on the runtime: {A, B, D} would both feed and read C.
    g = build(
        [
            node("x", "Placeholder"),
            node("A", inputs=["x"]),
            node("B", inputs=["A"]),
            node("C", inputs=["A"]),
            node("D", inputs=["B", "C"]),
        ],
        outputs=["D"],
    )
    assignment = dict.fromkeys("ABD", "neuron")
    result = partition(g, assignment, min_size=1)
    assert shape(result) == {"tfaccel_sg_0": ["A", "B"], "tfaccel_sg_1": ["D"]}
    first, second = result.clusters
    assert first.outputs == refs("A", "B")
    assert second.inputs == refs("B", "C")

    strict = partition(g, assignment)
    assert shape(strict) == {"tfaccel_sg_0": ["A", "B"]}
    assert dict(strict.rejected) == {
        "D": "subgraph of 1 op is below the minimum size 2 and has no compute-heavy op"
    }


def test_two_groups_side_by_side() -> None:
    g = build(
        [
            node("x", "Placeholder"),
            node("a1", inputs=["x"]),
            node("b1", inputs=["x"]),
            node("a2", inputs=["a1"]),
            node("b2", inputs=["b1"]),
            node("a3", inputs=["a2", "b2"]),
            node("b3", inputs=["a3"]),
            node("b4", inputs=["b3"]),
        ],
        outputs=["b4"],
    )
    assignment = {"a1": "x", "a2": "x", "a3": "x", "b1": "y", "b2": "y", "b3": "y", "b4": "y"}
    result = partition(g, assignment, min_size=1)
    # b1-b2 cannot join b3-b4: the path b2 -> a3 -> b3 goes through the other group.
    assert shape(result) == {
        "tfaccel_sg_0": ["a1", "a2", "a3"],
        "tfaccel_sg_1": ["b1", "b2"],
        "tfaccel_sg_2": ["b3", "b4"],
    }
    assert [c.group for c in result.clusters] == ["x", "y", "y"]
    assert by_name(result)["tfaccel_sg_0"].inputs == refs("x", "b2")


def test_const_ordered_after_a_graph_input_is_still_copied() -> None:
    """Inlining a SavedModel signature gives its constants a control edge from the inputs (``^features``);
    a fed input orders nothing, so the constant is still copied (XLA needs ArgMax's axis as a constant),
    while a constant ordered after real work stays a boundary input.
    """
    g = build(
        [
            node("x", "Placeholder"),
            node("axis", "Const", controls=["x"]),
            node("w", "Relu", inputs=["x"]),
            node("late", "Const", controls=["w"]),
            node("a", "MatMul", inputs=["x", "x"]),
            node("m", "ArgMax", inputs=["a", "axis"]),
            node("s", "Add", inputs=["m", "late"]),
        ],
        outputs=["s"],
    )
    result = partition(g, dict.fromkeys(["a", "m", "s"], "xla"))
    (c,) = result.clusters
    assert c.consts == ("axis",)
    assert c.inputs == refs("x", "late")


def test_consts_are_copied_into_every_reader() -> None:
    g = build(
        [
            node("x", "Placeholder"),
            node("k", "Const"),
            node("a", "MatMul", inputs=["x", "k"]),
            node("b", inputs=["a"]),
            node("u", "Unsupported", inputs=["b"]),
            node("c", "Add", inputs=["u", "k:0"]),
            node("d", inputs=["c", "k"]),
        ],
        outputs=["d"],
    )
    result = partition(g, dict.fromkeys("abcd", "neuron"))
    assert shape(result) == {"tfaccel_sg_0": ["a", "b"], "tfaccel_sg_1": ["c", "d"]}
    for c in result.clusters:
        assert c.consts == ("k",)
        assert all(ref.node != "k" for ref in c.inputs + c.outputs)
    assert by_name(result)["tfaccel_sg_1"].inputs == refs("u")
    adjacency = contract(g, result.clusters)
    assert adjacency["k"] == []
    assert adjacency == {
        "x": ["tfaccel_sg_0"],
        "k": [],
        "tfaccel_sg_0": ["u"],
        "u": ["tfaccel_sg_1"],
        "tfaccel_sg_1": [],
    }


def test_control_edges_in_and_out() -> None:
    g = build(
        [
            node("x", "Placeholder"),
            node("k", "Const"),
            node("init", "NoOp"),
            node("a", inputs=["x", "k"], controls=["init", "k"]),
            node("b", inputs=["a"], controls=["a"]),
            node("log", "Print", controls=["b"]),
            node("after", "NoOp", controls=["a", "b"]),
        ],
        outputs=["b"],
    )
    result = partition(g, {"a": "neuron", "b": "neuron"})
    (c,) = result.clusters
    assert c.nodes == ("a", "b")
    assert c.control_inputs == ("init",)  # ^k is dropped: the cluster carries its own copy of k
    assert c.control_outputs == ("log", "after")
    assert c.outputs == refs("b")
    assert is_acyclic(contract(g, result.clusters))


def test_control_edge_alone_merges_and_respects_cycles() -> None:
    g = build(
        [
            node("x", "Placeholder"),
            node("a", inputs=["x"]),
            node("u", "Unsupported", inputs=["a"]),
            node("b", inputs=["x"], controls=["a", "u"]),
        ],
        outputs=["b"],
    )
    assert shape(partition(g, {"a": "n", "b": "n"}, forced=True)) == {
        "tfaccel_sg_0": ["a"],
        "tfaccel_sg_1": ["b"],
    }
    g2 = build([node("x", "Placeholder"), node("a", inputs=["x"]), node("b", inputs=["x"], controls=["a"])])
    assert shape(partition(g2, {"a": "n", "b": "n"})) == {"tfaccel_sg_0": ["a", "b"]}


def test_min_size_counts_only_real_ops_and_explains_rejections() -> None:
    g = build(
        [
            node("x", "Placeholder"),
            node("i1", "Identity", inputs=["x"]),
            node("a", inputs=["i1"]),
            node("i2", "Identity", inputs=["a"]),
            node("u", "Unsupported", inputs=["i2"]),
            node("b", inputs=["u"]),
            node("c", inputs=["b"]),
        ],
        outputs=["c"],
    )
    assignment = dict.fromkeys(["i1", "a", "i2", "b", "c"], "neuron")
    result = partition(g, assignment)
    assert shape(result) == {"tfaccel_sg_0": ["b", "c"]}
    assert dict(result.rejected) == {
        "i1": "subgraph of 1 op is below the minimum size 2 and has no compute-heavy op (merged with: a, i2)",
        "a": "subgraph of 1 op is below the minimum size 2 and has no compute-heavy op (merged with: i1, i2)",
        "i2": "subgraph of 1 op is below the minimum size 2 and has no compute-heavy op (merged with: i1, a)",
    }
    assert shape(partition(g, assignment, min_size=3)) == {}
    assert (
        "subgraph of 2 ops is below the minimum size 3" in partition(g, assignment, min_size=3).rejected["b"]
    )


def test_forced_keeps_every_cluster_even_singletons() -> None:
    g = build(
        [
            node("x", "Placeholder"),
            node("a", inputs=["x"]),
            node("u", "U", inputs=["a"]),
            node("b", inputs=["u"]),
        ],
        outputs=["b"],
    )
    result = partition(g, {"a": "n", "b": "n"}, min_size=5, forced=True)
    assert shape(result) == {"tfaccel_sg_0": ["a"], "tfaccel_sg_1": ["b"]}
    assert all(c.forced and c.effective_size == 1 for c in result.clusters)
    assert dict(result.rejected) == {}
    only_identity = build([node("x", "Placeholder"), node("i", "Identity", inputs=["x"])], outputs=["i"])
    assert shape(partition(only_identity, {"i": "n"}, forced=True)) == {"tfaccel_sg_0": ["i"]}
    assert partition(only_identity, {"i": "n"}, forced=True).clusters[0].effective_size == 0


def test_graph_output_inside_cluster_is_a_cluster_output() -> None:
    g = build(
        [
            node("x", "Placeholder"),
            node("a", inputs=["x"]),
            node("b", "Split", inputs=["a"]),
            node("c", inputs=["b:1"]),
        ],
        outputs=["b:0", "c", "b:1", "x"],
    )
    (c,) = partition(g, dict.fromkeys("abc", "n")).clusters
    assert c.outputs == refs("b:0", "b:1", "c")


@pytest.mark.parametrize(
    ("assignment", "message"),
    [({"x": "n"}, "Placeholder"), ({"k": "n"}, "Const"), ({"nope": "n"}, "not a node")],
)
def test_caller_bugs_raise(assignment: dict[str, str], message: str) -> None:
    g = build([node("x", "Placeholder"), node("k", "Const"), node("a", inputs=["x", "k"])])
    with pytest.raises(IRError, match=message):
        partition(g, assignment)


def test_contract_rejects_overlapping_clusters() -> None:
    g = build([node("x", "Placeholder"), node("a", inputs=["x"])])
    c = partition(g, {"a": "n"}, forced=True).clusters[0]
    with pytest.raises(IRError, match="member of both"):
        contract(g, [c, c])


def test_partition_module_imports_nothing_that_needs_tensorflow() -> None:
    import ast
    import pathlib
    import sys

    import tfaccel.compiler.partition

    tree = ast.parse(pathlib.Path(tfaccel.compiler.partition.__file__).read_text(encoding="utf-8"))
    imported = {alias.name for n in ast.walk(tree) if isinstance(n, ast.Import) for alias in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    local = {name for name in imported if name.split(".")[0] not in sys.stdlib_module_names}
    assert local == {"tfaccel.compiler.ir", "tfaccel.compiler.opclasses"}


def test_is_acyclic() -> None:
    assert is_acyclic({"a": ["b"], "b": ["c"]})
    assert is_acyclic({})
    assert not is_acyclic({"a": ["b"], "b": ["a"]})
    assert not is_acyclic({"a": ["a"]})


# -- random DAGs ---------------------------------------------------------------------------------------------

OPS = ("Relu", "Add", "MatMul", "Identity", "Print")


@st.composite
def cases(draw: st.DrawFn) -> tuple[Graph, dict[str, str], int, bool]:
    count = draw(st.integers(1, 40))
    nodes: list[Node] = []
    assignment: dict[str, str] = {}
    groups = draw(st.sampled_from([("neuron",), ("neuron", "other")]))
    for i in range(count):
        name = f"n{i}"
        kind = draw(st.sampled_from(["op", "op", "op", "op", "const", "input"])) if i else "input"
        earlier = st.integers(0, i - 1)
        if kind == "input":
            nodes.append(Node(name, "Placeholder"))
            continue
        if kind == "const":
            # now and then a Const under a control edge: it cannot be copied and must cross the boundary
            guard = (
                draw(st.lists(earlier.map(lambda j: f"n{j}"), max_size=1))
                if draw(st.integers(0, 4)) == 0
                else []
            )
            nodes.append(Node(name, "Const", control_inputs=tuple(guard)))
            continue
        inputs = draw(
            st.lists(st.builds(lambda j, p: TensorRef(f"n{j}", p), earlier, st.integers(0, 1)), max_size=3)
        )
        controls = draw(st.lists(earlier.map(lambda j: f"n{j}"), max_size=2, unique=True))
        nodes.append(Node(name, draw(st.sampled_from(OPS)), tuple(inputs), tuple(controls)))
        if draw(st.integers(0, 3)):
            assignment[name] = draw(st.sampled_from(groups))
    outputs = draw(
        st.lists(
            st.builds(lambda j, p: TensorRef(f"n{j}", p), st.integers(0, count - 1), st.integers(0, 1)),
            min_size=1,
            max_size=6,
        )
    )
    graph = Graph(nodes, [n.name for n in nodes if n.op == "Placeholder"], outputs)
    return graph, assignment, draw(st.integers(0, 4)), draw(st.booleans())


def value(name: str, op: str, port: int, inputs: tuple[object, ...]) -> int:
    return hash((name, op, port, inputs))


def run_original(graph: Graph, feed: Mapping[str, int]) -> list[int]:
    seen: dict[str, tuple[object, ...]] = {}

    def read(ref: TensorRef) -> int:
        return value(ref.node, graph[ref.node].op, ref.port, seen[ref.node])

    for name in graph.topological_order():
        n = graph[name]
        seen[name] = (feed[name],) if n.op == "Placeholder" else tuple(read(r) for r in n.inputs)
    return [read(r) for r in graph.outputs]


def run_cluster(graph: Graph, cluster: Cluster, boundary: Mapping[TensorRef, int]) -> dict[TensorRef, int]:
    """Run the members on the boundary values and the cluster's own const copies; return its outputs."""
    local: dict[str, tuple[object, ...]] = {}

    def read_local(ref: TensorRef) -> int:
        if ref.node in local:
            return value(ref.node, graph[ref.node].op, ref.port, local[ref.node])
        if ref.node in cluster.consts:
            return value(ref.node, "Const", ref.port, ())
        assert ref in boundary, f"{cluster.name} reads {ref}, which is not a declared input"
        return boundary[ref]

    for m in cluster.nodes:
        for ctl in graph[m].control_inputs:
            assert ctl in local or ctl in cluster.control_inputs or ctl in cluster.consts
        local[m] = tuple(read_local(r) for r in graph[m].inputs)
    return {ref: read_local(ref) for ref in cluster.outputs}


def run_rebuilt(graph: Graph, clusters: Sequence[Cluster], feed: Mapping[str, int]) -> list[int]:
    """Run unit by unit; a cluster sees only its declared inputs and consts and publishes only its outputs."""
    adjacency = contract(graph, clusters)
    indegree = dict.fromkeys(adjacency, 0)
    for successors in adjacency.values():
        for v in successors:
            indegree[v] += 1
    ready = [u for u, d in indegree.items() if d == 0]
    order = []
    while ready:
        u = ready.pop(0)
        order.append(u)
        for v in adjacency[u]:
            indegree[v] -= 1
            if indegree[v] == 0:
                ready.append(v)
    assert len(order) == len(adjacency)

    clusters_by_name = {c.name: c for c in clusters}
    owner = {m: c for c in clusters for m in c.nodes}
    done: set[str] = set()
    runtime: dict[str, tuple[object, ...]] = {}  # inputs of non-member nodes already run
    published: dict[TensorRef, int] = {}

    def read_runtime(ref: TensorRef) -> int:
        """What a runtime (non-member) node sees for ``ref``."""
        producer = owner.get(ref.node)
        if producer is not None:
            assert producer.name in done
            assert ref in published, f"{ref} is read outside {producer.name} but is not one of its outputs"
            return published[ref]
        assert ref.node in done, f"{ref.node} has not run yet"
        return value(ref.node, graph[ref.node].op, ref.port, runtime[ref.node])

    for unit in order:
        cluster = clusters_by_name.get(unit)
        if cluster is None:
            n = graph[unit]
            for ctl in n.control_inputs:
                if ctl in owner:
                    assert unit in owner[ctl].control_outputs
                    assert owner[ctl].name in done
                else:
                    assert ctl in done
            runtime[unit] = (
                (feed[unit],) if n.op == "Placeholder" else tuple(read_runtime(r) for r in n.inputs)
            )
            done.add(unit)
            continue
        boundary = {ref: read_runtime(ref) for ref in cluster.inputs}
        for ctl in cluster.control_inputs:
            assert (owner[ctl].name if ctl in owner else ctl) in done
        published.update(run_cluster(graph, cluster, boundary))
        done.add(unit)
    return [read_runtime(r) for r in graph.outputs]


@settings(max_examples=200, deadline=None)
@given(cases(), st.integers())
def test_random_dags(case: tuple[Graph, dict[str, str], int, bool], seed: int) -> None:
    graph, assignment, min_size, forced = case
    result = partition(graph, assignment, min_size=min_size, forced=forced)

    # a) the rebuilt graph is still a DAG
    assert is_acyclic(contract(graph, result.clusters))

    # b) every assigned node is accounted for exactly once; clusters are homogeneous and well named
    members = [m for c in result.clusters for m in c.nodes]
    assert len(members) == len(set(members))
    assert set(members).isdisjoint(result.rejected)
    assert set(members) | set(result.rejected) == set(assignment)
    position = {n: i for i, n in enumerate(graph.topological_order())}
    for i, c in enumerate(result.clusters):
        assert c.name == f"tfaccel_sg_{i}"
        assert all(assignment[m] == c.group for m in c.nodes)
        assert list(c.nodes) == sorted(c.nodes, key=position.__getitem__)
        assert c.forced is forced
        assert c.effective_size == sum(graph[m].counted for m in c.nodes)
        assert forced or c.effective_size >= min_size
        assert set(c.consts).isdisjoint(c.nodes)
        assert all(graph[k].op == "Const" for k in c.consts)
        assert all(ref.node not in c.nodes and ref.node not in c.consts for ref in c.inputs)
        copyable = {
            n.name
            for n in graph
            if n.op == "Const"
            and not n.inputs
            and all(graph[k].op == "Placeholder" for k in n.control_inputs)
        }
        read = {ref.node for m in c.nodes for ref in graph[m].inputs}
        assert set(c.consts) == read & copyable
        assert all(ref.node in c.nodes for ref in c.outputs)
        assert set(c.control_inputs).isdisjoint(c.nodes) and set(c.control_outputs).isdisjoint(c.nodes)
    firsts = [position[c.nodes[0]] for c in result.clusters]
    assert firsts == sorted(firsts)

    # c) running the rebuilt graph gives the same outputs as running the original
    feed = {name: hash((seed, name)) for name in graph.inputs}
    assert run_rebuilt(graph, result.clusters, feed) == run_original(graph, feed)

    # d) deterministic, also on an equal graph object built afresh
    assert partition(graph, assignment, min_size=min_size, forced=forced) == result
    again = Graph(list(graph), graph.inputs, graph.outputs)
    assert partition(again, dict(assignment), min_size=min_size, forced=forced) == result


@settings(max_examples=50, deadline=None)
@given(cases())
def test_forced_partition_of_random_dags_keeps_everything(
    case: tuple[Graph, dict[str, str], int, bool],
) -> None:
    graph, assignment, _, _ = case
    result = partition(graph, assignment, forced=True)
    assert dict(result.rejected) == {}
    assert {m for c in result.clusters for m in c.nodes} == set(assignment)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_dynamic_order_agrees_with_brute_force(data: st.DataObject) -> None:
    # The incremental order is what makes partition fast; check it directly against plain reachability,
    # because on small graphs a wrong renumbering rarely shows up as a wrong cluster.
    size = data.draw(st.integers(2, 20))
    pairs = st.tuples(st.integers(0, size - 1), st.integers(0, size - 1)).filter(lambda e: e[0] < e[1])
    edges = data.draw(st.sets(pairs, max_size=3 * size))
    dag = _DynamicOrder(size)
    for a, b in sorted(edges):
        dag.add_edge(a, b)
    rep = list(range(size))

    def find(i: int) -> int:
        return i if rep[i] == i else find(rep[i])

    for _ in range(data.draw(st.integers(0, 3 * size))):
        live = {(find(a), find(b)) for a, b in edges if find(a) != find(b)}
        if not live:
            break
        a, b = data.draw(st.sampled_from(sorted(live)))
        frontier, seen = [v for u, v in live if u == a and v != b], set()
        while frontier:
            u = frontier.pop()
            seen.add(u)
            frontier += [w for v, w in live if v == u and w not in seen]
        survivor = dag.contract(a, b)
        assert (survivor is None) == (b in seen)
        if survivor is not None:
            assert survivor in (a, b)
            rep[a] = rep[b] = survivor
        live = {(find(u), find(v)) for u, v in edges if find(u) != find(v)}
        assert {(u, v) for u in range(size) for v in dag.succ[u]} == live
        assert {(u, v) for v in range(size) for u in dag.pred[v]} == live
        assert all(dag.rank[u] < dag.rank[v] for u, v in live)
        ranks = [dag.rank[i] for i in range(size) if find(i) == i]
        assert len(set(ranks)) == len(ranks)


# -- scale ---------------------------------------------------------------------------------------------------


def test_twenty_thousand_node_chain_with_skips() -> None:
    # n_i reads n_{i-1}; every third node also reads n_{i-5} (a residual-style skip); every seventh node is
    # unassigned. Any skip that jumps over an unassigned node must be refused, so the clusters are exactly
    # the runs of six nodes between unassigned ones.
    size = 20_000
    nodes = [Node("n0", "Placeholder")]
    for i in range(1, size):
        inputs = [TensorRef(f"n{i - 1}")] + ([TensorRef(f"n{i - 5}")] if i % 3 == 0 and i >= 5 else [])
        controls = (f"n{i - 2}",) if i % 11 == 0 and i >= 2 else ()
        nodes.append(Node(f"n{i}", "Add", tuple(inputs), controls))
    graph = Graph(nodes, ["n0"], [TensorRef(f"n{size - 1}")])
    assignment = {f"n{i}": "neuron" for i in range(1, size) if i % 7}
    result = partition(graph, assignment)
    expected = [[f"n{i}" for i in range(start, min(start + 6, size))] for start in range(1, size, 7)]
    assert [list(c.nodes) for c in result.clusters] == expected
    assert dict(result.rejected) == {}
    assert is_acyclic(contract(graph, result.clusters))


def test_twenty_thousand_node_residual_graph_all_assigned() -> None:
    # Residual blocks (x -> conv -> relu -> conv -> add(x, .)) with an unsupported op every 50 blocks.
    nodes = [Node("input", "Placeholder")]
    previous = "input"
    assignment: dict[str, str] = {}
    for block in range(5_000):
        p = f"b{block}_"
        nodes += [
            Node(p + "conv1", "Conv2D", (TensorRef(previous),)),
            Node(p + "relu", "Relu", (TensorRef(p + "conv1"),)),
            Node(p + "conv2", "Conv2D", (TensorRef(p + "relu"),)),
            Node(p + "add", "AddV2", (TensorRef(previous), TensorRef(p + "conv2"))),
        ]
        for suffix in ("conv1", "relu", "conv2", "add"):
            assignment[p + suffix] = "neuron"
        if block % 50 == 49:
            del assignment[p + "relu"]
        previous = p + "add"
    graph = Graph(nodes, ["input"], [TensorRef(previous)])
    result = partition(graph, assignment)
    assert is_acyclic(contract(graph, result.clusters))
    assert {m for c in result.clusters for m in c.nodes} | set(result.rejected) == set(assignment)
    # Each unsupported relu splits its block: conv1 joins the run before it, conv2 and add the run after.
    assert len(result.clusters) == 101


def test_anchor_op_keeps_a_small_cluster() -> None:
    g = build(
        [node("x", "Placeholder"), node("mm", "MatMul", inputs=["x"]), node("s", "Sigmoid", inputs=["mm"])],
        outputs=["s"],
    )
    assignment = {"mm": "xla"}
    assert shape(partition(g, assignment)) == {}
    kept = partition(g, assignment, anchor_ops=frozenset({"MatMul"}))
    assert shape(kept) == {"tfaccel_sg_0": ["mm"]}
    assert dict(kept.rejected) == {}
