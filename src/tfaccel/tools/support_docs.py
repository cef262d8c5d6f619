"""Generate ``docs/supported-ops.md`` from each backend's own support query.

Why generated: a hand-written support list goes stale with every TensorFlow or OpenVINO upgrade. This
asks the same sources placement asks (XLA's registered ``XLA_CPU_JIT`` kernels; OpenVINO's TensorFlow
frontend, probed with a node of every op type) and writes the table; ``tests/test_support_docs.py``
regenerates it and fails when the committed file differs.

Run ``python -m tfaccel.tools.support_docs --write`` to refresh the file, ``--check`` to test it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import tensorflow as tf

from tfaccel import _tf_compat
from tfaccel.compiler.opclasses import STRUCTURAL_OPS, UNPLACEABLE_DTYPES

__all__ = ["DOC_PATH", "generate", "main"]

#: where the document lives in the repository (the commands run from its root)
DOC_PATH = Path("docs") / "supported-ops.md"

_SHORT = {
    "float16": "f16",
    "bfloat16": "bf16",
    "float32": "f32",
    "float64": "f64",
    "int8": "i8",
    "int16": "i16",
    "int32": "i32",
    "int64": "i64",
    "uint8": "u8",
    "uint16": "u16",
    "uint32": "u32",
    "uint64": "u64",
    "bool": "bool",
    "complex64": "c64",
    "complex128": "c128",
    "string": "string",
    "resource": "resource",
    "variant": "variant",
}
_ORDER = {name: i for i, name in enumerate(_SHORT)}


def _dtypes_text(names: set[str]) -> str:
    """Short names of the model dtypes in ``names`` (quantized, 4-bit and float8 types left out)."""
    if not names:
        return "any"
    ordered = sorted((n for n in names if n in _ORDER), key=_ORDER.__getitem__)
    return ", ".join(_SHORT[n] for n in ordered) or "none of the common dtypes"


def _op_dtypes(op_type: str) -> tuple[set[str], set[str]]:
    """The dtypes ``op_type``'s OpDef allows (None-constrained type attrs give every dtype, marked by an
    empty set in the first element's stead: ``(allowed, fixed outputs)``).
    """
    op_def = _tf_compat.op_def(op_type)
    allowed: set[str] = set()
    unconstrained = False
    for attr in op_def.attr:
        if attr.type in ("type", "list(type)"):
            values = list(attr.allowed_values.list.type)
            if not values:
                unconstrained = True
            allowed.update(tf.as_dtype(v).name for v in values)
    for arg in (*op_def.input_arg, *op_def.output_arg):
        if arg.type:
            allowed.add(tf.as_dtype(arg.type).name)
    fixed_outputs = {tf.as_dtype(arg.type).name for arg in op_def.output_arg if arg.type}
    if unconstrained:
        allowed.add("*")
    return allowed, fixed_outputs


def generate() -> str:
    """The whole markdown document, deterministic for one TensorFlow and OpenVINO version."""
    import openvino

    from tfaccel.backends import openvino_semantics
    from tfaccel.backends.openvino import OV_DTYPES, UNSUPPORTED_DTYPES, conversion_rules
    from tfaccel.backends.xla import SLOW_ON_CPU, kernel_dtypes

    xla = kernel_dtypes()
    op_types = _tf_compat.registered_op_types()
    ov_rules = conversion_rules(op_types)
    ov_ok = set(OV_DTYPES)
    rows: list[tuple[str, str, str, str]] = []
    on_xla = on_ov = on_both = 0
    for op in op_types:
        if op in STRUCTURAL_OPS:
            continue
        in_xla = op in xla
        ov_why = ov_rules.get(op, "no conversion rule")
        in_ov = ov_why is None or ov_why.startswith("the frontend converts it only in context")
        if not (in_xla or in_ov):
            continue
        notes: list[str] = []
        allowed, fixed_outputs = _op_dtypes(op)
        xla_cell = "—"
        if in_xla:
            xla_cell = _dtypes_text(xla[op])
            if op in SLOW_ON_CPU:
                notes.append(f"xla: {SLOW_ON_CPU[op]}")
            if op in openvino_semantics.XLA_NAN_GUARDED_OPS:
                notes.append("xla: NaN handled as in TF by a rewrite (XLA:CPU's own min/max ignore NaN)")
            if op == "Cast":
                notes.append("xla: float to 8/16-bit integers stays on TF (TF wraps values out of range)")
        ov_cell = "—"
        if in_ov:
            dropped, semantics = openvino_semantics.documented(op)
            ov_dtypes = (ov_ok if "*" in allowed else allowed & ov_ok) - UNSUPPORTED_DTYPES - dropped
            ov_cell = _dtypes_text(ov_dtypes) if ov_dtypes else "— (no dtype OpenVINO computes exactly)"
            if ov_why is not None:
                notes.append(f"openvino: {ov_why}")
            notes.extend(f"openvino: {note}" for note in semantics)
        stuck = sorted(fixed_outputs & UNPLACEABLE_DTYPES)
        if stuck == ["variant"]:
            notes.append(
                "outputs a variant (a TensorList): only inside an xla subgraph (a whole loop), never at "
                "a subgraph's edge; openvino leaves it on TF"
            )
        elif stuck:
            notes.append(f"outputs {', '.join(stuck)}: stays on TF (such tensors never enter a subgraph)")
        on_xla += in_xla
        on_ov += in_ov and ov_cell != "— (no dtype OpenVINO computes exactly)"
        on_both += in_xla and in_ov
        rows.append((op, xla_cell, ov_cell, "; ".join(notes)))
    tf_version = ".".join(tf.__version__.split(".")[:2])
    ov_version = ".".join(openvino.__version__.split(".")[:2])
    lines = [
        "# Supported operators",
        "",
        "<!-- generated by `python -m tfaccel.tools.support_docs --write`; tests/test_support_docs.py fails "
        "when it is stale. Do not edit by hand. -->",
        "",
        f"Generated from TensorFlow {tf_version} and OpenVINO {ov_version}, by asking each backend the "
        "question placement asks:",
        "",
        "- **xla**: XLA registers an `XLA_CPU_JIT` kernel for the op. The dtypes are those kernels' type "
        "constraints (`any`: unconstrained; quantized, 4-bit and float8 types left out).",
        "- **openvino**: OpenVINO's TensorFlow frontend has a conversion rule for the op (probed with one "
        "node of every op type). The dtypes are the op's own TensorFlow dtypes that OpenVINO's CPU plugin "
        "computes exactly; float64 and complex tensors stay on TensorFlow. "
        + openvino_semantics.GENERAL_RULES,
        "",
        "For every backend: `Placeholder`, `Const` and `NoOp` never move (constants are copied into the "
        "subgraphs that read them), and a string, resource or variant tensor never crosses a subgraph's "
        "edge. A listed op is necessary, not sufficient: at trace time each backend still answers per "
        "node (its attributes, dtypes and shapes), and a subgraph a backend fails to compile goes back to "
        "TensorFlow. `tfaccel analyze SAVEDMODEL` (or `tfaccel.analyze_model`) answers for one model.",
        "",
        f"{len(rows)} op types: {on_xla} on xla, {on_ov} on openvino, {on_both} on both.",
        "",
        "| op | xla dtypes | openvino dtypes | notes |",
        "|---|---|---|---|",
    ]
    lines.extend(f"| `{op}` | {x} | {o} | {n} |" for op, x, o, n in rows)
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfaccel.tools.support_docs", description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write the document")
    mode.add_argument("--check", action="store_true", help="exit 1 when the document is stale")
    parser.add_argument("--out", type=Path, default=DOC_PATH, help=f"the document (default {DOC_PATH})")
    args = parser.parse_args(argv)
    text = generate()
    if args.write:
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
        return 0
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is stale: run python -m tfaccel.tools.support_docs --write", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
