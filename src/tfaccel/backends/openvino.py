"""The OpenVINO backend: subgraphs converted by OpenVINO's TensorFlow frontend, run by tfaccel's op.

Why: on a CPU OpenVINO is the fastest compiler we can run (design §6: 1.7-2.9x TensorFlow in fp32), and
embedding its compiled model in a TensorFlow op keeps the traced model a TensorFlow graph that saves,
loads and serves like any other (the op library must be loaded first: ``import tfaccel``).

Support comes from the frontend itself: the whole graph is converted with ``convert_partially``, and every
node it leaves as a ``TFFrameworkNode`` (or that holds one in a loop or branch body) is unsupported, with
the frontend's verdict as the reason. Edges of dtypes OpenVINO does not compute exactly (float64,
complex) are cut too. Each subgraph is converted with ``openvino.convert_model``, serialized as IR
(xml + weights) and carried by two string variables of the traced model; the op compiles it on first use.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import function_pb2, graph_pb2

from tfaccel import native
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
from tfaccel.compiler.ir import Graph, Node, TensorInfo, TensorRef

__all__ = ["OV_DTYPES", "OpenVinoBackend", "PRECISIONS", "UNSUPPORTED_DTYPES", "conversion_rules"]

logger = logging.getLogger(__name__)

#: ``--fp32-cast`` value -> OpenVINO inference precision of the compiled subgraphs
PRECISIONS = {"none": "f32", "matmult": "bf16", "all": "bf16"}

#: dtypes OpenVINO's CPU plugin does not compute exactly (float64 runs as float32); strings, resources and
#: variants never enter any backend's subgraph (placement's own rule)
UNSUPPORTED_DTYPES = frozenset({"float64", "complex64", "complex128"})

#: TensorFlow dtype name -> ``openvino.Type`` attribute (the dtypes that may enter a subgraph)
OV_DTYPES = {
    "float32": "f32",
    "float16": "f16",
    "bfloat16": "bf16",
    "int8": "i8",
    "int16": "i16",
    "int32": "i32",
    "int64": "i64",
    "uint8": "u8",
    "uint16": "u16",
    "uint32": "u32",
    "uint64": "u64",
    "bool": "boolean",
}

_OUTPUT_PREFIX = "tfaccel_out_"
_NO_CONVERSION = "no conversion"  # the frontend left the node itself unconverted
_LOCATION_LINE = re.compile(r"^(Exception from|Check '.*' failed at) \S+:\d+:?$")


@dataclass(frozen=True)
class _GraphSupport:
    """The frontend's verdict on one graph: node name -> why it cannot be converted."""

    unsupported: dict[str, str]
    graph: Graph | None = None
    #: tensor -> "shape" / "index" / "data": what OpenVINO's 32-bit integers can hold exactly
    classes: dict[TensorRef, str] = field(default_factory=dict)


