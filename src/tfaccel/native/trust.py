"""When the op library's cache may be trusted: ownership, permissions, a build record, markers and the lock.

Why: ``import tfaccel`` loads a shared library from a cache folder into the process, so whoever can write
that folder runs code as the user (as root, on a server). The cache is therefore used only when the user
alone can change it: the library, its folder and the cache root are owned by the user and not writable by
group or others, no symbolic links among them, and every folder above the root is owned by the user or root
and not writable by others unless sticky (as ``/tmp`` is). The library's sha256 is recorded at build time
and checked before every load, so a truncated or corrupted library is rebuilt instead of loaded.

A failed build leaves a marker so that later imports do not pay for the same failure again, but only for a
while (:data:`FAILED_MARKER_TTL_S`) and only for the same compiler; the build lock (``flock``, released by the
kernel when its holder dies) is waited for at most :func:`lock_timeout_s` seconds.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "FAILED_MARKER_TTL_S",
    "UnsafeCacheError",
    "build_lock",
    "check_ours",
    "fresh_failure",
    "library_verified",
    "record_path",
    "secure_root",
    "sha256_file",
    "write_failure",
    "write_record",
]

#: a failed build is not retried on import for this long (``python -m tfaccel.native`` retries at once)
FAILED_MARKER_TTL_S = 3600.0
_GROUP_OR_OTHER_WRITE = stat.S_IWGRP | stat.S_IWOTH


class UnsafeCacheError(Exception):
    """The cache could be changed by someone else: nothing in it is built into or loaded."""


def _refuse(path: Path, why: str) -> UnsafeCacheError:
    return UnsafeCacheError(
        f"refusing to build into or load the op library from {path}: {why}, so another user could plant "
        "code there. Use a folder only you can write: set TFACCEL_CACHE_DIR, or fix the ownership/mode "
        "(chmod go-w)"
    )


def check_ours(path: Path) -> os.stat_result:
    """``path`` (not followed if a link) is owned by this user and not writable by group or others."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise _refuse(path, "it is a symbolic link")
    if info.st_uid != os.geteuid():
        raise _refuse(path, f"it is owned by uid {info.st_uid}, not by you (uid {os.geteuid()})")
    if info.st_mode & _GROUP_OR_OTHER_WRITE:
        raise _refuse(path, f"it is writable by group or others (mode {stat.S_IMODE(info.st_mode):o})")
    return info


def _check_ancestor(path: Path) -> None:
    """A folder above the cache root: owned by us or root, and not writable by others unless sticky."""
    info = os.stat(path)
    if info.st_uid not in (os.geteuid(), 0):
        raise _refuse(path, f"a parent folder is owned by uid {info.st_uid}, neither you nor root")
    if info.st_mode & _GROUP_OR_OTHER_WRITE and not info.st_mode & stat.S_ISVTX:
        mode = stat.S_IMODE(info.st_mode)
        raise _refuse(
            path, f"a parent folder is writable by group or others without the sticky bit ({mode:o})"
        )


def secure_root(root: Path) -> Path:
    """The cache root, created (mode 700) if missing, resolved, and checked with every folder above it."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    resolved = root.resolve()
    check_ours(resolved)
    for parent in resolved.parents:
        _check_ancestor(parent)
    return resolved


def record_path(library: Path) -> Path:
    return library.with_name(library.name + ".sha256")


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks (also used by ``export`` for saved files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_record(library: Path, final: Path) -> None:
    """Record ``library``'s sha256 as the build record of ``final`` (where it is about to be moved)."""
    record = record_path(final)
    partial = record.with_name(record.name + f".{os.getpid()}.tmp")
    partial.write_text(sha256_file(library) + "\n")
    os.chmod(partial, 0o644)
    os.replace(partial, record)


def library_verified(library: Path) -> str | None:
    """None if ``library`` is ours, safe and matches its build record; else why not (it is then rebuilt).

    Raises :class:`UnsafeCacheError` for a library or record someone else could have written.
    """
    check_ours(library)
    record = record_path(library)
    if not os.path.lexists(record):
        return "it has no build record"
    check_ours(record)
    if record.read_text().strip() != sha256_file(library):
        return "its sha256 does not match its build record (corrupt or replaced)"
    return None


def write_failure(marker: Path, message: str, key: str, compiler: str) -> None:
    marker.write_text(json.dumps({"key": key, "compiler": compiler, "message": message}))


def fresh_failure(marker: Path, key: str, compiler: str) -> str | None:
    """The message of a failed build that still stands: same library key and compiler, recent enough.

    Anything else (another compiler, an old or unreadable marker, one from an older tfaccel) is stale:
    the build is tried again.
    """
    if not os.path.lexists(marker):
        return None
    check_ours(marker)
    if time.time() - marker.stat().st_mtime > FAILED_MARKER_TTL_S:
        return None
    try:
        failure = json.loads(marker.read_text())
    except ValueError:
        return None
    if not isinstance(failure, dict) or failure.get("key") != key or failure.get("compiler") != compiler:
        return None
    return str(failure.get("message", "the last build failed"))


def lock_timeout_s() -> float:
    """How long to wait for another process's build (``TFACCEL_BUILD_LOCK_TIMEOUT``, default 900 s)."""
    return float(os.environ.get("TFACCEL_BUILD_LOCK_TIMEOUT", "900"))


@contextmanager
def build_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder/.lock`` (one builder at a time); the holder's pid is written in it for messages.

    A lock file left by a process that died is free (the kernel releases ``flock`` locks with their
    holder); a live holder is waited for at most :func:`lock_timeout_s`, then the build gives up with
    an error naming it (the next import tries again).
    """
    path = folder / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        check_ours(path)
        deadline = time.monotonic() + lock_timeout_s()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                    raise TimeoutError(
                        f"another process (pid {holder}) has held the build lock {path} for over "
                        f"{lock_timeout_s():.0f} s; if it is stuck, end it, then import tfaccel again"
                    ) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
