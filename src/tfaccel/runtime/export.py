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
from tfaccel.errors import ExportError
from tfaccel.native.trust import sha256_file
from tfaccel.runtime.metadata import METADATA_FILE, fspath, read_metadata
from tfaccel.runtime.model import Executable, TracedModel, make_model
from tfaccel.runtime.restore import SavedMetadata, parse_metadata, warn_versions

__all__ = ["load", "verify_files", "verify_traced"]

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
    where = os.path.join(path, METADATA_FILE)
    saved = _verified(path)
    warn_versions(saved, path)
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
    _check_against_signature(path, restored, saved.layout, saved.output_names, saved.plan.dynamic_batch)
    # the restored variables call_flat reads: tracked again, so the loaded model can be saved again
    weights = list(getattr(restored, "tfaccel_weights", None) or ())
    executable = Executable.from_restored(call_flat, weights, saved, where)
    executable.restored = restored  # type: ignore[attr-defined]  # keep the loaded object alive
    return make_model(executable)


def verify_traced(path: str) -> SavedMetadata | None:
    """For the SavedModel directory at ``path``: None when tfaccel did not save it (no metadata file),
    else its metadata, parsed, with every file checked against the recorded digests (an
    :class:`ExportError` otherwise). What the model server and ``tfaccel run`` check before they run a
    model they do not load through :func:`load`.
    """
    if not os.path.lexists(os.path.join(path, METADATA_FILE)):
        return None
    return _verified(path)


def _verified(path: str) -> SavedMetadata:
    """The metadata of the traced SavedModel at ``path``, parsed, its files checked against the digests."""
    meta = read_metadata(path)
    saved = parse_metadata(meta, os.path.join(path, METADATA_FILE))
    verify_files(path, meta)
    return saved


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
    if "saved_model.pb" not in recorded:  # every save records the graph: an emptied map checks nothing
        raise ExportError(f"{where} records no digest of saved_model.pb: it was edited; save the model again")
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
