"""Robustness of the op library's cache (issue 16): planted libraries, corruption, stale markers and locks.

Why: ``import tfaccel`` loads a shared library from a cache folder, so a folder someone else can write is a
way to run code as the user (as root on a server). Each case is data: a change to a private cache holding a
copy of the library this process loaded, and the exact outcome (a refusal naming the path, a rebuild, or the
library). Rebuilds are attempted with a compiler that does not exist, so that an attempt shows as "no C++
compiler" in seconds; one slow test rebuilds for real through ``python -m tfaccel.native``.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import tensorflow as tf

from conftest import SRC, run_python
from tfaccel import native
from tfaccel.native import trust

#: a uid that is not ours (nobody); cases that need it change ownership, which needs root
OTHER = 65534
NO_COMPILER = "/nonexistent/g++"
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")


@pytest.fixture(scope="module")
def built() -> Path:
    library = native.load()
    assert library.available, library.error
    return Path(library.path)


class Cache:
    """A private cache folder under ``base`` with a verified copy of the library at the expected path."""

    def __init__(self, base: Path, built: Path, root: Path | None = None) -> None:
        self.root = root or base / "cache"
        self.folder = self.root / built.parent.name
        self.folder.mkdir(parents=True)
        self.library = self.folder / built.name
        shutil.copy2(built, self.library)
        trust.write_record(self.library, self.library)
        self.record = trust.record_path(self.library)
        self.marker = self.folder / "build-failed.txt"


def _build(
    monkeypatch: pytest.MonkeyPatch, cache: Cache, compiler: str = NO_COMPILER, retry: bool = False
) -> Path:
    monkeypatch.setenv("TFACCEL_CACHE_DIR", str(cache.root))
    monkeypatch.setenv("CXX", compiler)
    monkeypatch.delenv("TFACCEL_BUILD_LOCK_TIMEOUT", raising=False)
    ov_libs, ov_version = native._openvino_install()
    return native._build(ov_libs, ov_version, tf, retry)


def _symlink_library(c: Cache) -> None:
    target = c.folder / "elsewhere.so"
    c.library.rename(target)
    c.library.symlink_to(target)


def _parent(mode: int, owner: int | None = None) -> Callable[[Path], Path]:
    def make(base: Path) -> Path:
        parent = base / "parent"
        parent.mkdir()
        if owner is not None:
            os.chown(parent, owner, -1)
        parent.chmod(mode)
        return parent / "cache"

    return make


def _case(
    name: str,
    root: Callable[[Path], Path] | None,
    change: Callable[[Cache], object],
    refusal: str,
    other_user: bool = False,
) -> object:
    return pytest.param(root, change, refusal, id=name, marks=[ROOT_ONLY] if other_user else [])


def _give_away(*names: str) -> Callable[[Cache], None]:
    """Create (if missing) and give the named cache paths to another user; "library" etc. are attributes."""

    def change(c: Cache) -> None:
        for name in names:
            path = getattr(c, name) if hasattr(c, name) else c.folder / name
            if not path.exists():
                c.library.unlink(missing_ok=True)  # a marker or lock matters when there is no library
                path.write_text("{}")
            os.chown(path, OTHER, -1)

    return change


def _chmod(name: str, mode: int) -> Callable[[Cache], None]:
    return lambda c: getattr(c, name).chmod(mode)


def _link(name: str) -> Callable[[Cache], None]:
    def change(c: Cache) -> None:
        path = getattr(c, name)
        target = path.with_name(path.name + ".elsewhere")
        path.rename(target)
        path.symlink_to(target)

    return change


WRITABLE = "it is writable by group or others"
OWNED = "it is owned by uid 65534"
#: (id, cache root under the test's folder (None: base/cache), change to the cache, what the refusal names)
UNSAFE = [
    _case("root_world_writable", None, _chmod("root", 0o777), rf"cache: {WRITABLE} \(mode 777\)"),
    _case("root_group_writable", None, _chmod("root", 0o775), rf"cache: {WRITABLE} \(mode 775\)"),
    _case("root_of_another_user", None, _give_away("root"), f"cache: {OWNED}", True),
    _case("folder_world_writable", None, _chmod("folder", 0o777), f"-[0-9a-f]{{16}}: {WRITABLE}"),
    _case("folder_of_another_user", None, _give_away("folder"), f"-[0-9a-f]{{16}}: {OWNED}", True),
    _case("library_writable_by_others", None, _chmod("library", 0o757), f"openvino.so: {WRITABLE}"),
    _case("library_of_another_user", None, _give_away("library"), f"openvino.so: {OWNED}", True),
    _case("library_is_a_link", None, _link("library"), "openvino.so: it is a symbolic link"),
    _case("record_of_another_user", None, _give_away("record"), rf"\.sha256: {OWNED}", True),
    _case("record_is_a_link", None, _link("record"), r"\.sha256: it is a symbolic link"),
    _case("parent_writable", _parent(0o777), lambda c: None, f"parent: a parent folder is {WRITABLE[6:]}"),
    _case(
        "parent_of_another_user",
        _parent(0o755, OTHER),
        lambda c: None,
        "parent: a parent folder is owned",
        True,
    ),
    _case("failed_marker_of_another_user", None, _give_away("marker"), f"build-failed.txt: {OWNED}", True),
    _case("lock_of_another_user", None, _give_away(".lock"), rf"\.lock: {OWNED}", True),
]


@pytest.mark.parametrize(("root", "change", "refusal"), UNSAFE)
def test_a_cache_someone_else_can_write_is_refused(tmp_path, built, monkeypatch, root, change, refusal):
    cache = Cache(tmp_path, built, root(tmp_path) if root else None)
    change(cache)
    with pytest.raises(
        trust.UnsafeCacheError, match=f"refusing to build into or load the op library from .*{refusal}"
    ):
        _build(monkeypatch, cache)


@pytest.mark.parametrize("mode", [0o700, 0o755, 0o1777], ids=["private", "readable", "sticky_world_writable"])
def test_a_cache_only_we_can_change_serves_the_library_without_a_build(tmp_path, built, monkeypatch, mode):
    cache = Cache(tmp_path, built, _parent(mode)(tmp_path))
    assert _build(monkeypatch, cache) == cache.library.resolve()  # (no compiler: nothing was built)


def _flip_bytes(c: Cache) -> None:
    c.library.write_bytes(c.library.read_bytes().replace(b"Tfaccel", b"Tfacce1"))


MISMATCH = "its sha256 does not match"
#: (id, damage to the library or its record, what the log says before the rebuild)
DAMAGED = [
    ("flipped_bytes", _flip_bytes, MISMATCH),
    ("truncated", lambda c: c.library.write_bytes(c.library.read_bytes()[:4096]), MISMATCH),
    ("no_record", lambda c: c.record.unlink(), "it has no build record"),
    ("wrong_record", lambda c: c.record.write_text("0" * 64 + "\n"), MISMATCH),
]


@pytest.mark.parametrize(("damage", "why"), [pytest.param(*c[1:], id=c[0]) for c in DAMAGED])
def test_a_damaged_library_is_rebuilt_not_loaded(tmp_path, built, monkeypatch, caplog, damage, why):
    cache = Cache(tmp_path, built)
    damage(cache)
    with caplog.at_level(logging.WARNING), pytest.raises(native.BuildError, match=r"no C\+\+ compiler"):
        _build(monkeypatch, cache)  # the rebuild was attempted (and found no compiler)
    assert f"{cache.library} is not used: {why}" in caplog.text and "; rebuilding it" in caplog.text


def _fail_once(monkeypatch, cache: Cache) -> str:
    cache.library.unlink()
    with pytest.raises(native.BuildError) as failure:
        _build(monkeypatch, cache, compiler="/bin/false")  # a compiler that fails: the marker is written
    assert cache.marker.exists()
    return str(failure.value)


def test_a_recent_failed_build_is_not_retried_on_import_but_is_by_retry(tmp_path, built, monkeypatch):
    cache = Cache(tmp_path, built)
    first = _fail_once(monkeypatch, cache)
    with pytest.raises(native.BuildError) as again:
        _build(monkeypatch, cache, compiler="/bin/false")
    assert str(again.value) == f"{first} (python -m tfaccel.native builds again)"
    with pytest.raises(native.BuildError) as retried:
        _build(monkeypatch, cache, compiler="/bin/false", retry=True)
    assert str(retried.value).startswith("building the OpenVINO op library failed (/bin/false ")
    assert not str(retried.value).endswith("builds again)")  # built again, failed again


def _hours_old(c: Cache) -> None:
    os.utime(c.marker, (time.time() - 2 * 3600,) * 2)


OLD_FORMAT = "building failed (an older tfaccel wrote plain text)"
OTHER_KEY = '{"key": "0123456789abcdef", "compiler": "/bin/false"}'
#: (id, what makes the failed-build marker stale, compiler of the next import): it builds again
STALE_MARKERS = [
    ("hours_old", _hours_old, "/bin/false"),
    ("another_compiler", lambda c: None, NO_COMPILER),
    ("unreadable", lambda c: c.marker.write_text(OLD_FORMAT), "/bin/false"),
    ("another_library", lambda c: c.marker.write_text(OTHER_KEY), "/bin/false"),
]


@pytest.mark.parametrize(("make_stale", "compiler"), [pytest.param(*c[1:], id=c[0]) for c in STALE_MARKERS])
def test_a_stale_failed_build_marker_does_not_disable_the_backend(
    tmp_path, built, monkeypatch, make_stale, compiler
):
    cache = Cache(tmp_path, built)
    _fail_once(monkeypatch, cache)
    make_stale(cache)
    with pytest.raises(native.BuildError) as attempt:
        _build(monkeypatch, cache, compiler=compiler)
    assert "builds again" not in str(attempt.value)  # a new attempt, not the remembered failure


def test_a_lock_left_by_a_dead_process_does_not_block(tmp_path, built, monkeypatch):
    cache = Cache(tmp_path, built)
    cache.library.unlink()
    (cache.folder / ".lock").write_text("999999999")  # its holder is gone: flock locks die with their process
    cache.folder.joinpath(".lock").chmod(0o600)
    with pytest.raises(native.BuildError, match=r"no C\+\+ compiler"):
        _build(monkeypatch, cache)


def test_a_held_lock_is_waited_for_then_named_and_the_next_import_builds(tmp_path, built, monkeypatch):
    cache = Cache(tmp_path, built)
    cache.library.unlink()
    lock = cache.folder / ".lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT, 0o600)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.write(fd, str(os.getpid()).encode())\n"
            "print('held', flush=True)\n"
            "time.sleep(120)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        monkeypatch.setenv("TFACCEL_BUILD_LOCK_TIMEOUT", "1")
        monkeypatch.setenv("TFACCEL_CACHE_DIR", str(cache.root))
        monkeypatch.setenv("CXX", NO_COMPILER)
        ov_libs, ov_version = native._openvino_install()
        with pytest.raises(
            TimeoutError, match=rf"another process \(pid {holder.pid}\) has held the build lock"
        ):
            native._build(ov_libs, ov_version, tf, False)
    finally:
        holder.kill()
        holder.wait()
    with pytest.raises(native.BuildError, match=r"no C\+\+ compiler"):
        _build(monkeypatch, cache)


PLANTED = r"""
#include <stdio.h>
__attribute__((constructor)) static void planted(void) {
  FILE* f = fopen("PLANTED_RAN", "w");
  if (f) { fputs("ran", f); fclose(f); }
}
"""


def test_a_planted_library_in_a_world_writable_cache_never_runs(tmp_path, built):
    cache = Cache(tmp_path, built)
    source = tmp_path / "planted.c"
    source.write_text(PLANTED)
    subprocess.run(["gcc", "-shared", "-fPIC", str(source), "-o", str(cache.library)], check=True)
    trust.write_record(cache.library, cache.library)  # even a matching record: the folder is not private
    cache.root.chmod(0o777)
    code = """
