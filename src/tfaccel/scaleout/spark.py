"""Spark: a ``predict_batch_udf`` (``pyspark.ml.functions``) for a saved traced model.

Needs ``pip install 'tfaccel[spark]'`` on the driver and on every executor's Python. Each executor's
Python worker loads the model once (Spark caches the predict function per worker) and imports tfaccel,
which registers the OpenVINO op library an openvino-traced model needs (built once per machine into
``$TFACCEL_CACHE_DIR``, which must be writable there).

::

    from tfaccel.scaleout.spark import predict_batch_udf

    score = predict_batch_udf("traced_dir")            # types and shapes read from the saved model
    df.withColumn("scores", score("features")).show()

Columns go to the model's inputs by position, in the model's input order (``describe(path).inputs``);
a tensor input is a flat array column (Spark has no tensor type) reshaped to the input's row shape.
The result is the output's values per row: a scalar column for an output with one value per row, an
array column otherwise (outputs of rank above 2 are flattened per row, as Spark stores arrays flat), and
a struct of them, one field per output, for a model with several outputs.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import numpy as np

from tfaccel.scaleout.predictor import BatchPredictor, Column, describe

__all__ = ["predict_batch_udf", "spark_type"]

#: rows per predict call when the caller does not say (a fixed-batch model: its own batch)
DEFAULT_BATCH_SIZE = 64


def spark_type(column: Column) -> Any:
    """The Spark SQL type of one row of ``column``'s values."""
    from pyspark.sql import types as T

    scalars: dict[str, Any] = {
        "float16": T.FloatType(),
        "float32": T.FloatType(),
        "float64": T.DoubleType(),
        "int8": T.ByteType(),
        "int16": T.ShortType(),
        "int32": T.IntegerType(),
        "int64": T.LongType(),
        "uint8": T.ShortType(),
        "uint16": T.IntegerType(),
        "uint32": T.LongType(),
        "bool": T.BooleanType(),
        "object": T.StringType(),  # tf.string outputs, decoded as UTF-8
    }
    name = column.dtype.name
    if name not in scalars:
        raise TypeError(f"output {column.name!r} is {name}, which has no Spark type")
    element = scalars[name]
    if column.row_shape:
        return T.ArrayType(element)
    if name == "bool":  # predict_batch_udf returns no scalar booleans (arrays of them are fine)
        raise TypeError(
            f"output {column.name!r} is one bool per row, which pyspark's predict_batch_udf cannot return; "
            "cast it in the model (tf.cast(x, tf.int8)) or return it with a trailing dimension of 1"
        )
    return element


#: dtypes Spark has no type for, stored as the next wider one it has
_WIDER: dict[str, np.dtype[Any]] = {
    "float16": np.dtype("float32"),
    "uint8": np.dtype("int16"),
    "uint16": np.dtype("int32"),
    "uint32": np.dtype("int64"),
}


def predict_batch_udf(
    path: str | os.PathLike[str],
    batch_size: int | None = None,
    max_rows: int | None = None,
) -> Any:
    """A pandas UDF scoring DataFrame columns with the traced SavedModel at ``path`` on the executors.

    ``batch_size`` is the rows Spark hands one predict call (default 64). A model that takes its traced
    batch only (its rows may mix; its report says why) gets batches of exactly that size and refuses a
    shorter one, because padding its batch would change its answers: Spark cuts each partition into Arrow
    record batches (``spark.sql.execution.arrow.maxRecordsPerBatch``, 10,000 rows) and those into
    ``batch_size`` rows, so every record batch must hold a multiple of the model's batch. The return type
    and the input shapes come from the saved model (see the module's docstring). A NaN in an output
    arrives in Spark as null (pyspark's conversion from pandas treats NaN as missing).
    """
    from pyspark.ml import functions
    from pyspark.sql import types as T

    where = os.path.abspath(os.fspath(path))
    columns = describe(where)
    fixed = columns.fixed_batch
    size = batch_size if batch_size is not None else (fixed or DEFAULT_BATCH_SIZE)
    if size < 1:
        raise ValueError(f"batch_size must be at least 1, got {size}")
    if fixed is not None and size != fixed:
        raise ValueError(
            f"{where} takes batches of exactly {fixed} rows ({columns.fixed_why}); batch_size must be {fixed}"
        )
    shapes: list[list[int] | None] = []
    for column in columns.inputs:
        if not column.row_shape:
            shapes.append(None)
        elif None in column.row_shape:
            if len(column.row_shape) > 1:
                raise ValueError(
                    f"input {column.name!r} has row shape {list(column.row_shape)} with unknown sizes; "
                    "a flat Spark array column cannot be reshaped to it"
                )
            shapes.append(None)  # one unknown dimension: the array column stacks as it is
        else:
            shapes.append([int(d) for d in column.row_shape if d is not None])
    outputs = columns.outputs
    if len(outputs) == 1:
        return_type: Any = spark_type(outputs[0])
    else:
        return_type = T.StructType([T.StructField(c.name, spark_type(c)) for c in outputs])
    input_names = [c.name for c in columns.inputs]
    parameters = [f"input_{i}" for i in range(len(input_names))]

    def make_predict_fn() -> Any:
        predictor = BatchPredictor(where, max_rows=max_rows)

        def predict(*arrays: np.ndarray) -> Any:
            if len(arrays) != len(input_names):
                raise ValueError(
                    f"the UDF got {len(arrays)} columns; the model takes {len(input_names)} inputs, in this "
                    f"order: {input_names}"
                )
            result = predictor.predict(dict(zip(input_names, arrays, strict=True)))
            values = {c.name: _as_spark(c, result[c.name]) for c in outputs}
            return values[outputs[0].name] if len(outputs) == 1 else values

        # Spark counts the predict function's parameters to decide how to hand it the columns (one
        # parameter: all columns as one tensor), so it must show one parameter per model input
        predict.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter(name, inspect.Parameter.POSITIONAL_ONLY) for name in parameters]
        )
        return predict

    return functions.predict_batch_udf(
        make_predict_fn,
        return_type=return_type,
        batch_size=size,
        input_tensor_shapes=shapes if any(s is not None for s in shapes) else None,
    )


def _as_spark(column: Column, value: np.ndarray) -> np.ndarray:
    """One output as Spark's UDF takes it: 1-D for scalar rows, 2-D (rows, values) otherwise."""
    wide = _WIDER.get(column.dtype.name)
    if wide is not None:
        value = value.astype(wide)
    if value.dtype == np.dtype(object):  # tf.string: bytes -> str (Spark's StringType)
        try:
            value = np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(value)
        except UnicodeDecodeError as err:
            raise ValueError(f"output {column.name!r} holds bytes that are not UTF-8 text ({err})") from err
    return value if value.ndim <= 2 else value.reshape(len(value), -1)
