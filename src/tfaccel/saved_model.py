"""The legacy ``saved_model.compile`` API: a SavedModel in, a traced SavedModel out.

The reference keeps ``tensorflow.neuron.saved_model.compile`` available under TF 2.x, with the limited
capabilities of ``trace``; so does tfaccel, built on :func:`tfaccel.trace` (one code path, one set of
placement rules and flags) with a ``DeprecationWarning`` pointing there. New code should call ``trace``
on the model object, or use the ``tfaccel trace`` command on a SavedModel directory.
"""

from __future__ import annotations

import os
import shlex
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from tfaccel.compiler.options import parse_flags
from tfaccel.compiler.sources import example_inputs, open_signature
from tfaccel.errors import OptionsError

__all__ = ["compile"]

#: keywords of the reference's compile that tfaccel has no equivalent for; passing one raises with advice
_NOT_SUPPORTED = {
    "no_fuse_ops": "use tfaccel.trace(..., subgraph_builder_function=lambda node: node.name not in ops)",
    "force_fuse_ops": "use tfaccel.trace(..., subgraph_builder_function=lambda node: node.name in ops)",
    "compiler_timeout": "tfaccel's backends compile in-process; there is no compiler timeout",
    "compiler_recovery": "a subgraph a backend cannot compile always goes back to TensorFlow",
    "convert_constants_to_variables": "use --extract-weights (compiler_args='--extract-weights')",
}


def compile(
    model_dir: str | os.PathLike[str],
    new_model_dir: str | os.PathLike[str],
    batch_size: int = 1,
    model_shape_feed_dict: Mapping[str, Sequence[int]] | None = None,
    model_feed_dict: Mapping[str, Any] | None = None,
    tags: Any = None,
    signature_def_key: str | None = None,
    minimum_segment_size: int | None = None,
    compiler_workdir: str | os.PathLike[str] | None = None,
    compiler_args: str | Sequence[str] | None = None,
    **unsupported: Any,
) -> dict[str, Any]:
    """Trace the SavedModel at ``model_dir`` and save the traced model at ``new_model_dir``.

    Deprecated: use :func:`tfaccel.trace` (or ``tfaccel trace SRC DST`` on the command line).
    Example inputs come from ``model_feed_dict`` (arrays by input name), else from
    ``model_shape_feed_dict`` (shapes by input name), else from the signature with an unknown first
    dimension set to ``batch_size``. ``compiler_args`` are trace flags (``"--backend=xla"`` or a list of
    them); ``compiler_workdir`` is ``--workdir``. Returns ``{"OnNeuronRatio": ratio, "report": the
    placement report as JSON}``.

    Example::

        import tfaccel as tfn
        result = tfn.saved_model.compile("resnet_savedmodel", "resnet_traced", batch_size=4)
        print(result["OnNeuronRatio"])
    """
    warnings.warn(
        "tfaccel.saved_model.compile is deprecated; use tfaccel.trace(model, example_inputs) and "
        "model.save(dir), or the `tfaccel trace SRC DST` command",
        DeprecationWarning,
        stacklevel=2,
    )
    if unsupported:
        name = sorted(unsupported)[0]
        advice = _NOT_SUPPORTED.get(name)
        if advice is None:
            raise TypeError(f"saved_model.compile() got an unexpected keyword argument {name!r}")
        raise OptionsError(f"saved_model.compile(): {name}= is not supported by tfaccel; {advice}")
    from tfaccel.compiler.pipeline import trace  # compile is a thin layer over trace

    options: dict[str, Any] = {}
    if compiler_args is not None:
        text = compiler_args if isinstance(compiler_args, str) else shlex.join(compiler_args)
        options.update(parse_flags(text, "saved_model.compile(compiler_args=...)"))
    if compiler_workdir is not None:
        options["workdir"] = os.fspath(compiler_workdir)
    if minimum_segment_size is not None:
        options["min_segment_size"] = minimum_segment_size
    sig = open_signature(model_dir, signature_def_key, tags)
    examples = example_inputs(
        sig,
        batch_size=None if batch_size == 1 else batch_size,  # 1 is the default, not a demand
        arrays=dict(model_feed_dict) if model_feed_dict is not None else None,
        shapes=model_shape_feed_dict,
    )
    traced = trace(sig.function, examples, **options)
    traced.save(os.fspath(new_model_dir))
    report = traced.placement_report
    return {"OnNeuronRatio": report.ratio, "report": report.to_json()}