import tensorflow as tf, tfaccel
from tfaccel import native
library = native.load()
assert not library.available, library
assert "refusing to build into or load the op library from" in library.error, library.error
assert "it is writable by group or others (mode 777)" in library.error, library.error
try:
    tfaccel.trace(lambda x: x * 2.0, tf.ones([2]), backend="openvino")
    raise SystemExit("--backend=openvino was accepted")
except tfaccel.OptionsError as err:
    assert "--backend=openvino is unavailable: refusing" in str(err), err
print("ok")
"""
    env = {"PYTHONPATH": SRC, "TFACCEL_CACHE_DIR": str(cache.root), "CXX": NO_COMPILER}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env={**os.environ, **env}, capture_output=True, text=True
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout + proc.stderr
    assert "the openvino backend is unavailable: refusing" in proc.stderr  # logged
    assert not (tmp_path / "PLANTED_RAN").exists()


@pytest.mark.slow
def test_python_m_tfaccel_native_rebuilds_a_corrupt_library(tmp_path, built):
    cache = Cache(tmp_path, built)
    cache.library.write_bytes(cache.library.read_bytes()[:4096])
    env = {"PYTHONPATH": SRC, "TFACCEL_CACHE_DIR": str(cache.root)}
    printed = subprocess.run(
        [sys.executable, "-m", "tfaccel.native"],
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.strip() == str(cache.library.resolve())
    assert trust.library_verified(cache.library) is None
    assert (
        run_python(
            "import tfaccel\nfrom tfaccel import native\nprint(native.load().available)",
            cwd=tmp_path,
            env=env,
        ).strip()
        == "True"
    )
