"""The model server's parts that need no server process: the admission gate, and the fast JSON paths
checked against the standard ones they replace (issue 18).

Why here: the fast parser (orjson) and the array-wide number writer exist for speed only, so each must
give exactly what the standard path gives on every input (hypothesis generates them); the gate's
promises (limits, first come first served, deadlines, drain) are about threads, tested with real ones.
"""

from __future__ import annotations

import json
import math
import threading
import time
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tfaccel.serving.admission import Admission
from tfaccel.serving.errors import ServingError
from tfaccel.serving.tensors import (
    F32,
    _decimal,
    _nested,
    _number_texts,
    columns_to_json,
    dumps,
    fast_parse,
    rows_to_json,
    standard_parse,
)

# -- the admission gate --------------------------------------------------------------------------------------


class _Holder:
    """A thread holding one slot of ``gate`` until ``release()``; ``error`` if it was refused."""

    def __init__(self, gate: Admission, deadline: float | None = None) -> None:
        self.gate = gate
        self.entered = threading.Event()
        self.release_event = threading.Event()
        self.error: ServingError | None = None
        self.thread = threading.Thread(target=self._run, args=(deadline,), daemon=True)
        self.thread.start()

    def _run(self, deadline: float | None) -> None:
        try:
            with self.gate.slot(deadline):
                self.entered.set()
                self.release_event.wait(30)
        except ServingError as err:
            self.error = err

    def release(self) -> None:
        self.release_event.set()
        self.thread.join(30)


def _until(condition: Any, timeout: float = 10.0) -> None:
    until = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < until, "condition not reached"
        time.sleep(0.005)


def test_the_gate_runs_at_most_its_limit_queues_its_queue_and_refuses_the_rest_at_once() -> None:
    gate = Admission(max_concurrent=1, max_queued=1)
    first = _Holder(gate)
    assert first.entered.wait(10)
    second = _Holder(gate)
    _until(lambda: gate.waiting == 1)
    assert not second.entered.is_set()
    start = time.monotonic()
    with pytest.raises(ServingError) as refused, gate.slot():
        pass
    assert time.monotonic() - start < 1.0  # at once, not after a wait
    assert refused.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.value.http_status == 503
    assert "--max_concurrent_requests" in refused.value.message
    first.release()
    assert second.entered.wait(10)  # the waiting request got the freed slot
    assert (gate.running, gate.waiting) == (1, 0)
    second.release()
    assert (gate.running, gate.waiting) == (0, 0)


def test_the_gate_serves_waiting_requests_first_come_first_served() -> None:
    gate = Admission(max_concurrent=1, max_queued=5)
    holder = _Holder(gate)
    assert holder.entered.wait(10)
    order: list[int] = []

    def waiter(i: int) -> None:
        with gate.slot():
            order.append(i)

    threads = []
    for i in range(5):
        threads.append(threading.Thread(target=waiter, args=(i,)))
        threads[-1].start()
        _until(lambda i=i: gate.waiting == i + 1)
    holder.release()
    for thread in threads:
        thread.join(10)
    assert order == [0, 1, 2, 3, 4]


def test_a_request_whose_deadline_passes_while_waiting_leaves_the_queue() -> None:
    gate = Admission(max_concurrent=1, max_queued=1)
    holder = _Holder(gate)
    assert holder.entered.wait(10)
    with pytest.raises(ServingError) as late, gate.slot(time.monotonic() + 0.2):
        pass
    assert late.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert gate.waiting == 0
    holder.release()
    assert (gate.running, gate.waiting) == (0, 0)


def test_a_closed_gate_refuses_new_requests_and_waits_for_the_running_ones() -> None:
    gate = Admission(max_concurrent=2, max_queued=2)
    holder = _Holder(gate)
    assert holder.entered.wait(10)
    gate.close()
    with pytest.raises(ServingError) as refused, gate.slot():
        pass
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in refused.value.message
    assert not gate.wait_idle(0.1)  # the running one is still running
    threading.Timer(0.2, holder.release).start()
    assert gate.wait_idle(10)


# -- the fast JSON parser: the same value as the standard one, or it declines --------------------------------

_NUMBER_TEXT = st.from_regex(r"-?(0|[1-9][0-9]{0,25})(\.[0-9]{1,25})?([eE][+-]?[0-9]{1,3})?", fullmatch=True)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=30,
)


