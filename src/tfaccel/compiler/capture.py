"""Capture: ``func`` + ``example_inputs`` -> a frozen, grappler-optimized GraphDef and its IR.

The calling convention is the reference API's: a Tensor or a list is passed as one argument (``func(x)``),
a tuple is spread (``func(*x)``), a dict is passed as keywords (``func(**x)``), with any nesting of lists,
tuples and dicts inside (``func([a, b], c)``). Whatever the structure,
the graph is traced from one flat list of input tensors; :class:`InputLayout` remembers how to rebuild
the user's structure from it, so the traced model can be called exactly like the original.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2, node_def_pb2

from tfaccel import _tf_compat
from tfaccel.compiler.examples import Convention, Examples, InputLayout, InputSpec, Tree
from tfaccel.compiler.ir import Graph, Node, TensorInfo, TensorRef
from tfaccel.compiler.precision import cast_matmuls_to_bfloat16, count_bfloat16_compute
from tfaccel.errors import CaptureError, CaptureTypeError, CaptureValueError, TraceError

__all__ = [
    "CapturedFunction",
    "FrozenFunction",
    "call_as_traced",
    "capture",
    "freeze",
    "is_keras_model",
    "optimize",
]

logger = logging.getLogger(__name__)

_NAME_OK = re.compile(r"[^A-Za-z0-9_.\-]")


@dataclass(frozen=True)
class CapturedFunction:
    """Everything later stages need from the user's function."""

    layout: InputLayout
    frozen_graph_def: graph_pb2.GraphDef
    graph_def: graph_pb2.GraphDef  # grappler-optimized; what placement sees
    graph: Graph  # IR of ``graph_def``
    output_structure: Any  # nested structure of tf.TensorSpec, as ``func`` returns it
    output_names: tuple[str, ...]  # signature names for the flat outputs
    #: what feeds the graph's inputs after the user's, in ``graph.inputs`` order: copies of captured
    #: lookup tables, then with ``--extract-weights`` one variable per weight Placeholder (see
    #: :func:`feed_values`)
    weights: tuple[Any, ...] = ()
    #: fallbacks decided during capture (e.g. a precision option that had no effect), for the report
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class FrozenFunction:
    """The capture stage's artefact: ``func`` traced on the examples and frozen, not yet optimized."""

    layout: InputLayout
    frozen_graph_def: graph_pb2.GraphDef
    placeholders: tuple[str, ...]  # the graph's inputs: the user's, then lookup tables / extracted weights
    fetches: tuple[str, ...]  # the output tensors, in the order of ``output_names``
    tf_graph: Any  # the frozen tf.Graph grappler optimizes
    original: Any  # the traced function's own graph (its shapes refine the optimized graph's)
    output_structure: Any  # nested structure of tf.TensorSpec, as ``func`` returns it
    output_names: tuple[str, ...]
    weights: tuple[Any, ...] = ()


def is_keras_model(obj: object) -> bool:
    """True for a Keras 3 or a tf_keras layer/model (these take ``training=False`` for inference)."""
    for module_name in ("keras", "tf_keras"):
        module = sys.modules.get(module_name)
        layer_cls = getattr(getattr(module, "layers", None), "Layer", None)
        if isinstance(layer_cls, type) and isinstance(obj, layer_cls):
            return True
    return False


def capture(
    func: Callable[..., Any],
    example_inputs: Any,
    extract_weights: bool = False,
    fp32_cast: str = "none",
    unknown_batch: bool = False,
    grappler_off: frozenset[str] = frozenset(),
) -> CapturedFunction:
    """Trace ``func`` on ``example_inputs`` and return its frozen, optimized graph: :func:`freeze`, then
    :func:`optimize` (the pipeline runs them as two stages).

    With ``extract_weights`` the variables are not frozen: each becomes a Placeholder fed from a copy of
    the variable at run time (see :func:`tfaccel._tf_compat.freeze_lifting_variables`). ``fp32_cast``
    rewrites the optimized graph for bfloat16 (see :mod:`.precision`). With ``unknown_batch`` the
    function is traced with dim 0 of every input unknown (one graph for any batch size).
    ``grappler_off`` names grappler passes the backend wants skipped (see ``Backend.grappler_off``).
    """
    frozen = freeze(func, example_inputs, extract_weights=extract_weights, unknown_batch=unknown_batch)
    return optimize(frozen, fp32_cast=fp32_cast, grappler_off=grappler_off)


