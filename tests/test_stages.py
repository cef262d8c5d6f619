"""The pipeline stage by stage: expected partitions as data, each stage alone, the contract checks, the dumps.

Why per stage: an end-to-end test says the traced model answers right, not which stage broke when it
does not. Here the partition is run alone (``STAGES[:4]``) on small graphs whose expected subgraphs are
written down as data, with the reason each is right; each stage's artefact is checked on its own; a
deliberately broken stage shows that the debug checks (``TFACCEL_CHECK_STAGES=1``, set by conftest) catch
it at the stage that broke; and ``--workdir`` is shown to be written by the loop, after the stage that
produced each file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from conftest import assert_close
from tfaccel.compiler.artefacts import Assembled, Compiled, Partitioned, Placed
from tfaccel.compiler.capture import CapturedFunction, FrozenFunction
from tfaccel.compiler.opclasses import STRUCTURAL_OPS
from tfaccel.compiler.options import resolve_options
from tfaccel.compiler.package import Packaged
from tfaccel.compiler.pipeline import STAGES, run_stages, stages_through
from tfaccel.compiler.run import NoteKind, TraceRun
from tfaccel.errors import PartitionError, TraceError
from tfaccel.runtime.batching import BatchMode

W = tf.constant(np.random.default_rng(0).standard_normal((4, 4)), tf.float32)
X = tf.constant(np.random.default_rng(1).uniform(size=(2, 4)), tf.float32)
STAGE = {stage.name: stage for stage in STAGES}
UP_TO_PARTITION = stages_through("partition")


def start(func: Any, example: Any, backend: str, callback: Any = None, **options: Any) -> TraceRun:
    """A run as ``trace`` starts one, with static placement; the environment's flags are not read."""
    opts = resolve_options({"backend": backend, "placement": "static", **options}, environ={})
    return TraceRun.start(func, example, opts, callback)


# -- 1. expected partitions as data ---------------------------------------------------------------------
# Each function is small and named after its shape. Op types, not node names, are compared: the graphs are
# grappler's, and op types say what ran where without depending on how TF names nodes.


def chain(x):
    return tf.tanh(tf.nn.relu(tf.matmul(x, W) + 1.0))


def norm_between(x):
    h = tf.nn.relu(tf.matmul(x, W) + 1.0)
    n = tf.raw_ops.EuclideanNorm(input=h, axis=[0], keep_dims=True)  # no XLA kernel; OpenVINO converts it
    return tf.tanh(tf.matmul(n, W) * 3.0)


def float64_diamond(x):
    # h feeds the float64 stretch and, directly, the final product: a diamond around the stretch
    h = tf.nn.relu(tf.matmul(x, W) + 1.0)
    d = tf.cast(h, tf.float64)
    y = tf.cast(tf.reduce_sum(d * d + 1.0, axis=1, keepdims=True), tf.float32)
    return tf.matmul(h * y, W) + 1.0


def string_diamond(x):
    a = tf.nn.relu(tf.matmul(x, W))
    b = tf.strings.to_number(tf.strings.as_string(a))
    return tf.matmul(a + b, W)


def gated(x):
    return tf.matmul(tf.sigmoid(tf.nn.relu(tf.matmul(x, W))), W)


def triangle(x):
    a = tf.matmul(x, W, name="a")
    return tf.add(a, tf.sigmoid(a, name="b"), name="c")


def small_halves(x):
    a = x * 2.0 + 1.0
    return tf.tanh(tf.strings.to_number(tf.strings.as_string(a)))


def one_matmul(x):
    return tf.matmul(x, W) + 1.0


TABLE = tf.lookup.StaticHashTable(
    tf.lookup.KeyValueTensorInitializer(tf.constant(["a", "b", "c"]), tf.constant([1, 2, 3], tf.int64)), 0
)


def lookup(words):
    return tf.cast(TABLE.lookup(words), tf.float32) * 2.0 + 1.0


def tensor_list(x):
    t = tf.TensorArray(tf.float32, size=2).write(0, x).write(1, x * 2.0)
    return tf.reduce_sum(t.stack(), axis=0) + 1.0