class OpenVinoBackend:
    """Compile subgraphs with OpenVINO (fast on CPU; a saved model needs ``import tfaccel`` to load)."""

    name = "openvino"
    #: ``--fp32-cast`` is done by the compiler (OpenVINO's bf16 inference precision), not by a TF rewrite
    casts_in_compiler = True
    #: grappler's arithmetic optimizer rewrites some broadcasts as Tile (seen in ConvNeXt's layer norms),
    #: which OpenVINO's transpose-sinking pass then breaks on; OpenVINO simplifies arithmetic itself
    grappler_off = frozenset({"arithmetic_optimization"})
    #: OpenVINO compiles dynamic dimensions (an output of unknown shape is copied out after inference)
    dynamic_shapes = True
    internal_dtypes: frozenset[str] = frozenset()

    def __init__(self, settings: BackendSettings | None = None) -> None:
        library = native.load()
        if not library.available:
            from tfaccel.errors import OptionsError

            raise OptionsError(
                f"--backend=openvino is unavailable: {library.error}. Use --backend=xla, or fix the cause "
                "and import tfaccel again (python -m tfaccel.native rebuilds the op library)"
            )
        settings = settings or BackendSettings()
        fp32_cast = settings.fp32_cast
        self.precision = PRECISIONS[fp32_cast]
        #: the op's ``streams`` (:attr:`TraceOptions.openvino_streams`): 1 latency, N or 0 throughput
        self.streams = settings.streams
        #: False under ``--nan-semantics=relaxed``: subgraphs compiled without NaN guards
        self.nan_guards = settings.nan_guards
        self._support = _GraphSupport({})
        self.notes: tuple[str, ...] = ()
        if self.precision == "bf16" and not _cpu_has_bf16():
            self.notes = (
                f"--fp32-cast={fp32_cast}: OpenVINO's CPU plugin has no bf16 on this CPU, so openvino "
                "subgraphs run in fp32 (exact, without the bf16 speed-up)",
            )
            logger.warning("%s", self.notes[0])

    # -- support ---------------------------------------------------------------------------------------
    def support_for(self, graph: Graph, graph_def: graph_pb2.GraphDef) -> OpenVinoBackend:
        """Ask the frontend about every node of ``graph_def`` once; ``supports`` then answers from that."""
        verdicts = {**semantics.body_verdicts(graph_def, _body_rule), **_frontend_verdict(graph_def)}
        self._support = _GraphSupport(verdicts, graph, semantics.int64_classes(graph))
        return self

    def avoids(self, node: Node) -> str | None:
        return None

    def supports(self, node: Node) -> tuple[bool, str]:
        bad = sorted({t.dtype for t in node.outputs if t.dtype in UNSUPPORTED_DTYPES})
        graph = self._support.graph
        if graph is not None:
            for ref in node.inputs:
                if ref.node in graph:
                    dtype = graph[ref.node].outputs[ref.port].dtype
                    if dtype in UNSUPPORTED_DTYPES:
                        bad.append(dtype)
        if bad:
            kinds = ", ".join(sorted(set(bad)))
            return False, f"OpenVINO's CPU plugin computes {kinds} in float32 (not exact)"
        why = self._support.unsupported.get(node.name)
        if why == _NO_CONVERSION:
            return False, f"OpenVINO's TensorFlow frontend has no conversion for {node.op}"
        if why is not None:
            return False, why
        differs = semantics.semantic_verdict(node, graph, self._support.classes)
        if differs is not None:
            return False, differs
        return True, f"OpenVINO converts {node.op}"

    # -- compile ---------------------------------------------------------------------------------------
    def compile(self, subgraph: SubgraphDef, artifacts: bool = False) -> CompiledSubgraph:
        import openvino as ov

        start = time.perf_counter()
        model = _convert(subgraph, nan_guards=self.nan_guards)
        converted_s = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as tmp:
            ov.save_model(model, str(Path(tmp) / "model.xml"), compress_to_fp16=False)
            xml = (Path(tmp) / "model.xml").read_bytes()
            weights = (Path(tmp) / "model.bin").read_bytes()
        key = _model_key(xml, weights, self.precision)
        names = _resource_names(key)
        start = time.perf_counter()
        try:
            _compile_now(key, self.precision, xml, weights)
        except tf.errors.OpError as err:
            raise SubgraphCompileError(subgraph.name, _first_line(err.message), None, err.message) from err
        compiled_s = time.perf_counter() - start
        kept: dict[str, str | bytes] = {}
        if artifacts:
            kept = {
                "openvino.xml": xml.decode(),
                "openvino.bin": weights,
                "compile_options.json": json.dumps(
                    {
                        "backend": self.name,
                        "device": "CPU",
                        "INFERENCE_PRECISION_HINT": self.precision,
                        **_performance_config(self.streams),
                        "model_key": key,
                        "weights_bytes": len(weights),
                        "openvino": ov.__version__,
                        "tensorflow": tf.__version__,
                    },
                    indent=1,
                ),
                "compile.log": (
                    f"{subgraph.name}: {len(subgraph.cluster.nodes)} TF nodes -> "
                    f"{len(model.get_ordered_ops())} OpenVINO ops; converted in {converted_s:.3f} s, "
                    f"compiled for CPU in {compiled_s:.3f} s\n"
                    "openvino.xml + openvino.bin are the IR (in the saved model: string variables "
                    f"{names[0]}, {names[1]}).\n"
                ),
            }
        return CompiledSubgraph(
            cluster=subgraph.cluster,
            call=self._call(subgraph, key),
            artifacts=kept,
            resources=((names[0], xml), (names[1], weights)),  # the op's model_xml, model_weights inputs
        )

    # -- quantize --------------------------------------------------------------------------------------
    def quantize(
        self,
        item: CompiledSubgraph,
        subgraph: SubgraphDef,
        calibration: Sequence[Sequence[np.ndarray]],
        held_out: Sequence[Sequence[np.ndarray]],
        tolerance: float,
    ) -> QuantizeOutcome:
        """NNCF's post-training int8 of the subgraph's IR (:mod:`tfaccel.backends.openvino_quantize`)."""
        from tfaccel.backends.openvino_quantize import quantize_ir

        name = item.cluster.name
        (_, xml), (_, weights) = item.resources
        checked = f"{len(held_out)} held-out calibration input(s)"
        try:
            plain = _convert(subgraph, nan_guards=False)
            result = quantize_ir(plain, xml, weights, self.precision, calibration, held_out, _stable_names)
        except Exception as err:  # NNCF and OpenVINO raise their own classes and plain RuntimeErrors
            why = f"NNCF could not quantize it ({_first_line(str(err))})"
            return QuantizeOutcome(item, False, f"{name} stays fp32: {why}")
        if result.int8_compute == 0:  # int8 element-wise ops only cost accuracy (and a conversion)
            why = "NNCF found nothing in it worth quantizing (no convolution or matrix product)"
            return QuantizeOutcome(item, False, f"{name} stays fp32: {why}")
        if not result.error <= tolerance:
            why = f"int8 error {result.error:.3g} is above --quantize-tolerance={tolerance:g} on {checked}"
            return QuantizeOutcome(item, False, f"{name} stays fp32: {why}")
        key = _model_key(result.xml, result.weights, self.precision)
        try:
            _compile_now(key, self.precision, result.xml, result.weights)
        except tf.errors.OpError as err:
            why = f"the op could not compile its int8 IR ({_first_line(err.message)})"
            return QuantizeOutcome(item, False, f"{name} stays fp32: {why}")
        names = _resource_names(key)
        resources: tuple[tuple[str, bytes], ...] = ((names[0], result.xml), (names[1], result.weights))
        if self.nan_guards:
            try:
                call, functions = self._finite_or_fp32(subgraph, item, key)
            except (tf.errors.OpError, ValueError, TypeError) as err:
                why = f"its NaN/infinity fallback could not be built ({_first_line(str(err))})"
                return QuantizeOutcome(item, False, f"{name} stays fp32: {why}")
            resources = (*resources, *item.resources)
        else:  # --nan-semantics=relaxed: the int8 op alone (a NaN comes out as a number, as the user chose)
            call, functions = self._call(subgraph, key), ()
        artifacts = dict(item.artifacts)
        if artifacts:  # --workdir: the fp32 IR stays next to the int8 one
            artifacts["openvino-int8.xml"] = result.xml.decode()
            artifacts["openvino-int8.bin"] = result.weights
            artifacts["quantize.json"] = json.dumps(
                {
                    "error": result.error,
                    "tolerance": tolerance,
                    "calibration_inputs": len(calibration),
                    "held_out_inputs": len(held_out),
                    "fake_quantize_nodes": result.fake_quantize,
                    "int8_compute_ops": result.int8_compute,
                    "model_key": key,
                },
                indent=1,
            )
        quantized = replace(
            item,
            call=call,
            functions=functions,
            resources=resources,
            artifacts=artifacts,
        )
        sentence = (
            f"{name} runs int8: error {result.error:.3g} (--quantize-tolerance={tolerance:g}) on {checked}, "
            f"{result.int8_compute} convolutions/matrix products in int8"
        )
        return QuantizeOutcome(quantized, True, sentence)

    def _finite_or_fp32(
        self, subgraph: SubgraphDef, fp32: CompiledSubgraph, int8_key: str
    ) -> tuple[Call, tuple[function_pb2.FunctionDef, ...]]:
        """A function call that runs the int8 IR when every float input is finite, else the fp32 IR.

        Why: a quantizer has no NaN or infinity (FakeQuantize clamps them into its range), so the int8
        model alone would answer a NaN with numbers, where TensorFlow (and the fp32 IR, whose NaN guards
        keep TF's semantics) answers NaN. Reading the inputs once is cheap next to the model. The function
        takes the int8 IR's two strings, the fp32 IR's two, then the cluster's inputs (the call reads its
        resources first); its name and its branches' names come from its content, so the same model and
        calibration give the same graph.
        """
        attrs = dict(fp32.call.attrs)
        tout = [tf.as_dtype(info.dtype) for info in subgraph.output_infos]
        strings = [tf.TensorSpec([], tf.string) for _ in range(4)]
        specs = [*strings, *subgraph.input_specs()]
        op = native.ops().tfaccel_openvino

        def run(xml: tf.Tensor, weights: tf.Tensor, key: str, args: list[tf.Tensor]) -> list[tf.Tensor]:
            return list(
                op(
                    model_xml=xml,
                    model_weights=weights,
                    args=args,
                    Tout=tout,
                    model_key=key,
                    precision=attrs["precision"],
                    input_names=attrs["input_names"],
                    output_shapes=attrs["output_shapes"],
                    streams=attrs["streams"],
                )
            )

        def body(*values: tf.Tensor) -> list[tf.Tensor]:
            xml8, bin8, xml32, bin32, *args = values
            checks = [tf.reduce_all(tf.math.is_finite(a)) for a in args if a.dtype.is_floating]
            if not checks:  # nothing can be NaN or infinite on the way in
                return run(xml8, bin8, int8_key, args)
            finite = tf.reduce_all(tf.stack(checks))
            return list(
                tf.cond(
                    finite,
                    lambda: run(xml8, bin8, int8_key, args),
                    lambda: run(xml32, bin32, str(attrs["model_key"]), args),
                )
            )

        concrete = tf.function(body, input_signature=specs, autograph=False).get_concrete_function()
        traced_name = concrete.function_def.signature.name
        graph_library = concrete.graph.as_graph_def().library.function
        library = sorted(
            (f for f in graph_library if f.signature.name != traced_name), key=lambda f: f.signature.name
        )
        main = function_pb2.FunctionDef()
        main.CopyFrom(concrete.function_def)

        def named(prefix: str) -> list[function_pb2.FunctionDef]:
            renames = {traced_name: prefix}  # the traced names hold a process-wide counter
            renames.update({f.signature.name: f"{prefix}_branch{k}" for k, f in enumerate(library)})
            named = []
            for function in (main, *library):
                copy = function_pb2.FunctionDef()
                copy.CopyFrom(function)
                copy.signature.name = renames[function.signature.name]
                for node in copy.node_def:
                    for value in node.attr.values():
                        if value.HasField("func") and value.func.name in renames:
                            value.func.name = renames[value.func.name]
                named.append(copy)
            return named

        # named by content: another fp32 IR, precision or stream setting is another function
        content = b"".join(f.SerializeToString(deterministic=True) for f in named("tfaccel_ov_int8"))
        fname = f"tfaccel_ov_int8_{hashlib.sha256(content).hexdigest()[:16]}"
        return Call(function=fname), tuple(named(fname))

    def _call(self, subgraph: SubgraphDef, key: str) -> Call:
        """A call of tfaccel's op: it compiles (or finds in its cache) the model keyed ``key`` and runs it."""
        return Call(
            op=native.OP_TYPE,
            attrs={
                "model_key": key,
                "precision": self.precision,
                "input_names": [str(ref) for ref in subgraph.cluster.inputs],
                "output_shapes": [tf.TensorShape(info.shape) for info in subgraph.output_infos],
                # 1: the latency hint; N or 0: the throughput hint (see TraceOptions.openvino_streams);
                # tfaccel.auto_multicore rewrites it in a saved copy
                "streams": self.streams,
            },
            # placement times one call: with the latency setting, as the call runs for one caller
            measured_attrs={"streams": 1} if self.streams != 1 else {},
        )


