"""The architecture's dependency rule: the graph IR, placement and partitioner never load TensorFlow."""

from __future__ import annotations

import subprocess
import sys

from conftest import SRC


def test_ir_placement_and_partition_do_not_import_tensorflow():
    code = (
        "import sys; import tfaccel, tfaccel.ir, tfaccel.partition, tfaccel.placement, tfaccel.errors; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": SRC}, timeout=60
    )
    assert proc.returncode == 0, f"TF-free layers imported: {proc.stdout} {proc.stderr}"
