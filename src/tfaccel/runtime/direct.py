"""Direct eager calls: a small traced model that is one openvino subgraph, called eagerly, runs its compiled
model through OpenVINO's Python API instead of through a TensorFlow function call.

Why: on this machine a TensorFlow function call costs about 0.3 ms before any op runs, and OpenVINO's own
call about 0.1 ms. For a model whose whole compute is one compiled subgraph and takes well under a
millisecond, the function call is most of the time (one ``Dense(3)``: TF 0.45 ms, the traced model through
its TF function 0.63 ms, OpenVINO alone 0.10 ms), so without this the compiled model is slower than TF.

What it keeps:

* **The same answers.** The same IR, compiled by the same OpenVINO library with the configuration the op
  uses (precision hint, latency hint, one stream): the same kernels, so the results are bit-identical to
  the op's (``tests/test_direct_call.py`` compares them bit for bit).
* **Every input check.** Eager inputs have fully known shapes, so the Python checks
  (:meth:`~tfaccel.runtime.model.Executable.flatten`: dtype, shape, one batch for all inputs) are the whole
  of what the graph's checks would test; they run before this. Each output's shape is checked against the
  op's declared ``output_shapes`` here, as the op does.
* **Graph callers are unchanged.** ``tf.function`` callers, the SavedModel and the servers run the op.

When it applies (:func:`find_direct`): the graph is Placeholders, Identities and exactly one openvino op with
one stream, every op input is a model input, every model output is an op output, numeric dtypes only (no
bfloat16: numpy has none), and the compiled weights are at most :data:`MAX_WEIGHT_BYTES` (a bigger model
gains a few percent at most and would pay a second compilation and a second copy of its weights). A call
with an empty input goes through the graph, which handles empty batches.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import function_pb2

from tfaccel import _tf_compat
from tfaccel.native import model_cache

__all__ = [
    "MAX_WEIGHT_BYTES",
    "DirectCall",
    "DirectPlan",
    "DirectUnavailable",
    "find_direct",
    "find_direct_restored",
]

#: the largest compiled model (weights, bytes) called directly (see the module docstring)
MAX_WEIGHT_BYTES = 16 * 1024 * 1024

_OP_TYPE = "TfaccelOpenvino"  # tfaccel.native.OP_TYPE, without importing the op library here
_PASSTHROUGH = frozenset({"Identity"})
_NUMERIC = frozenset(
    {
        tf.float32,
        tf.float16,
        tf.float64,
        tf.int8,
        tf.int16,
        tf.int32,
        tf.int64,
        tf.uint8,
        tf.uint16,
        tf.uint32,
        tf.uint64,
        tf.bool,
    }
)


@dataclass(frozen=True)
class DirectPlan:
    """How an eager call maps onto the one compiled model.

    ``inputs[j]`` is the flat model input feeding the op's argument ``j``; ``outputs[i]`` is the op output
    that is model output ``i``; ``output_shapes`` are the op's declared shapes (``None``: any size).
    """

    xml: bytes
    weights: bytes
    precision: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    input_dtypes: tuple[tf.DType, ...]
    output_dtypes: tuple[tf.DType, ...]
    output_shapes: tuple[tuple[int | None, ...] | None, ...]


def _source(ref: str, nodes: Mapping[str, Any], checks: bool = False) -> tuple[str, int] | None:
    """The (node, output) that ``ref`` reads, through Identity nodes; None for a control input, and for an
    Identity with control inputs unless ``checks`` (in a restored call_flat, the input checks' Identities
    wait for their Asserts, and the returned ones for the variable reads: the values pass unchanged).
    """
    while True:
        if ref.startswith("^"):
            return None
        name, _, port = ref.partition(":")
        node = nodes.get(name)
        if node is None:
            return None
        if node.op in _PASSTHROUGH and len(node.input) >= 1:
            if not checks and any(i.startswith("^") for i in node.input):
                return None
            ref = node.input[0]
            continue
        return name, int(port.rpartition(":")[2] or 0)


def _declared(shape_proto: Any) -> tuple[int | None, ...] | None:
    if shape_proto.unknown_rank:
        return None
    return tuple(None if d.size < 0 else int(d.size) for d in shape_proto.dim)


def find_direct(
    graph_def: Any, inputs: Sequence[str], outputs: Sequence[str], resources: Mapping[str, bytes]
) -> tuple[DirectPlan | None, str]:
    """The plan for direct eager calls of the graph (``inputs``: the Placeholder of each flat model input,
    in order; ``outputs``: the model's output tensors; ``resources``: compiled models by Placeholder), or
    None and why not.
    """
    nodes = {n.name: n for n in graph_def.node}
    ops = [n for n in graph_def.node if n.op == _OP_TYPE]
    if len(ops) != 1:
        return None, f"{len(ops)} openvino subgraphs, not one"
    inert = ("Placeholder", "NoOp", _OP_TYPE, *_PASSTHROUGH)  # NoOp: a saved function's control outputs
    others = sorted({n.op for n in graph_def.node if n.op not in inert})
    if others:
        return None, f"ops run on TF next to the compiled subgraph ({', '.join(others)})"
    (op,) = ops
    if op.attr["streams"].i != 1:
        streams = op.attr["streams"].i
        count = "the streams OpenVINO picks" if streams == 0 else f"{streams} streams"
        return None, f"the subgraph runs {count} (--performance-hint/--num-streams, auto_multicore)"
    feeds = [_source(ref, nodes) for ref in op.input]
    if len(feeds) < 2 or any(f is None for f in feeds):
        return None, "the op has a control input or an input from outside the graph"
    xml_name, bin_name = feeds[0][0], feeds[1][0]  # type: ignore[index]
    if xml_name not in resources or bin_name not in resources:
        return None, "the op's compiled model is not one of the graph's resources"
    if len(resources[bin_name]) > MAX_WEIGHT_BYTES:
        return None, f"its weights are {len(resources[bin_name])} bytes, more than {MAX_WEIGHT_BYTES}"
    position = {name: i for i, name in enumerate(inputs)}
    args: list[int] = []
    for feed in feeds[2:]:
        assert feed is not None
        if feed[0] not in position or feed[1] != 0:
            return None, "an op argument is not a model input"
        args.append(position[feed[0]])
    tout = [tf.as_dtype(t) for t in op.attr["Tout"].list.type]
    tin = [tf.as_dtype(t) for t in op.attr["Tin"].list.type]
    if any(t not in _NUMERIC for t in (*tout, *tin)):
        return None, "an input or output is not numeric"
    taken: list[int] = []
    for ref in outputs:
        source = _source(ref, nodes)
        if source is None or source[0] != op.name or not 0 <= source[1] < len(tout):
            return None, f"model output {ref} is not an output of the compiled subgraph"
        taken.append(source[1])
    shapes = tuple(_declared(s) for s in op.attr["output_shapes"].list.shape)
    if len(shapes) != len(tout):
        return None, "the op declares a shape for each output, and does not"
    plan = DirectPlan(
        xml=resources[xml_name],
        weights=resources[bin_name],
        precision=op.attr["precision"].s.decode() or "f32",
        inputs=tuple(args),
        outputs=tuple(taken),
        input_dtypes=tuple(tin),
        output_dtypes=tuple(tout),
        output_shapes=shapes,
    )
    return plan, ""


def _fits(declared: tuple[int | None, ...], shape: tuple[int, ...]) -> bool:
    if len(declared) != len(shape):
        return False
    return all(d is None or d == n for d, n in zip(declared, shape, strict=True))


def find_direct_restored(concrete: Any, count: int) -> tuple[DirectPlan | None, str]:
    """The plan for a loaded model: ``concrete`` is its restored ``tfaccel_call_flat`` taking ``count`` flat
    inputs. Nothing is assumed of the file: the one call inside it of a function holding an openvino op must
    take the model's inputs in order, then variables (the compiled model, read here), and be what the
    function returns, in order; that function's body is then checked like a traced graph
    (:func:`find_direct`).
    """
    graph = concrete.graph
    outer = graph.as_graph_def()
    library = {f.signature.name: f for f in outer.library.function}
    nodes = {n.name: n for n in outer.node}
    calls = [
        n
        for n in outer.node
        if n.op in ("PartitionedCall", "StatefulPartitionedCall")
        and any(d.op == _OP_TYPE for d in library.get(n.attr["f"].func.name, _EMPTY).node_def)
    ]
    if len(calls) != 1:
        return None, f"{len(calls)} calls of a graph holding an openvino op, not one"
    (call,) = calls
    function = library[call.attr["f"].func.name]
    args = [a.name for a in function.signature.input_arg]
    data = [i for i in call.input if not i.startswith("^")]
    placeholders = [t.op.name for t in graph.inputs]
    if len(data) != len(args) or len(args) < count or len(placeholders) < count:
        return None, "the call does not take the model's inputs"
    for j in range(count):
        if _source(data[j], nodes, checks=True) != (placeholders[j], 0):
            return None, f"argument {j} of the call is not model input {j}"
    captured = list(concrete.captured_inputs)
    handles = dict(zip(placeholders[len(placeholders) - len(captured) :], captured, strict=True))
    resources: dict[str, bytes] = {}
    for j in range(count, len(args)):
        source = _source(data[j], nodes)
        read = nodes.get(source[0]) if source is not None else None
        if (
            read is None
            or read.op != "ReadVariableOp"
            or read.attr["dtype"].type != tf.string.as_datatype_enum
        ):
            continue  # not a compiled model (an --extract-weights variable): find_direct decides
        handle = handles.get(read.input[0].partition(":")[0])
        if handle is None:
            return None, f"argument {j} of the call reads a variable the function does not capture"
        value = tf.raw_ops.ReadVariableOp(resource=handle, dtype=tf.string).numpy()
        if not isinstance(value, bytes):
            return None, f"argument {j} of the call is not a scalar string"
        resources[args[j]] = value
    body, names = _tf_compat.function_body(function)
    returned = [names.get(function.ret[a.name], function.ret[a.name]) for a in function.signature.output_arg]
    results = [t.name for t in graph.outputs]
    for k, name in enumerate(results):
        source = _source(name, nodes, checks=True)  # the returned Identities wait for the reads and checks
        if source != (call.name, k):
            return None, f"output {k} of the loaded function is not output {k} of the call"
    if len(results) != len(returned):
        return None, "the loaded function does not return the call's outputs"
    return find_direct(body, args[:count], returned, resources)


_EMPTY = function_pb2.FunctionDef()


class DirectUnavailable(RuntimeError):
    """OpenVINO's Python API could not compile the model: its calls go through the graph (with a warning)."""


class DirectCall:
    """Runs a :class:`DirectPlan`: compiled on first use, one infer request per concurrent caller."""

    def __init__(self, plan: DirectPlan) -> None:
        self.plan = plan
        #: calls answered directly (tests use it to show the path was taken)
        self.calls = 0
        self._lock = threading.Lock()
        self._compiled: Any = None
        self._ov: Any = None  # the openvino module, imported on first use
        self._pool: list[Any] = []

    def _compile(self) -> Any:
        with self._lock:
            if self._compiled is None:
                import openvino as ov

                self._ov = ov
                core = ov.Core()
                # exactly the op's CompileConfig for one stream (openvino_op.cc): the same kernels
                config = {
                    "INFERENCE_PRECISION_HINT": "bf16" if self.plan.precision == "bf16" else "f32",
                    "PERFORMANCE_HINT": "LATENCY",
                }
                if (cache := model_cache.in_use()) is not None:  # the op compiles through it too
                    config["CACHE_DIR"] = cache
                try:
                    model = core.read_model(self.plan.xml, self.plan.weights)
                    compiled = core.compile_model(model, "CPU", config)
                except Exception as err:  # OpenVINO raises RuntimeError and its own classes
                    raise DirectUnavailable(f"OpenVINO's Python API could not compile it: {err}") from err
                problem = self._mismatch(compiled)
                if problem:  # the graph's op refuses such a model with its own error: let it
                    raise DirectUnavailable(problem)
                self._compiled = compiled
            return self._compiled

    def _mismatch(self, compiled: Any) -> str:
        """What of the compiled model disagrees with the op's declared inputs and outputs ("" if nothing)."""
        ins, outs = list(compiled.inputs), list(compiled.outputs)
        if len(ins) != len(self.plan.inputs) or len(outs) != len(self.plan.output_dtypes):
            return (
                f"the compiled model has {len(ins)} inputs and {len(outs)} outputs, the op "
                f"{len(self.plan.inputs)} and {len(self.plan.output_dtypes)}"
            )
        for side, ports, dtypes in (
            ("input", ins, self.plan.input_dtypes),
            ("output", outs, self.plan.output_dtypes),
        ):
            for k, (port, dtype) in enumerate(zip(ports, dtypes, strict=True)):
                kind = port.get_element_type()
                if np.dtype(kind.to_dtype()) != np.dtype(dtype.as_numpy_dtype):
                    got = kind.get_type_name()
                    return f"{side} {k} of the compiled model is {got}, the op declares {dtype.name}"
        return ""

    def accepts(self, flat: Sequence[tf.Tensor]) -> bool:
        """False for a call the graph should answer instead (an empty input: the graph handles it)."""
        return all(flat[i].shape.num_elements() for i in self.plan.inputs)

    def __call__(self, flat: Sequence[tf.Tensor]) -> list[tf.Tensor]:
        compiled = self._compiled or self._compile()
        with self._lock:
            request = self._pool.pop() if self._pool else compiled.create_infer_request()
        try:
            # set one by one: infer(dict) dispatches on the value types at twice the cost. A copy (OpenVINO
            # shares only writeable memory, and an eager tensor's is read-only): small models' inputs.
            # The Tensors are held until infer returns: the request keeps only their memory's address.
            held = [self._ov.Tensor(np.array(flat[i]), shared_memory=True) for i in self.plan.inputs]
            for j, tensor in enumerate(held):
                request.set_input_tensor(j, tensor)
            request.infer()
            count = len(self.plan.output_dtypes)
            produced = [np.array(request.get_output_tensor(k).data, copy=True) for k in range(count)]
        finally:
            with self._lock:
                self._pool.append(request)
                self.calls += 1
        for k, array in enumerate(produced):
            declared = self.plan.output_shapes[k]
            if declared is not None and not _fits(declared, array.shape):
                raise tf.errors.InvalidArgumentError(
                    None,
                    None,
                    f"output {k} of the compiled model has shape {list(array.shape)} but the op declares "
                    f"{list(declared)} (output_shapes): the graph and its OpenVINO model do not belong "
                    "together",
                )
        dtypes = self.plan.output_dtypes
        return [_tf_compat.eager_tensor(produced[k], dtypes[k]) for k in self.plan.outputs]