def freeze(
    func: Callable[..., Any], example_inputs: Any, extract_weights: bool = False, unknown_batch: bool = False
) -> FrozenFunction:
    """Trace ``func`` on ``example_inputs`` (an :class:`Examples` or the user's structure) and freeze it."""
    if not callable(func):
        raise CaptureTypeError(
            f"func must be a keras.Model, a tf.function or a Python callable; got {type(func).__name__}"
        )
    layout = _layout_of(func, Examples.of(example_inputs))
    _check_binds(func, layout)

    def flat_fn(*tensors: tf.Tensor) -> Any:
        return call_as_traced(func, layout, tensors)

    specs = [s.tensor_spec(dynamic_batch=unknown_batch) for s in layout.specs]
    traced = tf.function(flat_fn, input_signature=specs, autograph=True)
    try:
        concrete = traced.get_concrete_function()
    except CaptureError:
        raise
    except Exception as err:  # the user's code failed while tracing: say so, keep the cause
        raise CaptureError(
            f"tracing func with example_inputs {_describe(layout)} failed: {type(err).__name__}: {err}"
        ) from err
    output_structure, output_names = _outputs_of(concrete, _tf_keras_output_names(func))
    _check_no_variable_writes(concrete)
    table_inputs, tables = _copy_tables(concrete)
    weights: tuple[Any, ...] = tables
    try:
        frozen_graph_def, placeholders, fetches, tf_graph, lifted = _freeze(
            concrete, layout, table_inputs, extract_weights
        )
    except TraceError:
        raise
    except (ValueError, TypeError, tf.errors.OpError) as err:  # TF's converter on a graph it cannot freeze
        raise CaptureError(
            f"freezing the traced graph of func failed ({type(err).__name__}: {str(err).strip()[:400]}); "
            "a traced model holds its variables as constants and only reads them: keep func to inference "
            "(no variable writes, no tf.Variable creation, no stateful Python objects)"
        ) from err
    # copies: the traced model must not change when the original's weights do
    weights += tuple(tf.Variable(v.read_value(), trainable=False) for _, v in lifted)
    if not extract_weights and placeholders[len(layout.specs) :] != table_inputs:
        raise CaptureError(
            f"freezing left inputs {placeholders[len(layout.specs) :]} besides the lookup tables "
            f"{table_inputs} (a tfaccel bug: please report it with the model)"
        )
    return FrozenFunction(
        layout,
        frozen_graph_def,
        tuple(placeholders),
        tuple(fetches),
        tf_graph,
        concrete.graph,
        output_structure,
        tuple(output_names),
        weights,
    )


def call_as_traced(func: Callable[..., Any], layout: InputLayout, tensors: Sequence[Any]) -> Any:
    """``func`` called on flat ``tensors`` the way ``trace`` calls it (a Keras model for inference)."""
    args, kwargs = layout.pack(tensors)
    if is_keras_model(func):
        if layout.convention is Convention.DICT:  # a Keras model takes its dict as one argument
            args, kwargs = (kwargs,), {}
        kwargs["training"] = False
    return func(*args, **kwargs)


