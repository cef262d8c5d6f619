"""The XLA backend: subgraphs become functions marked ``_XlaMustCompile``, run by stock TensorFlow.

Why this form: a ``PartitionedCall`` to a function carrying ``_XlaMustCompile=true`` is exactly what
``tf.function(jit_compile=True)`` emits, so a traced model needs nothing but TensorFlow to load and run
(a fresh process, ``saved_model_cli`` and TF Serving with ``--xla_cpu_compilation_enabled=true``), and XLA
recompiles per input shape on its own.

Support is read from the kernels XLA registers for ``XLA_CPU_JIT`` (the same table the TF->XLA bridge
consults), checked against the node's type attributes; every subgraph is then lowered to HLO at trace time,
so an op that only fails in context is caught there and sent back to the runtime by ``trace``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import function_pb2, graph_pb2, kernel_def_pb2, node_def_pb2

from tfaccel import _tf_compat
from tfaccel.backends import openvino_semantics as semantics
from tfaccel.backends.base import (
    BackendSettings,
    Call,
    CompiledSubgraph,
    QuantizeOutcome,
    SubgraphCompileError,
    SubgraphDef,
    input_placeholder,
)
from tfaccel.backends.openvino_semantics import CAST_WRAPS, XLA_NAN_GUARDED_OPS, cast_wraps_reason
from tfaccel.compiler.ir import Graph, Node, TensorRef

__all__ = ["XlaBackend", "SLOW_ON_CPU"]

logger = logging.getLogger(__name__)

_DEVICE = "XLA_CPU_JIT"
_MUST_COMPILE = "_XlaMustCompile"
_IMPORT_SCOPE = "sg"
_NODE_IN_MESSAGE = re.compile(r"\{\{node ([^}]+)\}\}|node `([^`]+)`")

#: Ops XLA can compile but runs much slower than TensorFlow on CPU (design §4: depthwise convolutions are
#: 5-8x slower), so automatic placement keeps them on the runtime.
SLOW_ON_CPU = {
    "DepthwiseConv2dNative": "XLA:CPU runs depthwise convolutions 5-8x slower than TensorFlow, "
    "so automatic placement keeps them on the TF runtime",
}

_registry_lock = threading.Lock()
_kernels: dict[str, list[kernel_def_pb2.KernelDef]] | None = None


def _kernel_table() -> dict[str, list[kernel_def_pb2.KernelDef]]:
    """XLA_CPU_JIT kernels by op type. XLA registers them on first use, so compile a tiny function first."""
    global _kernels
    with _registry_lock:
        if _kernels is None:
            warm = tf.function(lambda x: x + 1, jit_compile=True, autograph=False)
            warm(tf.zeros([1]))
            table: dict[str, list[kernel_def_pb2.KernelDef]] = {}
            for kernel in _tf_compat.registered_kernels(_DEVICE):
                table.setdefault(kernel.op, []).append(kernel)
            _kernels = table
        return _kernels


def kernel_dtypes() -> dict[str, set[str]]:
    """Op type -> the dtypes XLA's ``XLA_CPU_JIT`` kernels accept for it (the union over the kernels' type
    constraints; an empty set when a kernel has no type constraint, i.e. takes any dtype). This is the
    table :meth:`XlaBackend.supports` answers from, as data (for ``docs/supported-ops.md``).
    """
    table: dict[str, set[str]] = {}
    for op, kernels in _kernel_table().items():
        dtypes: set[str] = set()
        for kernel in kernels:
            for constraint in kernel.constraint:
                dtypes.update(tf.as_dtype(t).name for t in constraint.allowed_values.list.type)
        table[op] = dtypes
    return table


class XlaBackend:
    """Compile subgraphs with XLA (portable: the saved model needs only TensorFlow)."""

    name = "xla"
    #: ``--fp32-cast`` is a rewrite of the captured graph (XLA has no precision knob)
    casts_in_compiler = False
    grappler_off: frozenset[str] = frozenset()
    #: XLA compiles static shapes: unknown dims stay on TF, and dynamic batch runs chunks
    dynamic_shapes = False
    #: XLA compiles a TensorList loop (a Keras LSTM/GRU) whole, when the list never leaves the subgraph
    internal_dtypes: frozenset[str] = frozenset({"variant"})
    notes: tuple[str, ...] = ()

    def __init__(self, settings: BackendSettings | None = None) -> None:
        self._table = _kernel_table()
        #: loop and branch nodes whose bodies hold an op XLA answers differently (support_for fills it)
        self._bodies: dict[str, str] = {}
        #: False under ``--nan-semantics=relaxed``: XLA's own (NaN-ignoring) min/max, unguarded
        self.nan_guards = (settings or BackendSettings()).nan_guards

    def support_for(self, graph: Graph, graph_def: graph_pb2.GraphDef) -> XlaBackend:
        """XLA's answer depends on the node, and for a loop or branch on what its bodies hold."""
        self._bodies = semantics.body_verdicts(graph_def, _body_rule, unreadable_refused=False)
        return self

    def quantize(
        self,
        item: CompiledSubgraph,
        subgraph: SubgraphDef,
        calibration: Sequence[Sequence[np.ndarray]],
        held_out: Sequence[Sequence[np.ndarray]],
        tolerance: float,
    ) -> QuantizeOutcome:
        """XLA on CPU has no int8 path worth taking: its subgraphs stay fp32, and the report says so."""
        return QuantizeOutcome(
            item, False, f"{item.cluster.name} (xla) stays fp32: only openvino subgraphs are quantized"
        )

    # -- support ---------------------------------------------------------------------------------------
    def avoids(self, node: Node) -> str | None:
        """Why automatic placement keeps a supported node on TF (a user's callback may still pick it)."""
        return SLOW_ON_CPU.get(node.op)

    def supports(self, node: Node) -> tuple[bool, str]:
        kernels = self._table.get(node.op)
        if not kernels:
            return False, f"XLA has no {_DEVICE} kernel for op {node.op}"
        node_def = node.payload
        if not isinstance(node_def, node_def_pb2.NodeDef):
            return True, f"XLA compiles {node.op}"
        why = _cast_wraps(node) or self._bodies.get(node.name)
        if why is not None:
            return False, why
        mismatch = ""
        for kernel in kernels:
            mismatch = _constraint_mismatch(kernel, node_def)
            if not mismatch:
                return True, f"XLA compiles {node.op}"
        return False, f"XLA's {node.op} kernel does not accept {mismatch}"

    # -- compile ---------------------------------------------------------------------------------------
    def compile(self, subgraph: SubgraphDef, artifacts: bool = False) -> CompiledSubgraph:
        start = time.perf_counter()
        specs = subgraph.input_specs()
        # XLA:CPU's min/max ignore NaN where TF keeps it (a wrong answer, not a rounding): guard them,
        # unless the user asked for the backend's own NaN handling (--nan-semantics=relaxed)
        graph_def = _without_input_placeholders(subgraph)
        if self.nan_guards:
            graph_def = semantics.preserve_nan(graph_def, XLA_NAN_GUARDED_OPS)
        outputs = list(subgraph.outputs)
        input_map_keys = [f"{input_placeholder(i)}:0" for i in range(len(specs))]

        def body(*args: tf.Tensor) -> list[tf.Tensor]:
            results = tf.graph_util.import_graph_def(
                graph_def,
                input_map=dict(zip(input_map_keys, args, strict=True)),
                return_elements=outputs,
                name=_IMPORT_SCOPE,
            )
            return [tf.identity(r) for r in results]

        _tf_compat.register_functions(graph_def.library.function)
        function = tf.function(body, input_signature=specs, jit_compile=True, autograph=False)
        try:
            concrete = function.get_concrete_function()
            hlo = function.experimental_get_compiler_ir(*specs)(stage="hlo")
        except (tf.errors.OpError, ValueError) as err:  # what the TF->XLA bridge raises for a rejected graph
            message = f"{type(err).__name__}: {str(err).strip()}"
            raise SubgraphCompileError(
                subgraph.name, _first_line(message), _culprit(message), message
            ) from err
        lowered_s = time.perf_counter() - start
        digest = hashlib.sha256(graph_def.SerializeToString(deterministic=True)).hexdigest()[:12]
        fname = f"tfaccel_xla_{digest}"  # by content: a renumbered cluster can reuse it
        main = function_pb2.FunctionDef()
        main.CopyFrom(concrete.function_def)
        main.signature.name = fname
        library = concrete.graph.as_graph_def().library
        functions = [main, *(f for f in library.function if f.signature.name != concrete.name)]
        kept: dict[str, str | bytes] = {}
        if artifacts:
            kept = {
                "hlo.txt": hlo,
                "stablehlo.mlir": function.experimental_get_compiler_ir(*specs)(stage="stablehlo"),
                "compile_options.json": json.dumps(
                    {
                        "backend": self.name,
                        "device": _DEVICE,
                        "jit_compile": True,
                        "function_attr": "_XlaMustCompile=true",
                        "function_name": fname,
                        "input_specs": [
                            {"name": s.name, "dtype": s.dtype.name, "shape": s.shape.as_list()} for s in specs
                        ],
                        "tensorflow": tf.__version__,
                    },
                    indent=1,
                ),
                "compile.log": (
                    f"{subgraph.name}: {len(subgraph.cluster.nodes)} nodes, "
                    f"{hlo.count(chr(10))} HLO lines, lowered to HLO in {lowered_s:.3f} s\n"
                    "XLA:CPU compiles the executable on the first call of each input shape.\n"
                ),
            }
        # TF's runtime hands a call to XLA only when the *call node* says so: the function's own
        # _XlaMustCompile attribute is not enough (measured: without this the function ran op by op on
        # TF, 1.35 ms instead of 0.47 ms for the LSTM/GRU model). tf.function(jit_compile=True) marks
        # its call nodes the same way.
        call = Call(function=fname, stateful=subgraph.stateful, attrs={_MUST_COMPILE: True})
        return CompiledSubgraph(
            cluster=subgraph.cluster,
            call=call,
            functions=tuple(functions),
            artifacts=kept,
        )


