"""Assembly: cut each cluster out as a standalone GraphDef, and splice compiled calls back in.

Both directions live together because they must agree on one convention: a cluster's inputs become
Placeholders ``tfaccel_in_<i>`` in ``cluster.inputs`` order, and output ``k`` of the call node that replaces
the cluster is ``cluster.outputs[k]``. Backends only say what to call (:class:`.base.Call`); the node that
runs it is built here alone (:func:`call_node`). Everything here is deterministic (same plan -> same bytes).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf
from tensorflow.core.framework import attr_value_pb2, graph_pb2, node_def_pb2

from tfaccel import _tf_compat
from tfaccel.backends.base import AttrLike, CompiledSubgraph, SubgraphDef, input_placeholder
from tfaccel.compiler.ir import Graph, TensorInfo, TensorRef
from tfaccel.compiler.partition import Cluster
from tfaccel.errors import PartitionError

__all__ = ["assemble", "call_node", "extract_subgraph", "resource_placeholder", "resources_of"]


def resource_placeholder(name: str) -> node_def_pb2.NodeDef:
    """The scalar string Placeholder through which a call reads one of its compiled resources."""
    node = node_def_pb2.NodeDef()
    node.name = name
    node.op = "Placeholder"
    node.attr["dtype"].type = tf.string.as_datatype_enum
    node.attr["shape"].shape.CopyFrom(tf.TensorShape([]).as_proto())
    return node


def extract_subgraph(cluster: Cluster, graph: Graph, library: graph_pb2.FunctionDefLibrary) -> SubgraphDef:
    """Build the standalone GraphDef of ``cluster``: Placeholders, copied Consts, members."""
    input_index = {ref: i for i, ref in enumerate(cluster.inputs)}
    members = set(cluster.nodes)
    keep_control = members  # control edges from outside become control inputs of the call node
    sub = graph_pb2.GraphDef()
    sub.versions.CopyFrom(_versions())
    input_infos = []
    for i, ref in enumerate(cluster.inputs):
        info = graph[ref.node].outputs[ref.port]
        input_infos.append(info)
        ph = sub.node.add()
        ph.name = input_placeholder(i)
        ph.op = "Placeholder"
        ph.attr["dtype"].type = tf.as_dtype(info.dtype).as_datatype_enum
        ph.attr["shape"].shape.CopyFrom(tf.TensorShape(info.shape).as_proto())
    for name in cluster.consts:
        node_def = copy.deepcopy(_node_def(graph, name))
        del node_def.input[:]
        sub.node.append(node_def)
    stateful = False
    for name in cluster.nodes:
        original = _node_def(graph, name)
        node_def = copy.deepcopy(original)
        del node_def.input[:]
        for text in original.input:
            if text.startswith("^"):
                if text[1:] in keep_control:
                    node_def.input.append(text)
                continue
            ref = TensorRef.parse(text)
            if ref in input_index:
                node_def.input.append(f"{input_placeholder(input_index[ref])}:0")
            else:
                node_def.input.append(text)
        node_def.ClearField("device")
        sub.node.append(node_def)
        stateful = stateful or _tf_compat.is_stateful_op(node_def.op)
    sub.library.CopyFrom(library)
    return SubgraphDef(
        cluster=cluster,
        graph_def=sub,
        input_infos=tuple(input_infos),
        outputs=tuple(str(ref) for ref in cluster.outputs),
        output_infos=tuple(graph[ref.node].outputs[ref.port] for ref in cluster.outputs),
        stateful=stateful,
    )


def call_node(
    item: CompiledSubgraph, input_infos: Sequence[TensorInfo], output_infos: Sequence[TensorInfo]
) -> node_def_pb2.NodeDef:
    """The node that runs ``item.call`` in place of its cluster: the only place a call becomes a NodeDef.

    It is named after the cluster; it reads the compiled resources (``<name>:0``), then the cluster's
    inputs in order, then the cluster's control inputs; its output ``k`` is ``cluster.outputs[k]``.
    ``input_infos``/``output_infos`` describe the cluster's inputs and outputs (their dtypes are ``Tin`` and
    ``Tout``; a function's ``Tin`` starts with a ``string`` per resource). A function call is a
    ``(Stateful)PartitionedCall`` whose ``f`` names the function.
    """
    cluster, call = item.cluster, item.call
    node = node_def_pb2.NodeDef()
    node.name = cluster.name
    node.input.extend(f"{name}:0" for name, _ in item.resources)
    node.input.extend(str(ref) for ref in cluster.inputs)
    node.input.extend(f"^{c}" for c in cluster.control_inputs)
    tin = [tf.as_dtype(i.dtype) for i in input_infos]
    if call.function is not None:  # a function's arguments are all in Tin, the resources (strings) first
        tin = [tf.string] * len(item.resources) + tin
    node.attr["Tin"].CopyFrom(_attr_value(tin))
    node.attr["Tout"].CopyFrom(_attr_value([tf.as_dtype(o.dtype) for o in output_infos]))
    if call.function is not None:
        node.op = "StatefulPartitionedCall" if call.stateful else "PartitionedCall"
        node.attr["f"].func.name = call.function
    else:
        node.op = call.op or ""
    for name, value in call.attrs.items():
        node.attr[name].CopyFrom(_attr_value(value))
    return node


def _attr_value(value: AttrLike) -> attr_value_pb2.AttrValue:
    """A backend's plain attribute value as the ``AttrValue`` proto (see :data:`.base.AttrLike`)."""
    if isinstance(value, attr_value_pb2.AttrValue):
        return value
    attr = attr_value_pb2.AttrValue()
    if isinstance(value, (bool, int, float, str, bytes, tf.DType, tf.TensorShape)):
        field, item = _scalar_field(value)
        if field == "shape":
            attr.shape.CopyFrom(item)
        else:
            setattr(attr, field, item)
        return attr
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"a call attribute cannot hold {type(value).__name__} ({value!r})")
    attr.list.SetInParent()  # an empty list is a list too
    for element in value:
        field, item = _scalar_field(element)
        if field == "shape":
            attr.list.shape.add().CopyFrom(item)
        else:
            getattr(attr.list, field).append(item)
    return attr


