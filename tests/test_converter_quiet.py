"""OpenVINO's converter must not fork the process (telemetry) for each subgraph tfaccel converts.

Found measuring placement: unless its user opted out, ``openvino.convert_model`` reports each conversion to
Google Analytics from a forked child process; the children's CPU time made the busy-machine check see
"other processes" on an idle machine, and every conversion sent network traffic nobody asked for. A fresh
process counts its forks (an audit hook) while tracing: after the first trace (the package import itself
reports once, which is OpenVINO's and not per conversion), a second trace converting several subgraphs
forks nothing.
"""

from __future__ import annotations

from conftest import SRC, run_python

SCRIPT = """
    import sys
    forks = []
    sys.addaudithook(lambda event, args: forks.append(event) if event == "os.fork" else None)
    import tensorflow as tf
    import tfaccel

    def two_subgraphs(x):
        h = tf.nn.relu(tf.matmul(x, tf.ones([8, 8])) + 1.0)
        back = tf.strings.to_number(tf.strings.as_string(h))  # TF only: cuts the graph in two
        return tf.nn.relu(tf.matmul(back, tf.ones([8, 4])) - 1.0)

    x = tf.ones([2, 8])
    tfaccel.trace(two_subgraphs, x, backend="openvino")
    before = len(forks)
    traced = tfaccel.trace(two_subgraphs, x * 2, backend="openvino")
    assert len(traced.placement_report.subgraphs) == 2, traced.placement_report.subgraphs
    print("FORKS", before, len(forks) - before)
"""


def test_converting_subgraphs_forks_no_telemetry_process(tmp_path):
    out = run_python(SCRIPT, cwd=tmp_path, env={"PYTHONPATH": SRC, "HOME": str(tmp_path)})
    (line,) = [line for line in out.splitlines() if line.startswith("FORKS ")]
    _, _, during_second = line.split()
    assert during_second == "0", line
