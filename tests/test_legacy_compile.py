"""``tfaccel.saved_model.compile``: the reference's legacy API, a SavedModel in and a traced one out."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import tfaccel as tfn
from conftest import assert_close


class _Two(tf.Module):
    def __init__(self) -> None:
        rng = np.random.default_rng(11)
        self.w = tf.Variable(rng.normal(size=(6, 4)).astype("float32"))

    @tf.function(input_signature=[tf.TensorSpec([None, 6], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": tf.nn.relu(tf.matmul(x, self.w))}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("legacy") / "model"
    module = _Two()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def _original(model_dir: Path, x: np.ndarray) -> np.ndarray:
    return tf.saved_model.load(str(model_dir)).signatures["serving_default"](x=tf.constant(x))["y"].numpy()


def test_compile_writes_a_traced_savedmodel_and_warns(model_dir: Path, tmp_path: Path) -> None:
    new_dir = tmp_path / "compiled"
    with pytest.warns(DeprecationWarning, match=r"tfaccel\.trace"):
        result = tfn.saved_model.compile(str(model_dir), str(new_dir), batch_size=3)
    assert result["OnNeuronRatio"] == 1.0
    assert result["report"]["subgraphs"]
    served = tf.saved_model.load(str(new_dir)).signatures["serving_default"]
    # traced at batch 3; the batch propagates, so the signature takes any batch (issue 15 item 1)
    assert served.structured_input_signature[1]["x"].shape.as_list() == [None, 6]
    assert tfn.load(new_dir).tfaccel_executable.layout.specs[0].shape == (3, 6)
    x = np.random.default_rng(0).random((3, 6), dtype=np.float32)
    assert_close(served(x=tf.constant(x))["y"], _original(model_dir, x))
    assert tfn.load_report(new_dir).ratio == 1.0


def test_compile_takes_feed_dicts_and_compiler_args(model_dir: Path, tmp_path: Path) -> None:
    x = np.random.default_rng(1).random((2, 6), dtype=np.float32)
    with pytest.warns(DeprecationWarning):
        result = tfn.saved_model.compile(
            model_dir,
            tmp_path / "fed",
            model_feed_dict={"x": x},
            compiler_args=["--backend=xla"],
            compiler_workdir=tmp_path / "work",
        )
    assert result["report"]["backend"] == "xla"
    assert (tmp_path / "work" / "placement.json").is_file()
    served = tf.saved_model.load(str(tmp_path / "fed")).signatures["serving_default"]
    assert_close(served(x=tf.constant(x))["y"], _original(model_dir, x))
    with pytest.warns(DeprecationWarning):
        tfn.saved_model.compile(model_dir, tmp_path / "shaped", model_shape_feed_dict={"x": [5, 6]})
    served = tf.saved_model.load(str(tmp_path / "shaped")).signatures["serving_default"]
    assert tfn.load(tmp_path / "shaped").tfaccel_executable.layout.specs[0].shape == (5, 6)
    x = np.random.default_rng(2).random((5, 6), dtype=np.float32)
    assert_close(served(x=tf.constant(x))["y"], _original(model_dir, x))


def test_compile_errors_name_the_problem(model_dir: Path, tmp_path: Path) -> None:
    with pytest.warns(DeprecationWarning), pytest.raises(tfn.SourceError, match="does not exist"):
        tfn.saved_model.compile(tmp_path / "nowhere", tmp_path / "out")
    with pytest.warns(DeprecationWarning), pytest.raises(tfn.SourceError, match="has no signature 'other'"):
        tfn.saved_model.compile(model_dir, tmp_path / "out", signature_def_key="other")
    with pytest.warns(DeprecationWarning), pytest.raises(tfn.OptionsError, match="no_fuse_ops"):
        tfn.saved_model.compile(model_dir, tmp_path / "out", no_fuse_ops=["a"])
    with pytest.warns(DeprecationWarning), pytest.raises(TypeError, match="frobnicate"):
        tfn.saved_model.compile(model_dir, tmp_path / "out", frobnicate=1)
    with pytest.warns(DeprecationWarning), pytest.raises(tfn.OptionsError, match="--bogus"):
        tfn.saved_model.compile(model_dir, tmp_path / "out", compiler_args="--bogus")
    with pytest.warns(DeprecationWarning), pytest.raises(tfn.SourceError, match="missing x"):
        tfn.saved_model.compile(model_dir, tmp_path / "out", model_feed_dict={"z": np.zeros((1, 6))})
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("keyword", "advice"),
    [
        ("no_fuse_ops", "subgraph_builder_function=lambda node: node.name not in ops"),
        ("force_fuse_ops", "subgraph_builder_function=lambda node: node.name in ops"),
        ("compiler_timeout", "there is no compiler timeout"),
        ("compiler_recovery", "always goes back to TensorFlow"),
        ("convert_constants_to_variables", "use --extract-weights"),
    ],
)
def test_each_reference_keyword_without_an_equivalent_is_refused_with_advice(
    model_dir: Path, tmp_path: Path, keyword: str, advice: str
) -> None:
    expected = rf"saved_model\.compile\(\): {keyword}= is not supported by tfaccel; .*{re.escape(advice)}"
    with pytest.warns(DeprecationWarning), pytest.raises(tfn.OptionsError, match=expected):
        tfn.saved_model.compile(model_dir, tmp_path / "out", **{keyword: 1})
    assert not (tmp_path / "out").exists()
