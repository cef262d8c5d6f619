"""The openvino conformance harness's data: edge values per dtype and the op cases, without TensorFlow.

Why a table: which op x dtype pairs OpenVINO computes like TensorFlow is a fact to measure, not to
remember. ``tests/test_op_conformance.py`` runs every case here through the backend's own conversion
(the NaN rewrite included) and OpenVINO's CPU plugin, compares with TF, and checks that the backend claims
only the pairs that match. Each case names the expression the test module builds (``OPS``'s keys there),
its dtypes, which operand values it takes and its float tolerance class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

F32_MAX = float(np.finfo(np.float32).max)

#: edge values per dtype: min/max, around zero, signed zero, NaN/inf, values past 2**24 and 2**31
EDGES: dict[str, list[object]] = {
    "float32": [
        np.nan,
        -np.inf,
        np.inf,
        -0.0,
        0.0,
        -1.5,
        0.5,
        2.5,
        7.0,
        -3.0,
        1e-30,
        3e38,
        -F32_MAX,
        16777217.0,
    ],
    "float16": [np.nan, -np.inf, np.inf, -0.0, 0.0, -1.5, 0.5, 2.5, 7.0, -3.0, 65504.0, -65504.0],
    "bfloat16": [np.nan, -np.inf, np.inf, -0.0, 0.0, -1.5, 0.5, 2.5, 7.0, -3.0, 3e38, -3e38],
    "int8": [-128, 127, -1, 0, 1, 2, -7, 64, 100, -100],
    "uint8": [0, 1, 2, 7, 100, 128, 200, 255],
    "int16": [-32768, 32767, -1, 0, 1, 2, -7, 200, 20000, -20000],
    "uint16": [0, 1, 2, 7, 300, 32768, 50000, 65535],
    "int32": [-(2**31), 2**31 - 1, -1, 0, 1, 2, -7, 50000, 16777217, -123456789, 1000003],
    "uint32": [0, 1, 2, 7, 70000, 2**31, 3000000000, 2**32 - 1],
    "int64": [-(2**63), 2**63 - 1, -1, 0, 1, 2, -7, 50000, 2**31, 2**40 + 7, -(2**40) - 3, 1000003],
    "uint64": [0, 1, 2, 7, 70000, 2**32 + 5, 2**63, 2**64 - 1],
    "bool": [False, True],
}

FLOATS = ("float32", "float16", "bfloat16")
SIGNED = ("int8", "int16", "int32", "int64")
UNSIGNED = ("uint8", "uint16", "uint32", "uint64")
INTS = SIGNED + UNSIGNED
NUMERIC = FLOATS + INTS
ALL = (*NUMERIC, "bool")

#: named float tolerances (rtol, atol) by dtype: "exact" ops (one rounding, as TF) and "approx" ones
#: (transcendental functions: OpenVINO's approximations differ from Eigen's by a few ulp)
TOLERANCE = {
    "exact": {"float32": (0.0, 0.0), "float16": (0.0, 0.0), "bfloat16": (0.0, 0.0)},
    "approx": {"float32": (2e-6, 1e-6), "float16": (1e-3, 1e-3), "bfloat16": (1e-2, 1e-2)},
    # sums: TF accumulates float16/bfloat16 in the narrow type, OpenVINO in float32, so the error bound
    # scales with the operands (rtol times the largest finite operand times the row length)
    "accumulate": {"float32": (2e-6, 1e-6), "float16": (1e-3, 1e-3), "bfloat16": (1e-2, 1e-2)},
}


@dataclass(frozen=True)
class Case:
    """One op, run on every dtype in ``dtypes``.

    ``kind``: ``unary`` (the edge vector), ``binary`` (every pair of edge values), ``divisor`` (pairs with
    a non-zero right operand: TF raises on integer division by zero), ``small_exp`` (pairs with a right
    operand in 0..3: TF raises on negative integer powers), ``reduce`` (over rows of the pair grid) or
    ``special`` (the expression takes the edge vector and builds its own operands).
    """

    op: str
    dtypes: tuple[str, ...]
    kind: str = "unary"
    tol: str = "exact"


CASES: tuple[Case, ...] = (
    # elementwise unary
    Case("Abs", FLOATS + SIGNED),
    Case("Neg", FLOATS + SIGNED),
    Case("Square", NUMERIC),
    Case("Sign", FLOATS + SIGNED),
    Case("Floor", FLOATS),
    Case("Ceil", FLOATS),
    Case("Round", FLOATS),
    Case("Rint", FLOATS),
    Case("Sqrt", FLOATS, tol="approx"),
    Case("Rsqrt", FLOATS, tol="approx"),
    Case("Reciprocal", FLOATS, tol="approx"),
    Case("Exp", FLOATS, tol="approx"),
    Case("Log", FLOATS, tol="approx"),
    Case("Log1p", FLOATS, tol="approx"),
    Case("Sin", ("float32",), tol="approx"),
    Case("Cos", ("float32",), tol="approx"),
    Case("Tanh", FLOATS, tol="approx"),
    Case("Sigmoid", FLOATS, tol="approx"),
    Case("Erf", FLOATS, tol="approx"),
    Case("Softplus", FLOATS, tol="approx"),
    Case("Softsign", FLOATS, tol="approx"),
    Case("Relu", FLOATS + SIGNED),
    Case("Relu6", FLOATS + SIGNED),
    Case("LeakyRelu", FLOATS, tol="approx"),  # TF rounds alpha to the dtype, OpenVINO keeps it float32
    Case("Elu", FLOATS, tol="approx"),
    Case("Selu", FLOATS, tol="approx"),
    Case("IsNan", FLOATS),
    Case("IsInf", FLOATS),
    Case("IsFinite", FLOATS),
    Case("LogicalNot", ("bool",)),
    # elementwise binary
    Case("AddV2", NUMERIC, "binary"),
    Case("Sub", NUMERIC, "binary"),
    Case("Mul", NUMERIC, "binary"),
    Case("RealDiv", FLOATS, "binary", tol="approx"),
    Case("DivNoNan", FLOATS, "binary", tol="approx"),
    Case("Div", INTS, "divisor"),
    Case("FloorDiv", NUMERIC, "divisor", tol="approx"),
    Case("FloorMod", NUMERIC, "divisor", tol="approx"),
    Case("TruncateDiv", INTS, "divisor"),
    Case("TruncateMod", FLOATS + SIGNED, "divisor", tol="approx"),
    Case("Pow", FLOATS, "binary", tol="approx"),
    Case("IntPow", SIGNED, "small_exp"),
    Case("Maximum", NUMERIC, "binary"),
    Case("Minimum", NUMERIC, "binary"),
    Case("SquaredDifference", (*FLOATS, "int32", "int64"), "binary"),
    Case("Atan2", ("float32",), "binary", tol="approx"),
    Case("LogicalAnd", ("bool",), "binary"),
    Case("LogicalOr", ("bool",), "binary"),
    Case("BitwiseAnd", INTS, "binary"),
    Case("BitwiseXor", INTS, "binary"),
    # comparisons and selection
    Case("Equal", ALL, "binary"),
    Case("NotEqual", ALL, "binary"),
    Case("Less", NUMERIC, "binary"),
    Case("LessEqual", NUMERIC, "binary"),
    Case("Greater", NUMERIC, "binary"),
    Case("GreaterEqual", NUMERIC, "binary"),
    Case("SelectV2", ALL, "special"),
    # bfloat16 bounds are constants, which OpenVINO's frontend cannot read (the subgraph falls back to TF)
    Case("ClipByValue", tuple(d for d in NUMERIC if d != "bfloat16"), "special"),
    # reductions (over rows of the pair grid, so every row mixes the edge values)
    Case("Sum", NUMERIC, "reduce", tol="accumulate"),
    Case("Prod", ("float32", "int32", "int64"), "reduce", tol="approx"),
    Case("Max", NUMERIC, "reduce"),
    Case("Min", NUMERIC, "reduce"),
    Case("Mean", FLOATS, "reduce", tol="accumulate"),
    Case("ArgMax", NUMERIC, "reduce"),
    Case("ArgMin", NUMERIC, "reduce"),
    Case("All", ("bool",), "reduce"),
    Case("Any", ("bool",), "reduce"),
    Case("Cumsum", ("float32", "int32", "int64"), "reduce", tol="accumulate"),
    # data movement and indexing: values must pass through untouched
    Case("Identity", ALL),
    Case("Reshape", ALL),
    Case("Transpose", ALL, "reduce"),
    Case("ConcatV2", ALL),
    Case("GatherRows", ALL, "special"),
    Case("GatherLargeIds", ("int32", "int64"), "special"),
    Case("StridedSlice", ALL),
    Case("Tile", ALL),
    Case("OneHot", ("int32", "int64"), "special"),  # uint8 indices: the plugin refuses them (not claimed)
    # casts: every dtype to every dtype, on the values TF defines (in range of the target)
    *(Case(f"CastTo_{target}", ALL, "special") for target in ALL),
    # NN ops on floats with NaN/inf in the data
    Case("MaxPool", FLOATS, "special"),
    Case("AvgPool", ("float32",), "special", tol="approx"),
    Case("Softmax", FLOATS, "special", tol="approx"),
    Case("MatMulNaN", ("float32",), "special", tol="approx"),
    Case("BiasAddRelu", ("float32",), "special"),
    Case("ReluOfNaNMade", ("float32",), "special"),
)
