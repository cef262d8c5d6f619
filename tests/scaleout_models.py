"""Small traced models for the batch-engine tests (predictor, Ray, Spark), and their expected answers.

Two models, each traced with both backends and saved:

* ``rows``: two inputs (``features`` float32 [n, 6], ``ids`` int32 [n]) and two outputs (``scores``
  [n, 3] softmax, ``total`` [n]): rows are independent, so the saved model takes any batch;
* ``mixing``: ``x - mean(x over the batch)``: every row depends on the whole batch, so the saved model keeps
  its traced batch (4) and its report says why.

Expected answers come from the original functions on the same rows, never from the traced model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

import tfaccel

FEATURES = 6
VOCAB = 10
MIXING_BATCH = 4

_rng = np.random.default_rng(7)
W1 = tf.constant(_rng.normal(size=(FEATURES, 8)).astype(np.float32))
EMB = tf.constant(_rng.normal(size=(VOCAB, 8)).astype(np.float32))
W2 = tf.constant(_rng.normal(size=(8, 3)).astype(np.float32))


def rows_model(features: tf.Tensor, ids: tf.Tensor) -> dict[str, tf.Tensor]:
    hidden = tf.nn.relu(tf.matmul(features, W1)) + tf.gather(EMB, ids)
    return {"scores": tf.nn.softmax(tf.matmul(hidden, W2)), "total": tf.reduce_sum(hidden, axis=-1)}


def mixing_model(x: tf.Tensor) -> tf.Tensor:
    h = tf.matmul(x, W1)
    return h - tf.reduce_mean(h, axis=0, keepdims=True)


def rows_data(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "features": rng.normal(size=(n, FEATURES)).astype(np.float32),
        "ids": rng.integers(0, VOCAB, size=n).astype(np.int32),
    }


def rows_expected(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = rows_model(tf.constant(data["features"]), tf.constant(data["ids"]))
    return {name: value.numpy() for name, value in out.items()}


@dataclass(frozen=True)
class Saved:
    rows: str
    mixing: str


def save_models(root: str | os.PathLike[str], backend: str) -> Saved:
    """Trace and save both models with ``backend`` under ``root``."""
    root = Path(root)
    flags = {"backend": backend}
    example = rows_data(3, seed=1)
    traced = tfaccel.trace(rows_model, (example["features"], example["ids"]), **flags)
    traced.save(str(root / f"rows-{backend}"))
    mix = np.random.default_rng(2).normal(size=(MIXING_BATCH, FEATURES)).astype(np.float32)
    tfaccel.trace(mixing_model, mix, **flags).save(str(root / f"mixing-{backend}"))
    return Saved(str(root / f"rows-{backend}"), str(root / f"mixing-{backend}"))
