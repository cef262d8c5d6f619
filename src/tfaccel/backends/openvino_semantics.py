"""TensorFlow's numeric semantics on the openvino backend: what OpenVINO computes differently, and the fixes.

Why: OpenVINO's CPU plugin is fast because it bends numerics TensorFlow keeps. Measured against TF (the
conformance harness, tests/test_op_conformance.py, runs every claimed op x dtype x edge value):

- **NaN**: its ``Relu``, ``Clamp``, ``Maximum``/``Minimum``, ``Exp``, ``Softmax`` and
  ``ReduceMax``/``ReduceMin`` return a number for NaN (TF keeps the NaN), so a ReLU network fed one NaN
  answers with finite logits. Those TF ops are rewritten before conversion (:func:`preserve_nan`): the
  elementwise ones by adding ``0 / (x * x + 1)`` (0 for every number and +-inf, NaN for NaN; the cheapest
  exact form measured), the reductions by an explicit ``SelectV2``. ``ArgMax``/``ArgMin`` on floats pick
  a NaN where TF skips it: not claimed.
- **int64**: the CPU plugin computes int64 in 32 bits (``a*a``, ``a+b``, comparisons, even ``Gather`` of
  an int64 table are wrong past 2**31). int64 values that depend only on shapes and small constants (the
  ``Shape -> StridedSlice -> Pack`` arithmetic of every dynamic reshape) stay on OpenVINO: they are folded
  at compile time or are dimension sizes far below 2**31. Index outputs (``ArgMax``...) may also flow into
  ops that only move, compare or convert them. Any other int64 value computed at run time is not claimed.
- **integer division**: ``FloorDiv``, ``FloorMod``, ``TruncateDiv``, ``TruncateMod``... divide through
  float32, so large int32 values lose precision (hashed ids -> floormod -> embedding picks wrong rows).
- **8-bit integers**: int8/uint8 arithmetic saturates where TF wraps around.

:func:`semantic_verdict` is the per-node rule the backend's support query applies on top of the frontend's
own verdict; :func:`preserve_nan` runs on every subgraph before conversion (under
``--nan-semantics=relaxed`` only :func:`mirror_comparisons`, which costs nothing).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2, node_def_pb2

from tfaccel import _tf_compat
from tfaccel.compiler.capture import graph_from_graph_def, rename_function_references
from tfaccel.compiler.ir import Graph, Node, TensorRef

__all__ = [
    "CAST_WRAPS",
    "FLOAT_DTYPES",
    "NAN_GUARDED_OPS",
    "XLA_NAN_GUARDED_OPS",
    "BodyRule",
    "body_verdicts",
    "cast_wraps_reason",
    "int64_classes",
    "mirror_comparisons",
    "preserve_nan",
    "semantic_verdict",
]

FLOAT_DTYPES = frozenset({"float16", "bfloat16", "float32"})

#: TF op -> its output argument's name (how a FunctionDef body refers to the output)
NAN_GUARDED_OPS = {
    "Relu": "activations",
    "Relu6": "activations",
    "Maximum": "z",
    "Minimum": "z",
    "ClipByValue": "output",
    "Max": "output",
    "Min": "output",
    "Exp": "y",
    "Softmax": "softmax",
    "LogSoftmax": "logsoftmax",
    "MaxPool": "output",
}

#: what the xla backend guards. XLA:CPU computes min/max "fast", ignoring NaN (measured: ``maximum(x, y)``
#: with NaN in ``y`` and ``reduce_max``/``reduce_min`` return numbers where TF gives NaN). ``MaxPool``: TF's
#: kernel starts each window at float32's lowest number and skips NaN, so a window of only NaN (or -inf)
#: gives -3.4e38 where XLA gives -inf; the guard clamps there. Not fixed: a ``Relu`` that XLA fuses into a
#: following max-pool turns a window of only NaN into 0 (guarding the Relu does not survive the fusion).
XLA_NAN_GUARDED_OPS = frozenset({"Maximum", "Minimum", "Max", "Min", "MaxPool"})
#: what the openvino backend guards (its MaxPool matches TF's, measured by the conformance harness)
OPENVINO_NAN_GUARDED_OPS = frozenset(NAN_GUARDED_OPS) - {"MaxPool"}

#: float comparisons OpenVINO's CPU plugin answers True for a NaN operand on AVX-512 machines (its
#: vector compare is unordered there; TF's is ordered: NaN compares False), rewritten as the mirrored
#: comparison it gets right everywhere (``a > b`` is ``b < a``, NaN included); found by the op
#: conformance test on an AVX-512 CPU, correct on AVX2 before and after
MIRRORED_COMPARISONS = {"Greater": "Less", "GreaterEqual": "LessEqual"}

_RAW_SUFFIX = "/tfaccel_nan_raw"
#: elementwise ops guarded by adding ``0 / (x * x + 1)`` per operand (the rest by SelectV2)
_ADDITIVE = frozenset({"Relu", "Relu6", "Maximum", "Minimum", "ClipByValue", "Exp"})

# -- support rules ---------------------------------------------------------------------------------------

#: integer ops the CPU plugin computes through float32 (inexact past 2**24)
_FLOAT_THROUGH_DIVISION = frozenset(
    {"FloorDiv", "FloorMod", "TruncateDiv", "TruncateMod", "Mod", "Div", "DivNoNan", "RealDiv", "Pow"}
)

#: float ops whose OpenVINO formula departs from TF's at infinities, NaN and huge operands
_FLOAT_EDGES_DIFFER = frozenset({"FloorDiv", "FloorMod", "TruncateMod", "Mod", "Atan2"})

#: int32 ops the CPU plugin computes through float32 (2**31 - 1 comes back as -2**31; a product past 2**24
#: loses its low bits)
_INT32_THROUGH_FLOAT = frozenset(
    {"Relu", "Sum", "Max", "Min", "Mean", "MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum"}
)
#: ops whose OpenVINO conversion answers differently from TF whatever the dtype (found by a bug hunt, each
#: with a case in tests/test_semantic_corners.py)
_DIFFERENT_ANSWERS = {
    "Unique": "OpenVINO's Unique gives wrong values when only its first output is used",
    "ScatterNd": "OpenVINO's ScatterNd keeps one update at a repeated index where TensorFlow sums them",
    "Softplus": "OpenVINO's Softplus loses precision below -8 (it even goes negative); TensorFlow's does not",
}
#: ops whose OpenVINO float answer orders NaN differently from TF's
_NAN_ORDER_DIFFERS = frozenset({"ArgMax", "ArgMin", "TopKV2"})
#: reductions whose answer over an empty axis OpenVINO gives as a number where TF gives +-inf or NaN
_EMPTY_REDUCTION_DIFFERS = frozenset({"Max", "Min", "Mean"})
#: integer dtypes a float converts to by wrapping around in TF on x86 (through int32) and by saturating in
#: OpenVINO and XLA
CAST_WRAPS = frozenset({"int8", "uint8", "int16", "uint16"})
#: narrow-integer ops that cannot overflow, so saturation never shows
_NARROW_SAFE = frozenset({"Sign", "Relu", "Relu6", "BitwiseAnd", "BitwiseOr", "BitwiseXor"})

#: ops that only move, select, compare or convert values: exact on any integer the plugin holds exactly
_VALUE_PRESERVING = frozenset(
    {
        "Identity",
        "IdentityN",
        "Reshape",
        "Squeeze",
        "ExpandDims",
        "Transpose",
        "ConjugateTranspose",
        "Tile",
        "BroadcastTo",
        "Pack",
        "Unpack",
        "ConcatV2",
        "Concat",
        "Split",
        "SplitV",
        "Slice",
        "StridedSlice",
        "Gather",
        "GatherV2",
        "GatherNd",
        "Reverse",
        "ReverseV2",
        "Pad",
        "PadV2",
        "MirrorPad",
        "Fill",
        "ZerosLike",
        "OnesLike",
        "Select",
        "SelectV2",
        "Where",
        "Equal",
        "NotEqual",
        "Less",
        "LessEqual",
        "Greater",
        "GreaterEqual",
        "Maximum",
        "Minimum",
        "Max",
        "Min",
        "Cast",
        "OneHot",
        "ArgMax",
        "ArgMin",
        "Shape",
        "ShapeN",
        "Size",
        "Rank",
        "Range",
        "TopKV2",
        "Unique",
        "SpaceToBatchND",
        "BatchToSpaceND",
        "DepthToSpace",
        "SpaceToDepth",
        "Snapshot",
        "StopGradient",
        "PreventGradient",
        "EnsureShape",
        "CheckNumerics",
        "LogicalAnd",
        "LogicalOr",
        "LogicalNot",
        "IsNan",
        "IsInf",
        "IsFinite",
    }
)

#: int64 outputs whose values are indices into a tensor, so far below 2**31 (the plugin's int32 holds them)
_INDEX_OUTPUTS = {"ArgMax": 0, "ArgMin": 0, "TopKV2": 1, "Unique": 1, "Where": 0}
#: int64 outputs that depend on a tensor's shape only
_SHAPE_OPS = frozenset({"Shape", "ShapeN", "Size", "Rank"})

#: 8-bit integers: the plugin saturates their arithmetic where TF wraps (16-bit values wrap, as in TF)
_NARROW_INTS = frozenset({"int8", "uint8"})
_INT_DTYPES = frozenset({"int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"})
#: every dtype a note may drop (the document's columns)
_ALL_DTYPES = FLOAT_DTYPES | _INT_DTYPES | {"bool", "float64", "complex64", "complex128"}
_INT32_MAX = 2**31 - 1
#: dtypes whose every value the plugin's int32 holds
_FITS_INT32 = frozenset({"bool", "int8", "uint8", "int16", "uint16", "int32"})
#: integer dtypes the plugin computes in 32 bits
_WIDE_INTS = frozenset({"int64", "uint32", "uint64"})


def int64_classes(graph: Graph) -> dict[TensorRef, str]:
    """Each tensor's class for the plugin's 32-bit integers: ``"shape"`` (depends on shapes and
    int32-sized constants only), ``"index"`` (fits in int32: an index output, an int32-or-narrower value,
    or a wide integer only moved, compared or converted since) or ``"data"`` (anything else).
    """
    classes: dict[TensorRef, str] = {}
    for name in graph.topological_order():
        node = graph[name]
        ins = [classes.get(ref, "data") for ref in node.inputs]
        for port, info in enumerate(node.outputs):
            if node.op in _SHAPE_OPS:
                kind = "shape"
            elif node.op == "Const":
                kind = "shape" if _small_const(node) else "data"
            elif node.op == "Placeholder":
                kind = "data"
            elif _INDEX_OUTPUTS.get(node.op) == port:
                kind = "index"
            elif ins and all(k == "shape" for k in ins):
                kind = "shape"
            elif info.dtype in _FITS_INT32 or (
                node.op in _VALUE_PRESERVING and all(k in ("shape", "index") for k in ins)
            ):
                kind = "index"
            else:
                kind = "data"
            classes[TensorRef(node.name, port)] = kind
    return classes


def _small_const(node: Node) -> bool:
    """A constant whose integer values all fit in int32 (floats and bools count as small)."""
    payload = node.payload
    if not isinstance(payload, node_def_pb2.NodeDef) or "value" not in payload.attr:
        return False
    try:
        value = tf.make_ndarray(payload.attr["value"].tensor)
    except (TypeError, ValueError):
        return False
    if value.dtype.kind not in "iu" or value.size == 0:
        return True
    return bool(int(value.min()) >= -(2**31) and int(value.max()) <= _INT32_MAX)


def semantic_verdict(node: Node, graph: Graph | None, classes: dict[TensorRef, str]) -> str | None:
    """Why OpenVINO would compute ``node`` differently from TF (None when it matches TF exactly)."""
    dtypes = [info.dtype for info in node.outputs]
    in_dtypes: list[str] = []
    in_classes: list[str] = []
    if graph is not None:
        for ref in node.inputs:
            if ref.node in graph:
                in_dtypes.append(graph[ref.node].outputs[ref.port].dtype)
                in_classes.append(classes.get(ref, "data"))
    every = set(dtypes) | set(in_dtypes)
    floats = sorted(set(in_dtypes) & FLOAT_DTYPES)
    if node.op in _DIFFERENT_ANSWERS:
        return _DIFFERENT_ANSWERS[node.op]
    if floats and node.op in ("ArgMax", "ArgMin"):
        return f"OpenVINO's {node.op} picks a NaN where TensorFlow skips it"
    if floats and node.op in _NAN_ORDER_DIFFERS:
        return f"OpenVINO's {node.op} orders NaN differently from TensorFlow"
    if floats and node.op == "Cast" and set(dtypes) & CAST_WRAPS:
        return cast_wraps_reason("OpenVINO", dtypes[0])
    if node.op in _EMPTY_REDUCTION_DIFFERS and graph is not None and node.inputs:
        ref = node.inputs[0]
        shape = graph[ref.node].outputs[ref.port].shape if ref.node in graph else None
        if shape is not None and 0 in shape:
            return (
                f"OpenVINO's {node.op} over an empty axis gives a number where TensorFlow gives inf or NaN "
                "(its input is empty)"
            )
    if floats and node.op in _FLOAT_EDGES_DIFFER:
        return (
            f"OpenVINO's {floats[0]} {node.op} differs from TensorFlow's at infinities, huge operands and "
            "signed zeros"
        )
    if floats and node.op == "Cast" and "bool" in dtypes:
        return "OpenVINO casts NaN to False, TensorFlow to True"
    ints = sorted(every & _INT_DTYPES)
    # dimension sizes are far below 2**24, where float32 is exact: shape arithmetic stays
    from_shapes = all(k == "shape" for d, k in zip(in_dtypes, in_classes, strict=True) if d in _INT_DTYPES)
    if ints and node.op in _FLOAT_THROUGH_DIVISION and node.op != "RealDiv" and not from_shapes:
        return (
            f"OpenVINO computes {ints[-1]} {node.op} through float32 (wrong for large values): exact only "
            "for values computed from shapes"
        )
    if "int32" in in_dtypes[:1] and node.op in _INT32_THROUGH_FLOAT and not from_shapes:
        return (
            f"OpenVINO computes int32 {node.op} through float32: exact only for values computed from shapes"
        )
    if node.op == "Cast" and "bool" in dtypes and set(in_dtypes) - {"bool", "int8", "uint8"} - FLOAT_DTYPES:
        return f"OpenVINO casts {in_dtypes[0]} to bool through its low byte (256 becomes False)"
    if node.op == "OneHot" and in_dtypes[:1] and in_dtypes[0] not in ("int32", "int64"):
        return f"OpenVINO's CPU plugin runs OneHot on int32/int64 indices only, not {in_dtypes[0]}"
    narrow = sorted(every & _NARROW_INTS)
    if narrow and node.op not in _VALUE_PRESERVING and node.op not in _NARROW_SAFE:
        return (
            f"OpenVINO's {narrow[0]} arithmetic saturates where TensorFlow wraps around ({narrow[0]} runs "
            f"on openvino only in ops that move, compare or convert values, not {node.op})"
        )
    wide = [(dtype, kind) for dtype, kind in zip(in_dtypes, in_classes, strict=True) if dtype in _WIDE_INTS]
    wide += [
        (info.dtype, classes.get(TensorRef(node.name, port), "data"))
        for port, info in enumerate(node.outputs)
        if info.dtype in _WIDE_INTS
    ]
    for dtype, kind in wide:
        if kind == "shape":
            continue
        if kind == "index" and node.op in _VALUE_PRESERVING and node.op not in _INT32_THROUGH_FLOAT:
            continue
        return (
            f"OpenVINO computes {dtype} {node.op} in 32 bits: exact only for values computed from "
            "shapes and small constants"
        )
    return None


#: a per-node rule for :func:`body_verdicts`: why the backend would answer differently (None: it matches)
BodyRule = Callable[[Node, Graph, dict[TensorRef, str]], "str | None"]


def body_verdicts(
    graph_def: graph_pb2.GraphDef, rule: BodyRule | None = None, unreadable_refused: bool = True
) -> dict[str, str]:
    """Node name -> why, for each node of ``graph_def`` whose loop or branch bodies (recursively) hold an
    op ``rule`` refuses (by default :func:`semantic_verdict`): compiling the node would compile that op too.
    A body TensorFlow cannot read alone is refused unless ``unreadable_refused`` is false (a backend
    whose rule is a rare corner keeps such loops).

    Why: the per-node rules see the top-level graph only; a ``FloorMod`` of hashed ids or an int32 ``Sum``
    inside a ``tf.cond`` went to OpenVINO with its ``If`` and answered wrongly. Each body is read into the
    IR (dtypes and shapes from TensorFlow's import), its arguments counted as data.
    """
    functions = {f.signature.name: f for f in graph_def.library.function}
    found: dict[str, str | None] = {}
    verdict_of = rule or semantic_verdict

    def function_verdict(name: str) -> str | None:
        if name in found:
            return found[name]
        found[name] = None  # a recursive reference adds nothing new
        function = functions.get(name)
        if function is None:
            return None
        try:
            body, _ = _tf_compat.function_body(function, graph_def.library)
            body.library.CopyFrom(graph_def.library)
            graph = graph_from_graph_def(body, [n.name for n in body.node if n.op == "Placeholder"], [])
        except Exception as err:  # a body TensorFlow cannot import alone: refused unless told otherwise
            if unreadable_refused:
                found[name] = f"its body {name} could not be checked ({type(err).__name__})"
            return found[name]
        classes = int64_classes(graph)
        for node in graph.topological_order():
            inner = graph[node]
            if inner.op == "Placeholder":  # an argument: what the body does with it is checked
                continue
            why = verdict_of(inner, graph, classes) or node_verdict(inner.payload)
            if why is not None:
                found[name] = f"{inner.op} {inner.name!r} in its body: {why}"
                return found[name]
        return None

    def node_verdict(node_def: Any) -> str | None:
        if not isinstance(node_def, node_def_pb2.NodeDef):
            return None
        for name in _called([node_def]):  # its bodies, and a function called as an op
            why = function_verdict(name) if name in functions else None
            if why is not None:
                return why
        return None

    verdicts = {}
    for node_def in graph_def.node:
        why = node_verdict(node_def)
        if why is not None:
            verdicts[node_def.name] = why
    return verdicts


def cast_wraps_reason(backend: str, dtype: str) -> str:
    """Why a float to ``dtype`` (8 or 16 bits) cast stays on TF on ``backend``."""
    return (
        f"{backend} saturates a float out of {dtype}'s range where TensorFlow wraps around (through int32), "
        "e.g. tf.cast(x * 255, tf.uint8) of 1.01"
    )


# -- the NaN rewrite -------------------------------------------------------------------------------------


def preserve_nan(graph_def: graph_pb2.GraphDef, ops: Iterable[str] | None = None) -> graph_pb2.GraphDef:
    """A copy of ``graph_def`` where every float op OpenVINO turns NaN into a number is guarded.

    ``ops`` names the op types to guard: by default OpenVINO's (:data:`OPENVINO_NAN_GUARDED_OPS`); the
    xla backend guards only the ones XLA:CPU gets wrong (:data:`XLA_NAN_GUARDED_OPS`).

    Elementwise ops (``Relu``, ``Relu6``, ``Maximum``, ``Minimum``, ``ClipByValue``, ``Exp``) become
    ``op(x...) + nan_of(x) + ...`` with ``nan_of(v) = 0 / (v * v + 1)``: +0 for every finite value and
    +-inf (``v * v`` may overflow to inf, and ``0 / inf = 0``), NaN for NaN. It is plain arithmetic, so
    OpenVINO fuses it into one pass after the convolution, keeps its blocked layouts and sinks the
    NHWC transposes through it (a ``SelectV2(IsNan(x), x, op(x))`` guard blocked both and cost ResNet50
    2x, MobileNetV2 4-7x; see benchmarks/bench_nan_semantics.py). The only change it can make to a
    non-NaN result is -0.0 -> +0.0. Reductions keep an explicit guard: ``Max``/``Min`` become
    ``SelectV2(Any(IsNan(x)), NaN, op(x))`` over the same axes, ``Softmax``/``LogSoftmax`` give NaN to
    a row holding NaN or +inf or only -inf, as TF does. Loop and branch bodies are rewritten too.
    """
    guarded = frozenset(OPENVINO_NAN_GUARDED_OPS if ops is None else ops)
    out = graph_pb2.GraphDef()
    out.CopyFrom(graph_def)
    if ops is None:  # OpenVINO's comparisons (XLA's are right)
        _mirror_comparisons(out)
    _rewrite_nodes(out.node, guarded, graph_def=True)
    for function in out.library.function:
        renames = _rewrite_nodes(function.node_def, guarded, graph_def=False)
        if renames:
            for key, value in list(function.ret.items()):
                function.ret[key] = renames.get(value, value)
    _rename_rewritten(graph_def, out)
    return out


#: what a rewritten function's name gets: its body is no longer the one its old name stands for
_REWRITTEN_SUFFIX = "_nan"


def _rename_rewritten(original: graph_pb2.GraphDef, out: graph_pb2.GraphDef) -> None:
    """Rename each function of ``out`` whose body the rewrite changed, and each that calls one.

    Why: a compiled xla subgraph carries its (guarded) loop bodies into the traced model's library, next
    to the unguarded originals the TF part of the graph may still call; TensorFlow refuses two different
    definitions of one name. The new name is derived from the old (itself derived from the body's
    content at capture), so it is deterministic and unique.
    """
    before = {f.signature.name: f.SerializeToString(deterministic=True) for f in original.library.function}
    changed = {
        f.signature.name
        for f in out.library.function
        if before.get(f.signature.name) != f.SerializeToString(deterministic=True)
    }
    if not changed:
        return
    calls = {f.signature.name: set(_called(f.node_def)) for f in out.library.function}
    grew = True
    while grew:  # callers of a renamed function change too
        callers = {name for name, called in calls.items() if called & changed} - changed
        changed |= callers
        grew = bool(callers)
    renamed = {name: name + _REWRITTEN_SUFFIX for name in changed}
    rename_function_references(out.node, renamed)
    for function in out.library.function:
        rename_function_references(function.node_def, renamed)
        function.signature.name = renamed.get(function.signature.name, function.signature.name)


def _called(nodes: Iterable[node_def_pb2.NodeDef]) -> Iterable[str]:
    """Every name ``nodes`` may call a function by: their op types and their function attributes."""
    for node in nodes:
        yield node.op
        for value in node.attr.values():
            if value.HasField("func"):
                yield value.func.name
            yield from (f.name for f in value.list.func)


def mirror_comparisons(graph_def: graph_pb2.GraphDef) -> graph_pb2.GraphDef:
    """A copy of ``graph_def`` with OpenVINO's NaN-unsafe float comparisons mirrored (and nothing else
    guarded): what ``--nan-semantics=relaxed`` and the int8 quantizer convert. The mirror costs nothing, so
    it is kept even where the NaN guards are not.
    """
    out = graph_pb2.GraphDef()
    out.CopyFrom(graph_def)
    _mirror_comparisons(out)
    return out


def _mirror_comparisons(graph_def: graph_pb2.GraphDef) -> None:
    """``Greater(a, b)`` -> ``Less(b, a)`` and ``GreaterEqual`` -> ``LessEqual`` on floats, in place, in
    the graph and its function bodies (same output argument ``z``, so references stay valid).
    """
    bodies = [graph_def.node, *(f.node_def for f in graph_def.library.function)]
    for nodes in bodies:
        for node in nodes:
            if node.op in MIRRORED_COMPARISONS and _float_attr(node):
                args = [i for i in node.input if not i.startswith("^")]
                controls = [i for i in node.input if i.startswith("^")]
                node.op = MIRRORED_COMPARISONS[node.op]
                del node.input[:]
                node.input.extend([args[1], args[0], *controls])


def _rewrite_nodes(
    nodes: Iterable[node_def_pb2.NodeDef], guarded: frozenset[str], graph_def: bool
) -> dict[str, str]:
    """Guard the NaN-losing nodes of one scope in place; returns the renamed output references."""
    container = nodes
    originals = [n for n in container if n.op in guarded and n.op in NAN_GUARDED_OPS and _float_attr(n)]
    # MaxPool's clamp is float32's lowest number: other float widths keep XLA's own result
    originals = [n for n in originals if n.op != "MaxPool" or n.attr["T"].type == tf.float32.as_datatype_enum]
    renames: dict[str, str] = {}
    for node in originals:
        name = node.name
        if not graph_def:  # a body refers to outputs by argument name: SelectV2's "output", AddV2's "z"
            final = "z" if node.op in _ADDITIVE or node.op == "MaxPool" else "output"
            renames[f"{name}:{NAN_GUARDED_OPS[node.op]}:0"] = f"{name}:{final}:0"
        for new in _guard(node, graph_def):
            container.add().CopyFrom(new)  # type: ignore[attr-defined]
    if renames:
        for node in container:
            for i, text in enumerate(node.input):
                node.input[i] = renames.get(text, text)
    return renames


def _float_attr(node: node_def_pb2.NodeDef) -> bool:
    return "T" in node.attr and tf.as_dtype(node.attr["T"].type).name in FLOAT_DTYPES


def _guard(node: node_def_pb2.NodeDef, graph_def: bool) -> list[node_def_pb2.NodeDef]:
    """Rename ``node`` to ``<name>/tfaccel_nan_raw`` and return the nodes that recompute ``<name>``."""
    name, op, dtype = node.name, node.op, node.attr["T"].type
    args = [i for i in node.input if not i.startswith("^")]
    controls = [i for i in node.input if i.startswith("^")]
    node.name = name + _RAW_SUFFIX
    raw = f"{node.name}:{NAN_GUARDED_OPS[op]}:0" if not graph_def else node.name
    prefix = f"{name}/tfaccel_nan_"
    added: list[node_def_pb2.NodeDef] = []

    def make(suffix: str, op_type: str, inputs: list[str], **attrs: object) -> str:
        new = node_def_pb2.NodeDef(name=prefix + suffix, op=op_type)
        new.input.extend(inputs)
        if node.device:
            new.device = node.device
        for key, value in attrs.items():
            if key == "value":
                new.attr[key].tensor.CopyFrom(value)  # type: ignore[arg-type]
            elif isinstance(value, bool):
                new.attr[key].b = value
            else:
                new.attr[key].type = value  # type: ignore[assignment]
        added.append(new)
        out_arg = {
            "IsNan": "y",
            "IsInf": "y",
            "LogicalOr": "z",
            "AddV2": "z",
            "Any": "output",
            "Max": "output",
            "Cast": "y",
            "Mul": "z",
            "RealDiv": "z",
        }.get(op_type, "output")
        return new.name if graph_def else f"{new.name}:{out_arg}:0"

    def constant(label: str, number: float) -> str:
        # a float32 constant, cast: OpenVINO's frontend cannot read bfloat16 constants
        f32 = tf.float32.as_datatype_enum
        value = make(label, "Const", [], dtype=f32, value=tf.make_tensor_proto(np.float32(number)))
        return value if dtype == f32 else make(f"{label}_cast", "Cast", [value], SrcT=f32, DstT=dtype)

    def nan_constant() -> str:
        return constant("nan", np.nan)

    if op in _ADDITIVE:
        zero, one = constant("zero", 0.0), constant("one", 1.0)
        total = raw
        for i, arg in enumerate(args):
            square = make(f"square{i}", "Mul", [arg, arg], T=dtype)
            nan_of = make(
                f"nan_of{i}", "RealDiv", [zero, make(f"den{i}", "AddV2", [square, one], T=dtype)], T=dtype
            )
            last = i == len(args) - 1
            total = _add(
                make, name, prefix, total, nan_of, dtype, last, controls, graph_def, added, node.device
            )
        return added

    if op == "MaxPool":
        lowest = constant("lowest", float(np.finfo(np.float32).min))
        final = node_def_pb2.NodeDef(name=name, op="Maximum")
        final.input.extend([raw, lowest, *controls])
        final.attr["T"].type = dtype
        if node.device:
            final.device = node.device
        added.append(final)
        return added

    def is_nan(i: int) -> str:
        return make(f"isnan{i}", "IsNan", [args[i]], T=dtype)

    if op in ("Max", "Min"):
        tidx = node.attr["Tidx"].type
        keep = node.attr["keep_dims"].b
        cond = make("any", "Any", [is_nan(0), args[1]], Tidx=tidx, keep_dims=keep)
        value = nan_constant()
    elif op in ("Softmax", "LogSoftmax"):
        # TF: a row holding NaN or +inf, or all -inf, is NaN throughout (x - max(x) meets NaN or inf - inf)
        axis = make(
            "axis", "Const", [], dtype=tf.int32.as_datatype_enum, value=tf.make_tensor_proto(-1, tf.int32)
        )
        int32 = tf.int32.as_datatype_enum
        any_nan = make("any", "Any", [is_nan(0), axis], Tidx=int32, keep_dims=True)
        peak = make("max", "Max", [args[0], axis], T=dtype, Tidx=int32, keep_dims=True)
        cond = make("or", "LogicalOr", [any_nan, make("isinf", "IsInf", [peak], T=dtype)])
        value = nan_constant()
    elif op in ("Maximum", "Minimum"):
        cond = make("or", "LogicalOr", [is_nan(0), is_nan(1)])
        value = make("sum", "AddV2", [args[0], args[1]], T=dtype)
    elif op == "ClipByValue":
        cond = make("or", "LogicalOr", [make("or01", "LogicalOr", [is_nan(0), is_nan(1)]), is_nan(2)])
        value = make("sum", "AddV2", [make("sum01", "AddV2", [args[0], args[1]], T=dtype), args[2]], T=dtype)
    else:
        cond = is_nan(0)
        value = args[0]
    select = node_def_pb2.NodeDef(name=name, op="SelectV2")
    select.input.extend([cond, value, raw, *controls])
    select.attr["T"].type = dtype
    if node.device:
        select.device = node.device
    added.append(select)
    return added


def _add(
    make: Any,
    name: str,
    prefix: str,
    total: str,
    term: str,
    dtype: int,
    last: bool,
    controls: list[str],
    graph_def: bool,
    added: list[node_def_pb2.NodeDef],
    device: str,
) -> str:
    """``total + term``; the last sum takes the guarded node's own name (and its control inputs)."""
    if not last:
        return str(make(f"plus_{term.split('/')[-1].split(':')[0]}", "AddV2", [total, term], T=dtype))
    final = node_def_pb2.NodeDef(name=name, op="AddV2")
    final.input.extend([total, term, *controls])
    final.attr["T"].type = dtype
    if device:
        final.device = device
    added.append(final)
    return name if graph_def else f"{name}:z:0"


