"""Save / load / serve: a traced SavedModel runs in processes that never import tfaccel."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfaccel
from conftest import SRC, assert_close, installed_script, run_python


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A Keras 3 model with two named inputs and dict outputs, traced and saved."""
    keras.utils.set_random_seed(0)
    a = keras.Input((6,), name="image_features")
    b = keras.Input((6,), name="text_features")
    h = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()([a, b]))
    model = keras.Model([a, b], {"score": keras.layers.Dense(1)(h), "embedding": h})
    rng = np.random.default_rng(0)
    xs = [tf.constant(rng.standard_normal((2, 6)), tf.float32) for _ in range(2)]
    traced = tfaccel.trace(model, xs, backend="xla")  # stock TF loads it; openvino: test_openvino.py
    path = tmp_path_factory.mktemp("export") / "traced"
    traced.save(str(path))
    expected = {k: v.numpy() for k, v in model(xs).items()}
    np.savez(path.parent / "io.npz", a=xs[0].numpy(), b=xs[1].numpy(), **expected)
    return path, model, traced, xs, expected


def test_save_writes_a_savedmodel_with_the_original_signature(saved):
    path, _, _, _, _ = saved
    loaded = tf.saved_model.load(str(path))
    sig = loaded.signatures["serving_default"]
    _, inputs = sig.structured_input_signature
    assert {k: (v.dtype, v.shape.as_list()) for k, v in inputs.items()} == {
        "image_features": (tf.float32, [None, 6]),  # the batch propagates: any batch (issue 15)
        "text_features": (tf.float32, [None, 6]),
    }
    assert sorted(sig.structured_outputs) == ["embedding", "score"]


def test_tfaccel_load_gives_a_model_called_like_the_original(saved):
    path, _, traced, xs, expected = saved
    again = tfaccel.load(str(path))
    got = again(xs)
    assert sorted(got) == ["embedding", "score"]
    for key in expected:
        assert_close(got[key], expected[key])
    assert again.on_neuron_ratio == traced.on_neuron_ratio == 1.0


def test_fresh_process_without_tfaccel_runs_serving_default(saved):
    path, _, _, _, _ = saved
    code = f"""
import sys, numpy as np, tensorflow as tf
io = np.load({str(path.parent / "io.npz")!r})
m = tf.saved_model.load({str(path)!r})
out = m.signatures['serving_default'](image_features=tf.constant(io['a']), text_features=tf.constant(io['b']))
for key in ('score', 'embedding'):
    np.testing.assert_allclose(out[key].numpy(), io[key], rtol=1e-5, atol=1e-5)
# the restored function keeps the original nested output structure
nested = m.tfaccel_call_flat(tf.constant(io['a']), tf.constant(io['b']))
assert sorted(nested) == ['embedding', 'score']
assert 'tfaccel' not in sys.modules, 'tfaccel must not be needed to serve an xla model'
print('ok')
"""
    env = {"PYTHONPATH": ""}
    assert run_python(code, cwd=path.parent, env=env).strip().endswith("ok")


def test_fresh_process_tfaccel_load(saved):
    path, _, _, _, _ = saved
    code = f"""
import numpy as np, tensorflow as tf, tfaccel
io = np.load({str(path.parent / "io.npz")!r})
m = tfaccel.load({str(path)!r})
out = m([io['a'], io['b']])
np.testing.assert_allclose(out['score'].numpy(), io['score'], rtol=1e-5, atol=1e-5)
print(m.on_neuron_ratio)
"""
    assert run_python(code, cwd=path.parent, env={"PYTHONPATH": SRC}).strip().endswith("1.0")


