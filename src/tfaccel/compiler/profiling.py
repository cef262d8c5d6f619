"""Measuring candidate subgraphs for ``--placement=profile``: each one on TF and on every backend.

Why per subgraph, in isolation: timing whole-model variants would cost one full model run per choice;
a subgraph run alone on the values it sees in the traced model (computed once from the example inputs)
costs only itself. Each variant is a graph function over the subgraph's inputs, so every variant pays
the same function-call overhead and the differences are the subgraph's own. Each variant is warmed until
its times settle, then the variants are sampled in interleaved rounds (:func:`tfaccel.compiler.timing.sample`)
so that they share the machine's noise, until the verdicts are clear or the budget is spent; the decision
itself is :func:`tfaccel.compiler.selection.choose`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import tensorflow as tf
from tensorflow.core.framework import graph_pb2

from tfaccel import _tf_compat
from tfaccel.backends.base import CompiledSubgraph, SubgraphDef, input_placeholder
from tfaccel.compiler.assemble import call_node, resource_placeholder
from tfaccel.compiler.capture import CapturedFunction, feed_values
from tfaccel.compiler.examples import Examples
from tfaccel.compiler.ir import TensorRef
from tfaccel.compiler.partition import Cluster
from tfaccel.compiler.selection import estimate, settled
from tfaccel.compiler.timing import sample, warm

__all__ = [
    "MIN_SAMPLES",
    "cluster_inputs",
    "cluster_inputs_of",
    "compiled_runner",
    "sample_until_settled",
    "tf_runner",
    "try_warm",
]

logger = logging.getLogger(__name__)

#: wall time spent sampling one subgraph's variants (besides warming them up), in seconds
BUDGET_S = 3.0
#: timed calls per variant: at least (for a usable interval) and at most (beyond this it is wasted time)
MIN_SAMPLES, MAX_SAMPLES = 8, 60


def cluster_inputs(
    captured: CapturedFunction, examples: Examples, clusters: Sequence[Cluster]
) -> dict[TensorRef, tf.Tensor]:
    """The value of every cluster input when the captured graph runs on ``examples`` (one TF run)."""
    return cluster_inputs_of(captured, [examples], clusters)[0]


def cluster_inputs_of(
    captured: CapturedFunction, many: Sequence[Examples], clusters: Sequence[Cluster]
) -> list[dict[TensorRef, tf.Tensor]]:
    """:func:`cluster_inputs` for each of ``many`` examples, with the graph imported once."""
    graph = captured.graph
    weights = feed_values(captured.weights)
    inputs = [TensorRef(name, 0) for name in graph.inputs]
    wanted = sorted({ref for c in clusters for ref in c.inputs if ref not in set(inputs)}, key=str)
    function = None
    if wanted:
        function = _tf_compat.function_from_graph_def(
            captured.graph_def, [f"{name}:0" for name in graph.inputs], [str(ref) for ref in wanted]
        )
    results = []
    for examples in many:
        feeds = [*examples.tensors(captured.layout), *weights]
        values = dict(zip(inputs, feeds, strict=True))
        if function is not None:
            values.update(zip(wanted, function(*feeds), strict=True))
        results.append(values)
    return results


def tf_runner(subgraph: SubgraphDef, values: Sequence[tf.Tensor]) -> Callable[[], Any]:
    """The subgraph as TF runs it (its original ops), called on ``values``."""
    names = [f"{input_placeholder(i)}:0" for i in range(len(values))]
    function = _tf_compat.function_from_graph_def(subgraph.graph_def, names, list(subgraph.outputs))
    run = tf.function(lambda *args: function(*args), autograph=False)  # wrapped as compiled_runner is
    return lambda: run(*values)


def compiled_runner(
    subgraph: SubgraphDef, item: CompiledSubgraph, values: Sequence[tf.Tensor]
) -> Callable[[], Any]:
    """The compiled call alone (as it sits in the traced graph), fed ``values`` and its resources."""
    graph_def = graph_pb2.GraphDef()
    graph_def.versions.CopyFrom(subgraph.graph_def.versions)
    for i in range(len(values)):
        placeholder = next(n for n in subgraph.graph_def.node if n.name == input_placeholder(i))
        graph_def.node.append(copy.deepcopy(placeholder))
    graph_def.node.extend(resource_placeholder(name) for name, _ in item.resources)
    call = call_node(
        replace(item, call=item.call.for_measuring()), subgraph.input_infos, subgraph.output_infos
    )
    index = {ref: i for i, ref in enumerate(item.cluster.inputs)}
    texts = [text for text in call.input if not text.startswith("^")]  # no control edges: run alone
    del call.input[:]
    for text in texts:  # a cluster input reads its Placeholder; anything else is a resource Placeholder
        ref = TensorRef.parse(text)
        call.input.append(f"{input_placeholder(index[ref])}:0" if ref in index else text)
    graph_def.node.append(call)
    graph_def.library.CopyFrom(subgraph.graph_def.library)
    known = {f.signature.name for f in graph_def.library.function}
    graph_def.library.function.extend(f for f in item.functions if f.signature.name not in known)
    inputs = [f"{input_placeholder(i)}:0" for i in range(len(values))] + [f"{n}:0" for n, _ in item.resources]
    outputs = [f"{call.name}:{k}" for k in range(len(subgraph.outputs))]
    function = _tf_compat.function_from_graph_def(graph_def, inputs, outputs)
    # fed from variables inside a tf.function, as in the traced model: an eager string argument of the
    # model's size costs a copy per call (measured: 150 ms instead of 5 for MobileNetV2)
    resources = [tf.Variable(value, dtype=tf.string, trainable=False) for _, value in item.resources]
    run = tf.function(lambda *args: function(*args, *resources), autograph=False)
    return lambda: run(*values)


def try_warm(name: str, fn: Callable[[], Any], failed: dict[str, str]) -> bool:
    """Warm ``fn`` until its times settle (:func:`tfaccel.compiler.timing.warm`); False, with the error in
    ``failed[name]``, when a call raises (the variant is then left out and the report says why).
    """
    try:
        warm(fn)
    except (tf.errors.OpError, ValueError, TypeError) as err:
        failed[name] = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300]}"
        logger.warning("profile: variant %s failed to run: %s", name, failed[name])
        return False
    return True


def sample_until_settled(
    variants: Mapping[str, Callable[[], Any]], samples: Mapping[str, list[float]] | None = None
) -> dict[str, list[float]]:
    """Samples of every (warm) variant until :func:`~tfaccel.compiler.selection.settled` says more would not
    change the verdicts, or the budget is spent (:func:`tfaccel.compiler.timing.sample`).
    """

    def enough(taken: Mapping[str, list[float]]) -> bool:
        backends = {name: estimate(values) for name, values in taken.items() if name != "tf"}
        return settled(estimate(taken["tf"]), backends)

    return sample(
        variants, enough, min_samples=MIN_SAMPLES, max_samples=MAX_SAMPLES, budget_s=BUDGET_S, samples=samples
    )
