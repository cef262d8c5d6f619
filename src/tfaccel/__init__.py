"""tfaccel: trace a TensorFlow 2 model, run what an accelerator backend can compile, keep the rest on TF.

The public API is the ``tensorflow-neuron`` tracing API: code written for it runs with
``import tfaccel as tfn``::

    import tfaccel as tfn
    model_neuron = tfn.trace(model, example_inputs)
    print(model_neuron.on_neuron_ratio)
    model_neuron.save("model_dir")
"""

from __future__ import annotations

from tfaccel.errors import (
    CaptureError,
    CaptureTypeError,
    CaptureValueError,
    CompileError,
    ExportError,
    OptionsError,
    PartitionError,
    TraceError,
)
from tfaccel.export import load
from tfaccel.trace import trace

__version__ = "0.1.0"

__all__ = [
    "CaptureError",
    "CaptureTypeError",
    "CaptureValueError",
    "CompileError",
    "ExportError",
    "OptionsError",
    "PartitionError",
    "TraceError",
    "__version__",
    "load",
    "trace",
]