def optimize(
    frozen: FrozenFunction, fp32_cast: str = "none", grappler_off: frozenset[str] = frozenset()
) -> CapturedFunction:
    """Grappler's optimizations (minus ``grappler_off``), the ``--fp32-cast`` rewrite, and the graph's IR."""
    fetch_nodes = [f.split(":")[0] for f in frozen.fetches]
    frozen_graph_def, placeholders = frozen.frozen_graph_def, list(frozen.placeholders)
    optimized = _tf_compat.run_grappler(
        frozen_graph_def,
        frozen.tf_graph,
        fetch_nodes,
        mixed_bfloat16=fp32_cast == "all",
        disabled=grappler_off,
    )
    if fp32_cast == "matmult":
        count = cast_matmuls_to_bfloat16(optimized)
    else:
        count = count_bfloat16_compute(optimized)
    notes: list[str] = []
    if fp32_cast != "none" and count == 0:
        notes.append(
            f"--fp32-cast={fp32_cast} changed nothing: the graph has no fp32 matmul or convolution that "
            "could run in bfloat16 (or TensorFlow's oneDNN bfloat16 pass is unavailable on this CPU); "
            "it runs in fp32"
        )
        logger.warning("%s", notes[-1])
    _restore_placeholders(optimized, frozen_graph_def, placeholders)
    _rename_library(optimized)
    graph = graph_from_graph_def(optimized, placeholders, list(frozen.fetches), original=frozen.original)
    return CapturedFunction(
        frozen.layout,
        frozen_graph_def,
        optimized,
        graph,
        frozen.output_structure,
        frozen.output_names,
        frozen.weights,
        tuple(notes),
    )


def _freeze(
    concrete: Any, layout: InputLayout, table_inputs: list[str], extract_weights: bool
) -> tuple[graph_pb2.GraphDef, list[str], list[str], tf.Graph, list[tuple[str, Any]]]:
    """The frozen GraphDef, its input and output tensor names, a graph holding it, and (with
    ``extract_weights``) the lifted ``[(placeholder, variable)]``.
    """
    if extract_weights:
        frozen_graph_def, lifted = _tf_compat.freeze_lifting_variables(concrete)
        user_inputs = [t.name for t in concrete.inputs[: len(layout.specs)]]
        placeholders = [*user_inputs, *table_inputs, *(f"{n}:0" for n, _ in lifted)]
        fetches = [t.name for t in concrete.outputs]
        tf_graph = tf.Graph()
        with tf_graph.as_default():
            tf.graph_util.import_graph_def(frozen_graph_def, name="")
        return frozen_graph_def, placeholders, fetches, tf_graph, lifted
    _check_protobuf_limit(concrete)
    frozen = _tf_compat.freeze(concrete)
    frozen_graph_def = frozen.graph.as_graph_def(add_shapes=True)
    return (
        frozen_graph_def,
        [t.name for t in frozen.inputs],
        [t.name for t in frozen.outputs],
        frozen.graph,
        [],
    )


#: op types that write a resource variable (a traced model freezes its variables, so it cannot)
_WRITE_PREFIXES = (
    "Assign",
    "ResourceApply",
    "ResourceSparseApply",
    "ResourceScatter",
    "ResourceStridedSliceAssign",
)


