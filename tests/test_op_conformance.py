"""Per-op, per-dtype conformance of the openvino backend against TensorFlow, on edge values.

Every case of ``op_conformance_table.CASES`` is built in TF (the reference, run eagerly) and, batched with
the other cases of its dtype into one graph, converted the way the backend converts a subgraph (the NaN
rewrite included) and compiled for OpenVINO's CPU plugin with the op's own settings (fp32 inference
precision, latency hint). A case the backend claims (its support query accepts every node of the case)
must match TF: integers and bools exactly, floats with NaN in the same places, the same infinities and
the finite values within the case's named tolerance (signed zeros compare equal: XLA, too, returns -0.0
for TF's relu(-0.0) = 0.0). A case that does not match must not be claimed; the known deviations are
checked by name so the harness cannot silently stop seeing them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from conftest import softmax_reference
from op_conformance_table import ALL, CASES, EDGES, FLOATS, TOLERANCE, Case
from tfaccel.backends import openvino_semantics as semantics
from tfaccel.backends.openvino import OpenVinoBackend
from tfaccel.compiler.capture import graph_from_graph_def

Operands = list[np.ndarray]
Build = Callable[..., tf.Tensor]


def _np(dtype: str) -> Any:
    return tf.as_dtype(dtype).as_numpy_dtype


def _edges(dtype: str) -> np.ndarray:
    return np.array(EDGES[dtype], dtype=_np(dtype))


def _grid(dtype: str) -> np.ndarray:
    """Rows of three consecutive edge values (wrapping), so reductions see every neighbouring mix."""
    x = _edges(dtype)
    n = len(x)
    return np.stack([x[[(i + k) % n for k in range(3)]] for i in range(n)])


def _divisors(dtype: str) -> np.ndarray:
    """Non-zero right operands (TF raises on integer division by zero; MIN / -1 traps the CPU)."""
    x = _edges(dtype)
    keep = [
        v
        for v in x
        if v != 0 and not (dtype != "bool" and np.issubdtype(x.dtype, np.signedinteger) and v == -1)
    ]
    if np.issubdtype(x.dtype, np.signedinteger):
        keep.append(-2)
    return np.array(keep, dtype=x.dtype)


def _in_range_for(values: np.ndarray, target: str) -> np.ndarray:
    """The values a cast to ``target`` is defined for in TF (float -> int: finite and in range)."""
    if values.dtype.name not in FLOATS or target in (*FLOATS, "bool"):
        return values
    info = np.iinfo(_np(target))
    wide = values.astype(np.float64)
    ok = np.isfinite(wide) & (np.trunc(wide) >= info.min) & (np.trunc(wide) <= info.max)
    return values[ok]


_UNARY: dict[str, Build] = {
    "Abs": tf.abs,
    "Neg": tf.negative,
    "Square": tf.square,
    "Sign": tf.sign,
    "Floor": tf.floor,
    "Ceil": tf.math.ceil,
    "Round": tf.round,
    "Rint": tf.math.rint,
    "Sqrt": tf.sqrt,
    "Rsqrt": tf.math.rsqrt,
    "Reciprocal": tf.math.reciprocal,
    "Exp": tf.exp,
    "Log": tf.math.log,
    "Log1p": tf.math.log1p,
    "Sin": tf.sin,
    "Cos": tf.cos,
    "Tanh": tf.tanh,
    "Sigmoid": tf.sigmoid,
    "Erf": tf.math.erf,
    "Softplus": tf.nn.softplus,
    "Softsign": tf.nn.softsign,
    "Relu": tf.nn.relu,
    "Relu6": tf.nn.relu6,
    "LeakyRelu": lambda x: tf.nn.leaky_relu(x, 0.2),
    "Elu": tf.nn.elu,
    "Selu": tf.nn.selu,
    "IsNan": tf.math.is_nan,
    "IsInf": tf.math.is_inf,
    "IsFinite": tf.math.is_finite,
    "LogicalNot": tf.logical_not,
    "Identity": tf.identity,
    "Reshape": lambda x: tf.reshape(x, [2, -1]) if x.shape[0] % 2 == 0 else tf.reshape(x, [1, -1]),
    "ConcatV2": lambda x: tf.concat([x, x[::-1]], 0),
    "StridedSlice": lambda x: x[1::2],
    "Tile": lambda x: tf.tile(x, [2]),
}

_BINARY: dict[str, Build] = {
    "AddV2": tf.add,
    "Sub": tf.subtract,
    "Mul": tf.multiply,
    "RealDiv": tf.divide,
    "DivNoNan": tf.math.divide_no_nan,
    "Div": lambda a, b: tf.raw_ops.Div(x=a, y=b),
    "FloorDiv": tf.math.floordiv,
    "FloorMod": tf.math.floormod,
    "TruncateDiv": tf.truncatediv,
    "TruncateMod": tf.truncatemod,
    "Pow": tf.pow,
    "IntPow": tf.pow,
    "Maximum": tf.maximum,
    "Minimum": tf.minimum,
    "SquaredDifference": tf.math.squared_difference,
    "Atan2": tf.atan2,
    "LogicalAnd": tf.logical_and,
    "LogicalOr": tf.logical_or,
    "BitwiseAnd": tf.bitwise.bitwise_and,
    "BitwiseXor": tf.bitwise.bitwise_xor,
    "Equal": tf.equal,
    "NotEqual": tf.not_equal,
    "Less": tf.less,
    "LessEqual": tf.less_equal,
    "Greater": tf.greater,
    "GreaterEqual": tf.greater_equal,
}

_REDUCE: dict[str, Build] = {
    "Sum": lambda x: tf.reduce_sum(x, 1),
    "Prod": lambda x: tf.reduce_prod(x, 1),
    "Max": lambda x: tf.reduce_max(x, 1),
    "Min": lambda x: tf.reduce_min(x, 1),
    "Mean": lambda x: tf.reduce_mean(x, 1),
    "ArgMax": lambda x: tf.argmax(x, 1),
    "ArgMin": lambda x: tf.argmin(x, 1),
    "All": lambda x: tf.reduce_all(x, 1),
    "Any": lambda x: tf.reduce_any(x, 1),
    "Cumsum": lambda x: tf.cumsum(x, 1),
    "Transpose": tf.transpose,
}


def _special(op: str, dtype: str) -> tuple[Operands, Build]:
    """Operands and expression of a case that builds its own inputs."""
    x = _edges(dtype)
    if op.startswith("CastTo_"):
        target = op.removeprefix("CastTo_")
        return [_in_range_for(x, target)], lambda v: tf.cast(v, target)
    if op == "ClipByValue":
        lo, hi = (-1.5, 2.5) if dtype in FLOATS else (1, 100) if x.dtype.kind == "u" else (-7, 100)
        return [x], lambda v: tf.clip_by_value(v, tf.constant(lo, dtype), tf.constant(hi, dtype))
    if op == "SelectV2":
        cond = np.arange(len(x) * len(x)).reshape(len(x), len(x)) % 3 == 0
        return [cond, x[:, None], x[::-1][None, :].copy()], tf.where
    if op == "GatherRows":  # values of the dtype move through a gather untouched
        ids = np.array([len(x) - 1, 0, 3, 1, 3], np.int32)
        return [x, ids], lambda p, i: tf.gather(p, i)
    if op == "GatherLargeIds":  # ids past 2**16 into a 70001-row table
        table = np.arange(70001, dtype=np.float32) * 0.5
        return [table, np.array([70000, 65536, 0, 40001, 69999], _np(dtype))], lambda p, i: tf.gather(p, i)
    if op == "OneHot":
        return [np.array([0, 4, 2, 7, 1], _np(dtype))], lambda i: tf.one_hot(i, 5)
    if op in ("MaxPool", "AvgPool"):
        image = np.resize(x, 16).reshape(1, 4, 4, 1)
        pool = tf.nn.max_pool2d if op == "MaxPool" else tf.nn.avg_pool2d
        return [image], lambda v: pool(v, 2, 1, "VALID")
    if op == "Softmax":
        return [_grid(dtype)], tf.nn.softmax
    if op == "MatMulNaN":
        return [_grid(dtype)[:4].T.copy(), _grid(dtype)[3:7]], tf.matmul
    if op == "BiasAddRelu":
        image = np.resize(x, 32).reshape(1, 4, 4, 2)
        bias = np.array([0.5, -1.0], np.float32)
        return [image, bias], lambda v, b: tf.nn.relu(tf.nn.bias_add(v, b))
    if op == "ReluOfNaNMade":  # 0/0 and inf-inf made inside the graph must survive the relus after them
        zero = np.zeros(3, np.float32)
        inf = np.full(3, np.inf, np.float32)
        return [zero, inf], lambda z, i: tf.concat(
            [
                tf.nn.relu(z / z),
                tf.nn.relu6(i - i),
                tf.maximum(z / z, 1.0),
                tf.clip_by_value(i - i, 0.0, 1.0),
            ],
            0,
        )
    raise KeyError(op)


def operands_and_build(case: Case, dtype: str) -> tuple[Operands, Build]:
    x = _edges(dtype)
    if case.kind == "unary":
        return [x], _UNARY[case.op]
    if case.kind == "binary":
        return [x[:, None], x[None, :].copy()], _BINARY[case.op]
    if case.kind == "divisor":
        return [x[:, None], _divisors(dtype)[None, :]], _BINARY[case.op]
    if case.kind == "small_exp":
        return [x[:, None], np.array([[0, 1, 2, 3]], x.dtype)], _BINARY[case.op]
    if case.kind == "reduce":
        return [_grid(dtype)], _REDUCE[case.op]
    return _special(case.op, dtype)


# -- running ------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One case on one dtype: TF's answer, OpenVINO's (or why there is none) and the backend's claim."""

    case: Case
    dtype: str
    operands: Operands
    build: Build
    want: np.ndarray | None = None
    got: np.ndarray | None = None
    error: str | None = None  # TF has no kernel, or OpenVINO could not convert/compile it
    claimed: bool = False
    why_not: str = ""
    output: str = ""

    @property
    def key(self) -> str:
        return f"{self.case.op}[{self.dtype}]"

    def mismatch(self) -> str | None:
        """How OpenVINO's answer differs from TF's (None when it matches)."""
        assert self.want is not None and self.got is not None
        want, got = self.want, np.asarray(self.got)
        if want.shape != got.shape:
            return f"shape {got.shape} != TF's {want.shape}"
        if want.dtype.kind != "f" and want.dtype.name != "bfloat16":
            if np.array_equal(got.astype(want.dtype), want) and np.array_equal(got, want):
                return None
            bad = np.flatnonzero(got.ravel() != want.ravel())[:4]
            return f"got {got.ravel()[bad].tolist()} where TF gives {want.ravel()[bad].tolist()}"
        w, g = want.astype(np.float64), got.astype(np.float64)
        nan_w, nan_g = np.isnan(w), np.isnan(g)
        if not np.array_equal(nan_w, nan_g):
            at = np.flatnonzero(nan_w.ravel() != nan_g.ravel())[:4]
            return f"NaN differs at {at.tolist()}: got {g.ravel()[at].tolist()}, TF {w.ravel()[at].tolist()}"
        inf = np.isinf(w) | np.isinf(g)
        if not np.array_equal(w[inf], g[inf]):
            return f"infinities differ: got {g[inf].tolist()}, TF {w[inf].tolist()}"
        rtol, atol = TOLERANCE[self.case.tol].get(want.dtype.name, TOLERANCE["exact"]["float32"])
        finite = ~(nan_w | inf)
        if self.case.tol == "accumulate":
            operands = np.concatenate([np.asarray(v, np.float64).ravel() for v in self.operands])
            largest = np.max(np.abs(operands[np.isfinite(operands)]), initial=0.0)
            atol = max(atol, rtol * largest * 3)
        close = np.abs(g[finite] - w[finite]) <= atol + rtol * np.abs(w[finite])
        if close.all():
            return None
        at = np.flatnonzero(~close)[:4]
        got_at, want_at = g[finite][at].tolist(), w[finite][at].tolist()
        return f"got {got_at} where TF gives {want_at} ({self.case.tol} tolerance)"