@dataclass(frozen=True)
class Case:
    """A graph, how it is traced, and what the partition stage must give: ``clusters`` maps each cluster's
    name to its sorted op types; ``on_tf`` maps the :class:`~tfaccel.compiler.placement.Reason` (by name)
    of every other node that computes to their sorted op types (placeholders, constants and NoOps never
    move and are left out).
    """

    func: Any
    backend: str
    clusters: dict[str, list[str]]
    on_tf: dict[str, list[str]]
    example: Any = X
    callback: Any = None
    options: dict[str, Any] = field(default_factory=dict)


CASES = {
    # every op is supported by both backends and each feeds the next: one subgraph, and grappler's output
    # Identity joins it (both backends take Identity)
    "chain-xla": Case(chain, "xla", {"tfaccel_sg_0": ["AddV2", "Identity", "MatMul", "Relu", "Tanh"]}, {}),
    "chain-openvino": Case(
        chain, "openvino", {"tfaccel_sg_0": ["AddV2", "Identity", "MatMul", "Relu", "Tanh"]}, {}
    ),
    # XLA has no CPU kernel for EuclideanNorm: it stays on TF in the middle and cuts the chain in two
    "unsupported-in-the-middle-xla": Case(
        norm_between,
        "xla",
        {"tfaccel_sg_0": ["AddV2", "MatMul", "Relu"], "tfaccel_sg_1": ["Identity", "MatMul", "Mul", "Tanh"]},
        {"UNSUPPORTED": ["EuclideanNorm"]},
    ),
    # ... while OpenVINO converts it, so the same graph is one subgraph there
    "unsupported-in-the-middle-openvino": Case(
        norm_between,
        "openvino",
        {"tfaccel_sg_0": ["AddV2", "EuclideanNorm", "Identity", "MatMul", "MatMul", "Mul", "Relu", "Tanh"]},
        {},
    ),
    # OpenVINO computes float64 in float32, so the stretch stays on TF. The final Mul reads h directly:
    # merging it into h's subgraph along that edge would make the subgraph feed the stretch and wait for
    # it (a cycle), so the partitioner keeps two subgraphs, and the stretch between them on TF
    "diamond-float64-openvino": Case(
        float64_diamond,
        "openvino",
        {"tfaccel_sg_0": ["AddV2", "MatMul", "Relu"], "tfaccel_sg_1": ["AddV2", "Identity", "MatMul", "Mul"]},
        {"UNSUPPORTED": ["AddV2", "Cast", "Cast", "Mul", "Sum"]},
    ),
    # XLA computes float64 exactly: nothing stays out, so no diamond and one subgraph. (Grappler's
    # arithmetic optimization, which only OpenVINO turns off, rewrites d * d as Square.)
    "diamond-float64-xla": Case(
        float64_diamond,
        "xla",
        {
            "tfaccel_sg_0": [
                *("AddV2", "AddV2", "AddV2", "Cast", "Cast", "Identity"),
                *("MatMul", "MatMul", "Mul", "Relu", "Square", "Sum"),
            ]
        },
        {},
    ),
    # both backends: each node goes to the first that takes it (openvino), the stretch to xla; the
    # openvino ops still cannot be one subgraph (the same cycle, now through xla), so three subgraphs
    # in topological order, nothing on TF (and grappler keeps d * d: openvino turned the rewrite off)
    "diamond-float64-both": Case(
        float64_diamond,
        "auto",
        {
            "tfaccel_sg_0": ["AddV2", "MatMul", "Relu"],
            "tfaccel_sg_1": ["AddV2", "Cast", "Cast", "Mul", "Sum"],
            "tfaccel_sg_2": ["AddV2", "Identity", "MatMul", "Mul"],
        },
        {},
    ),
    # a string tensor never enters a subgraph, on any backend: the round trip stays on TF and the AddV2
    # that also reads `a` directly cannot join `a`'s subgraph (a cycle through TF), as above
    "diamond-string-xla": Case(
        string_diamond,
        "xla",
        {"tfaccel_sg_0": ["MatMul", "Relu"], "tfaccel_sg_1": ["AddV2", "Identity", "MatMul"]},
        {"DTYPE": ["AsString", "StringToNumber"]},
    ),
    # the callback takes only MatMul and Relu: Sigmoid and the output Identity go to TF because it said
    # so, which cuts the chain in two
    "callback-cuts-openvino": Case(
        gated,
        "openvino",
        {"tfaccel_sg_0": ["MatMul", "Relu"], "tfaccel_sg_1": ["MatMul"]},
        {"CALLBACK_FALSE": ["Identity", "Sigmoid"]},
        callback=lambda node: node.op in ("MatMul", "Relu"),
    ),
    # a -> b -> c and a -> c with b forced to TF: {a, c} in one subgraph would be a cycle, so two
    "callback-triangle-xla": Case(
        triangle,
        "xla",
        {"tfaccel_sg_0": ["MatMul"], "tfaccel_sg_1": ["AddV2", "Identity"]},
        {"CALLBACK_FALSE": ["Sigmoid"]},
        callback=lambda node: node.name != "b",
    ),
    # the callback cannot force what the backend cannot run: EuclideanNorm stays on TF, as without it
    "callback-cannot-force-xla": Case(
        norm_between,
        "xla",
        {"tfaccel_sg_0": ["AddV2", "MatMul", "Relu"], "tfaccel_sg_1": ["Identity", "MatMul", "Mul", "Tanh"]},
        {"UNSUPPORTED": ["EuclideanNorm"]},
        callback=lambda node: True,
    ),
    # min_segment_size=1 (the default, the reference's): every stretch is compiled, even Tanh alone
    "min-size-default-keeps-one-op-xla": Case(
        small_halves,
        "xla",
        {"tfaccel_sg_0": ["AddV2", "Mul"], "tfaccel_sg_1": ["Identity", "Tanh"]},
        {"DTYPE": ["AsString", "StringToNumber"]},
    ),
    # min_segment_size=2: Mul+AddV2 (2 ops) stays a subgraph; Tanh with the uncounted Identity is 1 op and
    # no compute-heavy op, so both go back to TF
    "min-size-drops-one-xla": Case(
        small_halves,
        "xla",
        {"tfaccel_sg_0": ["AddV2", "Mul"]},
        {"DTYPE": ["AsString", "StringToNumber"], "SMALL_SUBGRAPH": ["Identity", "Tanh"]},
        options={"min_segment_size": 2},
    ),
    # min_segment_size=3: the 2-op subgraph goes too, and nothing is compiled
    "min-size-drops-both-xla": Case(
        small_halves,
        "xla",
        {},
        {"DTYPE": ["AsString", "StringToNumber"], "SMALL_SUBGRAPH": ["AddV2", "Identity", "Mul", "Tanh"]},
        options={"min_segment_size": 3},
    ),
    # a subgraph holding a MatMul is kept whatever its size: its arithmetic outweighs the call
    "min-size-spares-a-matmul-openvino": Case(
        one_matmul,
        "openvino",
        {"tfaccel_sg_0": ["AddV2", "Identity", "MatMul"]},
        {},
        options={"min_segment_size": 5},
    ),
    # the lookup reads the string words and the table's resource: TF. Its int64 ids cross into the
    # subgraph (int64 is no unplaceable dtype) and XLA casts them
    "lookup-ids-cross-xla": Case(
        lookup,
        "xla",
        {"tfaccel_sg_0": ["AddV2", "Cast", "Identity", "Mul"]},
        {"DTYPE": ["LookupTableFindV2"]},
        example=tf.constant(["a", "c", "z"]),
    ),
    # OpenVINO computes int64 in 32 bits, so the cast of run-time ids stays on TF too
    "lookup-ids-cross-openvino": Case(
        lookup,
        "openvino",
        {"tfaccel_sg_0": ["AddV2", "Identity", "Mul"]},
        {"DTYPE": ["LookupTableFindV2"], "UNSUPPORTED": ["Cast"]},
        example=tf.constant(["a", "c", "z"]),
    ),
    # XLA holds a TensorList (a variant) inside a subgraph: the whole list is compiled with the rest
    "tensor-list-inside-xla": Case(
        tensor_list,
        "xla",
        {
            "tfaccel_sg_0": [
                *("AddV2", "Identity", "Mul", "Sum"),
                *("TensorListReserve", "TensorListSetItem", "TensorListSetItem", "TensorListStack"),
            ]
        },
        {},
    ),
    # ... but never at a subgraph's edge. With the stack forced to TF, the last write's list would leave
    # the subgraph, so it goes to TF; then the write before it, then the reserve (one round each). x * 2
    # is left alone, kept although 1 op because a callback's subgraphs are never dropped for size
    "tensor-list-at-an-edge-xla": Case(
        tensor_list,
        "xla",
        {"tfaccel_sg_0": ["Mul"], "tfaccel_sg_1": ["AddV2", "Identity", "Sum"]},
        {
            "CALLBACK_FALSE": ["TensorListStack"],
            "DTYPE": ["TensorListReserve", "TensorListSetItem", "TensorListSetItem"],
        },
        callback=lambda node: node.op != "TensorListStack",
    ),
    # OpenVINO holds no variant: the list ops stay on TF; x * 2 alone is its own subgraph (minimum size 1)
    "tensor-list-openvino": Case(
        tensor_list,
        "openvino",
        {"tfaccel_sg_0": ["Mul"], "tfaccel_sg_1": ["AddV2", "Identity", "Sum"]},
        {"DTYPE": ["TensorListReserve", "TensorListSetItem", "TensorListSetItem", "TensorListStack"]},
    ),
}


