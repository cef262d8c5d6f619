"""The only module that imports private ``tensorflow.python`` APIs.

TensorFlow's public API has no way to freeze a ConcreteFunction, run grappler offline, turn a GraphDef back
into a callable, or list the registered kernels of a device. Keeping every such import here means a
TensorFlow upgrade that moves one of them breaks (and is fixed in) exactly one file.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import function_pb2, graph_pb2, kernel_def_pb2
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2, rewriter_config_pb2
from tensorflow.python.eager import context, wrap_function
from tensorflow.python.framework import (
    convert_to_constants,
    function_def_to_graph,
    kernels,
    op_def_registry,
    ops,
)
from tensorflow.python.grappler import tf_optimizer

__all__ = [
    "freeze_lifting_variables",
    "register_functions",
    "eager_tensor",
    "function_body",
    "freeze",
    "function_from_graph_def",
    "is_stateful_op",
    "registered_kernels",
    "run_grappler",
    "write_fingerprint",
]


def eager_tensor(array: np.ndarray, dtype: tf.DType) -> tf.Tensor:
    """An eager tensor of ``array`` (which the caller gives up: TensorFlow may keep its buffer).

    Why not ``tf.convert_to_tensor``: its dispatch costs about four times as much (48 vs 12 us measured
    here), which a direct call of a sub-millisecond model pays on every output.
    """
    return ops.EagerTensor(array, context.context().device_name, dtype.as_datatype_enum)


def freeze(concrete_function: Any) -> Any:
    """Inline variables as constants; returns a new ConcreteFunction whose graph holds no resources.

    Control flow stays functional (While/If ops): lowering it to Switch/Merge/NextIteration would put
    back edges in the graph, which no partitioner or backend can cut safely.
    """
    return convert_to_constants.convert_variables_to_constants_v2(concrete_function, lower_control_flow=False)


def freeze_lifting_variables(concrete_function: Any) -> tuple[graph_pb2.GraphDef, list[tuple[str, Any]]]:
    """Freeze everything but the variables, which become Placeholders (for ``--extract-weights``).

    Returns the GraphDef and ``[(placeholder name, variable)]``. TF's converter rewrites every reader of a
    variable (``ReadVariableOp``, ``ResourceGather``, function arguments) for a constant; we let it, with a
    scalar stand-in instead of the real value, then swap each stand-in Const for a Placeholder of the
    variable's dtype and shape. The weights are never copied into a protobuf, so models past the 2 GB
    protobuf limit trace.
    """
    by_handle = {id(v.handle): v for v in concrete_function.graph.variables}
    lifted: dict[str, Any] = {}
    for external, internal in concrete_function.graph.captures:
        variable = by_handle.get(id(external))
        if variable is not None:
            lifted[internal.name.split(":")[0]] = variable

    class _StandIns(convert_to_constants._FunctionConverterDataInEager):  # type: ignore[misc]
        def _eval(self, tensor: Any) -> Any:
            if isinstance(tensor, tf.Variable):
                return np.zeros((), dtype=tensor.dtype.as_numpy_dtype)
            return tensor.numpy()

    data = _StandIns(func=concrete_function, lower_control_flow=False, aggressive_inlining=False)
    graph_def, _ = convert_to_constants._replace_variables_by_constants(converter_data=data)
    found = []
    for node in graph_def.node:
        variable = lifted.get(node.name)
        if variable is None or node.op != "Const":
            continue
        node.op = "Placeholder"
        node.ClearField("attr")
        node.attr["dtype"].type = variable.dtype.as_datatype_enum
        node.attr["shape"].shape.CopyFrom(variable.shape.as_proto())
        found.append((node.name, variable))
    return graph_def, found


def run_grappler(
    graph_def: graph_pb2.GraphDef,
    graph: tf.Graph,
    fetches: Sequence[str],
    mixed_bfloat16: bool = False,
    disabled: Collection[str] = (),
) -> graph_pb2.GraphDef:
    """Run TensorFlow's default graph optimizations offline, without the ``remap`` optimizer.

    Remapping fuses ops into ``_Fused*`` kernels that no accelerator backend understands; the runtime
    still applies it to the parts that stay on TensorFlow when the final graph runs. ``mixed_bfloat16``
    turns on the oneDNN bfloat16 auto-mixed-precision pass (``--fp32-cast=all``). ``disabled`` names
    more ``RewriterConfig`` passes to turn off (e.g. ``"arithmetic_optimization"``).
    """
    meta_graph = tf.compat.v1.train.export_meta_graph(graph_def=graph_def, graph=graph)
    fetch_collection = meta_graph_pb2.CollectionDef()
    fetch_collection.node_list.value.extend(fetches)
    meta_graph.collection_def["train_op"].CopyFrom(fetch_collection)
    config = config_pb2.ConfigProto()
    rewrite = config.graph_options.rewrite_options
    rewrite.remapping = rewriter_config_pb2.RewriterConfig.OFF
    rewrite.auto_mixed_precision_onednn_bfloat16 = (
        rewriter_config_pb2.RewriterConfig.ON if mixed_bfloat16 else rewriter_config_pb2.RewriterConfig.OFF
    )
    rewrite.min_graph_nodes = -1
    for name in disabled:
        setattr(rewrite, name, rewriter_config_pb2.RewriterConfig.OFF)
    return tf_optimizer.OptimizeGraph(config, meta_graph)


def function_from_graph_def(
    graph_def: graph_pb2.GraphDef, inputs: Sequence[str], outputs: Sequence[str]
) -> Any:
    """A ConcreteFunction that runs ``graph_def`` from the named input tensors to the named outputs."""
    return wrap_function.function_from_graph_def(graph_def, list(inputs), list(outputs))


def function_body(
    function: function_pb2.FunctionDef, library: function_pb2.FunctionDefLibrary | None = None
) -> tuple[graph_pb2.GraphDef, dict[str, str]]:
    """``function``'s body as a GraphDef (a Placeholder per argument, named as the argument) and the map
    from its FunctionDef tensor names (``node:out:0``) to GraphDef ones (``node:0``). ``library`` holds the
    functions the body calls (TensorFlow needs their signatures to read the calls).
    """
    if library is None:
        graph_def, names = function_def_to_graph.function_def_to_graph_def(function)
        return graph_def, dict(names)
    with tf.Graph().as_default():
        holder = graph_pb2.GraphDef()
        holder.library.CopyFrom(library)
        tf.graph_util.import_graph_def(holder, name="")
        graph_def, names = function_def_to_graph.function_def_to_graph_def(function)
    return graph_def, dict(names)


def registered_kernels(device_type: str) -> list[kernel_def_pb2.KernelDef]:
    """Every kernel registered for ``device_type`` (e.g. ``"XLA_CPU_JIT"``) in this process."""
    return [k for k in kernels.get_all_registered_kernels().kernel if k.device_type == device_type]


def op_def(op_type: str) -> Any:
    """The registered ``OpDef`` of ``op_type``, or None."""
    return op_def_registry.get(op_type)


def registered_op_types() -> list[str]:
    """Every op type this TensorFlow registers that has a Python wrapper (``tf.raw_ops``), sorted."""
    return sorted(n for n in dir(tf.raw_ops) if not n.startswith("_") and op_def_registry.get(n) is not None)


def is_stateful_op(op_type: str) -> bool:
    """True when the op is registered as stateful (it must then run under ``StatefulPartitionedCall``)."""
    op_def = op_def_registry.get(op_type)
    return bool(op_def is not None and op_def.is_stateful)


def register_functions(functions: Sequence[function_pb2.FunctionDef]) -> None:
    """Add FunctionDefs to the eager context: XLA resolves functions called inside a jit-compiled function
    (While/If bodies) there, not in the calling graph's library. Re-adding an identical one is a no-op.
    """
    ctx = context.context()
    for function in functions:
        ctx.add_function_def(function)


def write_fingerprint(saved_model_dir: str) -> None:
    """Write the SavedModel's ``fingerprint.pb`` afresh from its files: it hashes ``saved_model.pb``, so an
    edited copy (:func:`tfaccel.auto_multicore`) needs its own, or it would pass for the model it came from.
    """
    from tensorflow.python.saved_model import fingerprinting_utils

    fingerprinting_utils.write_fingerprint(saved_model_dir)
