"""Any batch size through a graph compiled for one (automatic when the batch propagates, or forced by
``--dynamic-batch-size``; :mod:`tfaccel.compiler.batch_analysis` decides).

Why chunking instead of recompiling per size: the compiled subgraphs keep the exact shapes they were
checked and measured with, a SavedModel serves any batch without compiling at request time, and the rule
is the reference's (its runtime sharded batches the same way). A batch of ``n`` runs as
``ceil(n / B)`` chunks of the traced batch ``B``; the last chunk is padded by repeating the last row
(valid data for any dtype, never a NaN-producing zero) and the padded rows are cut from every output.
This is exact only for models whose rows are independent, which is what dim 0 means in inference.

Everything here is TensorFlow ops, so it is saved inside the SavedModel and runs without tfaccel.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

__all__ = ["BatchMode", "BatchPlan", "run_in_chunks", "same_batch"]


class BatchMode(enum.Enum):
    """How a traced model runs a batch (dim 0)."""

    FIXED = "fixed"  # the traced batch only, in one call
    ANY = "any"  # one graph traced with an unknown batch: any batch in one call
    CHUNKED = "chunked"  # any batch, run as chunks of the traced batch
    PIPELINED = "pipelined"  # micro-batches through pipelined stages, several in flight


@dataclass(frozen=True)
class BatchPlan:
    """The one encoding of dynamic batch: decided once by the capture stage, read by the runtime (input
    checks, the signature), the save format and the CLI. Nobody else looks at ``--dynamic-batch-size``
    or decides whether the batch propagates.

    ``batch`` is the batch the model was traced for; ``chunk`` the rows one compiled call runs (the traced
    batch when ``CHUNKED`` or ``ANY``, the micro-batch when ``PIPELINED``, None when ``FIXED``); ``stages``
    the micro-batches in flight; ``any_batch`` whether any batch size is accepted; ``why`` says why this
    plan when it is not what the options asked for (e.g. any batch runs as chunks, not one graph).
    """

    mode: BatchMode = BatchMode.FIXED
    batch: int | None = None
    chunk: int | None = None
    stages: int = 1
    any_batch: bool = False
    why: str = ""

    @property
    def dynamic_batch(self) -> int | None:
        """The rows of one compiled call when any batch is accepted, else None (the saved field)."""
        return self.chunk if self.any_batch else None

    def describe(self) -> str:
        """The plan as the report says it, e.g. ``"any batch, in chunks of 4 rows (why)"``."""
        if self.mode is BatchMode.ANY:
            text = "any batch, in one call (dim 0 compiled as dynamic)"
        elif self.mode is BatchMode.CHUNKED:
            text = f"any batch, in chunks of {self.chunk} rows (the last one padded)"
        elif self.mode is BatchMode.PIPELINED:
            text = f"batch {self.batch} as micro-batches of {self.chunk}, {self.stages} in flight"
            text += " (any batch)" if self.any_batch else ""
        else:
            text = "the traced batch only" if self.batch is None else f"batch {self.batch} only"
        return f"{text}: {self.why}" if self.why else text

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "batch": self.batch,
            "chunk": self.chunk,
            "stages": self.stages,
            "any_batch": self.any_batch,
            "why": self.why,
        }

    @classmethod
    def from_json(cls, data: Any) -> BatchPlan:
        """A plan read from a saved model's metadata (untrusted): a malformed one is a ``ValueError``."""
        keys = {"mode", "batch", "chunk", "stages", "any_batch", "why"}
        if not isinstance(data, dict) or set(data) != keys:
            raise ValueError(f"batch_plan must have the keys {sorted(keys)}; got {data!r}")
        try:
            mode = BatchMode(data["mode"])
        except ValueError:
            raise ValueError(f"batch_plan.mode must be one of {[m.value for m in BatchMode]}") from None
        for key in ("batch", "chunk", "stages"):
            value = data[key]
            if value is None and key != "stages":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"batch_plan.{key} must be a positive integer, got {value!r}")
        if not isinstance(data["any_batch"], bool) or not isinstance(data["why"], str):
            raise ValueError("batch_plan.any_batch must be a boolean and batch_plan.why a string")
        if (mode is BatchMode.FIXED) != (data["chunk"] is None) or (
            data["any_batch"] and data["chunk"] is None
        ):
            raise ValueError(f"batch_plan: a {mode.value} plan with chunk {data['chunk']!r} is inconsistent")
        return cls(mode, data["batch"], data["chunk"], data["stages"], data["any_batch"], data["why"])


def run_in_chunks(
    function: Callable[..., Sequence[tf.Tensor]],
    inputs: Sequence[tf.Tensor],
    batch: int,
    names: Sequence[str],
    output_specs: Sequence[tf.TensorSpec],
    in_flight: int = 1,
) -> list[tf.Tensor]:
    """Call ``function`` (compiled for batch ``batch``) on inputs of any common batch size.

    ``in_flight`` chunks may run at once (the loop's ``parallel_iterations``): with a pipelined
    ``function`` the executor overlaps stage k of one chunk with stage k+1 of the previous one.
    """
    n = same_batch(inputs, names)

    def direct() -> list[tf.Tensor]:
        return [tf.identity(t) for t in function(*inputs)]

    def chunked() -> list[tf.Tensor]:
        chunks = (n + batch - 1) // batch
        rows = tf.minimum(tf.range(chunks * batch), tf.maximum(n - 1, 0))  # repeat the last row as padding
        stacked = tuple(
            tf.reshape(tf.gather(x, rows), tf.concat([[chunks, batch], tf.shape(x)[1:]], axis=0))
            for x in inputs
        )
        signature = tuple(tf.TensorSpec(s.shape, s.dtype) for s in output_specs)
        results = tf.map_fn(
            lambda xs: tuple(function(*xs)),
            stacked,
            fn_output_signature=signature,
            parallel_iterations=in_flight,
        )
        return [tf.reshape(r, tf.concat([[chunks * batch], tf.shape(r)[2:]], axis=0))[:n] for r in results]

    outputs = list(tf.cond(tf.equal(n, batch), direct, chunked))
    # a compiled function's outputs may come without a shape, and the cond keeps only what both branches
    # agree on, so the serving signature lost an output's rank (TF Serving's metadata and the batch
    # engines read it): every output is the traced one with any number of rows
    for tensor, spec in zip(outputs, output_specs, strict=True):
        if spec.shape.rank:
            tensor.set_shape([None, *spec.shape[1:]])
    return outputs


def same_batch(inputs: Sequence[tf.Tensor], names: Sequence[str]) -> tf.Tensor:
    """Dim 0 of ``inputs[0]``, after in-graph checks (kept in the SavedModel) that every input shares it."""
    n = tf.shape(inputs[0], out_type=tf.int32)[0]
    checks = [
        tf.debugging.assert_equal(
            tf.shape(x, out_type=tf.int32)[0],
            n,
            message=(f"input {name!r} must have the same batch size (dim 0) as input {names[0]!r}"),
        )
        for name, x in zip(names[1:], inputs[1:], strict=True)
    ]
    with tf.control_dependencies(checks):
        return tf.identity(n)
