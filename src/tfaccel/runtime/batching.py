"""``--dynamic-batch-size``: run any batch size through a graph compiled for one.

Why chunking instead of recompiling per size: the compiled subgraphs keep the exact shapes they were
checked and measured with, a SavedModel serves any batch without compiling at request time, and the rule
is the reference's (its runtime sharded batches the same way). A batch of ``n`` runs as
``ceil(n / B)`` chunks of the traced batch ``B``; the last chunk is padded by repeating the last row
(valid data for any dtype, never a NaN-producing zero) and the padded rows are cut from every output.
This is exact only for models whose rows are independent, which is what dim 0 means in inference.

Everything here is TensorFlow ops, so it is saved inside the SavedModel and runs without tfaccel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import tensorflow as tf

from tfaccel.compiler.capture import CapturedFunction, join_examples, split_examples
from tfaccel.errors import OptionsError

__all__ = ["batch_size_of", "micro_batch", "run_in_chunks", "same_batch", "with_batch"]


def batch_size_of(captured: CapturedFunction, flag: str = "--dynamic-batch-size") -> int:
    """The traced batch ``B``: dim 0 shared by every input and output, or an :class:`OptionsError` that
    names ``flag`` (the option that needs a batch dimension).
    """
    specs = captured.layout.specs
    for spec in specs:
        if not spec.shape:
            raise OptionsError(
                f"{flag}: input {spec.name!r} is a scalar; every input needs a batch "
                "dimension (dim 0) to use this flag"
            )
    batch = specs[0].shape[0]
    for spec in specs[1:]:
        if spec.shape[0] != batch:
            raise OptionsError(
                f"{flag}: the example inputs disagree on the batch size: {specs[0].name!r} "
                f"has {list(specs[0].shape)} and {spec.name!r} has {list(spec.shape)}; "
                "give them the same dim 0"
            )
    if batch < 1:
        raise OptionsError(f"{flag}: the example batch is empty; trace with at least one row")
    for name, spec in zip(captured.output_names, tf.nest.flatten(captured.output_structure), strict=True):
        # (dim 0 is unknown when the graph was traced for any batch)
        if spec.shape.rank == 0 or spec.shape[0] not in (batch, None):
            raise OptionsError(
                f"{flag}: output {name!r} has shape {spec.shape.as_list()}, whose dim 0 is not "
                f"the batch {batch}; the flag needs every output to keep the batch as dim 0 "
                "(a batch-wide reduction cannot be computed chunk by chunk)"
            )
    return int(batch)


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

    outputs: Any = tf.cond(tf.equal(n, batch), direct, chunked)
    return list(outputs)


def same_batch(inputs: Sequence[tf.Tensor], names: Sequence[str]) -> tf.Tensor:
    """Dim 0 of ``inputs[0]``, after in-graph checks (kept in the SavedModel) that every input shares it."""
    n = tf.shape(inputs[0], out_type=tf.int32)[0]
    checks = [
        tf.debugging.assert_equal(
            tf.shape(x, out_type=tf.int32)[0],
            n,
            message=(
                f"--dynamic-batch-size: input {name!r} must have the same batch size (dim 0) as input "
                f"{names[0]!r}"
            ),
        )
        for name, x in zip(names[1:], inputs[1:], strict=True)
    ]
    with tf.control_dependencies(checks):
        return tf.identity(n)


def micro_batch(example_inputs: Any, stages: int) -> tuple[int, Any]:
    """``(B, examples cut to ceil(B / stages) rows)`` for ``--neuroncore-pipeline-cores``.

    The compiled stages run on micro-batches, so they are traced on one; the model still takes batch ``B``.
    """
    convention, keys, leaves = split_examples(example_inputs)
    if not leaves:
        return 0, example_inputs  # capture says what is wrong with an empty structure
    sizes = {int(np.shape(leaf)[0]) if np.ndim(leaf) else 0 for leaf in leaves}
    if len(sizes) != 1 or 0 in sizes:
        raise OptionsError(
            f"--neuroncore-pipeline-cores={stages}: every example input needs the same batch size (dim 0) "
            f"to be cut into micro-batches; got batch sizes {sorted(sizes)}"
        )
    batch = sizes.pop()
    rows = -(-batch // stages)
    return batch, join_examples(convention, keys, [leaf[:rows] for leaf in leaves])


def with_batch(captured: CapturedFunction, batch: int) -> CapturedFunction:
    """``captured`` with its input signature's dim 0 set to ``batch`` (the user's, not the micro-batch)."""
    layout = captured.layout
    specs = tuple(replace(s, shape=(batch, *s.shape[1:])) for s in layout.specs)
    return replace(captured, layout=replace(layout, specs=specs))