def _check_no_variable_writes(concrete: Any) -> None:
    """Refuse a function that writes a variable (``v.assign_add``, a training-mode BatchNorm update...).

    Freezing turns every variable into a constant, so TensorFlow's converter fails on a write with a bare
    ``ValueError`` about resource types; name the variable and the op instead, including writes inside
    ``tf.cond`` / ``tf.while_loop`` bodies and nested functions.
    """
    graph = concrete.graph
    library = {f.signature.name: f for f in graph.as_graph_def().library.function}
    by_handle = {id(v.handle): v for v in graph.variables}
    variable_of = {
        internal.name: by_handle[id(external)].name.split(":")[0]
        for external, internal in graph.captures
        if id(external) in by_handle
    }

    def writer_in(function_name: str, seen: set[str]) -> str | None:
        if function_name in seen or function_name not in library:
            return None
        seen.add(function_name)
        for node in library[function_name].node_def:
            if node.op.startswith(_WRITE_PREFIXES):
                return str(node.op)
            for attr in node.attr.values():
                names = [attr.func.name] if attr.HasField("func") else [f.name for f in attr.list.func]
                for name in names:
                    found = writer_in(name, seen)
                    if found:
                        return found
        return None

    for op in graph.get_operations():
        found = op.type if op.type.startswith(_WRITE_PREFIXES) else None
        if found is None:
            for attr in op.node_def.attr.values():
                names = [attr.func.name] if attr.HasField("func") else [f.name for f in attr.list.func]
                found = next((w for w in (writer_in(n, set()) for n in names) if w), None)
                if found:
                    break
        if found is None:
            continue
        variables = [variable_of[t.name] for t in op.inputs if t.name in variable_of]
        what = (
            f"the variable {variables[0]!r}"
            if len(variables) == 1
            else (f"one of the variables {variables}" if variables else "a variable")
        )
        where = f"node {op.name!r}" + (f" ({found} inside {op.type})" if found != op.type else f" ({found})")
        raise CaptureValueError(
            f"func writes {what} at {where}: a traced model is inference-only and holds its variables as "
            "constants; remove the update from the traced function (for a Keras model, trace it with "
            "training=False, which trace passes, and no layer that updates state at inference)"
        )


#: ops that may read a captured lookup table: a copy of its contents answers them the same way
_TABLE_READERS = frozenset({"LookupTableFindV2", "LookupTableSizeV2"})


def _copy_tables(concrete: Any) -> tuple[list[str], tuple[Any, ...]]:
    """The function's captured lookup tables (e.g. Keras ``StringLookup``): their input names, and a copy
    of each as a ``StaticHashTable`` the traced model owns.

    Freezing turns variables into constants but leaves a table a resource input of the graph. The traced
    model feeds each such input from its own copy (keys and values exported once), which it saves and
    restores like a variable; so, as with weights, it does not change when the original table does.
    """
    external = {internal.name: ext for ext, internal in concrete.graph.captures}
    variables = {id(v.handle) for v in concrete.graph.variables}
    names: list[str] = []
    copies: list[Any] = []
    for tensor in concrete.inputs:
        handle = external.get(tensor.name)
        if handle is None or tensor.dtype != tf.resource or id(handle) in variables:
            continue
        consumers = tensor.consumers()
        bad = sorted({op.type for op in consumers} - _TABLE_READERS)
        finders = [op for op in consumers if op.type == "LookupTableFindV2"]
        if bad or not finders:
            raise CaptureTypeError(
                f"func captures a resource ({tensor.name}) read by {', '.join(bad) or 'no lookup op'}; trace "
                "supports variables and lookup tables read by LookupTableFindV2 (Keras StringLookup, "
                "IntegerLookup, TextVectorization, tf.lookup.StaticHashTable)"
            )
        key_dtype, value_dtype = finders[0].get_attr("Tin"), finders[0].get_attr("Tout")
        keys, values = tf.raw_ops.LookupTableExportV2(
            table_handle=handle, Tkeys=key_dtype, Tvalues=value_dtype
        )
        default = tf.zeros([], value_dtype) if value_dtype != tf.string else tf.constant("")
        copies.append(tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), default))
        names.append(tensor.name)
    return names, tuple(copies)


def feed_values(weights: Sequence[Any]) -> list[Any]:
    """What the traced graph's weight inputs are fed: a variable's value, a table's resource handle."""
    return [w if isinstance(w, tf.Variable) else w.resource_handle for w in weights]


#: protobuf refuses messages of 2 GiB and more; leave room for the graph around the weights
_PROTOBUF_LIMIT = 2**31 - 64 * 2**20


