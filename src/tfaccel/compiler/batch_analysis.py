"""Does the batch propagate? The check behind automatic dynamic batch.

A model traced at batch ``B`` may accept any batch when dim 0 of every input is the batch and every output
carries it on dim 0 with its rows independent of each other, as in the reference. Why not trust shapes
alone: a graph traced with an unknown dim 0 can keep an unknown dim 0 on an output that is not the batch
(``reshape(x, [-1, 4])`` doubles it) or mix rows (``x - mean(x, axis=0)``), and then running it on another
batch, or in chunks, gives wrong answers silently.

So the model runs three times: on the examples (``B`` rows), on the examples plus :data:`EXTRA` more rows,
and on those ``B + EXTRA`` rows in reverse order. It must give ``n`` rows out for ``n`` in, the same first
``B`` rows the first two times, and the reversed rows the third time. The extra rows are the first row
rolled along its last axis (float inputs also shifted by a quarter per row, so that examples of zeros
still give other rows): values the model has seen (valid token ids, image values), yet other rows, so a
statistic over the batch (mean, max) changes; reversing catches what is blind to added rows but
not to their order (a sort or a cumulative sum over the batch). It is the user's model that runs (already
built: three inference calls), not the frozen graph, whose first call would pay for TensorFlow's graph
optimizations (seconds for a large model). When the check fails, the frozen graph's own tensors are
compared the same way to name the first node that breaks the batch.

What it cannot see: rows mixed in a way the example data hides (a max over the batch that the first row
already holds in every column, or a mixing whose effect a later ReLU zeroes). No finite test proves
independence; this one catches the ways inference models mix rows (batch statistics, cumulative or sorting
ops over the batch, reshapes that fold it), and a model that fails keeps its fixed batch with a sentence
saying why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tfaccel import _tf_compat
from tfaccel.compiler.capture import FrozenFunction, feed_values
from tfaccel.compiler.examples import InputLayout

__all__ = ["common_batch", "extra_row_examples", "rows_independent"]

#: rows computed at two batch sizes may differ by kernel blocking; beyond this they are different rows
RTOL, ATOL = 1e-3, 1e-4


def common_batch(layout: InputLayout) -> tuple[int | None, str]:
    """The examples' common dim 0, or ``(None, why)`` naming the input(s) that have none."""
    specs = layout.specs
    for index, spec in enumerate(specs):
        if not spec.shape:
            return None, f"input {layout.where(index)} is a scalar: there is no batch dimension"
    batch = specs[0].shape[0]
    for index, spec in enumerate(specs[1:], start=1):
        if spec.shape[0] != batch:
            return None, (
                f"the inputs disagree on dim 0: {layout.where(0)} has shape {list(specs[0].shape)} and "
                f"{layout.where(index)} has {list(spec.shape)}"
            )
    if batch < 1:
        return None, "the example batch is empty"
    return int(batch), ""


def extra_row_examples(inputs: Sequence[tf.Tensor]) -> list[tf.Tensor]:
    """``inputs`` with :data:`EXTRA` more rows each: the first row rolled by 1, 2, ... along its last axis
    (see the module docstring); a row that cannot be rolled repeats the last rows.
    """
    out = []
    for x in inputs:
        if x.shape.rank >= 2 and x.shape[-1] > 1:
            rows = [tf.roll(x[:1], shift=k, axis=-1) for k in range(1, EXTRA + 1)]
        else:
            rows = [x[-1 - (k % x.shape[0]) :][:1] for k in range(EXTRA)]
        if x.dtype.is_floating:  # shifted too: rolled zeros (a common example) are the same zeros
            rows = [row + tf.cast(FLOAT_SHIFT * (k + 1), x.dtype) for k, row in enumerate(rows)]
        out.append(tf.concat([x, *rows], axis=0))
    return out


