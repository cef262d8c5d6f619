"""A traced model reloaded with tf_keras' ``tf.keras.models.load_model`` keeps its report (issue 20 item 5).

The reference's flow is ``model.save(dir)`` then ``tf.keras.models.load_model(dir)``; ported code then reads
``on_neuron_ratio`` and calls ``summary()``. tf_keras rebuilds the model's class from the config saved in
``keras_metadata.pb`` when the class name is registered (``import tfaccel`` registers it), else it revives a
plain Keras model that still answers. Everything runs in fresh processes: that is where ``load_model`` runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import LEGACY_ENV, STATIC, run_python

#: traces a two-layer model with the second MatMul kept on TF (so the report has both kinds of rows),
#: saves it, records what the traced model says, and writes two edited copies of the saved model
_TRACE = """
import json, shutil, numpy as np, tensorflow as tf
import tfaccel as tfn
from tf_keras.protobuf import saved_metadata_pb2

inp = tf.keras.layers.Input(4)
hidden = tf.keras.layers.Dense(5, activation="relu")(inp)
model = tf.keras.Model(inp, tf.keras.layers.Dense(3)(hidden))
x = np.random.default_rng(3).random((2, 4), dtype=np.float32)
traced = tfn.trace(model, x, subgraph_builder_function=lambda node: "dense_1" not in node.name)
lines = []
traced.summary(print_fn=lines.append)
np.save("x.npy", x)
np.save("y.npy", traced(x).numpy())
traced.save("m")
json.dump({"ratio": traced.on_neuron_ratio, "summary": lines, "report": traced.placement_report.to_json()},
          open("traced.json", "w"))

def edit(name, change):
    shutil.copytree("m", name)
    saved = saved_metadata_pb2.SavedMetadata()
    saved.ParseFromString(open(f"{name}/keras_metadata.pb", "rb").read())
    (node,) = [n for n in saved.nodes if json.loads(n.metadata).get("class_name") == "tfaccel>TracedModel"]
    meta = json.loads(node.metadata)
    change(meta["config"]["tfaccel"])
    node.metadata = json.dumps(meta)
    open(f"{name}/keras_metadata.pb", "wb").write(saved.SerializeToString())

edit("bad", lambda record: record.pop("layout"))
edit("old", lambda record: record["made_with"].update(tensorflow="2.0.0"))
print(traced.on_neuron_ratio)
"""

_RELOAD = """
import json, logging, numpy as np, tensorflow as tf
import tfaccel

class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []
    def emit(self, record):
        self.messages.append(f"{record.levelname} {record.getMessage()}")

records = Records()
logging.getLogger("tfaccel").addHandler(records)
traced = json.load(open("traced.json"))
x, y = np.load("x.npy"), np.load("y.npy")
same = lambda got: np.testing.assert_allclose(np.asarray(got), y, rtol=1e-5, atol=1e-6)

m = tf.keras.models.load_model("m")
assert isinstance(m, tfaccel.TracedModel) and isinstance(m, tf.keras.Model), type(m)
assert 0 < m.on_neuron_ratio < 1 and m.on_neuron_ratio == traced["ratio"], m.on_neuron_ratio
lines = []
m.summary(print_fn=lines.append)
assert lines == traced["summary"], lines
assert m.placement_report.to_json() == traced["report"]
same(m(x))
same(m(x))  # the second call skips Keras' call machinery
same(m.aws_neuron_function(tf.constant(x)))
assert not records.messages, records.messages

m.save("again")  # a reloaded model saves as the traced one did
assert tfaccel.load("again").on_neuron_ratio == traced["ratio"]
again = tf.keras.models.load_model("again")
assert again.on_neuron_ratio == traced["ratio"]
same(again(x))

plain = tf.keras.models.load_model("bad")  # a damaged record: loaded without the report, and said so
assert not isinstance(plain, tfaccel.TracedModel) and not hasattr(plain, "on_neuron_ratio"), type(plain)
same(plain(x))
(warning,) = records.messages
assert warning.startswith("WARNING the tfaccel config in keras_metadata.pb"), warning
assert "is malformed (KeyError: 'layout')" in warning and "without its placement report" in warning, warning

records.messages.clear()
old = tf.keras.models.load_model("old")  # another TensorFlow minor: loaded, with a warning
assert old.on_neuron_ratio == traced["ratio"]
same(old(x))
(warning,) = records.messages
assert "saved with tensorflow 2.0.0 and is loaded with tensorflow" in warning, warning
print("ok")
"""


def test_tf_keras_load_model_keeps_the_ratio_and_the_placement_summary(tmp_path: Path) -> None:
    env = {**LEGACY_ENV, "TFACCEL_CC_FLAGS": f"--backend=openvino {STATIC}"}
    ratio = float(run_python(_TRACE, cwd=tmp_path, env=env).strip().splitlines()[-1])
    assert 0 < ratio < 1
    assert json.loads((tmp_path / "traced.json").read_text())["summary"]
    assert run_python(_RELOAD, cwd=tmp_path, env=env).strip().endswith("ok")


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras_formats_stay_refused_by_tf_keras_save_model(tmp_path: Path, suffix: str) -> None:
    """The config exists only while ``model.save(dir)`` writes a SavedModel: Keras' own formats, which
    would write a file no loader can rebuild the compiled graph from, still get no config.
    """
    code = f"""
import numpy as np, tensorflow as tf
import tfaccel as tfn
model = tfn.trace(lambda t: tf.nn.relu(t) * 2.0, np.ones((1, 3), np.float32))
try:
    tf.keras.models.save_model(model, "model{suffix}")
except NotImplementedError as err:
    print("refused:", err)
"""
    env = {**LEGACY_ENV, "TFACCEL_CC_FLAGS": f"--backend=xla {STATIC}"}
    out = run_python(code, cwd=tmp_path, env=env)
    assert "refused:" in out
    assert not (tmp_path / f"model{suffix}").exists()