def partition_of(partitioned: Partitioned) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """``(clusters, on_tf)`` as :class:`Case` states them."""
    graph = partitioned.placed.captured.graph
    clusters = {c.name: sorted(graph[n].op for n in c.nodes) for c in partitioned.clusters}
    members = {n for c in partitioned.clusters for n in c.nodes}
    on_tf: dict[str, list[str]] = {}
    for node in graph:
        if node.name not in members and node.op not in STRUCTURAL_OPS:
            on_tf.setdefault(partitioned.decisions[node.name].reason.name, []).append(node.op)
    return clusters, {reason: sorted(ops) for reason, ops in on_tf.items()}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_partition_is_as_expected(case):
    run = start(case.func, case.example, case.backend, case.callback, **case.options)
    assert run.check_stages  # conftest: every stage's contract is checked on the way
    partitioned = run_stages(run, UP_TO_PARTITION)
    assert isinstance(partitioned, Partitioned)
    assert partition_of(partitioned) == (case.clusters, case.on_tf)
    # a cluster's members are exactly the nodes decided for its backend and not sent back by partitioning
    decided = {n for n, d in partitioned.decisions.items() if d.accelerated}
    assert decided == {n for c in partitioned.clusters for n in c.nodes}


# -- 2. each stage alone ----------------------------------------------------------------------------------
def test_each_stage_gives_its_artefact_with_its_key_property():
    """norm_between on xla, stage by stage: two subgraphs around EuclideanNorm, which stays on TF."""
    run = start(norm_between, X, "xla")
    artefact: Any = None
    seen = {}
    for stage in STAGES:
        before = artefact
        artefact = run_stages(run, (stage,), artefact)
        assert isinstance(artefact, stage.gives), stage.name
        seen[stage.name] = artefact
        if stage.name in ("batch", "measure", "split", "verify"):
            # static placement, one core, a cycle-free graph: nothing to change, the artefact passes through
            assert artefact is before, stage.name

    frozen: FrozenFunction = seen["capture"]
    assert [(s.dtype, s.shape) for s in frozen.layout.specs] == [("float32", (2, 4))]
    assert run.batch_plan.mode is BatchMode.FIXED  # a norm over the batch: it does not propagate
    assert "has shape [1, 4] when traced for any batch" in run.batch_plan.why, run.batch_plan

    captured: CapturedFunction = seen["optimize"]
    assert [captured.graph[n].op for n in captured.graph.inputs] == ["Placeholder"]
    assert "EuclideanNorm" in {node.op for node in captured.graph}

    placed: Placed = seen["place"]
    assert set(placed.decisions) == {node.name for node in captured.graph}  # every node, no other
    assert set(placed.takes) == {"xla"}
    (norm,) = [n for n in captured.graph if n.op == "EuclideanNorm"]
    assert not placed.decisions[norm.name].accelerated

    partitioned: Partitioned = seen["partition"]
    assert [c.name for c in partitioned.clusters] == ["tfaccel_sg_0", "tfaccel_sg_1"]

    compiled: Compiled = seen["compile"]
    assert [s.cluster for s in compiled.subgraphs] == list(partitioned.clusters)  # one per cluster
    assert compiled.placement == "static" and compiled.measurements == ()

    assembled: Assembled = seen["assemble"]
    outer = {node.name: node for node in assembled.graph_def.node}
    members = {n for c in partitioned.clusters for n in c.nodes}
    assert not members & set(outer)  # every member replaced ...
    assert {"tfaccel_sg_0", "tfaccel_sg_1"} <= set(outer)  # ... by its cluster's call
    assert outer[norm.name].op == "EuclideanNorm"  # the TF op between them is still there

    packaged: Packaged = seen["package"]
    assert packaged.model.placement_report.subgraphs[0].name == "tfaccel_sg_0"
    x = tf.constant(np.random.default_rng(2).uniform(size=(2, 4)), tf.float32)
    assert_close(packaged.model(x), norm_between(x))