def outcomes_for(dtype: str, cases: Sequence[Case] = CASES, nan_rewrite: bool = True) -> list[Outcome]:
    """Run every case of ``dtype``: TF eagerly, OpenVINO in as few compiled graphs as it allows."""
    results = []
    for case in cases:
        if dtype not in case.dtypes:
            continue
        operands, build = operands_and_build(case, dtype)
        outcome = Outcome(case, dtype, operands, build)
        try:
            outcome.want = np.asarray(build(*[tf.constant(v) for v in operands]))
            if case.op == "Softmax":  # TF's own answer on NaN rows depends on its kernel (conftest)
                outcome.want = softmax_reference(operands[0], outcome.want)
        except (tf.errors.OpError, TypeError, ValueError) as err:
            outcome.error = f"TF: {str(err).splitlines()[0][:120]}"
        results.append(outcome)
    ready = [o for o in results if o.error is None]
    _claim(ready)
    # claimed cases first, in one graph: they must all compile; the rest may need splitting to isolate
    # the ones OpenVINO cannot compile at all
    _run_openvino([o for o in ready if o.claimed], nan_rewrite)
    _run_openvino([o for o in ready if not o.claimed], nan_rewrite)
    return results


def _run_openvino(batch: list[Outcome], nan_rewrite: bool) -> None:
    """Build one graph of the batch, convert, compile and run it; split the batch on failure."""
    if not batch:
        return
    graph_def, inputs, outputs = _batch_graph(batch)
    try:
        values = _openvino_values(
            graph_def, inputs, outputs, [v for o in batch for v in o.operands], nan_rewrite
        )
    except Exception as err:  # the frontend and the plugin raise their own classes
        if len(batch) == 1:
            batch[0].error = f"OpenVINO: {str(err).strip().splitlines()[-1][:160]}"
            return
        half = len(batch) // 2
        _run_openvino(batch[:half], nan_rewrite)
        _run_openvino(batch[half:], nan_rewrite)
        return
    for outcome, value in zip(batch, values, strict=True):
        outcome.got = value


