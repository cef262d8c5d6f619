"""Writing a traced model as a SavedModel directory: staged, then moved into place, with tfaccel's metadata.

Why apart from :mod:`tfaccel.runtime.export` (which loads): the model saves itself (``model.save(dir)``)
and loading builds a model, so writing sits below :mod:`tfaccel.runtime.model` and loading above it; one
module doing both would import the model module while the model module imports it. What a saved model
holds is described in :mod:`tfaccel.runtime.export`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import tensorflow as tf

from tfaccel.errors import ExportError
from tfaccel.native.trust import sha256_file
from tfaccel.runtime.metadata import FORMAT, METADATA_FILE, fspath
from tfaccel.runtime.versions import made_with

if TYPE_CHECKING:  # only read here: the model module imports this one
    from tfaccel.runtime.model import Executable

__all__ = ["metadata_record", "save", "write_metadata", "write_metadata_record", "write_saved_model"]


#: what a save writes, so what it replaces in an existing SavedModel directory (anything else there, e.g. a
#: TF Serving warm-up file in ``assets.extra``, is left alone); ``saved_model.pb`` goes last
_OWNED = (
    "saved_model.pb",
    "saved_model.pbtxt",
    "fingerprint.pb",
    "keras_metadata.pb",
    "variables",
    "assets",
    METADATA_FILE,
)


def save(
    executable: Executable,
    path: str,
    endpoints: Mapping[str, Any] | None = None,
    signature_keys: tuple[str, ...] = (),
) -> None:
    """Write ``executable`` as a SavedModel directory at ``path`` (see :func:`write_saved_model`).

    ``endpoints`` are more functions of the saved object and ``signature_keys`` more names of the
    ``serving_default`` signature: ``saved_model.compile`` keeps its source's ``__call__`` and signature key.
    """
    path = fspath(path, "save")
    if path.endswith((".keras", ".h5")):
        raise ExportError(
            f"cannot save a traced model as {os.path.basename(path)!r}: it is a compiled graph, not Keras "
            "layers; save it to a directory (a SavedModel), e.g. model.save('model_dir')"
        )

    def write(staging: str) -> None:
        module = tf.Module()
        module.tfaccel_call_flat = executable.call_flat
        module.tfaccel_weights = executable.weights  # --extract-weights, compiled models: saved as variables
        for name, function in (endpoints or {}).items():
            setattr(module, name, function)
        serving = executable.serving_function()
        signatures = {key: serving for key in ("serving_default", *signature_keys)}
        tf.saved_model.save(module, staging, signatures=signatures)
        write_metadata(staging, executable)

    write_saved_model(path, write)


def write_saved_model(path: str, write: Callable[[str], None]) -> None:
    """Run ``write(staging)`` into a fresh directory next to ``path``, then move the result into ``path``.

    Why staged: a failed save leaves the previous model at ``path`` whole, and saving over an existing
    SavedModel leaves none of its files behind (an old variables shard, ``keras_metadata.pb``, an asset)
    for a loader or a server's completeness check to trip on. ``path`` may be new, an empty directory, or a
    SavedModel directory (whose :data:`_OWNED` entries are replaced); any other non-empty directory is
    refused rather than mixed into.
    """
    path = fspath(path, "save")
    target = os.path.abspath(path)
    _check_target(path, target)
    parent = os.path.dirname(target)
    try:
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.tfaccel-", dir=parent)
    except OSError as err:
        raise ExportError(
            f"cannot write the traced model next to {path!r} ({err.strerror or err}); choose a directory "
            "you can write to"
        ) from err
    try:
        try:
            write(staging)
        except ExportError:
            raise
        except Exception as err:
            raise ExportError(
                f"saving the traced model to {path!r} failed: {type(err).__name__}: {err}"
            ) from err
        try:
            _replace(staging, target)
        except OSError as err:
            raise ExportError(
                f"moving the saved model into {path!r} failed ({err}); the directory may now be incomplete: "
                "save again"
            ) from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_target(path: str, target: str) -> None:
    if not os.path.exists(target):
        return
    if not os.path.isdir(target):
        raise ExportError(f"{path!r} is a file; a traced model is saved as a SavedModel directory")
    try:
        entries = os.listdir(target)
    except OSError as err:
        raise ExportError(
            f"cannot list {path!r} ({err.strerror or err}); choose a directory you can write"
        ) from err
    if entries and not {"saved_model.pb", "saved_model.pbtxt"} & set(entries):
        raise ExportError(
            f"{path!r} is not empty and holds no SavedModel ({', '.join(sorted(entries)[:3])}"
            f"{', ...' if len(entries) > 3 else ''}): save to a new or empty directory, or to a SavedModel "
            "directory to replace that model"
        )


def _replace(staging: str, target: str) -> None:
    os.makedirs(target, exist_ok=True)
    for name in _OWNED:  # saved_model.pb first: no reader sees the old graph with the new variables
        old = os.path.join(target, name)
        if os.path.isdir(old) and not os.path.islink(old):
            shutil.rmtree(old)
        elif os.path.lexists(old):
            os.remove(old)
    extra = os.path.join(staging, os.path.dirname(METADATA_FILE))
    for name in sorted(os.listdir(extra)) if os.path.isdir(extra) else ():
        os.makedirs(os.path.join(target, os.path.dirname(METADATA_FILE)), exist_ok=True)
        os.replace(os.path.join(extra, name), os.path.join(target, os.path.dirname(METADATA_FILE), name))
    entries = sorted(n for n in os.listdir(staging) if n != os.path.dirname(METADATA_FILE))
    for name in sorted(entries, key=lambda n: n == "saved_model.pb"):  # the graph last: a complete model
        os.replace(os.path.join(staging, name), os.path.join(target, name))


def write_metadata(path: str, executable: Executable) -> None:
    """Write ``assets.extra/tfaccel.json`` into the SavedModel just written at ``path`` (its files are
    final: their digests are recorded, see :func:`.export.verify_files`).
    """
    write_metadata_record(path, metadata_record(executable))


def metadata_record(executable: Executable) -> dict[str, Any]:
    """What a saved model says about itself (:func:`.restore.parse_metadata` reads it back): its calling
    convention, placement report, batch plan and the versions that made it. Written to
    ``assets.extra/tfaccel.json``, and into tf_keras' config so that ``load_model`` brings the report back.
    """
    return {
        "layout": executable.layout.to_json(),
        "output_names": list(executable.output_names),
        "report": executable.report.to_json(),
        "dynamic_batch": executable.batch_plan.dynamic_batch,
        "batch_plan": executable.batch_plan.to_json(),
        "made_with": made_with(),
    }


def write_metadata_record(path: str, meta: Mapping[str, Any]) -> None:
    """Write ``meta`` as the ``assets.extra/tfaccel.json`` of the SavedModel at ``path``, in this format and
    with the digests of its files as they are now (final: a later change to them fails the load). Also
    for a rewritten copy of a saved model (:func:`tfaccel.auto_multicore`), whose edited files need their
    own digests.
    """
    record = {**meta, "format": FORMAT, "sha256": _digests(path)}
    target = os.path.join(path, METADATA_FILE)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=1, sort_keys=True)


def _digests(path: str) -> dict[str, str]:
    """SHA-256 of every file of the SavedModel at ``path`` but ``assets.extra`` (where users and TF Serving
    add warm-up files), by ``/``-separated relative path.
    """
    found = {}
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            relative = os.path.relpath(full, path).replace(os.sep, "/")
            if relative.split("/")[0] != os.path.dirname(METADATA_FILE):
                found[relative] = sha256_file(full)
    return found