# -- 3. the contract checks can fail ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def placed_run():
    """A run of string_diamond on xla up to place, and its Placed (two subgraphs around a string stretch)."""
    run = start(string_diamond, X, "xla")
    run.check_stages = True  # as conftest's TFACCEL_CHECK_STAGES=1 sets it, whatever the environment says
    return run, run_stages(run, stages_through("place"))


def _partition_then(edit):
    """A partition stage that breaks its contract by ``edit``-ing the real stage's answer."""
    real = STAGE["partition"]
    return replace(real, run=lambda run, placed: edit(real.run(run, placed)))


def test_a_stage_giving_the_wrong_artefact_type_is_named(placed_run):
    run, placed = placed_run
    broken = replace(STAGE["partition"], run=lambda run, placed: placed)  # gives its input back
    with pytest.raises(TraceError, match=r"stage 'partition': its output .*a Partitioned, got Placed"):
        run_stages(run, (broken,), placed)


def test_without_the_debug_flag_the_wrong_type_goes_through(placed_run):
    run, placed = placed_run
    broken = replace(STAGE["partition"], run=lambda run, placed: placed)
    unchecked = replace(run, check_stages=False)
    assert run_stages(unchecked, (broken,), placed) is placed  # nobody looked: the flag is what checks


def test_a_stage_taking_the_wrong_artefact_type_is_named(placed_run):
    run, placed = placed_run
    with pytest.raises(TraceError, match=r"stage 'compile': its input .*expected a Partitioned, got Placed"):
        run_stages(run, (STAGE["compile"],), placed)


