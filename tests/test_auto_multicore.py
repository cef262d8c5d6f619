"""tfaccel.auto_multicore: a traced SavedModel copied so that its openvino subgraphs run N calls at once.

The copy must answer like the source (in a fresh process and from concurrent threads), carry ``streams=N``
on every openvino op, keep its file digests and fingerprint consistent, and say in its report what changed
and what did not (xla subgraphs). A bad source, target or ``num_cores`` is a clear tfaccel error, and
nothing is written. Times are never asserted: the throughput is measured by benchmarks/bench_multicore.py.
"""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import openvino as ov
import pytest
import tensorflow as tf
from openvino import opset13 as ovops
from tensorflow.core.protobuf import saved_model_pb2

import tfaccel
from conftest import ATOL, RTOL, SRC, assert_close, run_python
from tfaccel import native
from tfaccel.runtime.metadata import METADATA_FILE

RNG = np.random.default_rng(15)
W1 = tf.constant(RNG.standard_normal((8, 8)), tf.float32)
W2 = tf.constant(RNG.standard_normal((8, 4)), tf.float32)


@tf.function
def mixed(x):
    """float32 ops (openvino) around a float64 stretch (xla): two openvino subgraphs and one xla."""
    h = tf.nn.relu(tf.matmul(x, W1) + 1.0)
    d = tf.cast(h, tf.float64)
    s = tf.reduce_sum(d * d + 1.0, axis=1, keepdims=True)
    return tf.matmul(h * tf.cast(s, tf.float32), W2) + 1.0


@tf.function
def dense(x):
    return tf.nn.relu(tf.matmul(x, W1)) * 0.5


def _streams(model_dir):
    """node name -> its ``streams`` attribute (None when absent: the op's default, 1), for every op of
    tfaccel's OpenVINO kernel in the saved graph.
    """
    proto = saved_model_pb2.SavedModel.FromString((model_dir / "saved_model.pb").read_bytes())
    found = {}
    for meta in proto.meta_graphs:
        for function in meta.graph_def.library.function:
            for node in function.node_def:
                if node.op == native.OP_TYPE:
                    attr = node.attr.get("streams")
                    found[f"{function.signature.name}/{node.name}"] = None if attr is None else attr.i
    return found


def _meta(model_dir):
    return json.loads((model_dir / METADATA_FILE).read_text())


@pytest.fixture(scope="module")
def mixed_saved(tmp_path_factory):
    """The mixed model traced (openvino + xla), saved, and its 2-core copy."""
    root = tmp_path_factory.mktemp("multicore")
    x = tf.constant(RNG.standard_normal((3, 8)), tf.float32)
    traced = tfaccel.trace(mixed, x, backend="auto", placement="static")
    backends = sorted(s.backend for s in traced.placement_report.subgraphs)
    assert backends == ["openvino", "openvino", "xla"], backends
    traced.save(str(root / "source"))
    tfaccel.auto_multicore(str(root / "source"), str(root / "two"), num_cores=2)
    np.save(root / "x.npy", x.numpy())
    np.save(root / "y.npy", mixed(x).numpy())
    return root, x


def test_every_openvino_op_of_the_copy_runs_two_streams(mixed_saved):
    root, _ = mixed_saved
    source, copy = _streams(root / "source"), _streams(root / "two")
    assert len(copy) >= 2, copy  # the two openvino subgraphs
    assert set(copy.values()) == {2}
    assert set(source) == set(copy) and set(source.values()) <= {None, 1}


def test_the_copy_answers_like_the_source_in_a_fresh_process(mixed_saved):
    root, _ = mixed_saved
    code = f"""
import numpy as np, tfaccel
x, y = np.load("x.npy"), np.load("y.npy")
for name in ("source", "two"):
    np.testing.assert_allclose(tfaccel.load(name)(x).numpy(), y, rtol={RTOL}, atol={ATOL})
print("ok")
"""
    assert run_python(code, cwd=root, env={"PYTHONPATH": SRC}).strip().endswith("ok")


