"""The model zoo: the kinds of models users bring, with random weights, for conformance tests and benchmarks.

Why a zoo in the package: the conformance tests (does every kind trace, match and reload on every backend)
and the benchmark suite (how fast next to the tools users would pick instead) must run on exactly the same
models, on a machine with no network. Every model is built from Keras layers (``keras.applications`` with
``weights=None``) or plain TensorFlow with a fixed seed; nothing is downloaded.

Each :class:`ZooModel` says how to build the model, how to make an example batch, how close a compiled
version must be (a named relative tolerance), and whether it is a classifier (then top-1 agreement is
checked too). ``fast`` marks the small models the default test suite runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tfaccel.tools.examples import bert_like, mobilenet_v2, resnet50

__all__ = ["ZOO", "ZooModel", "relative_error"]

#: fp32 relative tolerance (max |difference| / max |reference|) for compiled vs original outputs: compilers
#: reassociate sums and fuse ops; deep networks accumulate more of that
FP32_TOLERANCE = 1e-5
DEEP_FP32_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ZooModel:
    """One zoo entry. ``build()`` returns the callable to trace (a Keras model or a ``tf.function``)."""

    name: str
    build: Callable[[], Any]
    example: Callable[[int, int], Any]  # (batch, seed) -> the example structure trace takes
    tolerance: float = FP32_TOLERANCE
    classifier: bool = False
    fast: bool = False
    description: str = ""


def relative_error(got: Any, expected: Any) -> float:
    """Max |got - expected| / max |expected| over every output (a dict or nested structure is flattened)."""
    import tensorflow as tf

    worst = 0.0
    for g, e in zip(tf.nest.flatten(got), tf.nest.flatten(expected), strict=True):
        g, e = np.asarray(g, dtype=np.float64), np.asarray(e, dtype=np.float64)
        scale = max(float(np.max(np.abs(e))) if e.size else 0.0, 1e-30)
        worst = max(worst, float(np.max(np.abs(g - e))) / scale if e.size else 0.0)
    return worst


def _images(size: int) -> Callable[[int, int], Any]:
    def make(batch: int, seed: int) -> Any:
        import tensorflow as tf

        rng = np.random.default_rng(seed)
        return tf.constant(rng.uniform(-1.0, 1.0, (batch, size, size, 3)), tf.float32)

    return make


def _tokens(vocab: int, seq: int) -> Callable[[int, int], Any]:
    def make(batch: int, seed: int) -> Any:
        import tensorflow as tf

        rng = np.random.default_rng(seed)
        return tf.constant(rng.integers(0, vocab, (batch, seq)), tf.int32)

    return make


def _application(name: str, **kwargs: Any) -> Callable[[], Any]:
    def build() -> Any:
        import keras

        keras.utils.set_random_seed(0)
        return getattr(keras.applications, name)(weights=None, classifier_activation=None, **kwargs)

    return build


def gpt_like(vocab: int = 4000, seq: int = 64, hidden: int = 128, layers: int = 2, heads: int = 4) -> Any:
    """A GPT-style decoder from plain Keras layers: causal self-attention blocks and next-token logits."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(0)
    ids = keras.Input((seq,), dtype="int32", name="input_ids")
    positions = np.arange(seq, dtype="int32")[None, :]
    x = L.Embedding(vocab, hidden, name="token_embedding")(ids)
    x = x + L.Embedding(seq, hidden, name="position_embedding")(positions)
    for i in range(layers):
        h = L.LayerNormalization(epsilon=1e-5)(x)
        x = x + L.MultiHeadAttention(heads, hidden // heads, name=f"attention_{i}")(
            h, h, use_causal_mask=True
        )
        h = L.LayerNormalization(epsilon=1e-5)(x)
        x = x + L.Dense(hidden, name=f"ffn_out_{i}")(L.Dense(4 * hidden, activation="gelu")(h))
    x = L.LayerNormalization(epsilon=1e-5)(x)
    return keras.Model(ids, L.Dense(vocab, name="lm_head")(x), name="gpt_like")


def recurrent(vocab: int = 2000, seq: int = 32) -> Any:
    """An LSTM and a GRU over embedded tokens (recurrent layers become While loops in the graph)."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(0)
    ids = keras.Input((seq,), dtype="int32", name="tokens")
    x = L.Embedding(vocab, 64)(ids)
    x = L.LSTM(64, return_sequences=True)(x)
    x = L.GRU(64)(x)
    return keras.Model(ids, L.Dense(5, name="classes")(x), name="recurrent")


def recommender(users: int = 5000, items: int = 20000, dim: int = 32, features: int = 16) -> Any:
    """A two-tower-style ranker: user and item embedding lookups, dense features, an MLP on top."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(0)
    user = keras.Input((1,), dtype="int32", name="user_id")
    item = keras.Input((1,), dtype="int32", name="item_id")
    dense = keras.Input((features,), name="dense_features")
    u = L.Flatten()(L.Embedding(users, dim)(user))
    v = L.Flatten()(L.Embedding(items, dim)(item))
    x = L.Concatenate()([u, v, u * v, dense])
    for width in (256, 128, 64):
        x = L.Dense(width, activation="relu")(x)
    return keras.Model(
        {"user_id": user, "item_id": item, "dense_features": dense}, L.Dense(1, name="score")(x)
    )