# -- the same rules, per op type, for docs/supported-ops.md -------------------------------------------------


def documented(op: str) -> tuple[frozenset[str], list[str]]:
    """The dtypes the rules above never claim for ``op`` on openvino, and a note per rule that applies."""
    dropped: set[str] = set()
    notes: list[str] = []
    if op in OPENVINO_NAN_GUARDED_OPS:
        notes.append("NaN kept as in TF by a rewrite (OpenVINO's own op turns NaN into a number)")
    if op in ("ArgMax", "ArgMin"):
        dropped |= FLOAT_DTYPES
        notes.append("float inputs stay on TF (OpenVINO picks a NaN where TF skips it)")
    if op in _FLOAT_EDGES_DIFFER:
        dropped |= FLOAT_DTYPES
        notes.append(
            "float operands stay on TF (OpenVINO differs at infinities, huge operands and signed zeros)"
        )
    if op in _FLOAT_THROUGH_DIVISION and op != "RealDiv":
        notes.append("integers only for values computed from shapes (OpenVINO divides them through float32)")
    if op in _INT32_THROUGH_FLOAT:
        notes.append("int32 only for values computed from shapes (OpenVINO computes it through float32)")
    if op in _DIFFERENT_ANSWERS:
        dropped |= _ALL_DTYPES
        notes.append(f"stays on TF ({_DIFFERENT_ANSWERS[op].removeprefix('OpenVINO' + chr(39) + 's ')})")
    if op in _NAN_ORDER_DIFFERS - {"ArgMax", "ArgMin"}:
        dropped |= FLOAT_DTYPES
        notes.append("float inputs stay on TF (OpenVINO orders NaN differently)")
    if op in _EMPTY_REDUCTION_DIFFERS:
        notes.append("not over an empty axis (OpenVINO answers a number where TF gives inf or NaN)")
    if op == "Cast":
        notes.append("to bool only from bool and 8-bit integers (NaN and wider integers cast differently)")
        notes.append(
            "float to 8/16-bit integers stays on TF (TF wraps out-of-range values, OpenVINO saturates)"
        )
    if op == "OneHot":
        notes.append("int32/int64 indices only")
    if op not in _VALUE_PRESERVING and op not in _NARROW_SAFE:
        dropped |= _NARROW_INTS
    return frozenset(dropped), notes


#: the rules that hold for every op, for the document's header
GENERAL_RULES = (
    "int64, uint32 and uint64 run on openvino only for values computed from tensor shapes and constants "
    "that fit in int32 (the `Shape -> StridedSlice -> Pack` arithmetic of dynamic reshapes), or for "
    "values that fit in int32 (indices, casts from int32) in ops that only move, compare or convert "
    "them: OpenVINO's CPU plugin computes these dtypes in 32 bits, so every other such node stays on TF. "
    "int8/uint8 arithmetic stays on TF (OpenVINO saturates where TF wraps around). The rules are "
    "measured op by op, dtype by dtype, on edge values by tests/test_op_conformance.py. A loop or branch "
    "(While, If, Case) runs on openvino only if every op of its bodies passes the same rules; TensorFlow's "
    "lowered control flow (Switch/Merge and the branches between them) stays on TF on every backend."
)
