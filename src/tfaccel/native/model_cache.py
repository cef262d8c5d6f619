"""OpenVINO's model cache: compiled blobs on disk, so a second process skips compiling the same model.

Why: compiling an openvino subgraph costs from a few hundred milliseconds to seconds per model (ResNet50:
about 0.5 s, BERT: more), paid again by every process that loads the traced model: each server replica,
each Ray or Spark worker, each restart. OpenVINO can export a compiled model and import it later; its own
cache keys each blob on the model's content, the device, the compile configuration and the OpenVINO
version, so a changed model, another precision or stream setting, or another release never finds a stale
blob, and a blob it cannot import is compiled afresh (and replaced).

What tfaccel adds: where the blobs live, that nobody else can plant one there, and a size cap.

* ``$TFACCEL_MODEL_CACHE`` chooses: unset means ``<tfaccel cache folder>/openvino-models`` (see
  :func:`tfaccel.native.cache_dir`), ``off`` means no cache, anything else is the folder to use.
* The folder is created mode 700 and must be ours and not writable by group or others, like the op
  library's cache (:mod:`tfaccel.native.trust`): a blob is a compiled model that would run as ours. A folder
  that fails the check is not used (one warning says why) and models compile as without a cache. A blob
  that is not ours, or that group or others could write (a umask of 002 in a folder the group can enter),
  is removed before use.
* :func:`configure` (run when the op library loads) passes the checked folder to the op in a variable of
  its own, :data:`RESOLVED_ENV` (the user's ``$TFACCEL_MODEL_CACHE`` is left as it was, so a child process
  with another ``$TFACCEL_CACHE_DIR`` resolves its own); the op checks that folder again before each
  compilation (``openvino_op.cc``). It also trims the folder's blobs (``*.blob``, what OpenVINO writes:
  nothing else there is touched) to :data:`MAX_BYTES_ENV` (default :data:`DEFAULT_MAX_BYTES`), least
  recently written first: the cache only ever grows otherwise.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from tfaccel.native import trust

__all__ = [
    "DEFAULT_MAX_BYTES",
    "ENV",
    "MAX_BYTES_ENV",
    "RESOLVED_ENV",
    "configure",
    "folder",
    "in_use",
    "trim",
]

logger = logging.getLogger(__name__)

#: the variable naming the folder (or ``off``): the user's
ENV = "TFACCEL_MODEL_CACHE"
#: the folder :func:`configure` checked (or ``off``): what the op reads
RESOLVED_ENV = "_TFACCEL_MODEL_CACHE_RESOLVED"
#: what OpenVINO names its cache files (only these are trimmed)
BLOB_SUFFIX = ".blob"
#: the variable capping the folder's size in bytes (trimmed when the op library loads)
MAX_BYTES_ENV = "TFACCEL_MODEL_CACHE_MAX_BYTES"
DEFAULT_MAX_BYTES = 4 * 1024**3
_OFF = frozenset({"off", "0", "false", "no"})


def folder(cache_root: Path) -> Path | None:
    """The model cache folder the environment asks for (``None``: off), not yet created or checked."""
    value = os.environ.get(ENV)
    if value is None:
        return cache_root / "openvino-models"
    if value.strip().lower() in _OFF or not value.strip():
        return None
    return Path(value)


def configure(cache_root: Path) -> Path | None:
    """Create and check the model cache folder, clean and trim it, and tell the op (:data:`RESOLVED_ENV`).

    Returns the folder in use, or None when there is none (off, or refused with a warning). Never raises:
    a cache that cannot be set up only costs compile time.
    """
    wanted = folder(cache_root)
    if wanted is None:
        os.environ[RESOLVED_ENV] = "off"
        return None
    try:
        resolved = trust.secure_root(wanted)
        _remove_unsafe_blobs(resolved)
        trim(resolved, _max_bytes())
    except (OSError, trust.UnsafeCacheError) as err:
        logger.warning(
            "OpenVINO's model cache is not used (every process compiles its models): %s. Set %s to a folder "
            "only you can write, or to 'off'",
            err,
            ENV,
        )
        os.environ[RESOLVED_ENV] = "off"
        return None
    os.environ[RESOLVED_ENV] = str(resolved)
    return resolved


def in_use() -> str | None:
    """The folder the op would use now (:data:`RESOLVED_ENV`, checked as the op checks it), or None.

    For the callers of OpenVINO's Python API that must compile exactly as the op does (runtime/direct.py).
    """
    value = os.environ.get(RESOLVED_ENV)
    if not value or value == "off":
        return None
    try:
        info = trust.check_ours(Path(value))
    except (OSError, trust.UnsafeCacheError):
        return None
    return value if stat.S_ISDIR(info.st_mode) else None


def _blobs(root: Path) -> list[tuple[os.stat_result, Path]]:
    """OpenVINO's cache files directly in ``root`` (regular files, links not followed), with their stat.
    A file another process removes meanwhile is skipped.
    """
    found = []
    for entry in os.scandir(root):
        if not entry.name.endswith(BLOB_SUFFIX):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                found.append((entry.stat(follow_symlinks=False), Path(entry.path)))
        except FileNotFoundError:
            continue
    return found


def _remove_unsafe_blobs(root: Path) -> None:
    for info, path in _blobs(root):
        if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            logger.warning("OpenVINO's model cache: removing %s (not yours, or writable by others)", path)
            path.unlink(missing_ok=True)


def _max_bytes() -> int:
    raw = os.environ.get(MAX_BYTES_ENV)
    if raw is None:
        return DEFAULT_MAX_BYTES
    try:
        value = int(raw)
        if value < 0:
            raise ValueError(raw)
    except ValueError:
        logger.warning("%s=%r is not a number of bytes; using %d", MAX_BYTES_ENV, raw, DEFAULT_MAX_BYTES)
        return DEFAULT_MAX_BYTES
    return value


def trim(root: Path, max_bytes: int) -> list[Path]:
    """Remove the least recently written blobs (``*.blob``) of ``root`` until they total at most
    ``max_bytes``; returns what was removed. Nothing else in ``root`` is counted or touched.
    """
    blobs = sorted((info.st_mtime, info.st_size, path) for info, path in _blobs(root))
    total = sum(size for _, size, _ in blobs)
    removed = []
    for _, size, path in blobs:
        if total <= max_bytes:
            break
        try:
            path.unlink()
        except FileNotFoundError:  # another process removed it first
            pass
        else:
            removed.append(path)
        total -= size
    if removed:
        logger.info(
            "OpenVINO's model cache %s: removed %d old blob(s) to stay under %d bytes",
            root,
            len(removed),
            max_bytes,
        )
    return removed
