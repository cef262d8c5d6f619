"""Bundled example models (random weights, nothing downloaded) for the demo, benchmarks and tests.

Why bundled: the README's first command must show a real placement and a real speed-up on a fresh machine
with no network, so the models are built here from Keras layers with a fixed seed. The classifiers return
logits: with random weights their softmax is nearly uniform, which would hide numerical differences.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["EXAMPLES", "bert_like", "example_input", "mobilenet_v2", "resnet50"]


def resnet50() -> Any:
    import keras

    keras.utils.set_random_seed(0)
    return keras.applications.ResNet50(weights=None, classifier_activation=None)


def mobilenet_v2() -> Any:
    import keras

    keras.utils.set_random_seed(0)
    return keras.applications.MobileNetV2(weights=None, classifier_activation=None)


def bert_like(
    vocab: int = 8000, seq: int = 128, hidden: int = 256, layers: int = 4, heads: int = 4, ffn: int = 1024
) -> Any:
    """A BERT-style encoder from plain Keras layers: embeddings, self-attention blocks, a pooled head."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(0)
    ids = keras.Input((seq,), dtype="int32", name="input_ids")
    positions = np.arange(seq, dtype="int32")[None, :]
    x = L.Embedding(vocab, hidden, name="token_embedding")(ids)
    x = x + L.Embedding(seq, hidden, name="position_embedding")(positions)
    x = L.LayerNormalization(epsilon=1e-12)(x)
    for i in range(layers):
        attn = L.MultiHeadAttention(heads, hidden // heads, name=f"attention_{i}")(x, x)
        x = L.LayerNormalization(epsilon=1e-12)(x + attn)
        h = L.Dense(ffn, activation="gelu", name=f"ffn_in_{i}")(x)
        h = L.Dense(hidden, name=f"ffn_out_{i}")(h)
        x = L.LayerNormalization(epsilon=1e-12)(x + h)
    pooled = L.Dense(hidden, activation="tanh", name="pooler")(x[:, 0, :])
    logits = L.Dense(2, name="classifier")(pooled)
    return keras.Model(ids, logits, name="bert_like")


EXAMPLES: dict[str, Callable[[], Any]] = {
    "mobilenetv2": mobilenet_v2,
    "resnet50": resnet50,
    "bert": bert_like,
}


def example_input(name: str, batch: int = 1, seed: int = 0) -> Any:
    """A deterministic example batch for the named example model."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    if name == "bert":
        return tf.constant(rng.integers(0, 8000, size=(batch, 128)), dtype=tf.int32)
    return tf.constant(rng.uniform(-1.0, 1.0, size=(batch, 224, 224, 3)), dtype=tf.float32)
