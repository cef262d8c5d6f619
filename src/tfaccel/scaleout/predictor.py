"""A saved traced model as a function from named column batches to named output columns.

Why this exists: a distributed engine hands a worker batches of whatever size its partitioning gives (Ray
Data's ``batch_size``, a Spark partition's tail, a Ray Serve batch of several requests), with its own
column dtypes (Spark's ``DoubleType`` is float64, Ray's integers are int64). A traced model takes either
any batch or only the batch it was traced for, and exactly its traced dtypes. This class is the one
place that bridges the two, so every engine adapter gives the same answers:

* batch sizes: a model that takes any batch (tracing checked that its rows are independent) scores
  any number of rows, in calls of at most ``max_rows``; a model that keeps its traced batch ``B`` (its
  rows mix, or the check could not run: the report says why) scores batches of exactly ``B`` rows and
  refuses others with that reason, because splitting or padding its batch would change its answers;
* dtypes: floats convert to the model's float type and integers to its integer type when no value
  changes (checked), anything else is refused with the column's name (never a silent reinterpretation);
* outputs: every output must have the batch as its first dimension (an engine stores one value per row),
  checked on every call, with the row count checked too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from tfaccel.errors import ExportError, InputTypeError, InputValueError

__all__ = ["BatchPredictor", "Column", "ModelColumns", "describe"]


@dataclass(frozen=True)
class Column:
    """One named input or output: its dtype and its shape per row (the batch dimension left out;
    ``None`` where the model takes any size).
    """

    name: str
    dtype: np.dtype[Any]
    row_shape: tuple[int | None, ...]


@dataclass(frozen=True)
class ModelColumns:
    """What a saved traced model takes and gives, read without loading it: inputs in call order,
    outputs in the serving signature's order, and the rows one compiled call takes (``None``: any).
    """

    inputs: tuple[Column, ...]
    outputs: tuple[Column, ...]
    fixed_batch: int | None
    #: why the model takes its traced batch only ("" when it takes any batch)
    fixed_why: str = ""


def describe(path: str | os.PathLike[str]) -> ModelColumns:
    """The columns of the traced SavedModel at ``path`` from its metadata and its ``serving_default``
    signature, without loading the graph (cheap enough for a Spark driver that never runs the model).
    """
    from google.protobuf import message
    from tensorflow.core.protobuf import saved_model_pb2

    from tfaccel.runtime.metadata import METADATA_FILE, fspath, read_metadata
    from tfaccel.runtime.restore import parse_metadata

    where = fspath(path, "describe")
    saved = parse_metadata(read_metadata(where), os.path.join(where, METADATA_FILE))
    layout, output_names, plan = saved.layout, saved.output_names, saved.plan
    pb = os.path.join(where, "saved_model.pb")
    try:
        with open(pb, "rb") as handle:
            saved = saved_model_pb2.SavedModel.FromString(handle.read())
        signature = saved.meta_graphs[0].signature_def["serving_default"]
    except (OSError, IndexError, KeyError, ValueError, message.DecodeError) as err:
        raise ExportError(
            f"{pb} has no readable serving_default signature ({err}); save the model again"
        ) from err
    outputs = []
    for name in output_names:
        if name not in signature.outputs:
            raise ExportError(
                f"{pb}: the signature lacks output {name!r} that the metadata names; save again"
            )
        info = signature.outputs[name]
        dims = tuple(None if d.size < 0 else int(d.size) for d in info.tensor_shape.dim)
        if info.tensor_shape.unknown_rank or not dims:
            raise ExportError(
                f"output {name!r} has no batch dimension (shape {list(dims)}), so it has no value per row; "
                "a batch engine needs every output batched"
            )
        outputs.append(Column(name, np.dtype(tf.as_dtype(info.dtype).as_numpy_dtype), dims[1:]))
    inputs = []
    for spec in layout.specs:
        if not spec.shape:
            raise ExportError(f"input {spec.name!r} is a scalar: a batch engine feeds every input by rows")
        rows = tuple(spec.shape[1:])
        inputs.append(Column(spec.name, np.dtype(tf.as_dtype(spec.dtype).as_numpy_dtype), rows))
    if plan.any_batch:
        return ModelColumns(tuple(inputs), tuple(outputs), None)
    fixed = plan.batch if plan.batch is not None else layout.specs[0].shape[0]
    return ModelColumns(tuple(inputs), tuple(outputs), fixed, plan.why or "it was traced for that batch only")


class BatchPredictor:
    """Load the traced SavedModel at ``path`` once; :meth:`predict` scores a batch of any size.

    ``max_rows`` bounds the rows of one call of a model that takes any batch (memory for huge batches;
    ``None``: the whole batch in one call). A model that takes its traced batch only gets exactly that.
    """

    def __init__(self, path: str | os.PathLike[str], max_rows: int | None = None) -> None:
        import tfaccel

        if max_rows is not None and max_rows < 1:
            raise ValueError(f"max_rows must be at least 1, got {max_rows}")
        self.path = os.fspath(path)
        self.columns = describe(self.path)
        self.model = tfaccel.load(self.path)
        self._call = self.model.tfaccel_executable.call_eager
        self.max_rows = max_rows

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns.outputs)

    def check(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The model's inputs from ``batch`` (extra columns ignored), converted to the model's dtypes and
        checked for shape; the first dimension is the batch and must agree across inputs.
        """
        arrays: dict[str, np.ndarray] = {}
        for column in self.columns.inputs:
            if column.name not in batch:
                raise InputValueError(
                    f"the batch has no column {column.name!r}; the model takes {list(self.input_names)} "
                    f"and the batch has {sorted(batch)} (map columns to inputs by name)"
                )
            arrays[column.name] = _convert(column, batch[column.name])
        sizes = {name: len(value) for name, value in arrays.items()}
        if len(set(sizes.values())) > 1:
            raise InputValueError(f"the inputs have different numbers of rows: {sizes}")
        return arrays

    def predict(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Score ``batch`` (column name -> array with one row per example): output name -> array with as
        many rows, in the order the rows came.
        """
        arrays = self.check(batch)
        rows = len(next(iter(arrays.values()))) if arrays else 0
        fixed = self.columns.fixed_batch
        if fixed is not None and rows != fixed:
            raise InputValueError(
                f"the batch has {rows} rows but this model takes batches of exactly {fixed} rows: "
                f"{self.columns.fixed_why}. Splitting or padding its batch would change its answers. Give "
                f"the engine batches of {fixed} rows, or, if its rows are independent, trace it again with "
                "dynamic_batch_size=True"
            )
        if rows == 0:
            return {
                c.name: np.zeros((0, *(d or 0 for d in c.row_shape)), c.dtype) for c in self.columns.outputs
            }
        step = self.max_rows or rows
        parts = [
            self._run({name: value[start : start + step] for name, value in arrays.items()})
            for start in range(0, rows, step)
        ]
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([p[name] for p in parts]) for name in self.output_names}

    def _run(self, chunk: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        flat = [tf.convert_to_tensor(chunk[name]) for name in self.input_names]
        outputs = tf.nest.flatten(self._call(flat))
        rows = len(next(iter(chunk.values())))
        result: dict[str, np.ndarray] = {}
        for name, tensor in zip(self.output_names, outputs, strict=True):
            value = tensor.numpy()
            if value.ndim == 0 or value.shape[0] != rows:  # the model's fault, not the batch's
                raise ExportError(
                    f"output {name!r} has shape {list(value.shape)} for a call of {rows} rows: it is not "
                    "batched like the inputs, so it has no value per row"
                )
            result[name] = value
        return result


def _convert(column: Column, value: Any) -> np.ndarray:
    """``value`` as an array of ``column``'s dtype and row shape, or a clear error naming the column."""
    array = _as_array(column, value)
    want = column.dtype
    if array.dtype != want:
        array = _cast(column, array)
    if array.ndim != len(column.row_shape) + 1 or any(
        d is not None and d != got for d, got in zip(column.row_shape, array.shape[1:], strict=False)
    ):
        rows = ["n", *("?" if d is None else d for d in column.row_shape)]
        raise InputValueError(
            f"column {column.name!r} has shape {list(array.shape)}; the model takes "
            f"[{', '.join(map(str, rows))}] (rows first); reshape the column's values"
        )
    return array


def _as_array(column: Column, value: Any) -> np.ndarray:
    if column.dtype == np.dtype(object):  # a string input: bytes or str per row
        return np.asarray(value, dtype=object)
    array = np.asarray(value)
    if array.dtype == np.dtype(object) and array.ndim >= 1 and len(array):
        # an engine's column of per-row arrays (pandas/Arrow tensor columns arrive so): stack the rows
        try:
            array = np.stack([np.asarray(row) for row in array])
        except ValueError as err:
            raise InputValueError(f"column {column.name!r} holds rows of different shapes ({err})") from err
    return array


def _cast(column: Column, array: np.ndarray) -> np.ndarray:
    want = column.dtype
    where = f"column {column.name!r}"
    if want.kind == "f" and array.dtype.kind == "f":
        return array.astype(want)  # as model.predict does: float64 features feed a float32 model
    if want.kind in "iu" and array.dtype.kind in "iub":
        limits = np.iinfo(want)  # a range check, not a round trip: int32 -1 -> uint32 -> int32 is -1 again
        if array.size and (array.min() < limits.min or array.max() > limits.max):
            raise InputValueError(
                f"{where} has values outside {want}'s range [{limits.min}, {limits.max}], which the model "
                f"takes; a conversion would change them"
            )
        return array.astype(want)
    if want.kind == "b" and array.dtype.kind == "b":
        return array
    raise InputTypeError(
        f"{where} is {array.dtype} but the model takes {want}; convert the column first (e.g. cast it in the "
        "engine) — tfaccel converts only float to float and lossless integer to integer"
    )