def test_saved_model_cli_run(saved, tmp_path):
    """TensorFlow's own CLI serves the model: the installed script (found like tfaccel's, next to the
    interpreter in a venv that is not activated), else its module; never skipped.
    """
    path, _, _, _, expected = saved
    io = np.load(path.parent / "io.npz")
    np.save(tmp_path / "a.npy", io["a"])
    np.save(tmp_path / "b.npy", io["b"])
    out_dir = tmp_path / "out"
    proc = subprocess.run(
        [
            *installed_script("saved_model_cli", ["-m", "tensorflow.python.tools.saved_model_cli"]),
            "run",
            "--dir",
            str(path),
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
            "--inputs",
            f"image_features={tmp_path / 'a.npy'};text_features={tmp_path / 'b.npy'}",
            "--outdir",
            str(out_dir),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert proc.returncode == 0, proc.stderr
    assert_close(np.load(out_dir / "score.npy"), expected["score"])


def test_metadata_records_the_placement(saved):
    path, _, _, _, _ = saved
    meta = json.loads((path / "assets.extra" / "tfaccel.json").read_text())
    assert meta["report"]["on_neuron_ratio"] == 1.0
    assert meta["layout"]["convention"] == "list"


def test_load_rejects_what_tfaccel_did_not_save(tmp_path):
    module = tf.Module()
    module.f = tf.function(lambda x: x + 1, input_signature=[tf.TensorSpec([1])])
    tf.saved_model.save(module, str(tmp_path / "plain"))
    with pytest.raises(tfaccel.ExportError, match=r"was not saved by tfaccel.*tf\.saved_model\.load"):
        tfaccel.load(tmp_path / "plain")
    with pytest.raises(tfaccel.ExportError, match="does not exist"):
        tfaccel.load(tmp_path / "missing")
    (tmp_path / "file").write_text("")
    with pytest.raises(tfaccel.ExportError, match="is not a directory"):
        tfaccel.load(tmp_path / "file")


def test_saving_to_a_keras_file_is_refused_with_the_remedy(saved, tmp_path):
    _, _, traced, _, _ = saved
    with pytest.raises(tfaccel.ExportError, match="save it to a directory"):
        traced.save(str(tmp_path / "model.keras"))


def test_keras3_tfsmlayer_loads_a_single_input_model(tmp_path):
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,), name="feat")
    model = keras.Model(inp, keras.layers.Dense(3)(inp))
    x = tf.random.uniform([2, 4])
    tfaccel.trace(model, x).save(str(tmp_path / "single"))
    layer = keras.layers.TFSMLayer(str(tmp_path / "single"), call_endpoint="serving_default")
    assert_close(layer(x)["output_0"], model(x))


def _named_outputs(x):
    """Flat dict keys that sanitising would merge; each value tells which key it belongs to."""
    return {"a/b": x * 2.0, "a_b": x * 3.0, "a b": x * 4.0, "output_0": x * 5.0, "": x * 6.0}


def _nested_outputs(x):
    """Generated names that collide: output_a_b (from a/b) twice, and a name that is someone's suffix."""
    return {"a": {"b": x * 2.0}, "a_b": x * 3.0, "a_b_1": x * 4.0}


def test_output_names_map_to_the_right_values_in_a_fresh_process(tmp_path):
    import tf_keras

    x = tf.constant([[1.0, 2.0, 3.0, 4.0]])
    expected: dict[str, dict[str, np.ndarray]] = {}
    for name, fn in (("flat", _named_outputs), ("nested", _nested_outputs)):
        tfaccel.trace(fn, x, backend="xla").save(str(tmp_path / name))
        flat = tf.nest.flatten(fn(x))
        names = tfaccel.load(tmp_path / name).tfaccel_executable.output_names
        expected[name] = {n: v.numpy() for n, v in zip(names, flat, strict=True)}
    assert sorted(expected["flat"]) == ["", "a b", "a/b", "a_b", "output_0"]  # dict keys kept verbatim
    # generated names: flatten order (sorted keys), the first keeps its name, later ones take _1, _2...
    # but never a name another output has
    assert list(expected["nested"]) == ["output_a_b", "output_a_b_2", "output_a_b_1"]
    for key, factor in (("a/b", 2.0), ("a_b", 3.0), ("a b", 4.0), ("output_0", 5.0), ("", 6.0)):
        np.testing.assert_array_equal(expected["flat"][key], x.numpy() * factor)
    # a tf_keras model keeps its output layer's name, as tf_keras' own SavedModel signature does
    inp = tf_keras.Input((4,), name="feat")
    scores = tf_keras.layers.Dense(3, name="scores")(inp)
    model = tf_keras.Model(inp, [scores, tf_keras.layers.Dense(2, name="probs")(inp)])
    tfaccel.trace(model, x, backend="xla").save(str(tmp_path / "tf_keras"))
    expected["tf_keras"] = {"scores": model(x)[0].numpy(), "probs": model(x)[1].numpy()}
    np.savez(
        tmp_path / "expected.npz", **{f"{d}|{n}": v for d, out in expected.items() for n, v in out.items()}
    )
    code = f"""
import sys, numpy as np, tensorflow as tf
x = tf.constant([[1.0, 2.0, 3.0, 4.0]])
want = np.load({str(tmp_path / "expected.npz")!r})
for model_dir in ("flat", "nested", "tf_keras"):
    sig = tf.saved_model.load(model_dir).signatures["serving_default"]
    out = sig(**{{next(iter(sig.structured_input_signature[1])): x}})
    names = sorted(k.split("|", 1)[1] for k in want.files if k.startswith(model_dir + "|"))
    assert sorted(out) == names, (model_dir, sorted(out), names)
    for name in names:
        np.testing.assert_allclose(out[name].numpy(), want[model_dir + "|" + name], rtol=1e-6, atol=1e-6)
assert "tfaccel" not in sys.modules
print("ok")
"""
    assert run_python(code, cwd=tmp_path, env={"PYTHONPATH": ""}).strip().endswith("ok")