def test_a_cluster_holding_a_node_decided_for_tf_is_named(placed_run):
    run, placed = placed_run
    (to_text,) = [n.name for n in placed.captured.graph if n.op == "AsString"]

    def add_to_text(partitioned):
        first, *rest = partitioned.clusters
        return replace(partitioned, clusters=(replace(first, nodes=(*first.nodes, to_text)), *rest))

    expected = rf"stage 'partition': its output .*node '{to_text}' in tfaccel_sg_0 \(xla\) is decided"
    with pytest.raises(TraceError, match=expected):
        run_stages(run, (_partition_then(add_to_text),), placed)


def test_clusters_that_form_a_cycle_are_named(placed_run):
    run, placed = placed_run

    def merge_both(partitioned):  # every member is decided for xla, but one subgraph is a cycle via TF
        first, second = partitioned.clusters
        return replace(partitioned, clusters=(replace(first, nodes=first.nodes + second.nodes),))

    with pytest.raises(TraceError, match=r"stage 'partition': its output .*the clusters form a cycle"):
        run_stages(run, (_partition_then(merge_both),), placed)


def test_without_the_checks_a_cycle_is_still_refused_before_the_model_is_built(placed_run):
    # what users get (no debug checks): the verify stage refuses a graph that would deadlock
    run, placed = placed_run
    compiled = run_stages(run, (STAGE["partition"], STAGE["compile"]), placed)
    first, second = compiled.subgraphs
    merged = replace(first.cluster, nodes=first.cluster.nodes + second.cluster.nodes)
    broken = replace(compiled, subgraphs=(replace(first, cluster=merged),))
    assembled = Assembled(broken, None, (), {})  # verify reads the clusters only
    with pytest.raises(PartitionError, match=r"cycle between subgraphs \(a tfaccel bug"):
        STAGE["verify"].run(replace(run, check_stages=False), assembled)


