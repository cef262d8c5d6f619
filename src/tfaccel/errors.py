"""One error hierarchy, so callers can catch everything tfaccel raises with ``except TraceError``.

Every message names what went wrong, where (the node, the input, the flag) and what to do about it. The
capture errors also derive from ``TypeError``/``ValueError`` so that code written against the reference
API, which raised those, keeps catching them.
"""

from __future__ import annotations

__all__ = [
    "CaptureError",
    "CaptureTypeError",
    "CaptureValueError",
    "CompileError",
    "ExportError",
    "InputTypeError",
    "InputValueError",
    "KerasFormatError",
    "OptionsError",
    "PartitionError",
    "SourceError",
    "TraceError",
]


class TraceError(Exception):
    """Base class of every error tfaccel raises on purpose."""

    # Exception's own constructor, also for the subclasses that derive from TypeError/ValueError: AutoGraph
    # re-raises an error from converted code (a traced model called inside the user's tf.function) as its
    # own type only when the type's __init__ is Exception.__init__; otherwise it becomes a StagingError.
    __init__ = Exception.__init__


class CaptureError(TraceError):
    """The function or its example inputs cannot be turned into a graph."""


class CaptureTypeError(CaptureError, TypeError):
    """Wrong kind of object: a non-callable ``func``, a non-tensor example input, mixed call styles."""


class CaptureValueError(CaptureError, ValueError):
    """Right kind of object, unusable value: an empty input structure, a function without inputs."""


class PartitionError(TraceError):
    """Placement or partitioning produced an invalid plan (a bug: please report it with the workdir)."""


class CompileError(TraceError):
    """A backend could not compile a subgraph and no fallback was possible."""


class OptionsError(TraceError, ValueError):
    """An option or flag is unknown, malformed, or cannot be combined with another."""


class ExportError(TraceError):
    """Saving or loading a traced model failed."""


class KerasFormatError(ExportError, NotImplementedError):
    """A Keras format (``.keras``, ``.h5``, weights alone, a config) was asked of a traced model, which is a
    compiled graph: it saves as a SavedModel directory. Also a ``NotImplementedError``, the exception
    Keras' own serialization expects from a ``get_config`` it cannot have.
    """


class SourceError(TraceError):
    """A SavedModel to trace cannot be used: a bad path, not a SavedModel, corrupted, an unknown
    signature, or example inputs that do not fit its signature.
    """


class InputTypeError(TraceError, TypeError):
    """A traced model was called with the wrong kind of input (dtype, arity, structure)."""


class InputValueError(TraceError, ValueError):
    """A traced model was called with an input of the wrong shape, or dict keys that do not match."""