# -- issue 16 item 13: saving over a directory leaves nothing stale --------------------------------------
def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_saving_over_a_savedmodel_replaces_it_and_leaves_no_stale_file(saved, tmp_path):
    _, _, traced, xs, expected = saved
    fresh, target = tmp_path / "fresh", tmp_path / "target"
    traced.save(str(fresh))
    # an older save of another model: more variable shards, tf_keras' metadata, an asset, a pbtxt
    target.mkdir()
    (target / "saved_model.pb").write_bytes(b"old")
    (target / "saved_model.pbtxt").write_text("old")
    (target / "keras_metadata.pb").write_bytes(b"old")
    (target / "variables").mkdir()
    for shard in ("variables.data-00000-of-00002", "variables.data-00001-of-00002", "variables.index"):
        (target / "variables" / shard).write_bytes(b"old")
    (target / "assets").mkdir()
    (target / "assets" / "vocab.txt").write_text("old")
    (target / "assets.extra").mkdir()
    (target / "assets.extra" / "tf_serving_warmup_requests").write_bytes(b"user's")  # not ours: kept
    traced.save(str(target))
    assert _tree(target) == sorted([*_tree(fresh), "assets.extra/tf_serving_warmup_requests"])
    assert (target / "assets.extra" / "tf_serving_warmup_requests").read_bytes() == b"user's"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging directory left
    got = tfaccel.load(target)(xs)
    for key in expected:
        assert_close(got[key], expected[key])


def test_saving_into_a_directory_that_is_not_a_savedmodel_is_refused(saved, tmp_path):
    _, _, traced, _, _ = saved
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(
        tfaccel.ExportError, match=r"is not empty and holds no SavedModel.*new or empty directory"
    ):
        traced.save(str(tmp_path))
    assert _tree(tmp_path) == ["notes.txt"]
    (tmp_path / "file").write_text("")
    with pytest.raises(tfaccel.ExportError, match=r"is a file"):
        traced.save(str(tmp_path / "file"))


# -- issue 16 item 15: a loaded model saves again; Keras' own formats are refused clearly -----------------
@pytest.mark.parametrize(
    "backend,flags",
    [("xla", {}), ("xla", {"extract_weights": True}), ("openvino", {})],
    ids=["xla", "xla-ew", "openvino"],
)
def test_a_loaded_model_saves_again_and_runs_in_a_fresh_process(backend, flags, tmp_path):
    keras.utils.set_random_seed(0)
    inp = keras.Input((6,), name="feat")
    model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.Dense(8, activation="relu")(inp)))
    x = np.random.default_rng(0).standard_normal((2, 6)).astype(np.float32)
    tfaccel.trace(model, x, backend=backend, **flags).save(str(tmp_path / "first"))
    tfaccel.load(tmp_path / "first").save(str(tmp_path / "second"))
    np.savez(tmp_path / "io.npz", x=x, y=model(x).numpy())
    code = """
import numpy as np, tensorflow as tf, tfaccel
io = np.load("io.npz")
again = tfaccel.load("second")
np.testing.assert_allclose(again(io["x"]).numpy(), io["y"], rtol=1e-5, atol=1e-5)
again.save("third")  # and once more, from a fresh process
sig = tf.saved_model.load("third").signatures["serving_default"]
np.testing.assert_allclose(sig(feat=tf.constant(io["x"]))["output_0"].numpy(), io["y"], rtol=1e-5, atol=1e-5)
print("ok")
"""
    assert run_python(code, cwd=tmp_path, env={"PYTHONPATH": SRC}).strip().endswith("ok")