def _scalar_field(value: object) -> tuple[str, Any]:
    """The ``AttrValue`` field that holds ``value``, and ``value`` in that field's form."""
    if isinstance(value, bool):  # before int: a bool is an int
        return "b", value
    if isinstance(value, int):
        return "i", value
    if isinstance(value, float):
        return "f", value
    if isinstance(value, str):
        return "s", value.encode()
    if isinstance(value, bytes):
        return "s", value
    if isinstance(value, tf.DType):
        return "type", value.as_datatype_enum
    if isinstance(value, tf.TensorShape):
        return "shape", value.as_proto()
    raise TypeError(f"a call attribute cannot hold {type(value).__name__} ({value!r})")


def assemble(
    graph: Graph,
    graph_def: graph_pb2.GraphDef,
    compiled: Sequence[CompiledSubgraph],
) -> tuple[graph_pb2.GraphDef, tuple[str, ...]]:
    """The outer GraphDef with every cluster replaced by its call node, and the new output names.

    Nodes no longer reachable from the outputs (Consts that only fed subgraphs) are pruned. Each compiled
    resource becomes a scalar string Placeholder of that name (the caller feeds it).
    """
    replaced: dict[TensorRef, TensorRef] = {}
    owner: dict[str, str] = {}
    for item in compiled:
        cluster = item.cluster
        for name in cluster.nodes:
            owner[name] = cluster.name
        for k, ref in enumerate(cluster.outputs):
            replaced[ref] = TensorRef(cluster.name, k)
    calls = {item.cluster.name: item for item in compiled}
    out = graph_pb2.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    resources = resources_of(compiled)
    for name in resources:  # a compiled model the call reads as a string input (fed from a variable)
        out.node.append(resource_placeholder(name))
    placed_calls: set[str] = set()
    for node_def in graph_def.node:
        cluster_name = owner.get(node_def.name)
        if cluster_name is not None:
            if cluster_name not in placed_calls:  # the call goes where its first member was
                placed_calls.add(cluster_name)
                item = calls[cluster_name]
                call = call_node(
                    item, _infos(graph, item.cluster.inputs), _infos(graph, item.cluster.outputs)
                )
                _rewrite_inputs(call, replaced, owner)  # it may read another cluster's outputs
                out.node.append(call)
            continue
        new = copy.deepcopy(node_def)
        _rewrite_inputs(new, replaced, owner)
        out.node.append(new)
    # (a control edge from a member to an outside node needs no splice: _rewrite_inputs already turned the
    # consumer's ^member into ^cluster)
    outputs = []
    for ref in graph.outputs:
        if ref in replaced:
            outputs.append(str(replaced[ref]))
        elif ref.node in owner:
            raise PartitionError(f"graph output {ref} is inside {owner[ref.node]} but not among its outputs")
        else:
            outputs.append(str(ref))
    out.library.CopyFrom(graph_def.library)
    known = {f.signature.name for f in out.library.function}
    for item in compiled:
        for fdef in item.functions:
            if fdef.signature.name not in known:
                known.add(fdef.signature.name)
                out.library.function.append(fdef)
    return _prune(out, [*graph.inputs, *sorted(resources)], outputs), tuple(outputs)