def test_the_report_says_what_runs_with_streams_and_what_is_unchanged(mixed_saved):
    root, _ = mixed_saved
    meta = _meta(root / "two")
    assert meta["multicore"]["num_cores"] == 2
    assert meta["multicore"]["openvino_ops"] == len(_streams(root / "two"))
    assert len(meta["multicore"]["openvino_subgraphs"]) == 2
    assert len(meta["multicore"]["unchanged_subgraphs"]) == 1
    report = tfaccel.load_report(str(root / "two"))
    (note,) = [s for s in report.fallbacks if s.startswith("auto_multicore(")]
    assert "num_cores=2" in note and "2 openvino subgraph(s)" in note and "(xla)" in note, note
    assert not [s for s in tfaccel.load_report(str(root / "source")).fallbacks if "auto_multicore" in s]
    # everything else the source's metadata says is kept
    source = _meta(root / "source")
    for key in ("layout", "output_names", "dynamic_batch"):
        assert meta[key] == source[key]


def test_the_copy_has_its_own_digests_and_fingerprint(mixed_saved):
    root, _ = mixed_saved
    source, copy = _meta(root / "source"), _meta(root / "two")
    assert sorted(copy["sha256"]) == sorted(source["sha256"])
    assert copy["sha256"]["saved_model.pb"] != source["sha256"]["saved_model.pb"]
    for name, digest in source["sha256"].items():
        if name.startswith("variables/"):
            assert copy["sha256"][name] == digest, name
    fingerprints = [tf.saved_model.experimental.read_fingerprint(str(root / n)) for n in ("source", "two")]
    assert fingerprints[0].saved_model_checksum != fingerprints[1].saved_model_checksum


def test_concurrent_callers_get_their_own_answers(mixed_saved):
    root, _ = mixed_saved
    model = tfaccel.load(str(root / "two"))
    inputs = [tf.constant(np.random.default_rng(i).standard_normal((3, 8)), tf.float32) for i in range(4)]
    expected = [mixed(x).numpy() for x in inputs]
    got: dict[tuple[int, int], np.ndarray] = {}
    errors: list[BaseException] = []

    def caller(i):
        try:
            for k in range(25):
                got[(i, k)] = model(inputs[i]).numpy()
        except BaseException as err:  # reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(got) == 100
    for (i, _), value in got.items():
        assert_close(value, expected[i])


def test_the_reference_form_returns_a_rewritten_model(tmp_path):
    x = tf.constant(RNG.standard_normal((2, 8)), tf.float32)
    traced = tfaccel.trace(dense, x, backend="openvino")
    multicore = tfaccel.auto_multicore(traced, x, num_cores=2)
    assert_close(multicore(x), dense(x))
    multicore.save(str(tmp_path / "again"))
    assert set(_streams(tmp_path / "again").values()) == {2}


def test_an_xla_model_is_copied_unchanged_and_the_report_says_so(tmp_path):
    x = tf.constant(RNG.standard_normal((2, 8)), tf.float32)
    tfaccel.trace(dense, x, backend="xla").save(str(tmp_path / "xla"))
    tfaccel.auto_multicore(str(tmp_path / "xla"), str(tmp_path / "copy"), num_cores=2)
    for name in _meta(tmp_path / "xla")["sha256"]:
        assert (tmp_path / "copy" / name).read_bytes() == (tmp_path / "xla" / name).read_bytes(), name
    (note,) = [s for s in tfaccel.load_report(str(tmp_path / "copy")).fallbacks if "auto_multicore" in s]
    assert "no openvino subgraph" in note and "(xla)" in note, note
    assert _meta(tmp_path / "copy")["multicore"]["openvino_ops"] == 0
    assert_close(tfaccel.load(str(tmp_path / "copy"))(x), dense(x))


def test_rewriting_a_copy_again_replaces_the_streams_and_the_note(mixed_saved, tmp_path):
    root, _ = mixed_saved
    tfaccel.auto_multicore(str(root / "two"), str(tmp_path / "one"), num_cores=1)
    assert set(_streams(tmp_path / "one").values()) == {1}
    notes = [s for s in tfaccel.load_report(str(tmp_path / "one")).fallbacks if "auto_multicore" in s]
    assert len(notes) == 1 and "num_cores=1" in notes[0], notes