def _check_protobuf_limit(concrete: Any) -> None:
    """Refuse, with the remedy, to freeze weights that cannot fit in one GraphDef."""
    total = sum(int(v.shape.num_elements() or 0) * v.dtype.size for v in concrete.graph.variables)
    if total > _PROTOBUF_LIMIT:
        raise CaptureValueError(
            f"the model's weights take {total / 2**30:.2f} GiB, more than a GraphDef can hold (protobuf's "
            "2 GiB limit); trace with --extract-weights (NEURON_CC_FLAGS='--extract-weights' or "
            "extract_weights=True) to keep the weights as SavedModel variables"
        )


def _layout_of(func: Callable[..., Any], examples: Examples) -> InputLayout:
    """The layout of ``examples`` for ``func``: the structure, each leaf's name, dtype and shape."""
    tree, leaves = examples.tree, examples.leaves
    _check_not_mixed(func, tree)
    if not leaves:
        empty = f"is an empty {examples.container}"
        what = empty if not tree.children else f"{tree.describe()} holds no tensor"
        raise CaptureValueError(
            f"example_inputs {what}: trace needs at least one example "
            "tensor (a function without inputs has nothing to accelerate)"
        )
    tensors = [_as_tensor(leaf, where) for leaf, where in zip(leaves, examples.paths, strict=True)]
    names = _input_names(func, tree)
    specs = tuple(
        InputSpec(name, t.dtype.name, tuple(int(d) for d in t.shape))
        for name, t in zip(names, tensors, strict=True)
    )
    return InputLayout(tree.kind, specs, tree.keys, tree)


def _check_not_mixed(func: Callable[..., Any], tree: Tree) -> None:
    """Refuse a tuple holding a dict keyed by ``func``'s parameter names: keywords after positional
    arguments, which the reference does not support either.

    Why only then: a dict inside the tuple is otherwise a nested input like any other, passed as one
    positional argument (``f(x, {"ids": ids})``); keyed by parameter names it was meant as keywords.
    """
    if tree.kind is not Convention.TUPLE:
        return
    params = _parameter_names(func)
    for i, child in enumerate(tree.children):
        if child.kind is Convention.DICT and child.keys and set(child.keys) <= params:
            raise CaptureTypeError(
                f"example_inputs mixes positional and keyword arguments (a tuple holding a dict, "
                f"example_inputs[{i}], whose keys {list(child.keys)} name parameters of func); like the "
                "reference API, trace supports one style: pass a tuple (func(*x)) or a dict (func(**x))"
            )


def _as_tensor(leaf: Any, where: str) -> tf.Tensor:
    if isinstance(leaf, tf.Tensor) and not isinstance(leaf, tf.Variable):
        tensor = leaf
    elif isinstance(leaf, np.ndarray):
        try:
            tensor = tf.convert_to_tensor(leaf)
        except (TypeError, ValueError) as err:
            raise CaptureTypeError(
                f"{where} is a numpy array of dtype {leaf.dtype}, which TensorFlow cannot hold ({err}); "
                "pass numbers, booleans or strings (e.g. x.astype(np.float32))"
            ) from err
    else:
        raise CaptureTypeError(f"{where} must be a tf.Tensor or a numpy array, got {type(leaf).__name__}")
    if tensor.dtype in (tf.resource, tf.variant):
        raise CaptureTypeError(f"{where} has dtype {tensor.dtype.name}, which cannot be a model input")
    if not tensor.shape.is_fully_defined():
        raise CaptureValueError(f"{where} has an unknown shape {tensor.shape}; pass a concrete example")
    return tensor


