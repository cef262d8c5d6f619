"""tfaccel: trace a TensorFlow 2 model, run what an accelerator backend can compile, keep the rest on TF.

The public API is the ``tensorflow-neuron`` tracing API: code written for it runs with
``import tfaccel as tfn``::

    import tfaccel as tfn
    model_neuron = tfn.trace(model, example_inputs)
    print(model_neuron.on_neuron_ratio)
    model_neuron.save("model_dir")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
    TraceError,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from tfaccel.export import load
    from tfaccel.tracing import trace


def __getattr__(name: str) -> Any:
    # TensorFlow is imported on first use of the API, so that the TF-free layers (tfaccel.ir,
    # tfaccel.partition, tfaccel.placement) can be imported and tested without it.
    if name == "trace":
        from tfaccel.tracing import trace

        return trace
    if name == "load":
        from tfaccel.export import load

        return load
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
    "TraceError",
    "__version__",
    "load",
    "trace",
]