def _cast_wraps(node: Node) -> str | None:
    """A float to 8/16-bit integer cast, which TF wraps around and XLA saturates."""
    node_def = node.payload
    if node.op != "Cast" or not isinstance(node_def, node_def_pb2.NodeDef):
        return None
    source, target = (tf.as_dtype(node_def.attr[k].type) for k in ("SrcT", "DstT"))
    return cast_wraps_reason("XLA", target.name) if source.is_floating and target.name in CAST_WRAPS else None


def _body_rule(node: Node, graph: Graph, classes: dict[TensorRef, str]) -> str | None:
    """What keeps a loop or branch body's op from xla (XLA compiles a loop with its bodies)."""
    return _cast_wraps(node)


def _without_input_placeholders(subgraph: SubgraphDef) -> graph_pb2.GraphDef:
    """The subgraph minus its input Placeholders: ``input_map`` feeds their consumers directly, and a
    leftover Placeholder would be an op XLA cannot compile.
    """
    inputs = {input_placeholder(i) for i in range(len(subgraph.input_infos))}
    body = graph_pb2.GraphDef()
    body.versions.CopyFrom(subgraph.graph_def.versions)
    body.library.CopyFrom(subgraph.graph_def.library)
    body.node.extend(n for n in subgraph.graph_def.node if n.name not in inputs)
    return body