def _input_names(func: Callable[..., Any], tree: Tree) -> list[str]:
    """Signature names: dict keys, Keras input names, or the function's parameter names; a leaf nested
    deeper takes its top-level name and the rest of its path (``ids_0``, ``features_mask``, ``xs_1``).
    """
    paths = tree.leaf_paths
    raw: list[str] = []
    if is_keras_model(func) and not tree.has_dict:
        # Keras flattens nested lists depth first too, but sorts dict keys: only dict-free trees line up
        inputs = getattr(func, "inputs", None) or []
        names = [getattr(t, "name", "") or "" for t in inputs]
        if len(names) == len(paths) and all(names):
            raw = [n.split(":")[0] for n in names]
    if not raw:
        params = _positional_params(func)
        count = len(tree.children)

        def top(step: int | str) -> str:
            """The name of the top-level argument (or list item, or dict value) a leaf belongs to."""
            if tree.kind is Convention.DICT:
                return str(step)
            if tree.kind is Convention.TUPLE:
                return params[int(step)] if len(params) >= count else f"input_{step}"
            if tree.kind is Convention.LIST:
                return f"{params[0]}_{step}" if params else f"input_{step}"
            return params[0] if params else "input_0"

        raw = [top(path[0] if path else 0) + "".join(f"_{step}" for step in path[1:]) for path in paths]
    cleaned = []
    for i, name in enumerate(raw):
        clean = _NAME_OK.sub("_", name).lstrip("_.-") or f"input_{i}"
        cleaned.append(clean if clean[0].isalpha() else f"input_{clean}")
    # a name that was already valid is kept; one that had to change, or was made from a nested path, yields
    # to it
    kept = [c == r and len(p) <= 1 for c, r, p in zip(cleaned, raw, paths, strict=True)]
    return _unique(cleaned, kept=kept)


def _unique(names: Sequence[str], kept: Sequence[bool] | None = None) -> list[str]:
    """``names`` made distinct, deterministically (signature keys must be distinct).

    A ``kept`` name never changes (the caller's own names: dict keys). The others, in order, keep their
    name when no earlier one took it and no kept name is the same; otherwise they take the smallest
    ``_1``, ``_2``, ... suffix that is not taken and is not any name in ``names`` (so a suffixed name never
    takes the name of another input or output).
    """
    flags = list(kept) if kept is not None else [False] * len(names)
    everything = set(names)
    taken = {name for name, keep in zip(names, flags, strict=True) if keep}
    unique: list[str] = []
    for name, keep in zip(names, flags, strict=True):
        if keep:
            unique.append(name)
            continue
        candidate, k = name, 0
        while candidate in taken or (k and candidate in everything):
            k += 1
            candidate = f"{name}_{k}"
        taken.add(candidate)
        unique.append(candidate)
    return unique


def _parameters(func: Callable[..., Any]) -> list[inspect.Parameter]:
    """``func``'s parameters (a Keras model's ``call``'s) without ``self``; none when unreadable."""
    target = getattr(func, "python_function", func)
    if is_keras_model(func):
        target = func.call  # type: ignore[attr-defined]
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p for p in params if p.name != "self"]


def _positional_params(func: Callable[..., Any]) -> list[str]:
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in _parameters(func) if p.kind in kinds]


