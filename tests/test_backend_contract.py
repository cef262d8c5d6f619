"""The backend contract (``tfaccel.backends.base``): backends say what to call, ``assemble`` builds the node.

These pin the splicing conventions at the one place they are now implemented (:func:`assemble.call_node`):
the call is named after its cluster, reads the compiled resources, then the cluster's inputs in order, then
its control inputs; ``Tin``/``Tout`` are the cluster's dtypes; a function runs through a
``(Stateful)PartitionedCall``. The end-to-end tests (test_openvino, test_mixed, test_pipeline) check that
the assembled graphs still compute the right numbers.
"""

from __future__ import annotations

import pytest
import tensorflow as tf

from tfaccel.backends.base import Call, CompiledSubgraph
from tfaccel.compiler.assemble import call_node
from tfaccel.compiler.ir import TensorInfo, TensorRef
from tfaccel.compiler.partition import Cluster

F32, I32 = tf.float32.as_datatype_enum, tf.int32.as_datatype_enum


def _cluster(name: str = "tfaccel_subgraph_0") -> Cluster:
    return Cluster(
        name=name,
        group="openvino",
        nodes=("a", "b"),
        consts=(),
        inputs=(TensorRef("x", 0), TensorRef("y", 1)),
        outputs=(TensorRef("b", 0), TensorRef("a", 1)),
        control_inputs=("init",),
        control_outputs=(),
        forced=False,
        effective_size=2,
    )


INS = (TensorInfo("float32", (2, 3)), TensorInfo("int32", ()))
OUTS = (TensorInfo("float32", (2, None)), TensorInfo("int32", None))


def test_an_op_call_reads_its_resources_then_the_cluster_inputs_and_takes_plain_attrs():
    call = Call(
        op="TfaccelOpenVino",
        attrs={
            "model_key": "abc",
            "precision": "f32",
            "input_names": ["x:0", "y:1"],
            "output_shapes": [tf.TensorShape(i.shape) for i in OUTS],
            "flag": True,
            "count": 3,
        },
    )
    item = CompiledSubgraph(_cluster(), call, resources=(("r_xml", b"<xml/>"), ("r_bin", b"\0")))
    node = call_node(item, INS, OUTS)
    assert node.name == "tfaccel_subgraph_0"
    assert node.op == "TfaccelOpenVino"
    assert list(node.input) == ["r_xml:0", "r_bin:0", "x:0", "y:1", "^init"]
    assert list(node.attr["Tin"].list.type) == [F32, I32]
    assert list(node.attr["Tout"].list.type) == [F32, I32]
    assert node.attr["model_key"].s == b"abc"
    assert node.attr["precision"].s == b"f32"
    assert list(node.attr["input_names"].list.s) == [b"x:0", b"y:1"]
    shapes = [tf.TensorShape(s) for s in node.attr["output_shapes"].list.shape]
    assert [s.as_list() if s.rank is not None else None for s in shapes] == [[2, None], None]
    assert node.attr["flag"].b is True
    assert node.attr["count"].i == 3
    assert "f" not in node.attr


@pytest.mark.parametrize("stateful, op", [(False, "PartitionedCall"), (True, "StatefulPartitionedCall")])
def test_a_function_call_is_a_partitioned_call_of_that_function(stateful, op):
    item = CompiledSubgraph(
        _cluster(), Call(function="fn_1", stateful=stateful, attrs={"_XlaMustCompile": True})
    )
    node = call_node(item, INS, OUTS)
    assert (node.op, node.attr["f"].func.name) == (op, "fn_1")
    assert list(node.input) == ["x:0", "y:1", "^init"]
    assert node.attr["_XlaMustCompile"].b is True


def test_a_cached_compilation_serves_another_cluster_under_that_clusters_name():
    item = CompiledSubgraph(_cluster(), Call(function="fn_1"))
    again = item.for_cluster(_cluster("tfaccel_subgraph_7"))
    assert call_node(again, INS, OUTS).name == "tfaccel_subgraph_7"
    assert call_node(item, INS, OUTS).name == "tfaccel_subgraph_0"  # the cached one is unchanged
    assert item.for_cluster(_cluster()) is item


def test_a_call_names_one_target_and_leaves_the_signature_attrs_to_assemble():
    with pytest.raises(ValueError, match="exactly one of op= and function="):
        Call()
    with pytest.raises(ValueError, match="exactly one of op= and function="):
        Call(op="X", function="f")
    with pytest.raises(ValueError, match=r"\['Tin'\] are set by assemble"):
        Call(op="X", attrs={"Tin": []})
    with pytest.raises(TypeError, match="cannot hold dict"):
        call_node(CompiledSubgraph(_cluster(), Call(op="X", attrs={"bad": {}})), INS, OUTS)
