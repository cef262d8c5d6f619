"""Tests written for mutations of tools/mutation_check.py that no other test caught.

Each test names the mutation it guards against; it checks the behaviour, not the code, so it keeps
guarding after a refactor.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import tfaccel
from conftest import SRC, STATIC, assert_close
from tfaccel.compiler.ir import Graph, Node, TensorInfo, TensorRef
from tfaccel.compiler.partition import partition

INPUTS = 10


def _fan_in_graph() -> Graph:
    """Ten Placeholders read by one AddN node assigned to a backend: a cluster with ten inputs."""
    info = (TensorInfo("float32", (2, 3)),)
    nodes = [Node(f"p{i}", "Placeholder", outputs=info) for i in range(INPUTS)]
    nodes.append(Node("sum", "AddN", tuple(TensorRef(f"p{i}") for i in range(INPUTS)), outputs=info))
    nodes.append(Node("out", "Relu", (TensorRef("sum"),), outputs=info))
    return Graph(nodes, [f"p{i}" for i in range(INPUTS)], [TensorRef("out")])


def test_cluster_inputs_keep_the_graph_order():
    # guards partition-boundary-order-not-reproducible: the call's inputs follow the members' input order
    (cluster,) = partition(_fan_in_graph(), {"sum": "b", "out": "b"}).clusters
    assert [str(ref) for ref in cluster.inputs] == [f"p{i}:0" for i in range(INPUTS)]


_PARTITION_IN_A_FRESH_PROCESS = """
import json, sys, types
# the compiler's ir and partition need no TensorFlow: import them without the package's __init__
package = types.ModuleType("tfaccel")
package.__path__ = [sys.argv[1] + "/tfaccel"]
sys.modules["tfaccel"] = package
from tfaccel.compiler.ir import Graph, Node, TensorInfo, TensorRef
from tfaccel.compiler.partition import partition
info = (TensorInfo("float32", (2, 3)),)
nodes = [Node(f"p{i}", "Placeholder", outputs=info) for i in range(10)]
nodes.append(Node("sum", "AddN", tuple(TensorRef(f"p{i}") for i in range(10)), outputs=info))
nodes.append(Node("out", "Relu", (TensorRef("sum"),), outputs=info))
graph = Graph(nodes, [f"p{i}" for i in range(10)], [TensorRef("out")])
result = partition(graph, {"sum": "b", "out": "b"})
print(json.dumps([[c.name, list(c.nodes), [str(r) for r in c.inputs], [str(r) for r in c.outputs]]
                  for c in result.clusters]))
"""


def test_the_same_graph_partitions_the_same_way_in_every_process():
    # guards partition-boundary-order-not-reproducible: string hashing differs between processes
    seen = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(_PARTITION_IN_A_FRESH_PROCESS), SRC],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        seen.add(proc.stdout.strip())
    assert len(seen) == 1, seen
    assert json.loads(seen.pop())[0][2] == [f"p{i}:0" for i in range(INPUTS)]


@pytest.mark.parametrize(("min_size", "compiled"), [(2, True), (3, False)])
def test_min_segment_size_decides_whether_a_small_subgraph_compiles(min_size, compiled):
    # guards options-min-segment-size-ignored: the option must change the placement, not only the report
    def f(x):
        return tf.nn.relu(x) * 2.0  # two counted ops, none compute-heavy

    x = tf.constant(np.linspace(-1.0, 1.0, 12, dtype=np.float32).reshape(3, 4))
    traced = tfaccel.trace(f, x, backend="openvino", min_segment_size=min_size)
    assert_close(traced(x), f(x))
    report = traced.placement_report
    assert bool(report.subgraphs) is compiled, report.subgraphs
    assert f"--min-segment-size={min_size}" in report.options.split()
    assert set(STATIC.split()) <= set(report.options.split())
