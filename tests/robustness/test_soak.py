"""Concurrency soak (issue 16): 16 threads x 1,000 calls per backend, every answer equal to the serial one.

Why: a served model is called from many threads at once (the model server's worker pool, a user's thread
pool). Shared state in a compiled call (an OpenVINO infer request, an XLA executable's buffers, the input
checks) that is not thread-safe shows up as an answer that belongs to another thread's input, or as a
crash, only under load. Each thread cycles through distinct inputs; every answer must equal, bit for bit,
the one the same model gave for that input serially, and the serial answers match the original model.
Slow (tens of seconds per backend on two cores), so ``@pytest.mark.slow``.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import tensorflow as tf

import tfaccel
from conftest import assert_close

THREADS = 16
CALLS = 1000
INPUTS = 64

RNG = np.random.default_rng(16)
W1 = tf.constant(RNG.standard_normal((32, 64)) / 8, tf.float32)
W2 = tf.constant(RNG.standard_normal((64, 10)) / 8, tf.float32)


def model_fn(x):
    return tf.nn.softmax(tf.matmul(tf.nn.relu(tf.matmul(x, W1) + 0.1), W2))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["xla", "openvino"])
@pytest.mark.parametrize("loaded", [False, True], ids=["traced", "loaded"])
def test_sixteen_threads_get_the_serial_answers(backend, loaded, tmp_path):
    inputs = [tf.constant(RNG.standard_normal((4, 32)), tf.float32) for _ in range(INPUTS)]
    model = tfaccel.trace(model_fn, inputs[0], backend=backend)
    if loaded:
        model.save(str(tmp_path / "m"))
        model = tfaccel.load(tmp_path / "m")
    serial = [model(x).numpy() for x in inputs]
    for x, answer in zip(inputs, serial, strict=True):
        assert_close(answer, model_fn(x))

    failures: list[str] = []
    start = threading.Barrier(THREADS)

    def worker(index: int) -> None:
        try:
            start.wait()
            for call in range(CALLS):
                k = (index * 7 + call) % INPUTS
                got = model(inputs[k]).numpy()
                if not np.array_equal(got, serial[k]):
                    failures.append(
                        f"thread {index} call {call} input {k}: max diff {np.abs(got - serial[k]).max()}"
                    )
                    return
        except Exception as err:  # a failure in a thread must fail the test, with its cause
            failures.append(f"thread {index}: {type(err).__name__}: {err}")

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=1800)
    assert not [t for t in threads if t.is_alive()], "a thread hung"
    assert not failures, failures[:5]