def _same(a: Any, b: Any) -> bool:
    """Equal values of equal types (1 and 1.0 differ, -0.0 and 0.0 differ, NaN equals NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _check_parsers_agree(body: bytes) -> None:
    fast = fast_parse(body)
    try:
        standard: Any = standard_parse(body)
    except ServingError:
        assert fast is None, f"the fast parser accepted what the standard one refuses: {body[:200]!r}"
        return
    assert fast is None or _same(fast, standard), body[:200]


@settings(max_examples=400, deadline=None)
@given(_VALUES)
def test_the_fast_parser_reads_what_the_standard_one_reads(value: Any) -> None:
    _check_parsers_agree(json.dumps({"inputs": value}).encode())  # NaN/Infinity as TF Serving's tokens


@settings(max_examples=400, deadline=None)
@given(st.lists(_NUMBER_TEXT, min_size=1, max_size=6))
def test_the_fast_parser_reads_numbers_as_the_standard_one(numbers: list[str]) -> None:
    _check_parsers_agree(('{"instances": [' + ", ".join(numbers) + "]}").encode())


@pytest.mark.parametrize(
    "body",
    [
        b'{"x": [1, 2]} trailing',
        b'{"x": NaN}',
        b'{"x": -Infinity}',
        b'{"x": 1e999}',
        b'{"x": "\xff"}',
        b'{"x": "\\ud800"}',
        b'{"x": ' + b"9" * 401 + b"}",
        b'{"x": ' + b"9" * 350 + b"}",
        b'{"x": 18446744073709551616}',
        b'{"x": -9223372036854775809}',
        b'{"x": 1, "x": 2}',
        b"\xef\xbb\xbf{}",
        b"[1]",
        b"  {}  ",
        b"",
        b"[" * 2000,
    ],
)
def test_the_fast_parser_declines_or_agrees_on_the_edge_cases(body: bytes) -> None:
    _check_parsers_agree(body)


# -- the array-wide number writer: the same text as the value-by-value one -----------------------------------

_SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)


def _reference(array: np.ndarray) -> Any:
    """What the writer gave before it was array-wide: each value through :func:`_decimal` (float32,
    float16 and bfloat16 with float32's digits), integers and booleans as Python writes them.
    """
    if (array.dtype.kind == "f" and array.dtype != np.float64) or array.dtype.kind == "V":
        return _nested(array.astype(np.float32), lambda v: F32(v))
    return array.tolist()


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([np.float32, np.float64, np.float16]).flatmap(
        lambda dtype: hnp.arrays(dtype, _SHAPES, elements=hnp.from_dtype(np.dtype(dtype)))
    )
)
def test_numbers_are_written_array_wide_as_value_by_value(array: np.ndarray) -> None:
    assert dumps({"outputs": columns_to_json({"y": array})}) == dumps({"outputs": _reference(array)})
    if array.ndim:
        assert dumps({"predictions": rows_to_json({"y": array})}) == dumps({"predictions": _reference(array)})


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from([np.int8, np.uint8, np.int32, np.int64, np.uint64, np.bool_]).flatmap(
        lambda dtype: hnp.arrays(dtype, _SHAPES)
    )
)
def test_integers_and_booleans_are_written_array_wide_as_value_by_value(array: np.ndarray) -> None:
    assert dumps({"outputs": columns_to_json({"y": array})}) == dumps({"outputs": _reference(array)})


def test_bfloat16_is_written_with_float32_digits() -> None:
    array = np.array([[0.1, 1.0, -3.5, np.nan, np.inf]], dtype=tf.bfloat16.as_numpy_dtype)
    assert dumps(columns_to_json({"y": array})) == dumps(_reference(array))


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.1, "0.1"),
        (1.0, "1.0"),
        (1e-7, "1e-07"),
        (3.4028235e38, "3.40282347e+38"),
        (1234567.0, "1234567.0"),
        (1 / 3, "0.333333343"),
        (-0.0, "-0.0"),
        (float("nan"), "NaN"),
        (float("-inf"), "-Infinity"),
    ],
)
def test_float32_texts_are_tf_servings(value: float, text: str) -> None:
    assert _number_texts(np.array([value], np.float32)).tolist() == [text]
    assert _decimal(F32(np.float32(value))) == text


def test_rest_answers_are_not_held_back_by_nagle():
    """The handler writes headers and body separately; with Nagle's algorithm on, a keep-alive client's
    delayed ACK held each answer's body back 40 ms (bench_server --http-servers: 23 requests/s against
    4,800 with TCP_NODELAY). Every accepted connection must set TCP_NODELAY.
    """
    from tfaccel.serving.rest import _make_handler

    assert _make_handler(None).disable_nagle_algorithm is True  # type: ignore[arg-type]


def _decode(body: str, name: str, spec: Any) -> Any:
    from tfaccel.serving.tensors import columns_from_json, parse_request_json

    value, may_hold_bools = parse_request_json(body.encode())
    return columns_from_json(value["inputs"], {name: spec}, may_hold_bools)[name]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ('{"inputs": {"s": ["\\ud800"]}}', "not valid Unicode"),
        ('{"inputs": {"s": ["a", ["b"]]}}', "ragged list"),
        ('{"inputs": {"s": [{"b64": "QQ=="}, ["x"]]}}', "ragged list"),
    ],
)
def test_bad_string_inputs_are_invalid_arguments_not_server_errors(body: str, words: str) -> None:
    with pytest.raises(ServingError, match=words) as err:
        _decode(body, "s", tf.TensorSpec([None], tf.string))
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("row", [[2**64 - 1, 1], [1, 2**64 - 1], [2**63, 1], [2**64 - 1, 2**63], [1, 2]])
def test_uint64_values_past_int64_are_read_exactly_whatever_their_neighbours(row: list[int]) -> None:
    got = _decode(json.dumps({"inputs": {"u": [row]}}), "u", tf.TensorSpec([None, 2], tf.uint64))
    assert got.dtype == np.uint64
    np.testing.assert_array_equal(got, np.array([row], np.uint64))


def test_an_empty_integer_list_is_an_empty_tensor_and_a_fraction_is_still_refused() -> None:
    empty = _decode('{"inputs": {"i": []}}', "i", tf.TensorSpec([None], tf.int32))
    assert empty.dtype == np.int32 and empty.shape == (0,)
    with pytest.raises(ServingError, match="fractions"):
        _decode('{"inputs": {"u": [[18446744073709551615, 1.5]]}}', "u", tf.TensorSpec([None, 2], tf.uint64))
