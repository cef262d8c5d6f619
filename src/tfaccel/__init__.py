"""tfaccel: trace a TensorFlow 2 model, run what an accelerator backend can compile, keep the rest on TF.

The public API is the ``tensorflow-neuron`` tracing API: code written for it runs with
``import tfaccel as tfn``::

    import tfaccel as tfn
    model_neuron = tfn.trace(model, example_inputs)
    print(model_neuron.on_neuron_ratio)
    model_neuron.save("model_dir")
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from tfaccel import _logging
from tfaccel.errors import (
    CaptureError,
    CaptureTypeError,
    CaptureValueError,
    CompileError,
    ExportError,
    InputTypeError,
    InputValueError,
    OptionsError,
    PartitionError,
    SourceError,
    TraceError,
)

__version__ = "0.1.0"


#: Set (to "1") only by the command-line entry points in ``src/tfaccel_cli.py``, around their import of this
#: package: a command parses its arguments before TensorFlow is imported, so that ``--help``, ``report`` and
#: usage errors answer at once, and registers the op library itself (:mod:`tfaccel.cli.startup`) before a
#: command that needs TensorFlow. Nothing else should set it: after ``import tfaccel`` the op is registered.
_DEFER_OP_LIBRARY = "_TFACCEL_DEFER_OP_LIBRARY"


def _register_op_library() -> None:
    # A model traced with the openvino backend holds tfaccel's op: TensorFlow can load it only once the op
    # library is registered, so importing tfaccel registers it (building it on the first import on a
    # machine). This imports TensorFlow, and nothing else heavy: the openvino package, the backends, the
    # compiler's stages and the server are imported on first use (tests/test_import_cost.py).
    from tfaccel import native

    native.load()


#: ``python -m <these>`` register the op library themselves, TensorFlow's start-up chatter held back unless
#: ``--verbose`` (Python imports the package before their ``main`` could hold it): the demo and the CLI
_SELF_REGISTERING_MAINS = ("tfaccel.demo", "tfaccel")


def _entry_point_registers() -> bool:
    """``python -m tfaccel.demo``, ``tfaccel-demo`` or ``python -m tfaccel ...``: the entry point registers
    the op library itself, as the ``tfaccel`` command does (:mod:`tfaccel.cli.startup`).

    While Python locates the module of ``-m`` (importing its package, this file), ``sys.argv[0]`` is
    ``"-m"``; the module's name is the argument after the interpreter's ``-m``. A script's own ``-m``
    argument (``python app.py -m tfaccel``) is not that.
    """
    if sys.argv[:1] == ["-m"]:
        argv = list(getattr(sys, "orig_argv", []))
        module = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else ""
        return module in _SELF_REGISTERING_MAINS
    return bool(sys.argv) and os.path.basename(sys.argv[0]) == "tfaccel-demo"


#: the name tf_keras saves a traced model's class under (``register_keras_serializable(package="tfaccel")``
#: of the class named ``TracedModel`` in tfaccel/runtime/model.py)
_KERAS_NAME = "tfaccel>TracedModel"


class _KerasRevival:
    """What ``tf.keras.models.load_model`` finds under :data:`_KERAS_NAME` until the model class exists.

    Why a stand-in: a traced model saved with tf_keras names its class, and ``load_model`` rebuilds it
    (with ``on_neuron_ratio`` and the placement ``summary()``) only if that name is registered when it
    runs, typically in a fresh process that just imported tfaccel; the class itself lives in
    ``tfaccel.runtime``, which ``import tfaccel`` must not import (tests/test_import_cost.py).
    """

    @classmethod
    def from_config(cls, config: Any) -> Any:
        from tfaccel.runtime.model import revive

        return revive(config)


def _register_keras_revival() -> None:
    """Register :class:`_KerasRevival` with tf_keras when ``TF_USE_LEGACY_KERAS`` selects it (the only Keras
    whose ``load_model`` reads a SavedModel directory); importing tf_keras after TensorFlow is cheap.
    """
    if os.environ.get("TF_USE_LEGACY_KERAS", "").strip().lower() not in ("1", "true", "yes"):
        return
    try:
        import tf_keras
    except ImportError:  # tf.keras itself will say that tf_keras is missing
        return
    tf_keras.saving.get_custom_objects().setdefault(_KERAS_NAME, _KerasRevival)


_logging.install()  # before anything can warn: a warning names its level and logger

if os.environ.get(_DEFER_OP_LIBRARY) != "1" and not _entry_point_registers():
    _register_op_library()
    _register_keras_revival()

if TYPE_CHECKING:
    from tfaccel.compiler.analyze import analyze_model
    from tfaccel.compiler.pipeline import trace
    from tfaccel.multicore import auto_multicore
    from tfaccel.runtime.export import load
    from tfaccel.runtime.metadata import load_report
    from tfaccel.runtime.model import TracedModel


def __getattr__(name: str) -> Any:
    # the tracing and export modules are imported on first use, keeping ``import tfaccel`` light
    if name == "trace":
        from tfaccel.compiler.pipeline import trace

        return trace
    if name == "analyze_model":
        from tfaccel.compiler.analyze import analyze_model

        return analyze_model
    if name == "auto_multicore":
        from tfaccel.multicore import auto_multicore

        return auto_multicore
    if name == "load":
        from tfaccel.runtime.export import load

        return load
    if name == "load_report":
        from tfaccel.runtime.metadata import load_report  # TF-free: a JSON read

        return load_report
    if name == "TracedModel":  # the type of trace()'s model, for annotations and isinstance
        from tfaccel.runtime.model import TracedModel

        return TracedModel
    if name == "saved_model":
        import tfaccel.saved_model

        return tfaccel.saved_model
    raise AttributeError(f"module 'tfaccel' has no attribute {name!r}")


__all__ = [
    "CaptureError",
    "CaptureTypeError",
    "CaptureValueError",
    "CompileError",
    "ExportError",
    "InputTypeError",
    "InputValueError",
    "OptionsError",
    "PartitionError",
    "SourceError",
    "TraceError",
    "TracedModel",
    "__version__",
    "analyze_model",
    "auto_multicore",
    "load",
    "load_report",
    "saved_model",
    "trace",
]