def _batch_graph(batch: list[Outcome]) -> tuple[Any, list[str], list[str]]:
    """One GraphDef computing every case of ``batch`` (each from its own Placeholders), its inputs and
    outputs.
    """
    specs = []
    for i, outcome in enumerate(batch):
        specs.extend(
            tf.TensorSpec(v.shape, tf.as_dtype(v.dtype), name=f"c{i}_{j}")
            for j, v in enumerate(outcome.operands)
        )

    def graph_fn(*flat: tf.Tensor) -> list[tf.Tensor]:
        outs, at = [], 0
        for outcome in batch:
            n = len(outcome.operands)
            outs.append(outcome.build(*flat[at : at + n]))
            at += n
        return outs

    concrete = tf.function(graph_fn, autograph=False).get_concrete_function(*specs)
    graph_def = concrete.graph.as_graph_def()
    return graph_def, [t.name for t in concrete.inputs], [t.name for t in concrete.outputs]


def _openvino_values(
    graph_def: Any, inputs: list[str], outputs: list[str], feeds: Operands, nan_rewrite: bool
) -> list[np.ndarray]:
    """Convert as the backend's compile() does (through a file, the NaN rewrite first) and run on CPU."""
    import openvino as ov

    if nan_rewrite:
        graph_def = semantics.preserve_nan(graph_def)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cases.pb"
        path.write_bytes(graph_def.SerializeToString())
        model = ov.convert_model(str(path), output=outputs)
    model = _results_in_order(ov, model, outputs)
    config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    compiled = ov.Core().compile_model(model, "CPU", config)
    by_name = dict(zip(inputs, feeds, strict=True))
    request: dict[int, np.ndarray] = {}
    for k, port in enumerate(compiled.inputs):
        names = {n.split(":")[0] for n in port.get_names()}
        request[k] = next(v for n, v in by_name.items() if n.split(":")[0] in names)
    result = compiled(request)
    values = []
    for port in compiled.outputs:
        value = np.asarray(result[port])
        if port.get_element_type() == ov.Type.bf16:  # OpenVINO hands bf16 out as raw 16-bit words
            value = value.view(np.uint16).view(_np("bfloat16"))
        values.append(value)
    return values