@pytest.mark.parametrize("num_cores", [0, -1, 1.5, True, "2", None, 257])
def test_a_bad_num_cores_is_refused_and_nothing_written(mixed_saved, tmp_path, num_cores):
    root, _ = mixed_saved
    with pytest.raises(tfaccel.OptionsError, match="num_cores must be a whole number from 1 to 256"):
        tfaccel.auto_multicore(str(root / "source"), str(tmp_path / "out"), num_cores=num_cores)
    assert not (tmp_path / "out").exists()


def _plain_savedmodel(path):
    module = tf.Module()
    module.f = tf.function(lambda x: x * 2.0, input_signature=[tf.TensorSpec([2], tf.float32)])
    tf.saved_model.save(module, str(path))


def _tampered(root, tmp_path):
    import shutil

    shutil.copytree(root / "source", tmp_path / "tampered")
    graph = tmp_path / "tampered" / "saved_model.pb"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0x01
    graph.write_bytes(bytes(data))
    return tmp_path / "tampered"


@pytest.mark.parametrize(
    ("make_source", "target", "message"),
    [
        (lambda root, tmp: tmp / "missing", "out", "does not exist"),
        (lambda root, tmp: (tmp / "file").write_text("x") and tmp / "file", "out", "is not a directory"),
        (lambda root, tmp: _plain_savedmodel(tmp / "plain") or tmp / "plain", "out", "not saved by tfaccel"),
        (_tampered, "out", "damaged or edited"),
        (lambda root, tmp: root / "source", "nonempty", "is not empty"),
        (lambda root, tmp: root / "source", "SOURCE", "is the source model"),
        (lambda root, tmp: root / "source", "SOURCE/inner", "is inside the source model"),
    ],
    ids=["missing", "a_file", "plain_savedmodel", "tampered", "nonempty_target", "same_dir", "inside_source"],
)
def test_a_bad_source_or_target_is_a_clear_error(mixed_saved, tmp_path, make_source, target, message):
    root, _ = mixed_saved
    source = make_source(root, tmp_path)
    (tmp_path / "nonempty").mkdir()
    (tmp_path / "nonempty" / "keep.txt").write_text("mine")
    out = source / target[len("SOURCE/") :] if target.startswith("SOURCE") else tmp_path / target
    before = sorted(os.listdir(root / "source"))
    with pytest.raises(tfaccel.ExportError, match=message):
        tfaccel.auto_multicore(str(source), str(out), num_cores=2)
    assert not (tmp_path / "out").exists()
    assert os.listdir(tmp_path / "nonempty") == ["keep.txt"]
    assert sorted(os.listdir(root / "source")) == before


def test_a_symbolic_link_in_the_source_is_refused(mixed_saved, tmp_path):
    import shutil

    root, _ = mixed_saved
    shutil.copytree(root / "source", tmp_path / "linked")
    (tmp_path / "secret").write_text("not part of any model")
    os.symlink(tmp_path / "secret", tmp_path / "linked" / "assets.extra" / "warmup")
    with pytest.raises(tfaccel.ExportError, match="is a symbolic link"):
        tfaccel.auto_multicore(str(tmp_path / "linked"), str(tmp_path / "out"), num_cores=2)
    assert not (tmp_path / "out").exists()


# -- the op: streams are part of what its compile cache matches ------------------------------------------
def _ir(tmp_path):
    w = np.random.default_rng(3).standard_normal((6, 6)).astype(np.float32)
    p = ovops.parameter([4, 6], ov.Type.f32, name="x")
    model = ov.Model([ovops.result(ovops.relu(ovops.matmul(p, ovops.constant(w), False, False)))], [p], "m")
    ov.save_model(model, str(tmp_path / "m.xml"), compress_to_fp16=False)
    return (tmp_path / "m.xml").read_bytes(), (tmp_path / "m.bin").read_bytes(), w


def test_one_and_two_streams_of_the_same_model_are_two_compilations(tmp_path):
    xml, weights, w = _ir(tmp_path)
    x = np.random.default_rng(4).standard_normal((4, 6)).astype(np.float32)
    before = native.compile_cache_stats()["compiles"]
    for streams in (2, 1, 2, 1):
        (got,) = native.ops().tfaccel_openvino(
            model_xml=tf.constant(xml),
            model_weights=tf.constant(weights),
            args=[tf.constant(x)],
            Tout=[tf.float32],
            model_key="k-streams",
            input_names=["x:0"],
            output_shapes=[tf.TensorShape([4, 6])],
            streams=streams,
        )
        assert_close(got, np.maximum(x @ w, 0))
    assert native.compile_cache_stats()["compiles"] == before + 2


