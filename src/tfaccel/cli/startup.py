"""Importing TensorFlow for a command, once its arguments are parsed and it is known to need it.

Why a separate step: importing TensorFlow takes seconds, and ``tfaccel --help``, ``tfaccel report`` (a JSON
read) and a usage error of ``tfaccel`` or ``tfaccel-model-server`` need none of it. So the entry points
(``src/tfaccel_cli.py``) import the package with the op library's registration deferred, and the commands
that need TensorFlow call :func:`load_tensorflow` first, which does what ``import tfaccel`` otherwise does.

Why TensorFlow's import is held: it writes several lines of start-up chatter to stderr before its log level
can be set, and a command whose failures are one line on stderr must not show them. With ``--verbose``
nothing is hidden.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator

__all__ = ["load_tensorflow", "stderr_held"]


def load_tensorflow(prog: str, verbose: bool) -> bool:
    """Import TensorFlow and register tfaccel's op library, TensorFlow's chatter held back unless
    ``verbose``. False, after one line on stderr, when the import fails (a broken install).
    """
    if verbose:
        _register()
        return True
    # 3: TensorFlow's C++ errors too (e.g. "failed call to cuInit" on a machine without a GPU); a real
    # failure reaches the command as a Python exception and is reported as one line
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        with stderr_held():
            _register()
    except Exception as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        sys.stderr.write(
            f"{prog}: error: importing TensorFlow failed ({type(err).__name__}: {reason[:500]}); run with "
            "--verbose to see TensorFlow's output and the traceback\n"
        )
        return False
    return True


def _register() -> None:
    import tensorflow  # noqa: F401  (even when the op library is unavailable: its chatter is held here)

    from tfaccel import native

    native.load()


@contextlib.contextmanager
def stderr_held() -> Iterator[None]:
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