def _results_in_order(ov: Any, model: Any, outputs: list[str]) -> Any:
    """The model's results in ``outputs`` order, matched by result name first (folded Identity nodes
    leave several results with the same tensor names), then by tensor name.
    """
    results: dict[str, Any] = {}
    for result in model.get_results():
        results.setdefault(result.get_friendly_name(), result)
        results.setdefault(result.get_friendly_name().split(":")[0], result)
    for result in model.get_results():
        for name in result.input_value(0).get_names():
            results.setdefault(name, result)
    ordered = [results.get(o, results.get(o.split(":")[0])) for o in outputs]
    assert all(r is not None for r in ordered), [r.get_friendly_name() for r in model.get_results()]
    return ov.Model(ordered, model.get_parameters(), "cases")


def _claim(batch: list[Outcome]) -> None:
    """Ask the backend's support query about every node each case's output depends on."""
    if not batch:
        return
    graph_def, inputs, outputs = _batch_graph(batch)
    graph = graph_from_graph_def(graph_def, inputs, outputs)
    backend = OpenVinoBackend().support_for(graph, graph_def)
    for outcome, output in zip(batch, outputs, strict=True):
        outcome.output = output
        reasons, stack, seen = [], [output.split(":")[0]], set()
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            node = graph[name]
            stack.extend(ref.node for ref in node.inputs)
            if node.op in ("Placeholder", "Const", "NoOp", "Identity"):
                continue
            ok, why = backend.supports(node)
            if not ok:
                reasons.append(f"{node.op}: {why}")
        outcome.claimed = not reasons
        outcome.why_not = "; ".join(sorted(set(reasons)))


