"""Suggested fixes for compiler errors (compiler/hints.py): each known phrase maps to its fix, found
anywhere in the compiler's output, and an unknown error gets no made-up advice."""

from __future__ import annotations

import pytest

from tfaccel.compiler.hints import compile_hint


@pytest.mark.parametrize(
    ("log", "fix"),
    [
        ("Check failed\n...\ndoesn't support Parameter operation with dynamic rank", "tf.ensure_shape"),
        ("InvalidArgumentError: Input 1 to node `rev` must be a compile-time constant.", "static shapes"),
        ("OpConversionFailure: No conversion rule found for operations: Foo", "supported-ops.md"),
    ],
)
def test_a_known_cause_gets_its_fix_wherever_it_is_in_the_log(log, fix):
    hint = compile_hint(log)
    assert hint is not None and fix in hint


def test_an_unknown_error_gets_no_hint():
    assert compile_hint("RuntimeError: something else went wrong") is None
