"""Where tfaccel's warnings go when the application has not configured logging.

Why: tfaccel never falls back silently; a fallback is a ``logging`` warning. A library should leave
handlers to the application, but an application that configured nothing gets Python's last-resort
handler, which prints the bare message: no level, no logger name, so "the openvino backend is unavailable"
reads like program output. This handler, on the ``tfaccel`` logger, prints ``WARNING tfaccel.x: message``
only while nothing else would print the record: as soon as the application (``logging.basicConfig``, a
framework, pytest, the ``tfaccel`` command, the model server) puts a handler on the record's way to the
root, it steps aside, so nothing is printed twice and the application's format wins.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["install"]


class _UntilConfigured(logging.StreamHandler):  # type: ignore[type-arg]
    """Prints a record with its level and logger name unless another handler will (module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.setLevel(logging.WARNING)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        logger: logging.Logger | None = logging.getLogger(record.name)
        while logger is not None:
            if any(handler is not self for handler in logger.handlers):
                return  # someone else prints it
            if not logger.propagate:
                break
            logger = logger.parent
        self.stream = sys.stderr  # the stream of the moment (a test or a notebook may replace it)
        super().emit(record)


def install() -> None:
    """Put the handler on the ``tfaccel`` logger once (importing tfaccel twice adds nothing)."""
    ours = logging.getLogger("tfaccel")
    if not any(isinstance(handler, _UntilConfigured) for handler in ours.handlers):
        ours.addHandler(_UntilConfigured())
