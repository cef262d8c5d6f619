"""Entry point of the ``tfaccel`` command; the command itself is :mod:`tfaccel.cli`.

Why this module lives outside the ``tfaccel`` package: importing ``tfaccel`` imports TensorFlow (its op
library must be registered before any SavedModel loads), and TensorFlow writes several lines of start-up
chatter to stderr before its log level can be set. A command whose failures are one line on stderr has
to quiet that before the package is imported, which only a module outside the package can do. With
``--verbose`` nothing is hidden; if the import itself fails, what TensorFlow wrote is shown.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def _stderr_held() -> Iterator[None]:
    """Send file descriptor 2 to a temporary file for the block.

    tfaccel's own log records (e.g. "building the OpenVINO op library, about 20 s" on a machine's first
    run, or "the openvino backend is unavailable: ...") still reach the real stderr: a handler on the
    ``tfaccel`` logger writes to a copy of the original descriptor.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    real = os.fdopen(os.dup(saved), "w", buffering=1)
    handler = logging.StreamHandler(real)
    handler.setFormatter(logging.Formatter("tfaccel: %(message)s"))
    ours = logging.getLogger("tfaccel")
    ours.addHandler(handler)
    try:
        with tempfile.TemporaryFile() as held:
            os.dup2(held.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        ours.removeHandler(handler)
        real.close()
        os.close(saved)


def _quiet_import(verbose: bool) -> int:
    """Import tfaccel with TensorFlow's start-up chatter held back (unless ``verbose``); 1 on failure."""
    if not verbose:
        # 3: TensorFlow's C++ errors too (e.g. "failed call to cuInit" on a machine without a GPU); a real
        # failure reaches the command as a Python exception and is reported as one line
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        try:
            with _stderr_held():
                import tfaccel  # noqa: F401  (TensorFlow's start-up lines go to the held file)
        except Exception as err:  # a broken install: one line, and the way to see everything
            reason = " ".join(str(err).split()) or type(err).__name__
            sys.stderr.write(
                f"tfaccel: error: importing tfaccel failed ({type(err).__name__}: {reason[:500]}); run "
                "with --verbose to see TensorFlow's output and the traceback\n"
            )
            return 1
    return 0


def main() -> int:
    """``tfaccel ...``."""
    if _quiet_import(any(arg in ("-v", "--verbose") for arg in sys.argv[1:])):
        return 1
    from tfaccel.cli import main as run

    return run()


def serve_main() -> int:
    """``tfaccel-model-server ...`` (the same as ``tfaccel serve ...``)."""
    if _quiet_import(False):
        return 1
    from tfaccel.serving.server import main as serve

    return serve()


if __name__ == "__main__":
    raise SystemExit(main())