def test_the_op_refuses_more_streams_than_it_can_run(tmp_path):
    xml, weights, _ = _ir(tmp_path)
    with pytest.raises(tf.errors.InvalidArgumentError, match="streams is 1000"):
        native.ops().tfaccel_openvino(
            model_xml=tf.constant(xml),
            model_weights=tf.constant(weights),
            args=[tf.zeros([4, 6])],
            Tout=[tf.float32],
            model_key="k",
            input_names=["x:0"],
            output_shapes=[tf.TensorShape([4, 6])],
            streams=1000,
        )


def test_the_reference_form_refuses_a_directory_as_its_second_argument(tmp_path):
    x = tf.constant(RNG.standard_normal((2, 8)), tf.float32)
    traced = tfaccel.trace(dense, x, backend="xla")
    with pytest.raises(tfaccel.ExportError, match="the second argument is its example inputs"):
        tfaccel.auto_multicore(traced, str(tmp_path / "out"), num_cores=2)
    assert not (tmp_path / "out").exists()


# -- the same streams at trace time: --performance-hint / --num-streams (issue 19 item 2) ------------------
@pytest.mark.parametrize(
    ("options", "streams"),
    [
        pytest.param({"performance_hint": "throughput"}, 0, id="throughput_openvino_decides"),
        pytest.param({"performance_hint": "throughput", "num_streams": 2}, 2, id="throughput_2"),
        pytest.param({"num_streams": 3}, 3, id="num_streams_alone"),
        pytest.param({"performance_hint": "latency"}, 1, id="latency"),
    ],
)
def test_trace_options_set_the_streams_of_every_openvino_subgraph(tmp_path, options, streams):
    x = tf.constant(RNG.standard_normal((3, 8)), tf.float32)
    traced = tfaccel.trace(mixed, x, backend="auto", placement="static", **options)
    assert_close(traced(x), mixed(x))
    notes = [n for n in traced.placement_report.fallbacks if "--performance-hint=throughput" in n]
    assert len(notes) == (streams != 1), traced.placement_report.fallbacks
    traced.save(str(tmp_path / "m"))
    found = _streams(tmp_path / "m")
    assert len(found) >= 2 and {1 if v is None else v for v in found.values()} == {streams}, found
    np.save(tmp_path / "x.npy", x.numpy())
    np.save(tmp_path / "y.npy", mixed(x).numpy())
    code = f"""
import threading, numpy as np, tfaccel
m = tfaccel.load("m")
x, y = np.load("x.npy"), np.load("y.npy")
got = [None] * 4
def call(i):
    got[i] = m(x).numpy()
threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
for t in threads: t.start()
for t in threads: t.join()
for g in got:
    np.testing.assert_allclose(g, y, rtol={RTOL}, atol={ATOL})
print("ok")
"""
    assert run_python(code, cwd=tmp_path, env={"PYTHONPATH": SRC}).strip().endswith("ok")


def test_measured_placement_times_one_call_with_the_latency_setting():
    from tfaccel.backends.base import Call

    x = tf.constant(RNG.standard_normal((3, 8)), tf.float32)
    traced = tfaccel.trace(dense, x, backend="openvino", performance_hint="throughput", placement="profile")
    assert_close(traced(x), dense(x))
    assert traced.placement_report.guard is None  # one call is slower by design: not judged by the guard
    assert any("--performance-hint=throughput" in n for n in traced.placement_report.fallbacks)
    call = Call(op=native.OP_TYPE, attrs={"streams": 0, "precision": "f32"}, measured_attrs={"streams": 1})
    assert call.for_measuring().attrs == {"streams": 1, "precision": "f32"}
    assert call.attrs["streams"] == 0
    plain = Call(op=native.OP_TYPE, attrs={"streams": 1})
    assert plain.for_measuring() is plain