def _parameter_names(func: Callable[..., Any]) -> set[str]:
    """The names ``func`` takes by keyword (empty when its signature cannot be read)."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in _parameters(func) if p.kind in kinds}


def _check_binds(func: Callable[..., Any], layout: InputLayout) -> None:
    """Fail early, naming the convention, when a plain callable cannot take the example inputs."""
    if is_keras_model(func):
        return
    target = getattr(func, "python_function", func)
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return
    args, kwargs = layout.pack([object()] * len(layout.specs))
    try:
        signature.bind(*args, **kwargs)
    except TypeError as err:
        if not signature.parameters:
            raise CaptureValueError(
                f"{getattr(target, '__name__', 'func')}() takes no inputs: trace needs a function of at "
                "least one tensor (a function without inputs has nothing to accelerate)"
            ) from err
        tree = layout.tree
        dicts = [c for c in tree.children if c.kind is Convention.DICT]
        dict_in_tuple = tree.kind is Convention.TUPLE and bool(dicts)
        raise CaptureTypeError(
            f"func{signature} cannot be called as {layout.convention.call_form()} with example_inputs "
            f"{_describe(layout)}: {err}. A Tensor or list is passed as func(x), a tuple as func(*x), "
            "a dict as func(**x)"
            + (" (a dict inside the tuple is one positional argument, not keywords)" if dict_in_tuple else "")
        ) from err


def _describe(layout: InputLayout) -> str:
    parts = [f"{layout.where(i)}: {s.dtype}{list(s.shape)}" for i, s in enumerate(layout.specs)]
    return "(" + ", ".join(parts) + ")"


# -- outputs -----------------------------------------------------------------------------------------------
def _outputs_of(concrete: Any, keras_names: Sequence[str] | None = None) -> tuple[Any, tuple[str, ...]]:
    structure = concrete.structured_outputs
    flat = tf.nest.flatten(structure, expand_composites=False)
    if not flat:
        raise CaptureValueError("func returned no tensors: there is nothing to trace")
    for path, leaf in _paths(structure):
        if not isinstance(leaf, tf.Tensor):
            where = f"output {path!r}" if path else "the output"
            raise CaptureTypeError(
                f"{where} of func is a {type(leaf).__name__}; trace supports outputs that are tensors "
                "(nested in lists, tuples and dicts)"
            )
    specs = tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), structure)
    return specs, _output_names(structure, keras_names)


def _paths(structure: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``(path, leaf)`` pairs in ``tf.nest.flatten`` order (dict keys sorted), paths joined by ``/``."""
    if isinstance(structure, Mapping):
        items: list[tuple[str, Any]] = []
        for key in sorted(structure):
            items.extend(_paths(structure[key], f"{prefix}/{key}" if prefix else str(key)))
        return items
    if isinstance(structure, (list, tuple)):
        items = []
        for i, value in enumerate(structure):
            items.extend(_paths(value, f"{prefix}/{i}" if prefix else str(i)))
        return items
    return [(prefix, structure)]


def _output_names(structure: Any, keras_names: Sequence[str] | None = None) -> tuple[str, ...]:
    """Names of the flat outputs in the serving signature (README, "Save and load": output names).

    A flat dict keeps its keys verbatim (a signature's output keys may be any string). A tf_keras model
    returning a tensor or a flat list keeps its output layers' names (``keras_names``), as tf_keras' own
    SavedModel signature does. Anything else is named ``output_<path>`` as Keras 3's ``export`` names a
    tensor or list (``output_0``, ``output_1``), with generated names made distinct by :func:`_unique`.
    """
    if isinstance(structure, Mapping) and all(
        isinstance(k, str) and isinstance(v, tf.Tensor) for k, v in structure.items()
    ):
        return tuple(path for path, _ in _paths(structure))
    paths = [path for path, _ in _paths(structure)]
    flat_list = isinstance(structure, (list, tuple)) and all(isinstance(v, tf.Tensor) for v in structure)
    if (
        keras_names is not None
        and (isinstance(structure, tf.Tensor) or flat_list)
        and len(keras_names) == len(paths)
        and len(set(keras_names)) == len(keras_names)
        and all(isinstance(n, str) and n for n in keras_names)
    ):
        return tuple(keras_names)
    if len(paths) == 1 and not paths[0]:
        return ("output_0",)
    return tuple(_unique(["output_" + _NAME_OK.sub("_", p.replace("/", "_")) for p in paths]))


def _tf_keras_output_names(func: Any) -> list[str] | None:
    """The output layer names of a tf_keras model (what its SavedModel signature is keyed by), if any."""
    module = sys.modules.get("tf_keras")
    model_cls = getattr(module, "Model", None)
    if not (isinstance(model_cls, type) and isinstance(func, model_cls)):
        return None
    names = getattr(func, "output_names", None)
    return list(names) if isinstance(names, (list, tuple)) else None