_CACHE: dict[str, list[Outcome]] = {}


def _outcomes(dtype: str) -> list[Outcome]:
    if dtype not in _CACHE:
        _CACHE[dtype] = outcomes_for(dtype)
    return _CACHE[dtype]


# -- the tests ----------------------------------------------------------------------------------------


#: the dtypes real models compute in, swept by default; the rest (a few seconds each) with -m slow
DEFAULT_DTYPES = ("float32", "int32", "int64", "int8", "uint8")


@pytest.mark.parametrize(
    "dtype", [d if d in DEFAULT_DTYPES else pytest.param(d, marks=pytest.mark.slow) for d in ALL]
)
def test_claimed_ops_match_tensorflow(dtype: str) -> None:
    outcomes = _outcomes(dtype)
    ran = [o for o in outcomes if o.error is None and o.got is not None]
    assert ran, f"no {dtype} case ran on OpenVINO"
    wrong = [f"{o.key}: {m}" for o in ran if o.claimed and (m := o.mismatch()) is not None]
    assert not wrong, "the openvino backend claims ops that differ from TF:\n" + "\n".join(wrong)


KNOWN_DEVIATIONS = [
    # (op, dtype, words of the backend's reason): OpenVINO computes these differently, so they stay on TF
    ("Mul", "int64", "int64 Mul in 32 bits"),
    ("AddV2", "int64", "int64 AddV2 in 32 bits"),
    ("Less", "int64", "in 32 bits"),
    ("GatherRows", "int64", "in 32 bits"),
    ("FloorMod", "int32", "int32 FloorMod through float32"),
    ("FloorDiv", "int32", "int32 FloorDiv through float32"),
    ("TruncateMod", "int32", "through float32"),
    ("AddV2", "int8", "int8 arithmetic saturates"),
    ("Mul", "uint8", "uint8 arithmetic saturates"),
    ("Neg", "int8", "not Neg"),
    ("ArgMax", "float32", "picks a NaN where TensorFlow skips it"),
]


