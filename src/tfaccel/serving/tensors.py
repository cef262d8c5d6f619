"""Tensors on the wire: TF Serving's JSON (rows and columns, ``{"b64": ...}`` strings, NaN/Infinity) and
``TensorProto`` with typed value fields, both to and from numpy.

Why typed fields: TF Serving answers gRPC with ``float_val``/``int64_val``/... rather than packed
``tensor_content``, and clients that read the typed fields (many do) must keep working. Requests may use
either form; ``tf.make_ndarray`` reads both.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import itertools
import json
import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

from tfaccel.serving.errors import ServingError

__all__ = [
    "F32",
    "MAX_FILLED_BYTES",
    "PredictRequest",
    "Raw",
    "fast_parse",
    "gc_paused",
    "standard_parse",
    "check_tensor_proto",
    "columns_from_json",
    "dumps",
    "columns_to_json",
    "from_tensor_proto",
    "parse_request_json",
    "rows_from_json",
    "rows_to_json",
    "to_tensor_proto",
]

#: a request may leave at most this many bytes of a tensor to TF's fill rule (fewer values than the shape
#: holds: the last value repeats), so a message of a few bytes cannot make the server allocate gigabytes
MAX_FILLED_BYTES = 16 << 20
#: digits of a JSON integer: more than any tensor type holds (float64 tops out at 309 digits)
MAX_JSON_DIGITS = 400

#: numpy dtype kind/size -> the TensorProto field TF Serving fills
_TYPED_FIELD = {
    tf.float32: "float_val",
    tf.float64: "double_val",
    tf.int32: "int_val",
    tf.int16: "int_val",
    tf.int8: "int_val",
    tf.uint8: "int_val",
    tf.uint16: "int_val",
    tf.int64: "int64_val",
    tf.uint32: "uint32_val",
    tf.uint64: "uint64_val",
    tf.bool: "bool_val",
    tf.string: "string_val",
}


def to_tensor_proto(value: np.ndarray, dtype: tf.DType) -> tensor_pb2.TensorProto:
    """``value`` as a TensorProto with its values in the typed field (``half_val`` for 16-bit floats)."""
    proto = tensor_pb2.TensorProto(dtype=dtype.as_datatype_enum)
    proto.tensor_shape.CopyFrom(tensor_shape_pb2.TensorShapeProto(dim=[{"size": d} for d in value.shape]))
    flat = value.reshape(-1)
    if dtype in (tf.float16, tf.bfloat16):
        proto.half_val.extend(int(v) for v in flat.view(np.uint16))
    elif dtype == tf.string:
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in flat)
    elif dtype in _TYPED_FIELD:
        getattr(proto, _TYPED_FIELD[dtype]).extend(flat.tolist())
    else:
        proto.tensor_content = np.ascontiguousarray(value).tobytes()
    return proto


def from_tensor_proto(
    proto: tensor_pb2.TensorProto, name: str, spec: tf.TensorSpec | None = None
) -> np.ndarray:
    """A request's TensorProto as numpy; a malformed one is the client's error (INVALID_ARGUMENT).

    With ``spec`` (the signature's input), dtype, shape and size are checked first, before anything the
    size of the claimed shape is allocated (:func:`check_tensor_proto`).
    """
    if spec is not None:
        check_tensor_proto(proto, spec, name)
    try:
        return np.asarray(tf.make_ndarray(proto))
    except (TypeError, ValueError, KeyError) as err:
        raise ServingError.invalid(f"input {name!r} is not a valid TensorProto: {err}") from err


#: the typed field holding a dtype's values, and how many field entries make one element
_VALUE_FIELD: dict[tf.DType, tuple[str, int]] = {
    **{dtype: (field, 1) for dtype, field in _TYPED_FIELD.items()},
    tf.float16: ("half_val", 1),
    tf.bfloat16: ("half_val", 1),
    tf.complex64: ("scomplex_val", 2),
    tf.complex128: ("dcomplex_val", 2),
}


def _wire_dtype(enum: int) -> str:
    try:
        return str(types_pb2.DataType.Name(enum))
    except ValueError:
        return f"dtype enum {enum}"


def check_tensor_proto(proto: tensor_pb2.TensorProto, spec: tf.TensorSpec, name: str) -> None:
    """Check a request's TensorProto against the signature's input without decoding it.

    The dtype must be the signature's; the shape must have a known rank and the signature's dimensions
    (all but the first, which a batching server may pad); ``tensor_content`` must be exactly the shape's
    size; a typed field may not hold more values than the shape, and may hold fewer (TF's fill rule) only
    up to :data:`MAX_FILLED_BYTES`. Raises INVALID_ARGUMENT naming the input.
    """
    wire = _wire_dtype(proto.dtype)
    try:
        dtype = tf.as_dtype(proto.dtype)
    except TypeError:
        dtype = None
    if dtype != spec.dtype:
        carried = ", which a request cannot carry" if dtype in (None, tf.resource, tf.variant) else ""
        raise ServingError.invalid(f"input {name!r} expects {spec.dtype.name}, got {wire}{carried}")
    if proto.tensor_shape.unknown_rank:
        raise ServingError.invalid(f"input {name!r} has an unknown rank; send its shape")
    dims = [int(d.size) for d in proto.tensor_shape.dim]
    if any(d < 0 for d in dims):
        raise ServingError.invalid(f"input {name!r} has a negative dimension in its shape {dims}")
    if spec.shape.rank is not None:
        wanted = spec.shape.as_list()
        inner_fits = all(w is None or w == d for w, d in zip(wanted[1:], dims[1:], strict=False))
        if len(dims) != len(wanted) or not inner_fits:
            raise ServingError.invalid(
                f"input {name!r} has shape {describe_shape(dims)}, which does not fit the signature's "
                f"{describe_shape(wanted)}"
            )
    count = math.prod(dims)
    itemsize = dtype.size or 8  # strings: one object reference per element
    if proto.tensor_content:
        if dtype == tf.string:
            raise ServingError.invalid(
                f"input {name!r}: string values travel in string_val, not tensor_content"
            )
        if len(proto.tensor_content) != count * itemsize:
            raise ServingError.invalid(
                f"input {name!r}: tensor_content has {len(proto.tensor_content)} bytes, but shape "
                f"{describe_shape(dims)} of {dtype.name} needs {count * itemsize}"
            )
        return
    field, per_element = _VALUE_FIELD.get(dtype, ("", 1))
    given = len(getattr(proto, field)) // per_element if field else 0
    if given > count:
        raise ServingError.invalid(
            f"input {name!r} carries {given} values, more than the {count} elements of its shape "
            f"{describe_shape(dims)}"
        )
    if given < count and count * itemsize > MAX_FILLED_BYTES:
        raise ServingError.invalid(
            f"input {name!r} has shape {describe_shape(dims)} ({count} elements) but carries only {given} "
            f"values; filling the rest with the last value is accepted up to {MAX_FILLED_BYTES} bytes, "
            "so send every value (in tensor_content or the typed field)"
        )


# -- JSON ------------------------------------------------------------------------------------------------


def _json_int(text: str) -> int | float:
    """A JSON integer: refused past :data:`MAX_JSON_DIGITS` (Python would parse a million digits, slowly,
    or fail), and beyond 64-bit range a float (as TF Serving's parser reads it) rather than a Python int
    numpy cannot hold.
    """
    if len(text) > MAX_JSON_DIGITS:
        raise ServingError.invalid(
            f"JSON Parse error: a number has {len(text)} digits; no tensor type holds more than "
            f"{MAX_JSON_DIGITS}"
        )
    value = int(text)
    return value if -(2**63) <= value < 2**64 else float(text)  # float(text): infinity past 1.8e308


def fast_parse(body: bytes) -> dict[str, Any] | None:
    """The body parsed by orjson (3x faster than the standard library on a large tensor), or None
    when the standard parser must decide: orjson refuses what TF Serving accepts (``NaN``,
    ``Infinity``, numbers beyond float64, trailing bytes, invalid UTF-8). An integer of more than
    :data:`MAX_JSON_DIGITS` digits, which the standard path refuses, is beyond float64 too, so it never
    gets here. For everything else both give the same value (``tests/test_server_units.py`` checks them
    against each other).
    """
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_was_enabled = False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the block (nested and concurrent blocks share one pause).

    Why: a request's JSON becomes ~200,000 Python objects, and each allocation burst triggers collections
    that, in a process holding TensorFlow's millions of objects, scan far more than the request: parsing
    and decoding a 224x224x3 image took 286 ms with the collector on and 46 ms with it off (measured in
    this server's process). Nothing built here is cyclic; the collector runs again after the block.
    """
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()


def parse_request_json(body: bytes) -> tuple[dict[str, Any], bool]:
    """A REST request body as a JSON object, and whether it may hold ``true``/``false`` (so the decoders
    need to look for booleans among numbers only then). Malformed, too deep or non-object: INVALID_ARGUMENT.
    """
    value = fast_parse(body)
    if value is None:
        value = standard_parse(body)
    return value, b"true" in body or b"false" in body


def standard_parse(body: bytes) -> dict[str, Any]:
    """The body parsed by the standard library, TF Serving's rules (``NaN``/``Infinity`` accepted,
    trailing bytes ignored, integers beyond 64 bits as floats, too many digits refused).
    """
    text = body.decode("utf-8", errors="replace")
    if not text.strip():
        raise ServingError.invalid("JSON Parse error: The document is empty")
    try:
        value, _end = json.JSONDecoder(parse_int=_json_int).raw_decode(
            text.lstrip()
        )  # trailing bytes ignored
    except json.JSONDecodeError as err:
        raise ServingError.invalid(f"JSON Parse error: {err.msg} at offset: {err.pos}") from err
    except RecursionError as err:
        raise ServingError.invalid("JSON Parse error: the document is nested too deeply") from err
    except ValueError as err:
        raise ServingError.invalid(f"JSON Parse error: {err}") from err
    if not isinstance(value, dict):
        raise ServingError.invalid(f"JSON Value: {text[:256]} Is not object")
    return value


def _decode_strings(value: Any) -> Any:
    """``{"b64": "..."}`` -> bytes and plain strings -> UTF-8 bytes, recursively (for string inputs)."""
    if isinstance(value, dict):
        if set(value) == {"b64"} and isinstance(value["b64"], str):
            try:
                return base64.b64decode(value["b64"], validate=True)
            except ValueError as err:
                raise ServingError.invalid(f"'b64' value is not valid base64: {err}") from err
        raise ServingError.invalid(
            f'a JSON object is only allowed as {{"b64": ...}}, got keys {sorted(value)[:10]}'
        )
    if isinstance(value, list):
        return [_decode_strings(v) for v in value]
    if isinstance(value, str):
        try:
            return value.encode()
        except UnicodeEncodeError as err:  # a lone surrogate (JSON's \ud800) has no UTF-8 form
            raise ServingError.invalid(
                f"a string input holds text that is not valid Unicode ({err.reason} at {err.start}); send "
                'the bytes as {"b64": ...}'
            ) from err
    raise ServingError.invalid(
        f'a string input holds {json.dumps(value)[:100]}, not a string or {{"b64": ...}}'
    )


def _holds_bool(value: Any) -> bool:
    """Whether nested lists hold a JSON ``true``/``false`` (numpy would read them as 1 and 0): one level
    of the nesting at a time, flattened in C.
    """
    level = [value]
    while level:
        kinds = set(map(type, level))
        if bool in kinds:
            return True
        if list not in kinds:
            return False
        lists = level if kinds == {list} else [v for v in level if type(v) is list]
        level = list(itertools.chain.from_iterable(lists))
    return False


def json_value_to_array(
    value: Any, spec: tf.TensorSpec, name: str, may_hold_bools: bool = True
) -> np.ndarray:
    """One input's JSON value as an array of the signature's dtype; type errors are INVALID_ARGUMENT.

    ``may_hold_bools=False`` (the body has no ``true``/``false``) skips the walk looking for booleans
    among numbers.
    """
    try:
        return _to_array(value, spec, name, may_hold_bools)
    except RecursionError as err:
        raise ServingError.invalid(f"input {name!r}: the value is nested too deeply") from err


def _to_array(value: Any, spec: tf.TensorSpec, name: str, may_hold_bools: bool) -> np.ndarray:
    dtype = spec.dtype
    if dtype == tf.string:
        decoded = _decode_strings(value)
        try:
            strings = np.array(decoded, dtype=object)
        except ValueError as err:
            raise ServingError.invalid(f"input {name!r}: ragged or malformed list ({err})") from err
        # numpy keeps a ragged list (or one nested past its 64 dimensions) as objects holding lists;
        # reshape, not .flat: numpy's iterators stop at 32 dimensions
        if not all(isinstance(v, bytes) for v in strings.reshape(-1)):
            raise ServingError.invalid(
                f"input {name!r}: a ragged list (its rows differ in length) or one nested too deeply"
            )
        return strings
    try:
        array = np.asarray(value)
    except (ValueError, OverflowError, TypeError) as err:
        raise ServingError.invalid(f"input {name!r}: ragged, malformed or out-of-range list ({err})") from err
    kind = array.dtype.kind
    if array.size == 0 and kind == "f":  # an empty list reads as float64: it holds no fraction
        return array.astype(dtype.as_numpy_dtype)
    if dtype == tf.uint64 and kind in "fO" and _integers_only(value):
        # numpy reads integers past int64's range next to smaller ones as float64 (or objects): exact here
        try:
            return np.array(value, dtype=np.uint64)
        except (ValueError, OverflowError, TypeError) as err:
            raise ServingError.invalid(f"input {name!r}: a value does not fit uint64 ({err})") from err
    # booleans read as numbers are exactly 0 or 1: only then is the JSON walked
    maybe = (
        may_hold_bools and kind in "iuf" and not dtype.is_bool and bool(((array == 0) | (array == 1)).any())
    )
    if maybe and _holds_bool(value):
        raise ServingError.invalid(
            f"input {name!r} expects {dtype.name} numbers, but the JSON holds booleans (true/false) "
            "among them"
        )
    if dtype.is_floating:
        if kind not in "iuf":
            raise ServingError.invalid(f"input {name!r} expects {dtype.name} numbers, {_found(kind)}")
        with np.errstate(over="ignore"):  # beyond float32's range is infinity, as TF Serving reads it
            return array.astype(dtype.as_numpy_dtype)
    if dtype.is_bool:
        if kind != "b":
            raise ServingError.invalid(f"input {name!r} expects bool values (true/false), {_found(kind)}")
        return array
    if kind not in "iu":
        raise ServingError.invalid(f"input {name!r} expects {dtype.name} integers, {_found(kind)}")
    info = np.iinfo(dtype.as_numpy_dtype)
    if array.size and (array.min() < info.min or array.max() > info.max):
        raise ServingError.invalid(f"input {name!r}: a value does not fit {dtype.name}")
    return array.astype(dtype.as_numpy_dtype)


def _integers_only(value: Any) -> bool:
    """Whether nested lists hold JSON integers only (no fraction, boolean or string), level by level."""
    level = [value]
    while level:
        nested = []
        for item in level:
            if type(item) is list:
                nested.extend(item)
            elif type(item) is not int:
                return False
        level = nested
    return True


def _found(kind: str) -> str:
    what = {
        "U": "strings",
        "S": "strings",
        "O": "objects or mixed values",
        "b": "booleans",
        "f": "fractions (or integers beyond 64 bits)",
    }
    return f"but the JSON holds {what.get(kind, 'other values')}"


def rows_from_json(
    instances: Any, inputs: Mapping[str, tf.TensorSpec], may_hold_bools: bool = True
) -> dict[str, np.ndarray]:
    """The row format: ``instances`` is a list of rows, each a value (one input) or ``{name: value}``."""
    if not isinstance(instances, list) or not instances:
        raise ServingError.invalid("'instances' must be a non-empty JSON list")
    named = all(isinstance(row, dict) and set(row) != {"b64"} for row in instances)
    if named:
        keys = set(instances[0])
        for row in instances:
            if set(row) != keys:
                raise ServingError.invalid(
                    f"every instance must have the same named inputs; found {sorted(keys)} and {sorted(row)}"
                )
        columns = {key: [row[key] for row in instances] for key in keys}
    else:
        if len(inputs) != 1:
            raise ServingError.invalid(
                f"the signature has {len(inputs)} inputs ({', '.join(sorted(inputs))}); each instance must "
                "be an object naming them"
            )
        columns = {next(iter(inputs)): list(instances)}
    return _arrays(columns, inputs, may_hold_bools)


def columns_from_json(
    value: Any, inputs: Mapping[str, tf.TensorSpec], may_hold_bools: bool = True
) -> dict[str, np.ndarray]:
    """The columnar format: ``inputs`` is a value (one input) or ``{name: value}`` of whole tensors."""
    if isinstance(value, dict) and set(value) != {"b64"}:
        return _arrays(dict(value), inputs, may_hold_bools)
    if len(inputs) != 1:
        raise ServingError.invalid(
            f"the signature has {len(inputs)} inputs ({', '.join(sorted(inputs))}); 'inputs' must be an "
            "object naming them"
        )
    return _arrays({next(iter(inputs)): value}, inputs, may_hold_bools)


def _arrays(
    columns: Mapping[str, Any], inputs: Mapping[str, tf.TensorSpec], may_hold_bools: bool
) -> dict[str, np.ndarray]:
    check_names(columns, inputs)
    return {name: json_value_to_array(columns[name], inputs[name], name, may_hold_bools) for name in columns}


class F32(float):
    """A float that came from a float32 tensor: written with float32's digits (see :func:`dumps`)."""


class Raw(str):
    """JSON text already written (a tensor's values, see :func:`_numbers_text`): :func:`dumps` copies it."""


def _decimal(value: float) -> str:
    """TF Serving's number text: 6 significant digits when they round-trip, else 9 (float32) or 17
    (float64); ``.0`` appended to integral values; ``NaN``, ``Infinity`` and ``-Infinity`` as tokens.
    :func:`_number_texts` applies the same rule to a whole array.
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    is_f32 = isinstance(value, F32)
    text = f"{value:g}"
    same = np.float32(float(text)) == np.float32(value) if is_f32 else float(text) == float(value)
    if not same:
        text = f"{value:.9g}" if is_f32 else f"{value:.17g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def dumps(value: Any, level: int = 0) -> str:
    """JSON as TF Serving writes it: objects one key per line (4-space indent), arrays on one line,
    numbers by :func:`_decimal`, non-ASCII text as UTF-8.
    """
    if isinstance(value, Raw):
        return str.__str__(value)
    if isinstance(value, dict):
        if not value:
            return "{}"
        pad = "    " * (level + 1)
        items = ",\n".join(
            f"{pad}{json.dumps(str(k), ensure_ascii=False)}: {dumps(v, level + 1)}" for k, v in value.items()
        )
        return "{\n" + items + "\n" + "    " * level + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(dumps(v, level) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _decimal(value)
    if isinstance(value, int):
        return str(value)
    if value is None:
        return "null"
    return json.dumps(str(value), ensure_ascii=False)


def _number_texts(array: np.ndarray) -> np.ndarray:
    """Each value of a numeric array as :func:`dumps` writes it, for the whole array at once (a
    1,000-float output took ~6 ms value by value): floats by :func:`_decimal`'s rule (float16 and
    bfloat16 as float32), integers in decimal, booleans ``true``/``false``. Same shape, dtype object.
    """
    if array.dtype == np.bool_:
        return np.where(array, "true", "false").astype(object)
    if array.dtype.kind in "iu":
        return np.array([str(v) for v in array.ravel().tolist()], dtype=object).reshape(array.shape)
    single = array.dtype != np.float64
    narrow = (array.astype(np.float32) if single else array).ravel()
    values = narrow.astype(np.float64).tolist()
    texts = ["%g" % v for v in values]  # noqa: UP031 - %-formatting is the fastest here, and C's rule
    with np.errstate(over="ignore", invalid="ignore"):
        back = np.array(texts).astype(np.float64)
        if single:
            back = back.astype(np.float32)
    finite = np.isfinite(narrow)
    longer = "%.9g" if single else "%.17g"
    redo = (finite & (back != narrow)).tolist()
    texts = [longer % v if again else text for v, text, again in zip(values, texts, redo, strict=True)]
    for i in np.flatnonzero(~finite).tolist():
        value = values[i]
        texts[i] = "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    texts = [t + ".0" if t[-1].isdigit() and "." not in t and "e" not in t else t for t in texts]
    return np.array(texts, dtype=object).reshape(array.shape)


def _nest(texts: np.ndarray) -> str:
    """Value texts as nested JSON arrays (one line, ``", "`` between items)."""
    if texts.ndim == 0:
        return str(texts[()])
    if texts.ndim == 1:
        return "[" + ", ".join(texts.tolist()) + "]"
    if texts.shape[-1] == 0 or texts.size == 0:
        return "[" + ", ".join(_nest(sub) for sub in texts) + "]"
    inner = [", ".join(row) for row in texts.reshape(-1, texts.shape[-1]).tolist()]
    level: Any = np.array(["[" + row + "]" for row in inner], dtype=object).reshape(texts.shape[:-1])
    while level.ndim > 1:
        joined = [", ".join(row) for row in level.reshape(-1, level.shape[-1]).tolist()]
        level = np.array(["[" + row + "]" for row in joined], dtype=object).reshape(level.shape[:-1])
    return "[" + ", ".join(level.tolist()) + "]"


def _json_string(value: bytes, as_b64: bool) -> Any:
    if as_b64:
        return {"b64": base64.b64encode(value).decode()}
    return value.decode("utf-8", errors="replace")


def _is_numeric(array: np.ndarray) -> bool:
    return array.dtype.kind in "biuf" or array.dtype.kind == "V"


def _json_value(array: np.ndarray, name: str) -> Any:
    """A tensor as JSON: numbers as :class:`Raw` text (float32 in its TF Serving digits), strings as
    UTF-8 (or ``{"b64": ...}`` when the output's name ends in ``_bytes``, TF Serving's rule).
    """
    if _is_numeric(array):
        return Raw(_nest(_number_texts(array)))
    as_b64 = name.endswith("_bytes")
    return _nested(array, lambda v: _json_string(v if isinstance(v, bytes) else str(v).encode(), as_b64))


def _json_rows(array: np.ndarray, name: str) -> list[Any]:
    """``_json_value`` of each row (first-dimension item) of a batched tensor."""
    if _is_numeric(array):
        texts = _number_texts(array)
        if texts.ndim == 1:
            return [Raw(text) for text in texts.tolist()]
        return [Raw(_nest(row)) for row in texts]
    return list(_json_value(array, name))


def _nested(array: np.ndarray, leaf: Any) -> Any:
    if array.ndim == 0:
        return leaf(array[()])
    if array.ndim == 1:  # its items are scalars (or bytes objects), not arrays
        return [leaf(item) for item in array]
    return [_nested(sub, leaf) for sub in array]


def rows_to_json(outputs: Mapping[str, np.ndarray]) -> list[Any]:
    """``predictions``: per row, the value (one output) or ``{name: value}``; every output must be batched
    like the others.
    """
    batches = {name: (value.shape[0] if value.ndim else None) for name, value in outputs.items()}
    sizes = set(batches.values())
    if None in sizes or len(sizes) != 1:
        raise ServingError.invalid(
            "the row format ('instances') needs every output batched alike, but the outputs have first "
            f"dimensions {batches}; use the columnar format ('inputs')"
        )
    if len(outputs) == 1:
        name, value = next(iter(outputs.items()))
        return _json_rows(value, name)
    columns = {name: _json_rows(value, name) for name, value in outputs.items()}
    size = sizes.pop() or 0
    return [{name: columns[name][i] for name in outputs} for i in range(size)]


def columns_to_json(outputs: Mapping[str, np.ndarray]) -> Any:
    """``outputs``: the value (one output) or ``{name: value}``."""
    if len(outputs) == 1:
        name, value = next(iter(outputs.items()))
        return _json_value(value, name)
    return {name: _json_value(value, name) for name, value in outputs.items()}


@dataclass(frozen=True)
class PredictRequest:
    """A REST predict body as TF Serving reads it: the row (``instances``) or columnar (``inputs``) format,
    the signature's name, and whether the JSON may hold booleans. The model server and the Ray Serve
    deployment both read requests through it, so both accept and refuse the same bodies.
    """

    body: dict[str, Any]
    rows: bool
    may_hold_bools: bool

    @classmethod
    def parse(cls, body: bytes) -> PredictRequest:
        """Parse and check the envelope (INVALID_ARGUMENT with TF Serving's messages otherwise)."""
        with gc_paused():
            request, may_hold_bools = parse_request_json(body)
        if not isinstance(request.get("signature_name", ""), str):
            raise ServingError.invalid("'signature_name' key must be a string value.")
        has_rows, has_columns = "instances" in request, "inputs" in request
        if has_rows and has_columns:
            raise ServingError.invalid(
                "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist"
            )
        if not (has_rows or has_columns):
            raise ServingError.invalid("Missing 'inputs' or 'instances' key")
        return cls(request, has_rows, may_hold_bools)

    @property
    def signature_name(self) -> str:
        return str(self.body.get("signature_name", ""))

    def inputs(self, specs: Mapping[str, tf.TensorSpec]) -> dict[str, np.ndarray]:
        """The request's tensors, decoded against the signature's input specs."""
        with gc_paused():
            if self.rows:
                return rows_from_json(self.body["instances"], specs, self.may_hold_bools)
            return columns_from_json(self.body["inputs"], specs, self.may_hold_bools)

    def answer(self, outputs: Mapping[str, np.ndarray]) -> str:
        """The response body in the request's format (``predictions`` for rows, ``outputs`` for columns)."""
        with gc_paused():
            if self.rows:
                return dumps({"predictions": rows_to_json(outputs)})
            return dumps({"outputs": columns_to_json(outputs)})


def check_names(sent: Mapping[str, object], wanted: Mapping[str, object]) -> None:
    """The request names exactly the signature's inputs (TF Serving's message otherwise)."""
    missing = sorted(set(wanted) - set(sent))
    extra = sorted(set(sent) - set(wanted))
    if missing or extra:
        raise ServingError.invalid(
            f"input size does not match signature: {len(sent)}!={len(wanted)} "
            f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(wanted))}}}). "
            f"Sent extra: {{{','.join(extra)}}}. Missing but required: {{{','.join(missing)}}}."
        )


def describe_shape(shape: Sequence[int | None]) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"