# -- IR ----------------------------------------------------------------------------------------------------
def graph_from_graph_def(
    graph_def: graph_pb2.GraphDef,
    inputs: Sequence[str],
    outputs: Sequence[str],
    original: tf.Graph | None = None,
) -> Graph:
    """Build the IR, learning every output's dtype and shape by importing the GraphDef once.

    ``original`` (the traced function's graph) refines shapes the frozen graph lost: a lookup table
    becomes a bare resource input when frozen, so TensorFlow no longer knows the shape of what it
    returns, while the traced graph did. A node of the same name and op type there lends its shapes.
    """
    tf_graph = tf.Graph()
    with tf_graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    nodes = []
    for node_def in graph_def.node:
        op = tf_graph.get_operation_by_name(node_def.name)
        shapes = [t.shape for t in op.outputs]
        if original is not None and not all(s.is_fully_defined() for s in shapes):
            shapes = _refined(shapes, original, node_def)
        infos = tuple(
            TensorInfo(t.dtype.name, None if shape.rank is None else tuple(shape.as_list()))
            for t, shape in zip(op.outputs, shapes, strict=True)
        )
        data: list[TensorRef] = []
        control: list[str] = []
        for text in node_def.input:
            if text.startswith("^"):
                control.append(text[1:])
            else:
                data.append(TensorRef.parse(text))
        nodes.append(Node(node_def.name, node_def.op, tuple(data), tuple(control), infos, node_def))
    graph = Graph(
        nodes,
        inputs=[name.split(":")[0] for name in inputs],
        outputs=[TensorRef.parse(name) for name in outputs],
    )
    graph.lint()
    return graph


def _refined(shapes: list[tf.TensorShape], original: tf.Graph, node_def: Any) -> list[tf.TensorShape]:
    try:
        twin = original.get_operation_by_name(node_def.name)
    except KeyError:
        return shapes
    if twin.type != node_def.op or len(twin.outputs) != len(shapes):
        return shapes
    refined = []
    for shape, known in zip(shapes, (t.shape for t in twin.outputs), strict=True):
        try:
            refined.append(shape.merge_with(known))
        except ValueError:  # incompatible: trust the graph that runs
            refined.append(shape)
    return refined


def _rename_library(graph_def: graph_pb2.GraphDef) -> None:
    """Give every library function a name derived from its optimized body.

    Grappler rewrites function bodies (e.g. a While loop's) but keeps their names, while the process that
    traced ``func`` already registered the originals under those names; TensorFlow refuses a second,
    different definition of a name. A content-derived suffix is unique and deterministic.
    """
    library = graph_def.library
    if not library.function:
        return
    renamed = {
        f.signature.name: f"{f.signature.name}_tfaccel_"
        + hashlib.sha256(f.SerializeToString(deterministic=True)).hexdigest()[:10]
        for f in library.function
    }

    rename_function_references(graph_def.node, renamed)
    for function in library.function:
        function.signature.name = renamed[function.signature.name]
        rename_function_references(function.node_def, renamed)
    for gradient in library.gradient:
        if gradient.function_name in renamed:
            gradient.function_name = renamed[gradient.function_name]


def rename_function_references(nodes: Iterable[node_def_pb2.NodeDef], renamed: Mapping[str, str]) -> None:
    """Point every reference of ``nodes`` to a function in ``renamed`` at its new name, in place: the
    function attributes (a loop's body, a branch list) and a function called directly as an op.
    """
    for node in nodes:
        for value in node.attr.values():
            if value.HasField("func") and value.func.name in renamed:
                value.func.name = renamed[value.func.name]
            for func in value.list.func:
                if func.name in renamed:
                    func.name = renamed[func.name]
        if node.op in renamed:
            node.op = renamed[node.op]


def _restore_placeholders(
    optimized: graph_pb2.GraphDef, frozen: graph_pb2.GraphDef, placeholders: Sequence[str]
) -> None:
    """Grappler prunes inputs the outputs do not depend on; the signature must keep them all."""
    present = {n.name for n in optimized.node}
    by_name = {n.name: n for n in frozen.node}
    for tensor in placeholders:
        name = tensor.split(":")[0]
        if name not in present:
            logger.info("input %r does not affect any output; it stays in the signature unused", name)
            optimized.node.append(by_name[name])
