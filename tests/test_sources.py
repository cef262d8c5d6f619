"""SavedModel signatures as trace sources: example inputs from specs, .npz files, and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tfaccel.cli.loadtest import LoadResult, percentile, run
from tfaccel.compiler.sources import example_inputs, open_signature, read_npz
from tfaccel.errors import SourceError


class _Mixed(tf.Module):
    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 4], tf.float32, name="dense"),
            tf.TensorSpec([None, 5], tf.int32, name="ids"),
            tf.TensorSpec([2, None], tf.float32, name="ragged"),
        ]
    )
    def serve(self, dense: tf.Tensor, ids: tf.Tensor, ragged: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"out": tf.reduce_sum(dense) + tf.cast(tf.reduce_sum(ids), tf.float32) + tf.reduce_sum(ragged)}


class _Fixed(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([2, 4], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": x * 2.0}


@pytest.fixture(scope="module")
def sig_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sources")
    for name, module in (("mixed", _Mixed()), ("fixed", _Fixed())):
        tf.saved_model.save(module, str(root / name), signatures=module.serve)
    return root / "mixed"


def test_example_inputs_from_the_signature(sig_dir: Path) -> None:
    sig = open_signature(sig_dir)
    assert sig.name == "serving_default"
    assert sig.describe() == "serving_default(dense: float32[?,4], ids: int32[?,5], ragged: float32[2,?])"
    with pytest.raises(SourceError, match=r"'ragged'.*dimension 1 is unknown.*--inputs"):
        example_inputs(sig)
    made = example_inputs(sig, batch_size=3, shapes={"ragged": [2, 7]})
    assert made["dense"].shape == (3, 4) and made["dense"].dtype == np.float32
    assert made["ids"].shape == (3, 5) and not made["ids"].any()  # zeros: a safe index
    assert made["ragged"].shape == (2, 7)
    with pytest.raises(SourceError, match="does not fit"):
        example_inputs(sig, shapes={"ragged": [3, 7]})
    assert example_inputs(sig, batch_size=3, shapes={"ragged": [2, 1]})["ragged"].shape == (2, 1)
    fixed = open_signature(sig_dir.parent / "fixed")
    with pytest.raises(SourceError, match=r"batch size 3 cannot apply.*x: float32\[2,4\]"):
        example_inputs(fixed, batch_size=3)


def test_npz_inputs_are_checked_against_the_signature(sig_dir: Path, tmp_path: Path) -> None:
    sig = open_signature(sig_dir)
    good = {
        "dense": np.ones((1, 4), np.float32),
        "ids": np.ones((1, 5), np.int32),
        "ragged": np.ones((2, 3), np.float32),
    }
    np.savez(tmp_path / "good.npz", **good)
    arrays = example_inputs(sig, arrays=read_npz(tmp_path / "good.npz"))
    assert {k: v.shape for k, v in arrays.items()} == {"dense": (1, 4), "ids": (1, 5), "ragged": (2, 3)}
    with pytest.raises(SourceError, match="missing ragged; unexpected extra"):
        example_inputs(sig, arrays={"dense": good["dense"], "ids": good["ids"], "extra": good["dense"]})
    with pytest.raises(SourceError, match="'ids' is int64 but the signature wants int32"):
        example_inputs(sig, arrays={**good, "ids": good["ids"].astype(np.int64)})
    with pytest.raises(SourceError, match=r"'dense' has shape \[1, 3\]"):
        example_inputs(sig, arrays={**good, "dense": np.ones((1, 3), np.float32)})
    with pytest.raises(SourceError, match="a batch size or shapes cannot apply"):
        example_inputs(sig, batch_size=2, arrays=good)
    np.save(tmp_path / "one.npy", good["dense"])
    with pytest.raises(SourceError, match=r"holds one array \(an \.npy\)"):
        read_npz(tmp_path / "one.npy")
    (tmp_path / "bad.npz").write_text("not an npz")
    with pytest.raises(SourceError, match=r"could not be read as an \.npz"):
        read_npz(tmp_path / "bad.npz")


def test_percentiles_and_the_closed_loop() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert percentile([1.0, 2.0], 90) == pytest.approx(1.9)
    calls: list[int] = []
    results = run({"a": lambda: calls.append(1), "b": lambda: None}, batch=4, concurrency=2, duration=0.2)
    for result in results.values():
        row = result.summary()
        assert row["calls"] > 0 and row["concurrency"] == 2
        assert row["inferences_per_s"] == pytest.approx(4 * row["calls_per_s"])
        assert row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
    assert len(calls) == results["a"].calls + 5  # + the warm-up calls

    def broken() -> None:
        raise RuntimeError("boom")

    failing: LoadResult = run({"x": broken}, batch=1, concurrency=1, duration=0.05, warmup=0)["x"]
    assert failing.calls == 0 and failing.errors > 0 and failing.first_error == "RuntimeError: boom"