def resources_of(compiled: Sequence[CompiledSubgraph]) -> dict[str, bytes]:
    """Every resource the compiled calls read, once (a cached compilation may be used twice)."""
    found: dict[str, bytes] = {}
    for item in compiled:
        for name, value in item.resources:
            found.setdefault(name, value)
    return found


def _rewrite_inputs(
    node: node_def_pb2.NodeDef, replaced: Mapping[TensorRef, TensorRef], owner: Mapping[str, str]
) -> None:
    texts = list(node.input)
    del node.input[:]
    seen_control: set[str] = set()
    for text in texts:
        if text.startswith("^"):
            target = owner.get(text[1:], text[1:])
            if target not in seen_control:
                seen_control.add(target)
                node.input.append(f"^{target}")
            continue
        ref = TensorRef.parse(text)
        if ref.node in owner:
            if ref not in replaced:
                raise PartitionError(
                    f"node {node.name!r} reads {ref}, which is inside {owner[ref.node]} but not one of its "
                    "outputs (a partitioner bug: please report it with the --workdir artifacts)"
                )
            node.input.append(str(replaced[ref]))
        else:
            node.input.append(text)


def _prune(
    graph_def: graph_pb2.GraphDef, inputs: Sequence[str], outputs: Sequence[str]
) -> graph_pb2.GraphDef:
    by_name = {n.name: n for n in graph_def.node}
    keep: set[str] = set(inputs)  # an unused input still belongs to the signature
    stack = [TensorRef.parse(o).node for o in outputs]
    visited: set[str] = set()
    while stack:
        name = stack.pop()
        if name in visited:
            continue
        visited.add(name)
        keep.add(name)
        for text in by_name[name].input:
            pred = text[1:] if text.startswith("^") else TensorRef.parse(text).node
            if pred not in keep:
                stack.append(pred)
    pruned = graph_pb2.GraphDef()
    pruned.versions.CopyFrom(graph_def.versions)
    pruned.node.extend(n for n in graph_def.node if n.name in keep)
    pruned.library.CopyFrom(graph_def.library)
    return pruned


def _infos(graph: Graph, refs: Sequence[TensorRef]) -> list[TensorInfo]:
    return [graph[ref.node].outputs[ref.port] for ref in refs]


def _node_def(graph: Graph, name: str) -> node_def_pb2.NodeDef:
    payload = graph[name].payload
    if not isinstance(payload, node_def_pb2.NodeDef):
        raise PartitionError(f"node {name!r} carries no NodeDef; the IR was not built by capture")
    return payload


def _versions() -> tf.compat.v1.VersionDef:
    return tf.Graph().as_graph_def().versions
