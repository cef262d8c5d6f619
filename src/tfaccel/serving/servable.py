"""One loaded model version: its signatures, their SignatureDefs, warm-up and the predict call.

Why each version is loaded into its own ``tf.compat.v1.Session`` (from its SignatureDefs, as TF Serving
does) rather than with ``tf.saved_model.load``: a session owns its devices, and a device owns the
compiled XLA executables of the functions it ran. Eager functions run on the process's one set of
devices, whose XLA compilation cache is never evicted and is keyed by function names that every load
makes unique, so each rolled-over version of an XLA-traced model stayed in memory for good (about three
times its weights). Closing a session frees all of it. The metadata API returns the SignatureDefs as
saved, as TF Serving does. A traced model with an openvino subgraph loads here because the server
imports tfaccel (its op).
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2

from tfaccel.runtime.batching import BatchMode
from tfaccel.serving.errors import ServingError
from tfaccel.serving.tensors import check_names, describe_shape

__all__ = ["Servable", "Signature", "load_servable"]

logger = logging.getLogger(__name__)

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")


@dataclass
class Signature:
    """A callable signature: named input specs, output specs, the session call (feeds in ``inputs``
    order, fetches in sorted output order).
    """

    name: str
    function: Any
    inputs: dict[str, tf.TensorSpec]
    outputs: dict[str, tf.TensorSpec]

    def fixed_batch(self) -> int | None:
        """The first dimension every input fixes to the same value (a model traced for one batch)."""
        firsts = {s.shape[0] if s.shape.rank else None for s in self.inputs.values()}
        return firsts.pop() if len(firsts) == 1 and None not in firsts else None

    def check(self, inputs: Mapping[str, np.ndarray], any_batch: bool = False) -> None:
        """Names, dtypes and shapes of a request against the signature (INVALID_ARGUMENT otherwise);
        ``any_batch`` leaves the first dimension to the batcher (it pads to a model's fixed batch).
        """
        check_names(inputs, self.inputs)
        for name, value in inputs.items():
            spec = self.inputs[name]
            if spec.dtype == tf.string:
                if value.dtype.kind not in "OSU":
                    raise ServingError.invalid(f"input {name!r} expects string, got {value.dtype}")
            elif value.dtype != spec.dtype.as_numpy_dtype:
                raise ServingError.invalid(
                    f"input {name!r} expects {spec.dtype.name}, got {tf.as_dtype(value.dtype).name}"
                )
            shape = spec.shape
            if any_batch and shape.rank:
                shape = tf.TensorShape([None, *shape.as_list()[1:]])
            if not shape.is_compatible_with(value.shape):
                wanted = spec.shape.as_list() if spec.shape.rank is not None else []
                raise ServingError.invalid(
                    f"input {name!r} has shape {describe_shape(value.shape)}, which does not fit the "
                    f"signature's {describe_shape(wanted)}"
                )

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = [_feed(inputs[name], spec) for name, spec in self.inputs.items()]
        try:
            result = self.function(*feeds)
        except tf.errors.InvalidArgumentError as err:
            raise ServingError.invalid(err.message) from err
        except tf.errors.OpError as err:
            raise ServingError(_grpc_code(err), err.message) from err
        return dict(zip(sorted(self.outputs), result, strict=True))  # by name, as TF Serving orders them


def _feed(value: np.ndarray, spec: tf.TensorSpec) -> np.ndarray:
    if spec.dtype == tf.string:
        return np.asarray(value, dtype=object)
    return np.asarray(value, dtype=spec.dtype.as_numpy_dtype)


def _grpc_code(err: tf.errors.OpError) -> Any:
    by_value = {code.value[0]: code for code in grpc.StatusCode}
    return by_value.get(err.error_code, grpc.StatusCode.INTERNAL)


@dataclass
class Servable:
    """A loaded, warmed model version."""

    name: str
    version: int
    path: str
    signatures: dict[str, Signature]
    signature_defs: dict[str, meta_graph_pb2.SignatureDef]
    session: Any = field(repr=False)
    load_seconds: float = 0.0
    #: why requests must run alone, never padded or merged with others ("" when they may be batched): a
    #: traced model whose rows are not independent (its saved batch plan says so)
    batch_alone: str = ""

    def close(self) -> None:
        """Free the session (its kernels, variables and compiled executables); later calls fail."""
        self.session.close()

    def signature(self, name: str, entrypoint: str = "REST") -> Signature:
        """The named signature (default ``serving_default``); unknown: TF Serving's error of the API."""
        key = name or "serving_default"
        found = self.signatures.get(key)
        if found is None and entrypoint == "GRPC":
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{key}" not found.'
            )
        if found is None:
            raise ServingError.invalid(
                f'Serving signature name: "{key}" not found in signature def (it has: '
                f"{', '.join(sorted(self.signatures))})"
            )
        return found


