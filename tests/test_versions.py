"""Saved models record the versions that made them; loading warns when another TensorFlow minor or
OpenVINO release loads them (runtime/versions.py), and refuses a malformed record."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import tensorflow as tf

import tfaccel
from tfaccel.runtime.metadata import METADATA_FILE
from tfaccel.runtime.versions import made_with, parse_made_with, version_warnings

HERE = {"tfaccel": "0.1.0", "tensorflow": "2.21.0", "openvino": "2026.4.1", "python": "3.11.7"}


@pytest.mark.parametrize(
    ("saved", "uses_openvino", "warned"),
    [
        ({"tensorflow": "2.21.3", "openvino": "2026.4.0"}, True, []),  # patch releases: no warning
        ({"tensorflow": "2.20.0", "openvino": "2026.4.1"}, True, ["tensorflow 2.20.0"]),
        ({"tensorflow": "2.21.0", "openvino": "2026.3.0"}, True, ["openvino 2026.3.0"]),
        ({"tensorflow": "2.21.0", "openvino": "2026.3.0"}, False, []),  # an xla model needs no OpenVINO
        (
            {"tensorflow": "2.22.0rc1", "openvino": "2025.4.0"},
            True,
            ["tensorflow 2.22.0rc1", "openvino 2025.4.0"],
        ),
        ({}, True, []),
    ],
)
def test_only_a_release_that_matters_is_warned_about(saved, uses_openvino, warned):
    sentences = version_warnings(saved, HERE, uses_openvino)
    assert len(sentences) == len(warned)
    for sentence, version in zip(sentences, warned, strict=True):
        assert f"saved with {version} and is loaded with" in sentence


def test_a_malformed_record_is_refused_and_a_missing_one_is_not():
    assert parse_made_with(None, "m") is None
    assert parse_made_with({"tensorflow": "2.21.0"}, "m") == {"tensorflow": "2.21.0"}
    for bad in (["2.21"], {"tensorflow": 2.21}, "2.21"):
        with pytest.raises(ValueError, match="m: made_with must map package names to version strings"):
            parse_made_with(bad, "m")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("versions") / "m"
    model = tfaccel.trace(lambda x: tf.nn.relu(x * 2.0), tf.ones([1, 4]), backend="openvino")
    model.save(str(path))
    return path


def _edit(path, made):
    meta_path = path / METADATA_FILE
    meta = json.loads(meta_path.read_text())
    meta["made_with"] = made
    meta_path.write_text(json.dumps(meta))


def test_a_saved_model_records_its_versions_and_loads_quietly_with_the_same(saved, caplog):
    meta = json.loads((saved / METADATA_FILE).read_text())
    assert meta["made_with"] == made_with()
    with caplog.at_level(logging.WARNING, logger="tfaccel"):
        loaded = tfaccel.load(str(saved))
    assert not [r for r in caplog.records if "was saved with" in r.getMessage()]
    np.testing.assert_array_equal(loaded(tf.ones([1, 4])).numpy(), np.full((1, 4), 2.0, np.float32))


def test_another_tensorflow_minor_warns_and_a_damaged_record_fails(saved, tmp_path, caplog):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(saved, copy)
    _edit(copy, {**made_with(), "tensorflow": "2.19.1"})
    with caplog.at_level(logging.WARNING, logger="tfaccel"):
        tfaccel.load(str(copy))
    (record,) = [r for r in caplog.records if "was saved with tensorflow 2.19.1" in r.getMessage()]
    assert record.levelno == logging.WARNING and str(copy) in record.getMessage()
    _edit(copy, "2.19.1")
    with pytest.raises(
        tfaccel.ExportError, match=r"made_with must map package names.*save the traced model again"
    ):
        tfaccel.load(str(copy))
