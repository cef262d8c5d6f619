"""Suggested fixes for compiler errors users meet: the report says what to change, not only what failed.

Why a table: a backend's error names its own internals ("Parameter operation with dynamic rank"), which a
user of tfaccel cannot act on without knowing what tfaccel handed the compiler. Each entry maps a phrase of
the compiler's full output to what to change in the model or the options. Patterns are matched against the
whole log, not its first line: the cause is often lines below it. TF-free, like the other rule tables.
"""

from __future__ import annotations

import re

__all__ = ["compile_hint"]

_HINTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"dynamic rank", re.IGNORECASE),
        "a tensor entering this subgraph has an unknown rank (e.g. the output of a py_function or of a "
        "reshape to a computed shape): state it in the model with tf.ensure_shape(x, [None, ...]) and trace "
        "again",
    ),
    (
        re.compile(r"must be a compile-time constant", re.IGNORECASE),
        "XLA needs this value while it compiles: compute it from constants or static shapes, or trace with "
        "--backend=openvino, which takes run-time values",
    ),
    (
        re.compile(r"No conversion rule found", re.IGNORECASE),
        "OpenVINO's TensorFlow frontend has no conversion for an op of this subgraph: it runs on TF (see "
        "docs/supported-ops.md), or try --backend=xla",
    ),
)


def compile_hint(log: str) -> str | None:
    """The suggested fix for a compiler's output, or None when no known phrase appears in it."""
    for pattern, hint in _HINTS:
        if pattern.search(log):
            return hint
    return None