def test_keras_formats_are_refused_and_export_writes_the_savedmodel(saved, tmp_path):
    _, _, traced, xs, expected = saved
    for call in (
        lambda: keras.saving.save_model(traced, str(tmp_path / "m.keras")),
        lambda: keras.saving.save_model(traced, str(tmp_path / "m.h5")),
        lambda: traced.save_weights(str(tmp_path / "w.weights.h5")),
    ):
        with pytest.raises(tfaccel.ExportError, match=r"save\(dir\).*SavedModel"):
            call()
    assert not (tmp_path / "w.weights.h5").exists()
    traced.export(str(tmp_path / "exported"))
    got = tfaccel.load(tmp_path / "exported")(xs)
    for key in expected:
        assert_close(got[key], expected[key])
    with pytest.raises(tfaccel.ExportError, match="format"):
        traced.export(str(tmp_path / "onnx"), format="onnx")


def test_a_model_saved_before_file_digests_still_loads(saved, tmp_path):
    path, _, _, xs, expected = saved
    old = tmp_path / "format1"
    shutil.copytree(path, old)
    meta_file = old / "assets.extra" / "tfaccel.json"
    meta = json.loads(meta_file.read_text())
    assert meta["format"] == 2 and "saved_model.pb" in meta["sha256"]
    del meta["sha256"]
    meta_file.write_text(json.dumps({**meta, "format": 1}))
    got = tfaccel.load(old)(xs)
    for key in expected:
        assert_close(got[key], expected[key])


def _edited(saved, tmp_path, name, edit):
    """A copy of the saved model whose tfaccel.json went through ``edit(meta)``."""
    path = saved[0]
    copy = tmp_path / name
    shutil.copytree(path, copy)
    meta_file = copy / "assets.extra" / "tfaccel.json"
    meta = json.loads(meta_file.read_text())
    edit(meta)
    meta_file.write_text(json.dumps(meta))
    return copy


def test_edited_metadata_that_would_feed_inputs_swapped_is_refused(saved, tmp_path):
    """Both inputs are float32 (2, 6): only their order tells them apart."""
    swapped = _edited(saved, tmp_path, "swapped", lambda m: m["layout"]["specs"].reverse())
    with pytest.raises(tfaccel.ExportError, match=r"takes .*'image_features'.*'text_features'.* in order"):
        tfaccel.load(swapped)


def test_an_emptied_digest_map_is_refused(saved, tmp_path):
    empty = _edited(saved, tmp_path, "empty", lambda m: m.__setitem__("sha256", {}))
    with pytest.raises(tfaccel.ExportError, match=r"records no digest of saved_model\.pb"):
        tfaccel.load(empty)


def test_metadata_that_is_no_regular_file_or_nests_too_deep_is_an_error_not_a_hang(saved, tmp_path):
    fifo = tmp_path / "fifo"
    shutil.copytree(saved[0], fifo)
    (fifo / "assets.extra" / "tfaccel.json").unlink()
    os.mkfifo(fifo / "assets.extra" / "tfaccel.json")  # reading it would block forever
    with pytest.raises(tfaccel.ExportError, match="is not a regular file"):
        tfaccel.load(fifo)
    deep = tmp_path / "deep"
    shutil.copytree(saved[0], deep)
    (deep / "assets.extra" / "tfaccel.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(tfaccel.ExportError, match="cannot be read"):
        tfaccel.load(deep)
    with pytest.raises(tfaccel.ExportError, match="cannot be read"):
        tfaccel.load_report(deep)