def _specs(infos: Mapping[str, meta_graph_pb2.TensorInfo]) -> dict[str, tf.TensorSpec] | None:
    """TensorSpecs of a SignatureDef's dense tensors; None if one is sparse or composite."""
    specs = {}
    for key, info in infos.items():
        if info.WhichOneof("encoding") != "name":
            return None
        shape = tf.TensorShape(None if info.tensor_shape.unknown_rank else info.tensor_shape)
        specs[key] = tf.TensorSpec(shape, tf.as_dtype(info.dtype), name=key)
    return specs


def _session_config() -> Any:
    """The threading the server's flags set on the eager context (``--tensorflow_*_parallelism``)."""
    return tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=tf.config.threading.get_intra_op_parallelism_threads(),
        inter_op_parallelism_threads=tf.config.threading.get_inter_op_parallelism_threads(),
        allow_soft_placement=True,
    )


def load_servable(name: str, version: int, path: str, warmup: bool = True) -> Servable:
    """Load and warm the SavedModel at ``path``; any failure raises (the caller reports and retries)."""
    start = time.perf_counter()
    from tfaccel.runtime.export import verify_traced

    traced = verify_traced(path)  # a traced model's files are checked against their recorded digests
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph, config=_session_config())
    try:
        with graph.as_default():
            meta_graph = tf.compat.v1.saved_model.load(session, ["serve"], path)
        signatures: dict[str, Signature] = {}
        for key, definition in meta_graph.signature_def.items():
            if key.startswith("__"):  # __saved_model_init_op and the like: not callable signatures
                continue
            inputs, outputs = _specs(definition.inputs), _specs(definition.outputs)
            if inputs is None or outputs is None or not outputs:
                logger.warning(
                    "model %s version %d: signature %r has sparse, composite or no outputs; skipped",
                    name,
                    version,
                    key,
                )
                continue
            fetches = [definition.outputs[k].name for k in sorted(outputs)]
            feeds = [definition.inputs[k].name for k in inputs]
            function = session.make_callable(fetches, feeds)
            signatures[key] = Signature(key, function, inputs, outputs)
        if not signatures:
            raise ValueError(f"{path} has no signatures to serve")
        servable = Servable(name, version, path, signatures, dict(meta_graph.signature_def), session)
        # the trace found a reason to keep its batch (rows that mix, a dim 0 that is not the batch, a model
        # that fails at another batch): padding or merging could change its answers. A fixed plan without a
        # reason (saved before the check existed) or a pipelined one is batched, as before
        plan = traced.plan if traced is not None else None
        if plan is not None and plan.mode is BatchMode.FIXED and plan.why:
            servable.batch_alone = plan.why
            logger.info(
                "model %s version %d takes its traced batch only (%s): the batcher never pads or merges its "
                "requests",
                name,
                version,
                servable.batch_alone,
            )
        weakref.finalize(servable, session.close)  # the session goes with the last request holding it
        if warmup:
            _warm(servable)
    except BaseException:
        session.close()
        raise
    servable.load_seconds = time.perf_counter() - start
    return servable


def _warm(servable: Servable) -> None:
    """Replay ``assets.extra/tf_serving_warmup_requests`` (TF Serving's warm-up file) when present;
    otherwise call each signature once on zeros where its shapes are known (compiles XLA and OpenVINO
    before the first real request). A failure of the warm-up file fails the load, as in TF Serving.
    """
    records = os.path.join(servable.path, WARMUP_FILE)
    if os.path.exists(records):
        from tensorflow_serving.apis import prediction_log_pb2

        from tfaccel.serving.tensors import from_tensor_proto

        for raw in tf.data.TFRecordDataset(records):
            log = prediction_log_pb2.PredictionLog.FromString(raw.numpy())
            if not log.HasField("predict_log"):
                continue
            request = log.predict_log.request
            signature = servable.signature(request.model_spec.signature_name)
            inputs = {k: from_tensor_proto(v, k) for k, v in request.inputs.items()}
            signature.check(inputs)
            signature(inputs)
        return
    for signature in servable.signatures.values():
        if not all(s.shape.rank is not None for s in signature.inputs.values()):
            continue
        zeros = {}
        for key, spec in signature.inputs.items():
            dims = [1 if d is None else d for d in spec.shape.as_list()]
            dtype = object if spec.dtype == tf.string else spec.dtype.as_numpy_dtype
            zeros[key] = (
                np.zeros(dims, dtype=dtype) if dtype is not object else np.full(dims, b"", dtype=object)
            )
        try:
            signature(zeros)
        except ServingError as err:  # zeros may be invalid for the model: not a reason to refuse it
            logger.warning(
                "model %s version %d: warm-up call of %r on zeros failed (%s); serving it cold",
                servable.name,
                servable.version,
                signature.name,
                err.message.splitlines()[0][:200],
            )
