"""The reference API's two examples, verbatim but for ``import tfaccel as tfn``.

They use ``tf.keras.layers.Input(3)``, which only tf_keras accepts, so they run as the reference ran: with
``TF_USE_LEGACY_KERAS=1``, each in a fresh process (the flag must be set before TensorFlow is imported).
"""

from __future__ import annotations

import json

import pytest

from conftest import FRESH_IMPORT, SRC, STATIC, run_python

LEGACY = {"TF_USE_LEGACY_KERAS": "1", "PYTHONPATH": SRC}

SEED_1 = """
import tensorflow as tf
import tfaccel as tfn

input0 = tf.keras.layers.Input(3)
dense0 = tf.keras.layers.Dense(3)(input0)
model = tf.keras.Model(inputs=[input0], outputs=[dense0])
example_inputs = tf.random.uniform([1, 3])
model_neuron = tfn.trace(model, example_inputs)  # trace
# check to see how much of the model was compiled successfully
print(model_neuron.on_neuron_ratio)

model_dir = './model_neuron'
model_neuron.save(model_dir)
model_neuron_reloaded = tf.keras.models.load_model(model_dir)
"""

SEED_2 = """
import tensorflow as tf
import tfaccel as tfn

input0 = tf.keras.layers.Input(3)
dense0 = tf.keras.layers.Dense(3)(input0)
reshape0 = tf.keras.layers.Reshape([1, 3])(dense0)
output0 = tf.keras.layers.Dense(2)(reshape0)
model = tf.keras.Model(inputs=[input0], outputs=[output0])
example_inputs = tf.random.uniform([1, 3])

def subgraph_builder_function(node):
    return node.op == 'MatMul'

model_neuron = tfn.trace(
    model, example_inputs,
    subgraph_builder_function=subgraph_builder_function,
)
"""


@pytest.mark.parametrize("backend", ["openvino", "xla"])
def test_seed_example_trace_save_and_keras_reload(tmp_path, backend):
    check = """
import json, numpy as np
x = tf.random.uniform([1, 3])
np.save('x.npy', x.numpy()); np.save('expected.npy', model(x).numpy())
np.testing.assert_allclose(model_neuron(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
np.testing.assert_allclose(model_neuron_reloaded(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
assert isinstance(model_neuron, tf.keras.Model)
assert tf.keras.Model.__module__.startswith("tf_keras")
assert isinstance(model_neuron_reloaded, tf.keras.Model)
print(json.dumps({"ratio": model_neuron.on_neuron_ratio, "reloaded": model_neuron_reloaded.on_neuron_ratio}))
"""
    out = run_python(
        SEED_1 + check, cwd=tmp_path, env={**LEGACY, "TFACCEL_CC_FLAGS": f"--backend={backend} {STATIC}"}
    )
    result = json.loads(out.strip().splitlines()[-1])
    assert result["ratio"] == 1.0  # the Dense layer's MatMul is compiled
    assert result["reloaded"] == 1.0  # the same process imported tfaccel: load_model keeps the report

    # a fresh process reloads it with tf.keras, as the reference promised: an xla model with TensorFlow
    # alone, an openvino one after `import tfaccel` (as the reference needed its plugin)
    reload = f"""
import sys, numpy as np, tensorflow as tf
{FRESH_IMPORT[backend]}
m = tf.keras.models.load_model('./model_neuron')
np.testing.assert_allclose(m(np.load('x.npy')).numpy(), np.load('expected.npy'), rtol=1e-5, atol=1e-6)
print('ok')
"""
    assert run_python(reload, cwd=tmp_path, env=LEGACY).strip().endswith("ok")
    if backend == "openvino":  # without tfaccel: TensorFlow's own error, which the README explains
        without = "import tensorflow as tf\ntf.keras.models.load_model('./model_neuron')"
        with pytest.raises(AssertionError, match="Op type not registered 'TfaccelOpenvino'"):
            run_python(without, cwd=tmp_path, env={**LEGACY, "PYTHONPATH": ""})


def test_seed_example_matmul_only_callback_compiles_exactly_the_matmuls(tmp_path):
    check = """
import json, numpy as np
report = model_neuron.placement_report
placed = {s.name: [n for n in s.nodes] for s in report.subgraphs}
ops = {r.node: r.op for r in report.decisions}
matmuls = sorted(n for n, op in ops.items() if op == "MatMul")
x = tf.random.uniform([1, 3])
np.testing.assert_allclose(model_neuron(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
print(json.dumps({"placed": placed, "matmuls": matmuls, "ops": ops}))
"""
    out = run_python(SEED_2 + check, cwd=tmp_path, env=LEGACY)
    result = json.loads(out.strip().splitlines()[-1])
    in_subgraphs = sorted(n for nodes in result["placed"].values() for n in nodes)
    assert len(result["matmuls"]) == 2
    assert in_subgraphs == result["matmuls"]  # every MatMul, and nothing else