@pytest.mark.parametrize(
    ("op", "dtype", "reason"), KNOWN_DEVIATIONS, ids=[f"{o}-{d}" for o, d, _ in KNOWN_DEVIATIONS]
)
def test_known_deviations_are_seen_and_not_claimed(op: str, dtype: str, reason: str) -> None:
    (outcome,) = [o for o in _outcomes(dtype) if o.case.op == op]
    assert outcome.got is not None, outcome.error
    assert outcome.mismatch() is not None, f"{outcome.key} now matches TF: the rule may be dropped"
    assert not outcome.claimed
    assert reason in outcome.why_not, outcome.why_not


NAN_CASES = [
    "Relu",
    "Relu6",
    "Maximum",
    "Minimum",
    "ClipByValue",
    "Max",
    "Min",
    "ReluOfNaNMade",
    "BiasAddRelu",
]


@pytest.mark.parametrize("op", NAN_CASES)
def test_nan_is_kept_by_the_rewrite_and_lost_without_it(op: str) -> None:
    claimed = {o.case.op: o for o in _outcomes("float32")}[op]
    assert claimed.claimed and claimed.got is not None and claimed.mismatch() is None
    (raw,) = outcomes_for("float32", [claimed.case], nan_rewrite=False)
    assert raw.got is not None and raw.mismatch() is not None and "NaN" in (raw.mismatch() or "")


def test_nan_rewrite_reaches_loop_and_branch_bodies() -> None:
    """Relu/Maximum inside a While body and a Cond branch (FunctionDefs in the library) keep NaN too."""
    x = np.array([np.nan, -np.inf, np.inf, -0.0, 1.5, -2.0], np.float32)

    def body(i: tf.Tensor, v: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return i + 1, tf.maximum(tf.nn.relu(v) - 0.5, -1.0)

    def fn(t: tf.Tensor) -> tf.Tensor:
        looped = tf.while_loop(lambda i, v: i < 3, body, [tf.constant(0), t])[1]
        return tf.cond(tf.reduce_sum(tf.abs(t[4:])) > 1.0, lambda: tf.nn.relu6(looped), lambda: -looped)

    concrete = tf.function(fn, autograph=False).get_concrete_function(
        tf.TensorSpec([6], tf.float32, name="t")
    )
    graph_def = concrete.graph.as_graph_def()
    assert {f.signature.name for f in graph_def.library.function}, "no bodies: the test tests nothing"
    outputs = [t.name for t in concrete.outputs]
    want = fn(tf.constant(x)).numpy()
    assert np.isnan(want[0])
    (got,) = _openvino_values(graph_def, ["t:0"], outputs, [x], nan_rewrite=True)
    np.testing.assert_array_equal(got, want)  # NaN in the same place (assert_array_equal treats NaN == NaN)
    (raw,) = _openvino_values(graph_def, ["t:0"], outputs, [x], nan_rewrite=False)
    assert not np.isnan(raw[0]), "OpenVINO keeps NaN here without the rewrite: the test tests nothing"
