"""The OpenVINO op library: built from the installed wheels on first use, cached, loaded into TensorFlow.

Why build here rather than ship a binary: the library links against one TensorFlow minor and one OpenVINO
release (their C++ ABIs change between versions), and both wheels ship the headers and libraries needed to
build it. So the first ``import tfaccel`` on a machine compiles ``openvino_op.cc`` (about 20 s) into a
cache directory keyed by both versions, the source and the install locations; later imports load it in
milliseconds. Concurrent first imports (pytest workers, server processes) serialize on a file lock.

Nothing here is fatal: if OpenVINO is not installed or the build fails, :func:`load` says why, the
``openvino`` backend reports itself unavailable with that reason, and the ``xla`` backend still works.
The cache is trusted only when no one else can write it, and a library is loaded only when it matches the
sha256 recorded when it was built (:mod:`tfaccel.native.trust`).
"""

from __future__ import annotations

import glob
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfaccel.native import model_cache, trust

__all__ = ["OP_TYPE", "OpLibrary", "cache_dir", "compile_cache_stats", "load", "ops"]

logger = logging.getLogger(__name__)

#: The op type the library registers (what a saved model's graph refers to).
OP_TYPE = "TfaccelOpenvino"

_SOURCE = Path(__file__).with_name("openvino_op.cc")


@dataclass(frozen=True)
class OpLibrary:
    """The result of loading: ``path`` when it loaded, else ``error`` says why (for the user)."""

    path: str | None
    error: str | None

    @property
    def available(self) -> bool:
        return self.path is not None


_lock = threading.Lock()
_loaded: OpLibrary | None = None
_module: Any = None  # what tf.load_op_library returned: the op's generated Python wrapper