def _constraint_mismatch(kernel: kernel_def_pb2.KernelDef, node_def: node_def_pb2.NodeDef) -> str:
    """Empty when ``node_def`` satisfies every type constraint of ``kernel``; else ``"T=string"``."""
    for constraint in kernel.constraint:
        allowed = set(constraint.allowed_values.list.type)
        if not allowed or constraint.name not in node_def.attr:
            continue
        value: Any = node_def.attr[constraint.name]
        kind = value.WhichOneof("value")
        if kind == "type":
            types = [value.type]
        elif kind == "list":
            types = list(value.list.type)
        else:
            continue
        for t in types:
            if t not in allowed:
                return f"{constraint.name}={tf.as_dtype(t).name}"
    return ""


def _culprit(message: str) -> str | None:
    """The node the compiler blamed, as named in the original graph (XLA writes ``{{node sg/name}}``)."""
    match = _NODE_IN_MESSAGE.search(message)
    if not match:
        return None
    name = match.group(1) or match.group(2)
    prefix = f"{_IMPORT_SCOPE}/"
    return name[len(prefix) :] if name.startswith(prefix) else name


def _first_line(message: str) -> str:
    """The compiler's first sentence, without TF's wrapper text and our import scope."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    text = lines[0] if lines else "no message"
    text = text.replace("Failed getting HLO text: '", "").rstrip("'\" ")
    text = text.replace(f"{_IMPORT_SCOPE}/", "")
    return text if len(text) < 400 else text[:400] + "..."
