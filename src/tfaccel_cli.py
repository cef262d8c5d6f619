"""Entry points of the ``tfaccel`` and ``tfaccel-model-server`` commands; the commands themselves are
:mod:`tfaccel.cli` and :mod:`tfaccel.serving.server`.

Why this module lives outside the ``tfaccel`` package: ``import tfaccel`` registers tfaccel's op library,
which imports TensorFlow (seconds, and several lines of start-up chatter on stderr). A command must parse
its arguments first, so that ``--help``, ``tfaccel report`` and usage errors answer at once and a failure
is one line on stderr; only a module outside the package can tell the package, before it is imported, to
defer that registration. The commands that need TensorFlow then register the op library themselves
(:func:`tfaccel.cli.startup.load_tensorflow`, which also holds TensorFlow's chatter back).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

#: read by ``tfaccel/__init__.py`` (its ``_DEFER_OP_LIBRARY``); set only around the import below
_DEFER_OP_LIBRARY = "_TFACCEL_DEFER_OP_LIBRARY"


def _import_deferred(name: str) -> ModuleType:
    """Import module ``name`` of the package with the op library's registration deferred; the variable is
    removed at once, so no later import or child process inherits it.
    """
    os.environ[_DEFER_OP_LIBRARY] = "1"
    try:
        return importlib.import_module(name)
    finally:
        del os.environ[_DEFER_OP_LIBRARY]


def main() -> int:
    """``tfaccel ...``."""
    return int(_import_deferred("tfaccel.cli").main())


def serve_main() -> int:
    """``tfaccel-model-server ...`` (the same as ``tfaccel serve ...``)."""
    return int(_import_deferred("tfaccel.serving.server").main())


if __name__ == "__main__":
    raise SystemExit(main())