def test_notes_of_a_discarded_step_are_rolled_back():
    run = start(string_diamond, X, "xla")
    run.note(NoteKind.CAPTURE, "kept", log=False)
    mark = run.mark()
    run.note(NoteKind.COMPILE, "discarded", log=False)
    run.rollback(mark)
    run.note(NoteKind.BACKEND, "first", log=False)
    assert run.notes == ["first", "kept"]  # grouped by kind, the discarded one gone


def test_a_node_in_two_clusters_is_named(placed_run):
    run, placed = placed_run

    def share_a_node(partitioned):
        first, second = partitioned.clusters
        return replace(partitioned, clusters=(first, replace(second, nodes=(*second.nodes, first.nodes[0]))))

    with pytest.raises(TraceError, match=r"stage 'partition': its output .*is in both tfaccel_sg_0 and"):
        run_stages(run, (_partition_then(share_a_node),), placed)


def test_a_cluster_naming_no_node_of_the_graph_is_named(placed_run):
    run, placed = placed_run

    def add_a_stranger(partitioned):
        first, *rest = partitioned.clusters
        return replace(partitioned, clusters=(replace(first, nodes=(*first.nodes, "no_such_node")), *rest))

    with pytest.raises(TraceError, match=r"stage 'partition': its output .*no_such_node"):
        run_stages(run, (_partition_then(add_a_stranger),), placed)


def test_a_precondition_is_checked_before_the_stage_runs(placed_run):
    run, placed = placed_run
    partitioned = run_stages(run, (STAGE["partition"],), placed)
    compiled = run_stages(run, (STAGE["compile"],), partitioned)
    (to_text,) = [n.name for n in placed.captured.graph if n.op == "AsString"]
    first, *rest = compiled.subgraphs
    bad = replace(first, cluster=replace(first.cluster, nodes=(*first.cluster.nodes, to_text)))
    with pytest.raises(TraceError, match=rf"stage 'measure': its input .*node '{to_text}'"):
        run_stages(run, (STAGE["measure"],), replace(compiled, subgraphs=(bad, *rest)))


# -- 4. the workdir dumps come from the loop ---------------------------------------------------------------
CAPTURE_FILES = {"options.json", "frozen.pb", "frozen.pbtxt", "optimized.pb", "optimized.pbtxt"}
PACKAGE_FILES = {
    "partitioned.pb",
    "partitioned.pbtxt",
    "placement.json",
    "placement.html",
    "golden_inputs.npz",
    "golden_outputs.npz",
    "subgraphs",
}


def test_workdir_files_are_written_after_the_stage_that_makes_them(tmp_path):
    workdir = tmp_path / "work"
    run = start(norm_between, X, "xla", workdir=str(workdir))
    frozen = run_stages(run, STAGES[:1])
    assert not workdir.exists()  # capture has no dump: the graph is written once optimized too
    captured = run_stages(run, STAGES[1:2], frozen)
    assert set(os.listdir(workdir)) == CAPTURE_FILES  # and nothing a later stage writes
    run_stages(run, STAGES[2:], captured)
    assert set(os.listdir(workdir)) == CAPTURE_FILES | PACKAGE_FILES
    assert sorted(os.listdir(workdir / "subgraphs")) == ["tfaccel_sg_0", "tfaccel_sg_1"]
