"""Load traced models saved as SavedModels (:mod:`tfaccel.runtime.saving` writes them).

What a saved model holds: ``serving_default`` (inputs by their original names, outputs as a flat dict, for
``saved_model_cli``, TF Serving and ``tf.saved_model.load`` in a process that never imports tfaccel), a
``tfaccel_call_flat`` function returning the original nested output structure, and
``assets.extra/tfaccel.json`` with the calling convention and the placement report, which
:func:`load` uses to give back a model that is called exactly like the traced one.

Loading builds a model, so this module sits above :mod:`tfaccel.runtime.model`; the model saves itself
through :mod:`tfaccel.runtime.saving`, below it (no import cycle).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import tensorflow as tf

from tfaccel import native
from tfaccel.compiler.examples import InputLayout
from tfaccel.compiler.report import PlacementReport
from tfaccel.errors import ExportError
from tfaccel.native.trust import sha256_file
from tfaccel.runtime.batching import BatchMode, BatchPlan
from tfaccel.runtime.direct import DirectCall, find_direct_restored
from tfaccel.runtime.metadata import METADATA_FILE, fspath, read_metadata
from tfaccel.runtime.model import Executable, TracedModel, make_model
from tfaccel.runtime.versions import made_with, parse_made_with, version_warnings

__all__ = ["load", "verify_files"]

logger = logging.getLogger(__name__)


def load(path: str | os.PathLike[str]) -> TracedModel:
    """Load a traced SavedModel back into a model called like the original traced one.

    Example::

        model = tfaccel.trace(keras_model, x)
        model.save("traced")
        again = tfaccel.load("traced")
        again(x)
    """
    path = fspath(path, "load")
    meta = read_metadata(path)
    layout, output_names, report, plan = parse_metadata(path, meta)
    verify_files(path, meta)
    try:
        recorded = parse_made_with(meta.get("made_with"), os.path.join(path, METADATA_FILE))
    except ValueError as err:
        raise ExportError(f"{err}; it was edited or damaged: save the traced model again") from err
    uses_openvino = any(s.backend == "openvino" for s in report.subgraphs)
    for sentence in version_warnings(recorded, made_with(), uses_openvino):
        logger.warning("%s: %s", path, sentence)
    try:
        restored = tf.saved_model.load(path)
    except Exception as err:
        if native.OP_TYPE in str(err) and "not registered" in str(err):
            raise ExportError(
                f"{path!r} was traced with the openvino backend, and this process has no OpenVINO op "
                f"library: {native.load().error}. Fix that (python -m tfaccel.native says why), or trace "
                "again with --backend=xla for a model that needs TensorFlow alone"
            ) from err
        raise ExportError(f"loading the SavedModel at {path!r} failed: {err}") from err
    call_flat = getattr(restored, "tfaccel_call_flat", None)
    if call_flat is None:
        raise ExportError(f"{path!r} lacks the tfaccel_call_flat function; re-save it with this tfaccel")
    _check_against_signature(path, restored, layout, output_names, plan.dynamic_batch)
    direct, structure, why = _direct(call_flat, layout, plan)
    executable = Executable(
        call_flat,
        layout,
        output_names,
        report,
        batch_plan=plan,
        # the restored variables call_flat reads: tracked again, so the loaded model can be saved again
        weights=list(getattr(restored, "tfaccel_weights", None) or ()),
        direct=direct,
        output_structure=structure,
        direct_why=why,
    )
    executable.restored = restored  # type: ignore[attr-defined]  # keep the loaded object alive
    return make_model(executable)


def _direct(call_flat: Any, layout: InputLayout, plan: BatchPlan) -> tuple[DirectCall | None, Any, str]:
    """Direct eager calls for the loaded model when its graph is one openvino call (runtime/direct.py)."""
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


def verify_files(path: str, meta: dict[str, Any]) -> None:
    """Check the SavedModel's files against the digests recorded when it was saved.

    Why: TensorFlow checks the variables' checksums but not ``saved_model.pb``, so a flipped byte in a
    constant (the weights of a model traced without ``--extract-weights``) would load and answer wrongly.
    A damaged or edited file is an :class:`ExportError` naming it; a model saved before digests were
    recorded is not checked.
    """
    recorded = meta.get("sha256")
    if recorded is None:
        return
    where = os.path.join(path, METADATA_FILE)
    if not isinstance(recorded, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in recorded.items()
    ):
        raise ExportError(f"{where} is malformed (sha256 is not a map of file digests); save the model again")
    for relative, want in sorted(recorded.items()):
        full = os.path.join(path, *relative.split("/"))
        if ".." in relative.split("/") or not os.path.isfile(full):
            raise ExportError(
                f"{path!r} lacks {relative}, which was saved with the model; the directory is incomplete: "
                "copy it again or save the traced model again"
            )
        try:
            got = sha256_file(full)
        except OSError as err:
            raise ExportError(f"cannot read {full} ({err.strerror or err}); check its permissions") from err
        if got != want:
            raise ExportError(
                f"{full} is not the file saved with the model (its SHA-256 differs from the one recorded in "
                f"{METADATA_FILE}): it was damaged or edited; copy the model again or save it again"
            )


def parse_metadata(
    path: str, meta: dict[str, Any]
) -> tuple[InputLayout, tuple[str, ...], PlacementReport, BatchPlan]:
    """The metadata's layout, output names, report and batch plan, or an :class:`ExportError` saying
    that the file was edited or damaged (a bare ``KeyError``/``TypeError`` said nothing useful).
    """
    where = os.path.join(path, METADATA_FILE)
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
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        raise ExportError(
            f"{where} is malformed ({type(err).__name__}: {err}); it was edited or damaged: save the traced "
            "model again"
        ) from err
    return layout, tuple(names), report, plan


def _check_against_signature(
    path: str, restored: Any, layout: InputLayout, output_names: tuple[str, ...], batch: int | None
) -> None:
    """The metadata must describe the saved graph: same inputs (names, dtypes, traced shapes, batch) as
    ``serving_default`` and as many outputs; a metadata file from another model would call it wrongly.
    """
    try:
        signature = restored.signatures["serving_default"]
        inputs = signature.structured_input_signature[1]
        outputs = signature.structured_outputs
    except (AttributeError, KeyError, IndexError, TypeError) as err:
        raise ExportError(f"{path!r} has no usable serving_default signature ({err}); save it again") from err
    problems = []
    if sorted(inputs) != sorted(s.name for s in layout.specs):
        problems.append(f"inputs {sorted(s.name for s in layout.specs)} vs {sorted(inputs)}")
    else:
        for spec in layout.specs:
            want = spec.tensor_spec(dynamic_batch=batch is not None)
            got = inputs[spec.name]
            if got.dtype != want.dtype or got.shape.as_list() != want.shape.as_list():
                problems.append(
                    f"input {spec.name!r} {want.dtype.name}{want.shape} vs {got.dtype.name}{got.shape}"
                )
    if sorted(outputs) != sorted(output_names):
        problems.append(f"outputs {sorted(output_names)} vs {sorted(outputs)}")
    if problems:
        raise ExportError(
            f"{os.path.join(path, METADATA_FILE)} does not match the saved graph's serving_default "
            f"signature ({'; '.join(problems)}): the directory was modified or mixed with another model; "
            "save the traced model again"
        )
