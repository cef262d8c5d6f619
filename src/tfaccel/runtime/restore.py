"""What a saved traced model says about itself, read back and checked: the pieces every loader needs.

Why a module of its own: a traced model comes back by two roads, :func:`tfaccel.load` (which reads
``assets.extra/tfaccel.json``) and tf_keras' ``tf.keras.models.load_model`` (which rebuilds the model
class from the config saved in ``keras_metadata.pb``, :meth:`.model.Executable.from_restored`). Both must
validate the same record the same way (the files are untrusted), find the same direct eager path and warn
about the same version differences; the model module and the export module both import this one, neither
imports the other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from tfaccel.compiler.examples import InputLayout
from tfaccel.compiler.report import PlacementReport
from tfaccel.errors import ExportError
from tfaccel.runtime.batching import BatchMode, BatchPlan
from tfaccel.runtime.direct import DirectCall, find_direct_restored
from tfaccel.runtime.versions import made_with, parse_made_with, version_warnings

__all__ = ["SavedMetadata", "check_call_flat", "direct_call", "parse_metadata", "warn_versions"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SavedMetadata:
    """The calling convention, report, batch plan and library versions saved with a traced model."""

    layout: InputLayout
    output_names: tuple[str, ...]
    report: PlacementReport
    plan: BatchPlan
    #: the versions that made it (None: saved before they were recorded)
    made_with: dict[str, str] | None


def parse_metadata(meta: Any, where: str) -> SavedMetadata:
    """``meta`` (the record :func:`.saving.metadata_record` wrote) checked and parsed, or an
    :class:`ExportError` naming ``where`` and saying that it was edited or damaged (a bare
    ``KeyError``/``TypeError`` said nothing useful).
    """
    try:
        layout = InputLayout.from_json(meta["layout"])
        for spec in layout.specs:
            tf.as_dtype(spec.dtype)
            if not isinstance(spec.name, str) or not all(isinstance(d, int) and d >= 0 for d in spec.shape):
                raise ValueError(f"input spec {spec} is not a name, a dtype and a shape")
        names = meta["output_names"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise TypeError(f"output_names must be a list of strings, got {names!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"output_names repeat a name: {names}")
        report = PlacementReport.from_json(meta["report"])
        batch = meta.get("dynamic_batch")
        if batch is not None and (not isinstance(batch, int) or isinstance(batch, bool) or batch < 1):
            raise ValueError(f"dynamic_batch must be a positive integer or null, got {batch!r}")
        if "batch_plan" in meta:
            plan = BatchPlan.from_json(meta["batch_plan"])
            if plan.dynamic_batch != batch:
                raise ValueError(f"dynamic_batch {batch!r} does not match the batch_plan's {plan.to_json()}")
        else:  # written before the batch plan was saved: any batch ran as chunks of the traced one
            plan = BatchPlan(BatchMode.CHUNKED, batch, batch, any_batch=True) if batch else BatchPlan()
        recorded = parse_made_with(meta.get("made_with"), where)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        raise ExportError(
            f"{where} is malformed ({type(err).__name__}: {err}); it was edited or damaged: save the traced "
            "model again"
        ) from err
    return SavedMetadata(layout, tuple(names), report, plan, recorded)


def warn_versions(saved: SavedMetadata, where: str) -> None:
    """Log a warning for each library difference that matters between the saving and this process."""
    uses_openvino = any(s.backend == "openvino" for s in saved.report.subgraphs)
    for sentence in version_warnings(saved.made_with, made_with(), uses_openvino):
        logger.warning("%s: %s", where, sentence)


def check_call_flat(call_flat: Any, layout: InputLayout, where: str) -> None:
    """The restored ``tfaccel_call_flat`` must take the metadata's inputs (as many, the same names and
    dtypes, in the same order): an edited record, or one from another model, would feed it wrongly.
    """
    concretes = getattr(call_flat, "concrete_functions", None)
    if not concretes:
        raise ExportError(
            f"{where}: the saved tfaccel_call_flat has no function to call; save the traced model again"
        )
    args = concretes[0].structured_input_signature[0]
    # in order: the function's inputs are flat, so inputs given in another order would be fed swapped
    got = [(getattr(a, "name", None), getattr(getattr(a, "dtype", None), "name", None)) for a in args]
    want = [(s.name, tf.as_dtype(s.dtype).name) for s in layout.specs]
    if got != want:
        raise ExportError(
            f"{where} describes inputs {want} but the saved tfaccel_call_flat takes {got} (name, dtype, in "
            "order): the model was modified or mixed with another; save the traced model again"
        )


def direct_call(call_flat: Any, layout: InputLayout, plan: BatchPlan) -> tuple[DirectCall | None, Any, str]:
    """Direct eager calls for a loaded model whose graph is one openvino call (:mod:`.direct`): the call,
    the output structure, and why not ("" when direct).
    """
    if plan.mode not in (BatchMode.FIXED, BatchMode.ANY):
        return None, None, f"the batch runs {plan.mode.value}"
    concretes = getattr(call_flat, "concrete_functions", None) or []
    if len(concretes) != 1:
        return None, None, f"the loaded function has {len(concretes)} concrete functions, not one"
    (concrete,) = concretes
    try:
        found, why = find_direct_restored(concrete, len(layout.specs))
    except Exception as err:  # a graph of another shape than the analysis knows: the graph path is right
        logger.info("direct eager calls not analysed for this model: %s", err)
        return None, None, f"not analysed: {err}"
    if found is None:
        return None, None, why
    return DirectCall(found), concrete.structured_outputs, ""
