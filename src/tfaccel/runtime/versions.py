"""The library versions a saved model was made with, and which differences matter when it is loaded.

Why: a traced model holds what one TensorFlow and one OpenVINO release produced: XLA-compiled functions and
OpenVINO IR, and (for openvino subgraphs) it runs through an op library built against the loading
process's TensorFlow and OpenVINO. Another TensorFlow minor or OpenVINO release may load it and answer
differently, or refuse it with an error far from the cause; a warning naming both versions says where to
look. Patch releases are not worth a warning. Reading is strict (the file is untrusted): a malformed record
is an error, a missing one (a model saved before versions were recorded) is not.
"""

from __future__ import annotations

import importlib.metadata
import platform
from collections.abc import Mapping
from typing import Any

__all__ = ["made_with", "parse_made_with", "version_warnings"]

#: the packages recorded, and how many leading version parts make a "release" that matters
_RELEASE_PARTS = {"tensorflow": 2, "openvino": 2}


def made_with() -> dict[str, str]:
    """The versions of this process's tfaccel, TensorFlow, OpenVINO and Python (``none``: not there).

    TensorFlow's and OpenVINO's come from the modules themselves (``tf.__version__``,
    ``openvino.get_version()``), not from package metadata: ``tensorflow-cpu``, nightlies and conda builds
    install them under other distribution names.
    """
    import tensorflow as tf

    found = {"python": platform.python_version(), "tensorflow": tf.__version__}
    try:
        found["tfaccel"] = importlib.metadata.version("tfaccel")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree without installing
        found["tfaccel"] = "none"
    try:
        import openvino

        found["openvino"] = openvino.get_version().split("-")[0]
    except ImportError:
        found["openvino"] = "none"
    return found


def parse_made_with(value: Any, where: str) -> dict[str, str] | None:
    """The recorded versions, or None when absent; ``ValueError`` naming ``where`` when malformed."""
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError(f"{where}: made_with must map package names to version strings, got {value!r}")
    return dict(value)


def _release(version: str, parts: int) -> tuple[str, ...]:
    return tuple(version.split("+")[0].split(".")[:parts])


def version_warnings(
    recorded: Mapping[str, str] | None, here: Mapping[str, str], uses_openvino: bool
) -> list[str]:
    """Sentences for the differences that matter: another TensorFlow minor, or (for a model with openvino
    subgraphs) another OpenVINO release, than the model was saved with.
    """
    if not recorded:
        return []
    warnings = []
    for package, parts in _RELEASE_PARTS.items():
        if package == "openvino" and not uses_openvino:
            continue
        saved, now = recorded.get(package), here.get(package)
        if saved in (None, "none") or now in (None, "none"):
            continue  # not recorded, or not installed on one side (a model that needs it says so itself)
        assert saved is not None and now is not None
        if _release(saved, parts) == _release(now, parts):
            continue
        warnings.append(
            f"this model was saved with {package} {saved} and is loaded with {package} {now}: another "
            "release may refuse it or answer differently; trace it again with this version (its answers "
            f"were checked against the original only with {package} {saved})"
        )
    return warnings
