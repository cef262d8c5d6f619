"""Typed fields out of untrusted JSON: a value of the right type, or an error that names where it is.

Why a module of its own: a saved model's ``assets.extra/tfaccel.json`` is a file anyone can edit, and the
records read from it (the placement report, its node rows, the measurements) must come back as typed
objects or be refused. A bare ``KeyError: 'op'`` or ``TypeError: string indices must be integers`` says
nothing about which record was wrong; these readers say ``report.nodes[3].op must be a string, got int``.
They raise ``TypeError`` (wrong type) or ``ValueError`` (missing key, unknown value), which the loader
turns into its :class:`~tfaccel.errors.ExportError`. No TensorFlow, no tfaccel imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "boolean",
    "integer",
    "items",
    "number",
    "optional_number",
    "optional_text",
    "record",
    "required",
    "text",
    "text_map",
    "number_map",
]


def _shown(value: object) -> str:
    shown = repr(value)
    return f"{type(value).__name__} {shown[:60]}{'...' if len(shown) > 60 else ''}"


def record(value: object, where: str) -> Mapping[str, Any]:
    """``value`` as a JSON object (a dict with string keys)."""
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise TypeError(f"{where} must be a JSON object, got {_shown(value)}")
    return value


def required(data: Mapping[str, Any], key: str, where: str) -> Any:
    """``data[key]``; a missing key says which record lacks it."""
    if key not in data:
        raise ValueError(f"{where} lacks {key!r}")
    return data[key]


def text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{where} must be a string, got {_shown(value)}")
    return value


def optional_text(value: object, where: str) -> str | None:
    return None if value is None else text(value, where)


def integer(value: object, where: str) -> int:
    """A JSON integer (``true`` is not one, although Python's ``bool`` is an ``int``)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{where} must be an integer, got {_shown(value)}")
    return value


def number(value: object, where: str) -> float:
    """A JSON number, integer or not (kept as read, so a record saves back unchanged)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{where} must be a number, got {_shown(value)}")
    return value


def optional_number(value: object, where: str) -> float | None:
    return None if value is None else number(value, where)


def boolean(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{where} must be true or false, got {_shown(value)}")
    return value


def items(value: object, where: str) -> list[Any]:
    """A JSON array, whose items the caller reads with ``f"{where}[{i}]"``."""
    if not isinstance(value, list):
        raise TypeError(f"{where} must be a JSON array, got {_shown(value)}")
    return value


def text_map(value: object, where: str) -> dict[str, str]:
    """A JSON object of strings (e.g. a backend's name to why it failed)."""
    data = record(value, where)
    return {k: text(v, f"{where}[{k!r}]") for k, v in data.items()}


def number_map(value: object, where: str) -> dict[str, float]:
    """A JSON object of numbers (e.g. a backend's name to its median milliseconds)."""
    data = record(value, where)
    return {k: number(v, f"{where}[{k!r}]") for k, v in data.items()}
