"""``--workdir DIR``: everything needed to understand and reproduce a trace offline.

Layout (all written at the end of a successful trace; nothing is written without the flag)::

    DIR/options.json                     the resolved options and where each came from
    DIR/frozen.pb|.pbtxt                 the graph as captured, variables frozen
    DIR/optimized.pb|.pbtxt              after grappler: what placement saw
    DIR/partitioned.pb|.pbtxt            the runnable graph: one call op per compiled subgraph
    DIR/placement.json                   every node: where it went and why
    DIR/placement.html                   the placement report as a page (compiler/report_html.py)
    DIR/golden_inputs.npz, golden_outputs.npz       the example inputs and the original's outputs
    DIR/subgraphs/<name>/graph.pb|.pbtxt            the subgraph alone (inputs: Placeholders tfaccel_in_<i>)
    DIR/subgraphs/<name>/io.json                    its input/output tensor names in the original graph
    DIR/subgraphs/<name>/golden_inputs.npz, golden_outputs.npz   computed on the TF runtime
    DIR/subgraphs/<name>/<backend artifacts>        e.g. hlo.txt, stablehlo.mlir, compile_options.json,
                                                    compile.log
    DIR/failed/<n>-<name>-<backend>/                a subgraph the compiler rejected (its nodes then ran
                                                    on TF): graph.pb|.pbtxt, io.json, golden_inputs.npz,
                                                    error.log (the compiler's full output, the suggested
                                                    fix when one is known)

To reproduce one subgraph: import ``graph.pb``, feed ``golden_inputs.npz`` (keys ``tfaccel_in_<i>``) and
compare the tensors named in ``io.json`` with ``golden_outputs.npz`` (keys ``output_<k>``).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf import text_format

from tfaccel import _tf_compat
from tfaccel.backends.base import CompiledSubgraph, input_placeholder
from tfaccel.compiler.assemble import extract_subgraph
from tfaccel.compiler.capture import CapturedFunction, feed_values
from tfaccel.compiler.options import TraceOptions
from tfaccel.compiler.partition import Cluster
from tfaccel.compiler.report import PlacementReport
from tfaccel.compiler.report_html import FailureDetail, render_html
from tfaccel.compiler.run import CompileFailure

__all__ = ["write_capture", "write_workdir"]


def write_capture(path: str, captured: CapturedFunction, options: TraceOptions) -> None:
    """The first artifacts, written as soon as the graph is captured, so that a trace that fails later
    still leaves the graphs and options behind for a bug report.
    """
    os.makedirs(path, exist_ok=True)
    stale_names = ("subgraphs", "failed", "partitioned.pb", "partitioned.pbtxt", "placement.json")
    for stale in (*stale_names, "placement.html"):
        target = os.path.join(path, stale)
        if os.path.isdir(target):
            shutil.rmtree(target)
        elif os.path.exists(target):
            os.remove(target)
    _json(os.path.join(path, "options.json"), options.to_json())
    _graph(os.path.join(path, "frozen"), captured.frozen_graph_def)
    _graph(os.path.join(path, "optimized"), captured.graph_def)


def write_workdir(
    path: str,
    captured: CapturedFunction,
    partitioned: Any,
    compiled: Sequence[CompiledSubgraph],
    report: PlacementReport,
    examples: Sequence[tf.Tensor],
    failures: Sequence[CompileFailure] = (),
) -> None:
    """Everything else, once the trace has succeeded (see :func:`write_capture` for the first part)."""
    _graph(os.path.join(path, "partitioned"), partitioned)
    _json(os.path.join(path, "placement.json"), report.to_json())
    with open(os.path.join(path, "placement.html"), "w", encoding="utf-8") as handle:
        details = [FailureDetail(f.cluster.name, f.cluster.group, f.log, f.hint) for f in failures]
        handle.write(render_html(report, details))

    graph = captured.graph
    boundary: list[str] = []
    for item in compiled:
        boundary.extend(str(ref) for ref in (*item.cluster.inputs, *item.cluster.outputs))
    for failure in failures:
        boundary.extend(str(ref) for ref in failure.cluster.inputs)
    fetches = list(dict.fromkeys([*(str(r) for r in graph.outputs), *boundary]))
    runner = _tf_compat.function_from_graph_def(captured.graph_def, [f"{n}:0" for n in graph.inputs], fetches)
    values = dict(
        zip(fetches, (t.numpy() for t in runner(*examples, *feed_values(captured.weights))), strict=True)
    )
    np.savez(
        os.path.join(path, "golden_inputs.npz"),
        **{spec.name: t.numpy() for spec, t in zip(captured.layout.specs, examples, strict=True)},
    )
    np.savez(
        os.path.join(path, "golden_outputs.npz"),
        **{name: values[str(ref)] for name, ref in zip(captured.output_names, graph.outputs, strict=True)},
    )
    for item in compiled:
        cluster = item.cluster
        folder = os.path.join(path, "subgraphs", cluster.name)
        _write_subgraph(folder, captured, cluster, values)
        np.savez(
            os.path.join(folder, "golden_outputs.npz"),
            **{f"output_{k}": values[str(r)] for k, r in enumerate(cluster.outputs)},
        )
        for name, content in item.artifacts.items():
            if isinstance(content, bytes):
                with open(os.path.join(folder, name), "wb") as binary:
                    binary.write(content)
            else:
                with open(os.path.join(folder, name), "w", encoding="utf-8") as handle:
                    handle.write(content)
    _write_failures(path, captured, failures, values)


def _write_subgraph(
    folder: str, captured: CapturedFunction, cluster: Cluster, values: dict[str, Any]
) -> None:
    """What every subgraph folder holds: its GraphDef, io.json and the inputs the traced graph fed it."""
    os.makedirs(folder, exist_ok=True)
    sub = extract_subgraph(cluster, captured.graph, captured.graph_def.library)
    _graph(os.path.join(folder, "graph"), sub.graph_def)
    _json(
        os.path.join(folder, "io.json"),
        {
            "inputs": {input_placeholder(i): str(r) for i, r in enumerate(cluster.inputs)},
            "outputs": {f"output_{k}": str(r) for k, r in enumerate(cluster.outputs)},
            "nodes": list(cluster.nodes),
            "backend": cluster.group,
        },
    )
    np.savez(
        os.path.join(folder, "golden_inputs.npz"),
        **{input_placeholder(i): values[str(r)] for i, r in enumerate(cluster.inputs)},
    )


def _write_failures(
    path: str, captured: CapturedFunction, failures: Sequence[CompileFailure], values: dict[str, Any]
) -> None:
    """One folder per rejected subgraph: enough to hand the compiler the same input again offline."""
    for failure in failures:
        cluster = failure.cluster
        folder = os.path.join(path, failure.folder)
        _write_subgraph(folder, captured, cluster, values)
        with open(os.path.join(folder, "error.log"), "w", encoding="utf-8") as handle:
            handle.write(f"{cluster.name} on {cluster.group}: {failure.message}\n")
            if failure.hint:
                handle.write(f"suggested fix: {failure.hint}\n")
            handle.write("\nthe compiler's full output:\n")
            handle.write(failure.log.rstrip("\n") + "\n")


def _json(path: str, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)


def _graph(stem: str, graph_def: Any) -> None:
    with open(stem + ".pb", "wb") as handle:
        handle.write(graph_def.SerializeToString(deterministic=True))
    with open(stem + ".pbtxt", "w", encoding="utf-8") as handle:
        handle.write(text_format.MessageToString(graph_def))
