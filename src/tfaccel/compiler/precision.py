"""``--fp32-cast``: trade fp32 exactness for bfloat16 speed, as a rewrite of the optimized graph.

Modes (the reference compiler's names):

* ``none`` (default): exact fp32.
* ``matmult``: the inputs of matrix multiplications and convolutions are cast to bfloat16, the op runs in
  bfloat16 (oneDNN and XLA accumulate in fp32), and its output is cast back to fp32. Everything else stays
  fp32. Constant weights are converted once, at trace time, instead of being cast on every call.
* ``all``: TensorFlow's own oneDNN bfloat16 auto-mixed-precision pass (grappler) decides, which also moves
  the element-wise ops between matmuls to bfloat16 where that is numerically safe.

Why a graph rewrite rather than a backend setting: the rewritten graph is plain TensorFlow ops, so the
same precision applies to the parts that stay on the TF runtime and to the compiled subgraphs, and a
saved model keeps it in any process.
"""

from __future__ import annotations

import logging

import tensorflow as tf
from tensorflow.core.framework import graph_pb2, node_def_pb2

from tfaccel.compiler.ir import TensorRef
from tfaccel.compiler.opclasses import CONV_OPS, EINSUM_OPS, MATMUL_OPS

__all__ = ["FP32_CAST_MODES", "cast_matmuls_to_bfloat16", "count_bfloat16_compute"]

logger = logging.getLogger(__name__)

FP32_CAST_MODES = ("none", "matmult", "all")

#: the ops ``matmult`` runs in bfloat16: matrix multiplications, Einsum and forward convolutions
_CAST_OPS = MATMUL_OPS | EINSUM_OPS | CONV_OPS
#: the type attributes that name a cast op's data inputs' (and output's) dtype, where not just ``T``
_TYPE_ATTRS: dict[str, tuple[str, ...]] = {"BatchMatMulV3": ("Ta", "Tb", "Tout")}


def _type_attrs(op: str) -> tuple[str, ...]:
    return _TYPE_ATTRS.get(op, ("T",))


_F32 = tf.float32.as_datatype_enum
_BF16 = tf.bfloat16.as_datatype_enum


def cast_matmuls_to_bfloat16(graph_def: graph_pb2.GraphDef) -> int:
    """Rewrite ``graph_def`` in place for ``--fp32-cast=matmult``; returns how many ops now run in bf16.

    A rewritten op that feeds another one hands it bfloat16 directly; every other consumer reads an fp32
    Cast of the output.
    """
    by_name = {n.name: n for n in graph_def.node}
    targets = {
        n.name
        for n in graph_def.node
        if n.op in _CAST_OPS and all(n.attr[a].type == _F32 for a in _type_attrs(n.op) if a in n.attr)
    }
    added: list[node_def_pb2.NodeDef] = []
    bf16_consts: dict[str, str] = {}
    for node in graph_def.node:
        if node.name in targets:
            for i, text in enumerate(node.input):
                if text.startswith("^"):
                    continue
                ref = TensorRef.parse(text)
                source = by_name.get(ref.node)
                if ref.node in targets and ref.port == 0:
                    continue  # already bfloat16
                if source is not None and source.op == "Const" and ref.port == 0:
                    if ref.node not in bf16_consts:
                        bf16_consts[ref.node] = f"{ref.node}/tfaccel_bf16"
                        added.append(_bf16_const(source, bf16_consts[ref.node]))
                    node.input[i] = bf16_consts[ref.node]
                else:
                    cast = _cast(f"{node.name}/tfaccel_bf16_in{i}", text, _F32, _BF16)
                    added.append(cast)
                    node.input[i] = cast.name
            for a in _type_attrs(node.op):
                if a in node.attr:
                    node.attr[a].type = _BF16
        else:
            for i, text in enumerate(node.input):
                if text.startswith("^"):
                    continue
                consumed = TensorRef.parse(text)
                if consumed.node in targets and consumed.port == 0:
                    node.input[i] = f"{consumed.node}/tfaccel_f32_out"
    for name in sorted(targets):
        added.append(_cast(f"{name}/tfaccel_f32_out", f"{name}:0", _BF16, _F32))
    graph_def.node.extend(added)
    return len(targets)


def count_bfloat16_compute(graph_def: graph_pb2.GraphDef) -> int:
    """How many matmul/convolution ops of ``graph_def`` run in bfloat16."""
    return sum(
        1
        for n in graph_def.node
        if n.op in _CAST_OPS and any(n.attr[a].type == _BF16 for a in _type_attrs(n.op) if a in n.attr)
    )


def _cast(name: str, source: str, src: int, dst: int) -> node_def_pb2.NodeDef:
    node = node_def_pb2.NodeDef(name=name, op="Cast", input=[source])
    node.attr["SrcT"].type = src
    node.attr["DstT"].type = dst
    node.attr["Truncate"].b = False
    return node


def _bf16_const(const: node_def_pb2.NodeDef, name: str) -> node_def_pb2.NodeDef:
    value = tf.make_ndarray(const.attr["value"].tensor)
    node = node_def_pb2.NodeDef(name=name, op="Const")
    node.attr["dtype"].type = _BF16
    node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(tf.cast(value, tf.bfloat16).numpy()))
    return node