def cache_dir() -> Path:
    """Where built libraries live: ``$TFACCEL_CACHE_DIR``, else ``$XDG_CACHE_HOME/tfaccel``."""
    explicit = os.environ.get("TFACCEL_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tfaccel"


def load(retry: bool = False) -> OpLibrary:
    """Build (if needed) and load the op library into TensorFlow, once per process.

    A failed build is remembered (next to where the library would be) so that every later import does not
    pay for it again; ``retry`` (``python -m tfaccel.native``) builds again.
    """
    global _loaded
    with _lock:
        if _loaded is None or (retry and not _loaded.available):
            _loaded = _load_once(retry)
        return _loaded


def ops() -> Any:
    """The op's Python wrapper (``ops().tfaccel_openvino(...)``); raises if the library is unavailable."""
    library = load()
    if not library.available:
        raise RuntimeError(f"the OpenVINO op library is unavailable: {library.error}")
    return _module


def compile_cache_stats(release_pending: bool = False) -> dict[str, int]:
    """The op's process-wide compile cache: ``live`` compiled models (each held by a kernel or pending),
    ``pending`` trace-time compilations kept alive for the traced model's first call (at most 64, for
    120 s), ``compiles`` so far, and of those ``from_disk``: imported from OpenVINO's model cache on disk
    (:mod:`tfaccel.native.model_cache`) instead of compiled. ``release_pending`` drops the pending
    references first, so that ``live`` then counts only models some kernel still runs (an unloaded
    model's kernels die with its functions).
    """
    stats = ops().tfaccel_openvino_cache_stats(release_pending=release_pending).numpy()
    live, pending, compiles, from_disk = (int(v) for v in stats)
    return {"live": live, "pending": pending, "compiles": compiles, "from_disk": from_disk}


def _load_once(retry: bool, force: bool = False) -> OpLibrary:
    try:
        ov_libs, ov_version = _openvino_install()
    except LookupError as err:
        return OpLibrary(None, str(err))
    import tensorflow as tf

    def unavailable(message: str) -> OpLibrary:
        logger.warning("the openvino backend is unavailable: %s", message)
        return OpLibrary(None, message)

    try:
        path = _build(ov_libs, ov_version, tf, retry, force)
    except (BuildError, trust.UnsafeCacheError, TimeoutError) as err:
        return unavailable(str(err))
    except OSError as err:  # the cache folder cannot be created or written (read-only home, bad path)
        return unavailable(
            f"the op library's cache folder is not writable ({err}); set TFACCEL_CACHE_DIR to a writable "
            "folder"
        )
    global _module
    if _module is not None:  # rebuilt (--force) after this process loaded it: the new file serves others
        return OpLibrary(str(path), None)
    try:
        _module = tf.load_op_library(str(path))
    except (tf.errors.OpError, OSError) as err:
        return unavailable(f"loading {path} failed: {err}; python -m tfaccel.native --force rebuilds it")
    model_cache.configure(trust.secure_root(cache_dir()))
    return OpLibrary(str(path), None)


class BuildError(Exception):
    """The op library could not be built; the message says what to install or fix."""


def _openvino_install() -> tuple[Path, str]:
    """The ``openvino/libs`` folder of the installed wheel and its version (no import of openvino)."""
    spec = importlib.util.find_spec("openvino")
    if spec is None or not spec.submodule_search_locations:
        raise LookupError("the openvino package is not installed (pip install 'openvino>=2026,<2027')")
    root = Path(next(iter(spec.submodule_search_locations)))
    return root / "libs", importlib.metadata.version("openvino")


def _build(ov_libs: Path, ov_version: str, tf: Any, retry: bool, force: bool = False) -> Path:
    include = ov_libs.parent / "include"
    candidates = sorted(glob.glob(str(ov_libs / "libopenvino.so.*")))
    if not include.is_dir() or not candidates:
        raise BuildError(f"the openvino wheel at {ov_libs.parent} ships no C++ headers or libopenvino.so.*")
    libopenvino = Path(candidates[0])
    source = _SOURCE.read_bytes()
    compile_flags = list(tf.sysconfig.get_compile_flags())
    link_flags = list(tf.sysconfig.get_link_flags())
    key = hashlib.sha256(
        "\0".join([tf.__version__, ov_version, str(ov_libs), *compile_flags, *link_flags]).encode() + source
    ).hexdigest()[:16]
    folder = trust.secure_root(cache_dir()) / f"tf{tf.__version__}-ov{ov_version}-{key}"
    target = folder / "libtfaccel_openvino.so"
    if os.path.lexists(folder):
        trust.check_ours(folder)
    if os.path.lexists(target) and not force:
        why = trust.library_verified(target)
        if why is None:
            return target
        logger.warning("the cached op library %s is not used: %s; rebuilding it", target, why)
    compiler = os.environ.get("CXX", "g++")
    failed = folder / "build-failed.txt"
    if not retry and (message := trust.fresh_failure(failed, key, compiler)) is not None:
        raise BuildError(f"{message} (python -m tfaccel.native builds again)")
    folder.mkdir(mode=0o700, exist_ok=True)
    trust.check_ours(folder)
    with trust.build_lock(folder):  # another process may be building the same library
        if os.path.lexists(target) and not force and trust.library_verified(target) is None:
            return target  # built (or repaired) by the process that held the lock
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            partial = Path(tmp) / target.name
            command = [
                compiler,
                "-std=c++17",
                "-O2",
                "-fPIC",
                "-shared",
                "-Wno-deprecated-declarations",  # TensorFlow's own headers trip it
                str(_SOURCE),
                "-o",
                str(partial),
                *[f for f in compile_flags if not f.startswith("--std")],
                f"-I{include}",
                *link_flags,
                str(libopenvino),
                f"-Wl,-rpath,{ov_libs}",
            ]
            logger.warning(
                "building the OpenVINO op library for TensorFlow %s and OpenVINO %s (once per machine, "
                "about 20 s) into %s",
                tf.__version__,
                ov_version,
                folder,
            )
            start = time.perf_counter()
            try:
                proc = subprocess.run(command, capture_output=True, text=True, timeout=900)
            except FileNotFoundError as err:
                raise BuildError(
                    f"no C++ compiler ({compiler!r}) to build the OpenVINO op library: install g++ "
                    "(apt-get install g++) or set CXX, then import tfaccel again"
                ) from err
            if proc.returncode != 0:
                lines = proc.stderr.strip().splitlines()
                errors = [line for line in lines if ": error:" in line or "undefined reference" in line]
                tail = "\n".join((errors or lines)[-20:])
                message = f"building the OpenVINO op library failed ({' '.join(command)}):\n{tail}"
                trust.write_failure(failed, message, key, compiler)
                raise BuildError(message)
            os.chmod(partial, 0o755)
            trust.write_record(partial, target)
            os.replace(partial, target)  # atomic: a reader never sees half a library
            failed.unlink(missing_ok=True)
        logger.info("built %s in %.1f s", target, time.perf_counter() - start)
    return target


def main(argv: list[str] | None = None) -> int:
    """``python -m tfaccel.native [--force]``: build (again, with ``--force``) and load the library, print
    where it is (or why not). A failed build is retried at once; a corrupt library is rebuilt.
    """
    args = sys.argv[1:] if argv is None else argv
    if args not in ([], ["--force"]):
        print("usage: python -m tfaccel.native [--force]", file=sys.stderr)
        return 2
    global _loaded
    with _lock:
        if args or _loaded is None or not _loaded.available:
            _loaded = _load_once(retry=True, force=bool(args))
        library = _loaded
    if library.available:
        print(library.path)
        return 0
    print(f"the OpenVINO op library is unavailable: {library.error}", file=sys.stderr)
    return 1