def rows_independent(
    frozen: FrozenFunction, call: Callable[[Sequence[tf.Tensor]], Sequence[Any]], inputs: Sequence[tf.Tensor]
) -> str:
    """``""`` when the model keeps the batch on ``inputs``, else the sentence naming what breaks it (see the
    module docstring). ``frozen`` is the model traced for an unknown batch, ``call`` runs the model on flat
    inputs and returns its flat outputs.
    """
    specs = tf.nest.flatten(frozen.output_structure)
    for name, spec, fetch in zip(frozen.output_names, specs, frozen.fetches, strict=True):
        if spec.shape.rank == 0 or spec.shape[0] is not None:
            return (
                f"output {name!r} (node {_producer(frozen, fetch)!r}) has shape {spec.shape.as_list()} when "
                "traced for any batch: its dim 0 is not the batch (a reduction over the batch?)"
            )
    batch = int(inputs[0].shape[0])
    feeds = _feeds(inputs)
    try:
        runs = [[np.asarray(t) for t in call(f)] for f in feeds]
    except Exception as err:  # the user's model refusing another batch, however it says so
        return f"the model fails on a batch of {batch + EXTRA} ({type(err).__name__}: {str(err)[:200]})"
    for k, (name, fetch) in enumerate(zip(frozen.output_names, frozen.fetches, strict=True)):
        if _breaks(batch, *(run[k] for run in runs)):
            # a pruned graph function takes tensors only: a variable's value, not the variable
            weights = [tf.convert_to_tensor(w) for w in feed_values(frozen.weights)]
            return _culprit(frozen, [[*f, *weights] for f in feeds], batch) or (
                f"output {name!r} (node {_producer(frozen, fetch)!r}) changes its rows when rows are added "
                "to the batch or reordered: its rows are not independent"
            )
    return ""


#: rows added to the examples by the check
EXTRA = 2
#: what the k-th added row of a float input is shifted by (k times): example inputs of zeros, or of one
#: value, would otherwise add rows equal to the examples' and hide a mean or max over the batch
FLOAT_SHIFT = 0.25


def _feeds(inputs: Sequence[tf.Tensor]) -> list[list[tf.Tensor]]:
    """The three batches the check runs: the examples, more rows, the same rows reversed."""
    bigger = extra_row_examples(inputs)
    return [list(inputs), bigger, [tf.reverse(x, axis=[0]) for x in bigger]]


def _breaks(batch: int, small: Any, large: Any, flipped: Any) -> bool:
    """True when these three results of one tensor do not behave as rows of the batch (see above)."""
    small, large, flipped = np.asarray(small), np.asarray(large), np.asarray(flipped)
    if small.ndim == 0 or small.shape[0] != batch or large.shape[0] != batch + EXTRA:
        return True
    return _differ(small, large[:batch]) or _differ(large, flipped[::-1])


def _differ(a: Any, b: Any) -> bool:
    if a.shape != b.shape:
        return True
    if a.dtype.kind in "fc":
        finite = np.abs(a[np.isfinite(a)])  # an inf would make the tolerance infinite: every row "equal"
        scale = max(1.0, float(np.max(finite))) if finite.size else 1.0
        return not np.allclose(a, b, rtol=RTOL, atol=ATOL * scale, equal_nan=True)
    return not np.array_equal(a, b)


def _producer(frozen: FrozenFunction, fetch: str) -> str:
    """The node computing ``fetch``, looking through Identity nodes."""
    nodes = {node.name: node for node in frozen.frozen_graph_def.node}
    name = fetch.lstrip("^").split(":")[0]
    while name in nodes and nodes[name].op == "Identity" and nodes[name].input:
        name = nodes[name].input[0].split(":")[0]
    return name


def _culprit(frozen: FrozenFunction, feeds: list[list[Any]], batch: int) -> str:
    """The first node (in graph order) whose batch-carrying output breaks the batch, as a sentence."""
    graph = frozen.tf_graph
    placeholders = {p.split(":")[0] for p in frozen.placeholders}
    candidates = []
    for op in graph.get_operations():
        if op.name in placeholders or op.type in ("Const", "NoOp"):
            continue
        for tensor in op.outputs:
            shape = tensor.shape
            if shape.rank and shape[0] is None and tensor.dtype not in (tf.resource, tf.variant):
                candidates.append(tensor.name)
                break
    if not candidates:
        return ""
    inputs = [p if ":" in p else f"{p}:0" for p in frozen.placeholders]
    try:
        function = _tf_compat.function_from_graph_def(frozen.frozen_graph_def, inputs, candidates)
        runs = [[t.numpy() for t in function(*f)] for f in feeds]
    except (tf.errors.OpError, ValueError):
        return ""
    for k, name in enumerate(candidates):
        small, large, flipped = (run[k] for run in runs)
        if _breaks(batch, small, large, flipped):
            op = graph.get_tensor_by_name(name).op
            n = batch + EXTRA
            what = (
                f"gives {large.shape[0] if large.ndim else 'no'} rows for {n} in"
                if large.ndim == 0 or large.shape[0] != n
                else "changes its rows when rows are added to the batch or reordered"
            )
            return f"node {op.name!r} ({op.type}) does not keep the batch on dim 0: it {what}"
    return ""