def _model_key(xml: bytes, weights: bytes, precision: str) -> str:
    """The op's ``model_key`` label for an IR (a label only: the op matches models by content)."""
    return hashlib.sha256(xml + b"\0" + weights + precision.encode()).hexdigest()[:16]


def _resource_names(key: str) -> tuple[str, str]:
    """The string variables (placeholders) that carry an IR's xml and weights into the op."""
    return f"tfaccel_ov_{key}_xml", f"tfaccel_ov_{key}_bin"


def _performance_config(streams: int) -> dict[str, str | int]:
    """OpenVINO's performance properties for the op's ``streams`` (what ``CompileConfig`` in the op sets)."""
    if streams == 1:
        return {"PERFORMANCE_HINT": "LATENCY"}
    if streams == 0:
        return {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": "chosen by OpenVINO when loaded"}
    return {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": streams}


def _convert(subgraph: SubgraphDef, nan_guards: bool) -> Any:
    """The subgraph as an ``openvino.Model``, inputs and outputs in call order, names stable.

    ``nan_guards``: with OpenVINO's NaN-losing ops guarded (:func:`openvino_semantics.preserve_nan`), as
    every compiled subgraph is by default; without (only the free comparison mirror), for
    ``--nan-semantics=relaxed`` and for int8, which under TF's semantics keeps the guarded model for calls
    that are not all finite (:mod:`tfaccel.backends.openvino_quantize`). Raises
    :class:`SubgraphCompileError`.
    """
    import openvino as ov

    graph_def = _with_named_outputs(subgraph)
    # without the guards, the comparisons' mirror is still kept: it is free
    graph_def = semantics.preserve_nan(graph_def) if nan_guards else semantics.mirror_comparisons(graph_def)
    outputs = [f"{_OUTPUT_PREFIX}{k}:0" for k in range(len(subgraph.outputs))]
    with tempfile.TemporaryDirectory() as tmp:
        # through a file: the frontend's reader of in-memory GraphDefs cannot follow loop/branch bodies
        path = Path(tmp) / "subgraph.pb"
        path.write_bytes(graph_def.SerializeToString())
        try:
            with _without_converter_telemetry():
                model = ov.convert_model(str(path), output=outputs)
            model = _in_call_order(ov, model, subgraph.input_infos, outputs)
            _stable_names(model, {node.name for node in graph_def.node})
        except Exception as err:  # the frontend raises plain Exception and its own failure classes
            message = _first_line(str(err))
            raise SubgraphCompileError(
                subgraph.name, message, _culprit(str(err), subgraph), str(err)
            ) from err
    return model


def _body_rule(node: Node, graph: Graph, classes: dict[TensorRef, str]) -> str | None:
    """What keeps a loop or branch body's op from openvino: the dtypes it computes inexactly, and the
    semantic rules (the same as for a node of the graph itself).
    """
    bad = sorted({t.dtype for t in node.outputs if t.dtype in UNSUPPORTED_DTYPES})
    if bad:
        return f"OpenVINO's CPU plugin computes {', '.join(bad)} in float32 (not exact)"
    return semantics.semantic_verdict(node, graph, classes)


def _cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin honours a bf16 inference precision here (else it compiles f32)."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _frontend_verdict(graph_def: graph_pb2.GraphDef) -> dict[str, str]:
    """Node name -> reason, for every node OpenVINO's TF frontend leaves unconverted."""
    from openvino.frontend import FrontEndManager

    frontend = FrontEndManager().load_by_framework("tf")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "graph.pb"
        path.write_bytes(graph_def.SerializeToString())
        try:
            model = frontend.convert_partially(frontend.load(str(path)))
        except Exception as err:  # the frontend's own failure classes
            reason = f"OpenVINO's TensorFlow frontend failed on the graph: {_first_line(str(err))}"
            named = _named_nodes(str(err), {n.name for n in graph_def.node})
            if named:  # keep the nodes it named on TF; the rest is checked subgraph by subgraph
                logger.warning("%s; %s stay on TF", reason, ", ".join(sorted(named)))
                return dict.fromkeys(named, reason)
            logger.warning("%s; every node stays on TF", reason)
            return {n.name: reason for n in graph_def.node}
    verdict: dict[str, str] = {}
    for op in model.get_ordered_ops():
        name = op.get_friendly_name()
        if op.get_type_name() == "TFFrameworkNode":
            verdict[name] = _NO_CONVERSION
        elif (inner := _unconverted_inside(op)) is not None:
            verdict[name] = f"its body holds {inner}, which OpenVINO's TensorFlow frontend cannot convert"
    return verdict


_NO_RULE = re.compile(r"No conversion rule found for operations?: (.*)")
_PROBE_PREFIX = "tfaccel_probe_"


def conversion_rules(op_types: list[str]) -> dict[str, str | None]:
    """Op type -> None when OpenVINO's TensorFlow frontend has a conversion rule for it, else why not.

    The frontend is asked directly: one graph with a node of every op type (inputs from Placeholders,
    type attributes set to an allowed dtype) is converted, and the frontend's own summary names the op
    types it has no rule for. A rule that fails on the probe's made-up attributes still counts as a rule
    (real graphs carry real attributes); a batch the frontend rejects as a whole is split in halves until
    the op that upset it is alone. This is the table behind ``docs/supported-ops.md``; placement itself
    asks the frontend about the user's actual graph (:func:`_frontend_verdict`).
    """
    from openvino.frontend import FrontEndManager

    frontend = FrontEndManager().load_by_framework("tf")
    verdict: dict[str, str | None] = {}

    def probe(batch: list[str]) -> None:
        message = ""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "probe.pb"
            path.write_bytes(_probe_graph(batch).SerializeToString())
            try:
                frontend.convert(frontend.load(str(path)))
            except Exception as err:  # the frontend reports unconvertible ops by raising; parsed below
                message = str(err)
        found = _NO_RULE.search(message)
        if message and found is None and "Conversion is failed for" not in message:
            if len(batch) == 1:  # the op cannot be converted on its own (e.g. loop plumbing)
                lines = [ln for ln in message.splitlines() if "TensorFlow Frontend]" in ln] or [message]
                why = _first_line(lines[0]).split("] ", 1)[-1]
                verdict[batch[0]] = f"the frontend converts it only in context ({why})"
                return
            half = len(batch) // 2
            probe(batch[:half])
            probe(batch[half:])
            return
        no_rule = {name.strip() for name in found.group(1).split(",")} if found else set()
        for op in batch:
            verdict[op] = "no conversion rule" if op in no_rule else None

    probe(list(op_types))
    return verdict


def _probe_graph(op_types: list[str]) -> graph_pb2.GraphDef:
    """One node per op type, each input fed by its own Placeholder of the argument's dtype."""
    from tfaccel import _tf_compat

    float_enum = tf.float32.as_datatype_enum
    graph_def = graph_pb2.GraphDef()
    for op in op_types:
        op_def = _tf_compat.op_def(op)
        node = graph_def.node.add()
        node.name = f"{_PROBE_PREFIX}{op}"
        node.op = op
        counts = {arg.number_attr for arg in op_def.input_arg if arg.number_attr}
        for attr in op_def.attr:
            if attr.type == "type":
                allowed = list(attr.allowed_values.list.type)
                node.attr[attr.name].type = allowed[0] if allowed else float_enum
            elif attr.type == "int" and attr.name in counts:
                node.attr[attr.name].i = 1
        for i, arg in enumerate(op_def.input_arg):
            feed = graph_def.node.add()
            feed.name = f"{_PROBE_PREFIX}{op}_in{i}"
            feed.op = "Placeholder"
            dtype = arg.type or (node.attr[arg.type_attr].type if arg.type_attr else 0)
            feed.attr["dtype"].type = dtype or float_enum
            node.input.append(feed.name)
    return graph_def


def _unconverted_inside(op: Any) -> str | None:
    """The first unconverted op inside a loop or branch body of ``op`` (recursively), or None."""
    bodies = []
    for method in ("get_function", "get_then_body", "get_else_body"):
        getter = getattr(op, method, None)
        if getter is not None:
            try:
                bodies.append(getter())
            except TypeError:  # a getter that needs an index (multi-body ops): take the first body
                bodies.append(getter(0))
    for body in bodies:
        for inner in body.get_ordered_ops():
            if inner.get_type_name() == "TFFrameworkNode":
                return f"node {inner.get_friendly_name()!r}"
            found = _unconverted_inside(inner)
            if found is not None:
                return found
    return None


def _with_named_outputs(subgraph: SubgraphDef) -> graph_pb2.GraphDef:
    """The subgraph plus an Identity ``tfaccel_out_<k>`` per output, so outputs can be picked by name."""
    graph_def = graph_pb2.GraphDef()
    graph_def.CopyFrom(subgraph.graph_def)
    for k, (tensor, info) in enumerate(zip(subgraph.outputs, subgraph.output_infos, strict=True)):
        node = graph_def.node.add()
        node.name = f"{_OUTPUT_PREFIX}{k}"
        node.op = "Identity"
        node.input.append(tensor)
        node.attr["T"].type = tf.as_dtype(info.dtype).as_datatype_enum
    return graph_def


def _in_call_order(ov: Any, model: Any, inputs: tuple[TensorInfo, ...], outputs: list[str]) -> Any:
    """The model with parameters in ``tfaccel_in_<i>`` order and results in ``outputs`` order.

    Results are matched by their own name first: OpenVINO folds Identity nodes, so two outputs (``x`` and
    ``Identity(x)``) can carry the same tensor names and only the Result names tell them apart. An input
    the frontend dropped (no output depends on it once folded) gets an unused parameter, so the op's
    inputs always match the cluster's.
    """
    params: dict[str, Any] = {}
    for param in model.get_parameters():
        for name in (param.get_friendly_name(), *param.output(0).get_names()):
            params.setdefault(name, param)
    ordered_params = []
    for i, info in enumerate(inputs):
        name = f"{input_placeholder(i)}:0"
        if name not in params:
            shape = ov.PartialShape([-1 if d is None else d for d in info.shape or ()])
            element = getattr(ov.Type, OV_DTYPES[info.dtype])
            params[name] = ov.opset13.parameter(shape, element, name=name)
        ordered_params.append(params[name])
    results: dict[str, Any] = {r.get_friendly_name(): r for r in model.get_results()}
    for result in model.get_results():
        for name in result.input_value(0).get_names():
            results.setdefault(name, result)
    missing = [o for o in outputs if o not in results]
    if missing:
        raise ValueError(f"the converted model has no output {missing[0]}")
    return ov.Model([results[o] for o in outputs], ordered_params, model.get_friendly_name())


_COUNTED_NAME = re.compile(r"^(.+)_\d+$")


def _stable_names(model: Any, tf_names: set[str]) -> None:
    """Rename the nodes OpenVINO named from its process-wide counter (``Transpose_2617``) after their
    position, so that converting the same subgraph again gives the same IR bytes: the same key, and the
    op's cache reuses a compilation that is still alive. Names that come from the TF graph are kept.
    """
    for position, op in enumerate(model.get_ordered_ops()):
        name = op.get_friendly_name()
        counted = _COUNTED_NAME.match(name)
        if counted is not None and name not in tf_names:
            op.set_friendly_name(f"{counted.group(1)}/ov{position}")


def _compile_now(key: str, precision: str, xml: bytes, weights: bytes) -> None:
    """Compile the model into the op's process-wide cache now, so that a compiler failure is a trace-time
    fallback (not an error on the user's first call) and that first call finds it compiled.
    """
    native.ops().tfaccel_openvino_compile(
        model_xml=tf.constant(xml), model_weights=tf.constant(weights), model_key=key, precision=precision
    )


def _culprit(message: str, subgraph: SubgraphDef) -> str | None:
    """The cluster node the frontend named in its message, if any (the longest name, when several)."""
    named = _named_nodes(message, set(subgraph.cluster.nodes))
    return max(named, key=len) if named else None


_NAME_TOKEN = re.compile(r"[A-Za-z0-9_.\-/]+")


def _named_nodes(message: str, names: set[str]) -> set[str]:
    """The node names that appear in ``message`` as whole tokens (``:0`` suffixes allowed)."""
    tokens = {token.split(":")[0] for token in _NAME_TOKEN.findall(message.replace(":", " :"))}
    return tokens & names


def _first_line(message: str) -> str:
    """The message's first line, without TF's eager wrapper text (``{{function_node ...}}``, ``[Op:...]``)."""
    message = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", message)
    message = re.sub(r"\s*\[Op:[^\]]*\]( name:\s*)?", "", message)
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    # OpenVINO prefixes messages with the source location of each rethrow: skip those lines
    lines = [line for line in lines if not _LOCATION_LINE.match(line)] or lines
    failed = [line.lstrip("- ") for line in lines if line.startswith("-- Conversion is failed for")]
    text = failed[0] if failed else lines[0] if lines else "no message"
    return text if len(text) < 400 else text[:400] + "..."


#: the modules of OpenVINO's converter that bind the telemetry package (``tm``) at import
_TELEMETRY_USERS = (
    "openvino.tools.ovc.convert_impl",
    "openvino.tools.ovc.telemetry_utils",
    "openvino.tools.ovc.utils",
)


@contextlib.contextmanager
def _without_converter_telemetry() -> Iterator[None]:
    """Run OpenVINO's converter with its usage telemetry replaced by the converter's own no-op stub.

    Why: unless its user opted out, ``convert_model`` reports each conversion to Google Analytics, forking the
    calling process once per event (found measuring placement: forks of a multi-GB TensorFlow process using
    half a core each, seen by the busy-machine check as other processes' load, and adding noise to every
    timing). tfaccel uses the converter as a library, many times per trace: network traffic nobody asked a
    compiler for. The user's consent file is not touched, and the modules are restored afterwards, so the
    user's own use of the converter behaves as configured.
    """
    import importlib

    try:
        stub = importlib.import_module("openvino.tools.ovc.telemetry_stub")
        modules = [importlib.import_module(name) for name in _TELEMETRY_USERS]
    except ImportError:  # another OpenVINO layout: nothing to replace
        yield
        return
    saved = [(module, module.__dict__.get("tm")) for module in modules]
    for module, _ in saved:
        if "tm" in module.__dict__:
            module.tm = stub  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for module, original in saved:
            if original is not None:
                module.tm = original  # type: ignore[attr-defined]