def _recommender_example(batch: int, seed: int) -> Any:
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    return {
        "user_id": tf.constant(rng.integers(0, 5000, (batch, 1)), tf.int32),
        "item_id": tf.constant(rng.integers(0, 20000, (batch, 1)), tf.int32),
        "dense_features": tf.constant(rng.standard_normal((batch, 16)), tf.float32),
    }


def control_flow() -> Any:
    """A ``tf.function`` with a data-dependent ``tf.cond`` and a ``tf.while_loop`` around matmuls."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    w1 = tf.constant(rng.standard_normal((64, 64)) / 8.0, tf.float32)
    w2 = tf.constant(rng.standard_normal((64, 64)) / 8.0, tf.float32)

    def fn(x: tf.Tensor) -> tf.Tensor:
        y = tf.cond(tf.reduce_mean(x) > 0.0, lambda: tf.nn.relu(x @ w1), lambda: tf.tanh(x @ w2))

        def body(i: tf.Tensor, h: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return i + 1, tf.tanh(h @ w1) + h

        _, y = tf.while_loop(lambda i, h: i < 4, body, (tf.constant(0), y))
        return y @ w2

    return tf.function(fn, autograph=False)


def _control_flow_example(batch: int, seed: int) -> Any:
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    return tf.constant(rng.standard_normal((batch, 64)), tf.float32)


_WORDS = [f"word{i}" for i in range(500)]


def string_classifier(seq: int = 16) -> Any:
    """Raw string tokens -> ``StringLookup`` -> embedding -> dense network (strings stay on TensorFlow)."""
    import keras
    from keras import layers as L

    keras.utils.set_random_seed(0)
    tokens = keras.Input((seq,), dtype="string", name="tokens")
    ids = L.StringLookup(vocabulary=_WORDS)(tokens)
    x = L.GlobalAveragePooling1D()(L.Embedding(len(_WORDS) + 1, 32)(ids))
    x = L.Dense(64, activation="relu")(x)
    return keras.Model(tokens, L.Dense(3, name="classes")(x), name="string_classifier")


def _string_example(batch: int, seed: int) -> Any:
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    words = np.array([*_WORDS, "unknown_word"], dtype=object)
    return tf.constant(words[rng.integers(0, len(words), (batch, 16))])


ZOO: dict[str, ZooModel] = {
    m.name: m
    for m in (
        ZooModel("resnet50", resnet50, _images(224), classifier=True, description="keras.applications"),
        ZooModel(
            "mobilenetv2", mobilenet_v2, _images(224), classifier=True, description="keras.applications"
        ),
        ZooModel(
            "efficientnetb0",
            _application("EfficientNetB0"),
            _images(224),
            DEEP_FP32_TOLERANCE,
            classifier=True,
            description="keras.applications",
        ),
        ZooModel(
            "densenet121",
            _application("DenseNet121"),
            _images(224),
            DEEP_FP32_TOLERANCE,
            classifier=True,
            description="keras.applications",
        ),
        ZooModel(
            "inceptionv3",
            _application("InceptionV3"),
            _images(299),
            DEEP_FP32_TOLERANCE,
            classifier=True,
            description="keras.applications",
        ),
        ZooModel(
            "convnext_tiny",
            _application("ConvNeXtTiny"),
            _images(224),
            DEEP_FP32_TOLERANCE,
            classifier=True,
            description="keras.applications",
        ),
        ZooModel(
            "bert",
            bert_like,
            _tokens(8000, 128),
            classifier=True,
            description="BERT-style encoder, 4 layers, hidden 256",
        ),
        ZooModel(
            "gpt",
            gpt_like,
            _tokens(4000, 64),
            fast=True,
            description="GPT-style decoder, 2 layers, hidden 128",
        ),
        ZooModel("lstm_gru", recurrent, _tokens(2000, 32), fast=True, description="LSTM + GRU over tokens"),
        ZooModel(
            "recommender",
            recommender,
            _recommender_example,
            fast=True,
            description="embedding lookups + dense features + MLP",
        ),
        ZooModel(
            "control_flow",
            control_flow,
            _control_flow_example,
            fast=True,
            description="tf.function with tf.cond and tf.while_loop",
        ),
        ZooModel(
            "string_lookup",
            string_classifier,
            _string_example,
            fast=True,
            description="StringLookup + embedding + dense",
        ),
    )
}
