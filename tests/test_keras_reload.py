"""A traced model reloaded with tf_keras' ``tf.keras.models.load_model`` keeps its report (issue 20 item 5).

The reference's flow is ``model.save(dir)`` then ``tf.keras.models.load_model(dir)``; ported code then reads
``on_neuron_ratio`` and calls ``summary()``. tf_keras rebuilds the model's class from the config saved in
``keras_metadata.pb`` when the class name is registered (``import tfaccel`` registers it), else it revives a
plain Keras model that still answers. Everything runs in fresh processes: that is where ``load_model`` runs.
"""

from __future__ import annotations

import json
from pathlib import Path

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
traced_record = json.load(open("m/assets.extra/tfaccel.json"))
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

# first called inside a graph: its eager calls afterwards take the same path as those of a model first
# called eagerly (the direct path's analysis runs eagerly either way)
first_in_graph = tf.keras.models.load_model("m")
same(tf.function(lambda t: first_in_graph(t))(tf.constant(x)))
why = first_in_graph.tfaccel_executable.direct_why
assert why == m.tfaccel_executable.direct_why and "not analysed" not in why, why

from tfaccel.runtime.model import revived_metadata
for config in ({"name": "x"}, {"name": "x", "tfaccel": {**traced_record, "format": 99}}):
    records.messages.clear()
    try:
        revived_metadata(config)
    except tfaccel.ExportError:
        pass
    else:
        raise AssertionError(f"{config} was accepted")
    (warning,) = records.messages  # tf_keras swallows the error: the warning is all the user sees
    assert "without its placement report" in warning, warning
print("ok")
"""


def test_tf_keras_load_model_keeps_the_ratio_and_the_placement_summary(tmp_path: Path) -> None:
    env = {**LEGACY_ENV, "TFACCEL_CC_FLAGS": f"--backend=openvino {STATIC}"}
    ratio = float(run_python(_TRACE, cwd=tmp_path, env=env).strip().splitlines()[-1])
    assert 0 < ratio < 1
    assert json.loads((tmp_path / "traced.json").read_text())["summary"]
    assert run_python(_RELOAD, cwd=tmp_path, env=env).strip().endswith("ok")


def test_the_keras_format_stays_refused_even_while_another_thread_saves(tmp_path: Path) -> None:
    """The config exists only inside ``model.save(dir)``'s own call: Keras' ``.keras`` format, which would
    write a file no loader can rebuild the compiled graph from, still gets no config, also when another
    thread tries it while a save is under way.
    """
    code = """
import threading, numpy as np, tensorflow as tf
import tfaccel as tfn
import tf_keras.src.saving.legacy.saved_model.save as keras_save

model = tfn.trace(lambda t: tf.nn.relu(t) * 2.0, np.ones((1, 3), np.float32))
inside, release = threading.Event(), threading.Event()
original = keras_save.save_lib.save_and_return_nodes

def held(*args, **kwargs):  # the main thread's SavedModel write waits for the other thread's attempt
    if threading.current_thread() is threading.main_thread():
        inside.set()
        release.wait(60)
    return original(*args, **kwargs)

keras_save.save_lib.save_and_return_nodes = held
refused = []

def keras_format():
    inside.wait(60)
    try:
        tf.keras.models.save_model(model, "model.keras")
    except NotImplementedError as err:
        refused.append(str(err))
    finally:
        release.set()

other = threading.Thread(target=keras_format)
other.start()
model.save("m")
other.join()
assert refused and "cannot be saved in Keras' format" in refused[0], refused
print("ok")
"""
    env = {**LEGACY_ENV, "TFACCEL_CC_FLAGS": f"--backend=xla {STATIC}"}
    assert run_python(code, cwd=tmp_path, env=env).strip().endswith("ok")
    assert not (tmp_path / "model.keras").exists()
