"""The ``assets.extra/tfaccel.json`` a traced SavedModel carries, read without TensorFlow.

Why apart from :mod:`tfaccel.runtime.export`: reading the placement report saved with a model
(``tfaccel.load_report``, ``tfaccel report DIR``) is a JSON read, and must not pay for importing
TensorFlow (seconds), which saving and loading the model itself need.
"""

from __future__ import annotations

import json
import os
from typing import Any

from tfaccel.compiler.report import PlacementReport
from tfaccel.errors import ExportError

__all__ = [
    "FORMAT",
    "METADATA_FILE",
    "READABLE_FORMATS",
    "check_format",
    "fspath",
    "load_report",
    "read_metadata",
]

METADATA_FILE = os.path.join("assets.extra", "tfaccel.json")
#: the largest metadata file read (the report of a 20,000-node graph takes a few MB)
MAX_METADATA_BYTES = 256 * 2**20
#: the metadata format written; format 1 (before file digests) is still read, unverified
FORMAT = 2
READABLE_FORMATS = (1, 2)


def fspath(path: Any, verb: str) -> str:
    """``path`` as a str, or an :class:`ExportError` naming ``verb`` (the call that was given it)."""
    try:
        return os.fsdecode(os.fspath(path))
    except TypeError as err:
        raise ExportError(
            f"{verb}: the path must be a str or os.PathLike (a SavedModel directory), got "
            f"{type(path).__name__}"
        ) from err


def read_metadata(path: str) -> dict[str, Any]:
    """The ``assets.extra/tfaccel.json`` of the traced SavedModel at ``path``; :class:`ExportError` when
    ``path`` is not a directory, was not saved by tfaccel, or was saved in another metadata format.
    """
    if not os.path.exists(path):
        raise ExportError(f"{path!r} does not exist; give the directory of a traced SavedModel")
    if not os.path.isdir(path):
        raise ExportError(f"{path!r} is not a directory; a traced model is a SavedModel directory")
    meta_path = os.path.join(path, METADATA_FILE)
    if not os.path.exists(meta_path):
        raise ExportError(
            f"{path!r} has no {METADATA_FILE}: it was not saved by tfaccel. Load a plain SavedModel with "
            "tf.saved_model.load(path)"
        )
    if not os.path.isfile(meta_path):  # a FIFO would block the read, a device never end it
        raise ExportError(f"{meta_path} is not a regular file; save the traced model again")
    try:
        size = os.path.getsize(meta_path)
        if size > MAX_METADATA_BYTES:
            raise ExportError(
                f"{meta_path} holds {size} bytes, more than a placement report takes "
                f"({MAX_METADATA_BYTES}); it was edited or is not tfaccel's: save the traced model again"
            )
        with open(meta_path, encoding="utf-8") as handle:
            meta: dict[str, Any] = json.load(handle)
    except (OSError, ValueError, RecursionError) as err:  # RecursionError: nesting no report has
        raise ExportError(
            f"{meta_path} cannot be read ({type(err).__name__}: {str(err)[:200]}); save the traced model "
            "again"
        ) from err
    found = check_format(meta, meta_path)
    required = ("layout", "output_names", "report", *(("sha256",) if found >= 2 else ()))
    missing = [key for key in required if key not in meta]
    if missing:
        raise ExportError(f"{meta_path} lacks {', '.join(missing)}; save the traced model again")
    return meta


def check_format(meta: Any, where: str) -> int:
    """The format of the metadata record ``meta`` (read from ``where``), or an :class:`ExportError` when
    it is not a record of a format this tfaccel reads.
    """
    found = meta.get("format") if isinstance(meta, dict) else None
    if not isinstance(meta, dict) or isinstance(found, bool) or found not in READABLE_FORMATS:
        raise ExportError(
            f"{where} has format {found!r}; this tfaccel reads formats "
            f"{', '.join(map(str, READABLE_FORMATS))}"
        )
    return int(found)


def load_report(path: str | os.PathLike[str]) -> PlacementReport:
    """The placement report saved with a traced model, without loading the model.

    Example::

        tfaccel.load_report("traced").render(print)
    """
    path = fspath(path, "load_report")
    try:
        return PlacementReport.from_json(read_metadata(path)["report"])
    except (KeyError, TypeError, ValueError) as err:
        raise ExportError(
            f"the placement report in {os.path.join(path, METADATA_FILE)} is malformed "
            f"({type(err).__name__}: {err}); save the traced model again"
        ) from err
