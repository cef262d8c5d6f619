"""A persistent timing cache: measured placement's samples, kept in a file keyed by what was measured.

Why: measured placement (``--placement=profile``) times every candidate subgraph on TF and on each backend.
That costs trace time, and on a busy machine the numbers describe the moment rather than the model. With
the samples stored under the subgraph's content fingerprint (plus variant, precision, CPU and versions), a
second trace of the same model reads them back: no measurement time, identical placement. Like TensorRT's
timing cache, the file is meant to be checked in and shipped to build machines, so it is written
deterministically (sorted keys, rounded samples, no timestamps, one entry per line for readable diffs).

The file is untrusted input (anyone can edit a checked-in file, and ``--timing-cache=PATH`` may point at the
wrong file), so every field is validated and nothing is ever unpickled or evaluated. A bad file never stops
a trace: :meth:`TimingCache.open` and :meth:`TimingCache.save` return warning sentences (what, where, what
to do) instead of raising, and a file that is not a timing cache is never overwritten.

File format (JSON, ASCII)::

    {"entries": {KEY: {"fields": {"fingerprint": ..., "machine": ..., "precision": ..., "variant": ...,
                                  "versions": ...},
                       "samples": [ms, ...],     # 1..64 positive finite numbers, rounded to 4 decimals
                       "seq": N}},               # save generation that last changed the entry (optional, 0)
     "format": "tfaccel-timing-cache", "version": 1}

``KEY`` is :meth:`TimingKey.text`, which is recomputed from ``fields`` on load (a mismatch drops the entry).
``seq`` orders entries by when they were last written, without a clock, so the least recently written are
dropped first when the cache exceeds :data:`MAX_ENTRIES` or :data:`MAX_FILE_BYTES`, and saving the same
content twice gives the same bytes. An empty (0-byte or blank) file counts as an empty cache, so a user may
``touch`` the file first.

Saving merges with what is on disk at that moment (another trace may have added entries), under an advisory
``flock`` on the file's folder, and replaces the file atomically (a temporary file in the same folder, then
``os.replace``), so a reader never sees half a file. Stdlib only: this module never imports TensorFlow.
Not thread-safe: one trace uses one instance from one thread.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import os
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, fields
from pathlib import Path

__all__ = [
    "CACHE_FILE_NAME",
    "FORMAT",
    "MAX_ENTRIES",
    "MAX_FIELD_CHARS",
    "MAX_FILE_BYTES",
    "MAX_SAMPLES",
    "VERSION",
    "TimingCache",
    "TimingKey",
]

CACHE_FILE_NAME = "timing-cache.json"
FORMAT = "tfaccel-timing-cache"
VERSION = 1
#: a larger file is refused unread (and saving drops the oldest entries to stay below it)
MAX_FILE_BYTES = 16 * 1024 * 1024
#: saving keeps at most this many entries, dropping the least recently written
MAX_ENTRIES = 20000
#: samples kept per entry (the last ones put)
MAX_SAMPLES = 64
#: longest key field accepted (a fingerprint, a CPU name, a versions string)
MAX_FIELD_CHARS = 1024
#: samples are stored rounded to this many decimals (0.1 microseconds; timers are no finer)
_DECIMALS = 4
_SMALLEST = 10.0**-_DECIMALS
_HEX = frozenset("0123456789abcdefABCDEF")
#: how long :meth:`TimingCache.save` waits for another process's save before going ahead without the lock
_LOCK_WAIT_S = 10.0
#: what to do, by what was wrong
_TODO = "pass the timing cache option a file path (--timing-cache=FILE) or turn it off (--timing-cache=off)"
_TODO_CONTENT = (
    "delete the file if it is a damaged timing cache; otherwise pass the timing cache option another file "
    "path (--timing-cache=FILE) or turn it off (--timing-cache=off)"
)
_TODO_NEWER = (
    "trace with the tfaccel that wrote it, or pass the timing cache option another file path "
    "(--timing-cache=FILE)"
)


@dataclass(frozen=True)
class TimingKey:
    """What a set of samples measured: a subgraph's content, how it ran, and on what.

    ``fingerprint`` (hex, 1..128 characters) and ``variant`` (``"tf"`` or a backend name) must be non-empty;
    the other fields may be empty (e.g. a CPU whose model name cannot be read) but are compared as given.
    Every field is at most :data:`MAX_FIELD_CHARS` characters. Raises ``ValueError`` otherwise.
    """

    fingerprint: str
    variant: str
    precision: str
    machine: str
    versions: str

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if not isinstance(value, str):
                raise ValueError(f"TimingKey.{item.name} must be a string, got {type(value).__name__}")
            if len(value) > MAX_FIELD_CHARS:
                raise ValueError(f"TimingKey.{item.name} is longer than {MAX_FIELD_CHARS} characters")
        if not self.fingerprint or len(self.fingerprint) > 128 or not set(self.fingerprint) <= _HEX:
            raise ValueError(
                f"TimingKey.fingerprint must be 1..128 hex digits, got {self.fingerprint[:80]!r}"
            )
        if not self.variant:
            raise ValueError("TimingKey.variant must not be empty")

    def text(self) -> str:
        r"""The entry's key in the file: sha256 (hex) of the five fields as a JSON array, in the order
        fingerprint, variant, precision, machine, versions (``json.dumps`` with its defaults, so ASCII
        with ``\u`` escapes). A JSON array, not a joined string, so no two different keys collide.
        """
        joined = json.dumps([self.fingerprint, self.variant, self.precision, self.machine, self.versions])
        return hashlib.sha256(joined.encode("ascii")).hexdigest()

    def to_json(self) -> dict[str, str]:
        return {item.name: getattr(self, item.name) for item in fields(self)}


@dataclass(frozen=True)
class _Entry:
    key: TimingKey
    samples: tuple[float, ...]
    seq: int


class _Refused(Exception):
    """The file cannot be used as a timing cache: ``why`` (a clause after the path) and what to do."""

    def __init__(self, why: str, todo: str = _TODO) -> None:
        super().__init__(why)
        self.why = why
        self.todo = todo


@dataclass
class _Loaded:
    entries: dict[str, _Entry]
    bad: int  # entries dropped as invalid
    first_bad: str  # why the first one was
    raw: bytes | None  # the file's bytes, None when there is no file


class TimingCache:
    """Timed samples by :class:`TimingKey`, read from and saved to one JSON file (or disabled).

    Use :meth:`open` (never the constructor directly): it returns the cache and warning sentences.
    """

    def __init__(self, path: Path | None, entries: dict[str, _Entry] | None = None) -> None:
        self.path = path
        self.enabled = path is not None
        self._entries: dict[str, _Entry] = dict(entries or {})
        self._pending: dict[str, _Entry] = {}

    @classmethod
    def open(cls, setting: str | None, default_dir: str | os.PathLike[str]) -> tuple[TimingCache, list[str]]:
        """The cache for ``setting``: ``None`` means ``default_dir / CACHE_FILE_NAME``; ``"off"`` (any case)
        a disabled cache (``get`` gives ``None``, ``put`` and ``save`` do nothing); anything else a file
        path (``~`` expanded, relative to the current folder). Returns the cache and warning sentences,
        empty when all is well. Never raises for a bad file: the cache starts empty (or with the file's
        valid entries only) and a sentence names the path, what was wrong and what to do. Writes nothing.
        """
        if setting is not None and setting.lower() == "off":
            return cls(None), []
        if setting is not None and not setting.strip():
            return cls(None), [f"the timing cache path is empty, so no timings are cached; {_TODO}"]
        if setting is None:
            path = Path(default_dir).expanduser().absolute() / CACHE_FILE_NAME
        else:
            path = Path(setting).expanduser().absolute()
        try:
            loaded = _load(path)
        except _Refused as refused:
            return cls(path), [
                f"timing cache {path} {refused.why}: its timings are not used (subgraphs are measured); "
                f"{refused.todo}"
            ]
        warnings = []
        if loaded.bad:
            total = loaded.bad + len(loaded.entries)
            warnings.append(
                f"timing cache {path}: {loaded.bad} of {total} entries are not valid and were ignored "
                f"(first: {loaded.first_bad}); the valid ones are used, and the invalid ones are dropped "
                "when the cache is next saved (delete the file to start afresh)"
            )
        return cls(path, loaded.entries), warnings

    def get(self, key: TimingKey) -> tuple[float, ...] | None:
        """The samples stored for ``key`` (milliseconds, rounded as stored), or ``None``."""
        if not self.enabled:
            return None
        entry = self._entries.get(key.text())
        return entry.samples if entry is not None and entry.key == key else None

    @staticmethod
    def as_stored(samples: Sequence[float]) -> tuple[float, ...]:
        """``samples`` as :meth:`put` stores them (the last :data:`MAX_SAMPLES`, rounded): deciding from
        these makes a fresh measurement and its cached copy give exactly the same estimates.
        """
        return _samples(list(samples)[-MAX_SAMPLES:], "samples", allow_tiny=True)

    def put(self, key: TimingKey, samples: Sequence[float]) -> None:
        """Store ``samples`` (milliseconds, positive and finite) for ``key``, replacing what was there.

        Only the last :data:`MAX_SAMPLES` are kept, each rounded to 4 decimals (at least 0.0001). Checked
        even when the cache is off; raises ``ValueError`` for no samples or a bad one (a caller's bug:
        a measurement is never zero, negative or NaN).
        """
        values = list(samples)
        if not values:
            raise ValueError("TimingCache.put needs at least one sample")
        for i, item in enumerate(values):
            _sample(item, f"TimingCache.put samples[{i}]", allow_tiny=True)
        kept = _samples(values[-MAX_SAMPLES:], "samples", allow_tiny=True)
        if not self.enabled:
            return
        entry = _Entry(key, kept, 0)
        self._entries[key.text()] = entry
        self._pending[key.text()] = entry

    def save(self) -> list[str]:
        """Write the entries put since the last save, merged with the file as it is on disk now.

        Nothing is written when nothing was put, when the cache is off, or when the merged content equals
        the file's. Never raises: a path that cannot be written, or a file there that is not a timing cache
        (foreign JSON, garbage, a newer version, too large: never overwritten), gives a warning sentence.
        Entries put stay pending after a failed save. Returns the warning sentences.
        """
        if self.path is None or not self._pending:
            return []
        target = Path(os.path.realpath(self.path))  # through a symbolic link: the link stays a link
        folder = target.parent
        lost = "the timings measured now are not saved"
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            why = "something on its path that should be a folder is a file"
            return [f"timing cache {self.path}: cannot create its folder {folder} ({why}): {lost}; {_TODO}"]
        except OSError as err:
            why = _reason(err)
            return [f"timing cache {self.path}: cannot create its folder {folder} ({why}): {lost}; {_TODO}"]
        warnings: list[str] = []
        with _folder_lock(folder) as locked:
            if not locked:
                warnings.append(
                    f"timing cache {self.path}: could not lock its folder {folder} against other traces "
                    "saving at the same time, so saved without the lock (an entry another trace saves at "
                    "this very moment may be lost)"
                )
            try:
                loaded = _load(target)
            except _Refused as refused:
                why, todo = refused.why, refused.todo
                return [f"timing cache {self.path} {why}, so it is not overwritten: {lost}; {todo}"]
            merged = dict(loaded.entries)
            seq = max((e.seq for e in merged.values()), default=0) + 1
            for name, entry in self._pending.items():
                old = merged.get(name)
                if old is None or (old.key, old.samples) != (entry.key, entry.samples):
                    merged[name] = _Entry(entry.key, entry.samples, seq)
            data, dropped = _serialize(merged)
            if loaded.bad:
                warnings.append(
                    f"timing cache {self.path}: dropped {loaded.bad} entries that were not valid "
                    f"(first: {loaded.first_bad})"
                )
            if dropped:
                warnings.append(
                    f"timing cache {self.path}: dropped the {len(dropped)} least recently written entries to "
                    f"stay within {MAX_ENTRIES} entries and {MAX_FILE_BYTES // (1024 * 1024)} MiB"
                )
                for name in dropped:
                    merged.pop(name)
            if data != loaded.raw:
                try:
                    _replace(target, data)
                except OSError as err:
                    return [f"timing cache {self.path}: cannot write it ({_reason(err)}): {lost}; {_TODO}"]
        self._entries = merged
        self._pending.clear()
        return warnings


def _reason(err: OSError) -> str:
    return err.strerror or str(err)


def _load(path: Path) -> _Loaded:
    """The valid entries of the file at ``path`` (none if it does not exist), or :class:`_Refused`."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; a directory opens and is refused below
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return _Loaded({}, 0, "", None)
    except NotADirectoryError as err:
        raise _Refused("cannot be read: something on its path that should be a folder is a file") from err
    except IsADirectoryError as err:
        raise _Refused("is a directory, not a file") from err
    except OSError as err:
        raise _Refused(f"cannot be read ({_reason(err)})") from err
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise _Refused("is a directory, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise _Refused("is not a regular file (a device, pipe or socket)")
        if info.st_size > MAX_FILE_BYTES:
            raise _Refused(f"is too large ({info.st_size} bytes, more than {MAX_FILE_BYTES})", _TODO_CONTENT)
        with os.fdopen(fd, "rb", closefd=False) as stream:
            raw = stream.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise _Refused(f"cannot be read ({_reason(err)})") from err
    finally:
        os.close(fd)
    if len(raw) > MAX_FILE_BYTES:
        raise _Refused(f"is too large (more than {MAX_FILE_BYTES} bytes)", _TODO_CONTENT)
    if not raw.strip():
        return _Loaded({}, 0, "", raw)
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _Refused("is not a timing cache (not UTF-8 text)", _TODO_CONTENT) from err
    if any(line.startswith(("<<<<<<< ", ">>>>>>> ")) for line in decoded.splitlines()):
        raise _Refused(
            "is not valid JSON: it has unresolved merge conflict markers (<<<<<<< ... >>>>>>>)",
            "resolve the conflict by keeping the lines of both sides (each entry is one line, and the "
            "entries object needs a comma after every line but its last), or delete the file",
        )
    try:
        document = json.loads(decoded)  # NaN and Infinity parse, and are refused as samples below
    except (ValueError, RecursionError) as err:
        raise _Refused(f"is not a timing cache (not JSON: {str(err)[:100]})", _TODO_CONTENT) from err
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        shown = type(document).__name__ if not isinstance(document, dict) else "an object without it"
        raise _Refused(f'is not a timing cache (JSON, but {shown}: no "format": "{FORMAT}")', _TODO_CONTENT)
    version = document.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _Refused(
            f'is not a valid timing cache ("version" must be a positive integer, got {version!r:.40})',
            _TODO_CONTENT,
        )
    if version > VERSION:
        raise _Refused(
            f"was written by a newer tfaccel (format version {version}; this one reads {VERSION})",
            _TODO_NEWER,
        )
    raw_entries = document.get("entries")
    if not isinstance(raw_entries, dict):
        raise _Refused('is not a valid timing cache ("entries" must be a JSON object)', _TODO_CONTENT)
    entries: dict[str, _Entry] = {}
    bad = 0
    first_bad = ""
    for name, value in raw_entries.items():
        try:
            entries[name] = _entry(name, value)
        except ValueError as why:
            bad += 1
            first_bad = first_bad or str(why)
    return _Loaded(entries, bad, first_bad, raw)


def _entry(name: str, value: object) -> _Entry:
    where = f"entries[{name[:70]!r}]"
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a JSON object, got {type(value).__name__}")
    raw_fields = value.get("fields")
    names = [item.name for item in fields(TimingKey)]
    if not isinstance(raw_fields, dict) or not all(isinstance(raw_fields.get(n), str) for n in names):
        raise ValueError(f"{where}.fields must be a JSON object of the strings {', '.join(names)}")
    key = TimingKey(**{n: raw_fields[n] for n in names})  # ValueError: bad field
    if key.text() != name:
        raise ValueError(f"{where}: the key is not the hash of its fields")
    samples = _samples(value.get("samples"), f"{where}.samples", allow_tiny=False)
    seq = value.get("seq", 0)
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2**53:
        raise ValueError(f"{where}.seq must be a non-negative integer, got {seq!r}")
    return _Entry(key, samples, seq)


def _samples(value: object, where: str, allow_tiny: bool) -> tuple[float, ...]:
    """Valid samples, rounded as stored. From the file (``allow_tiny`` False) a value must already be one
    that :meth:`TimingCache.put` could have written.
    """
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_SAMPLES:
        shown = f"{len(value)} items" if isinstance(value, list) else type(value).__name__
        raise ValueError(f"{where} must be a list of 1 to {MAX_SAMPLES} numbers, got {shown}")
    return tuple(_sample(item, f"{where}[{i}]", allow_tiny) for i, item in enumerate(value))


def _sample(item: object, where: str, allow_tiny: bool) -> float:
    """One sample, rounded to 4 decimals and at least 0.0001 (so that it stays positive)."""
    try:
        number = math.nan if isinstance(item, (bool, str, bytes)) else float(item)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if not math.isfinite(number) or number <= 0 or (not allow_tiny and number < _SMALLEST):
        raise ValueError(f"{where} must be a positive finite number of milliseconds, got {item!r:.80}")
    return max(round(number, _DECIMALS), _SMALLEST)


def _serialize(entries: Mapping[str, _Entry]) -> tuple[bytes, list[str]]:
    """The file's bytes, and the names of the entries dropped to respect the limits (oldest first)."""
    order = sorted(entries, key=lambda name: (entries[name].seq, name))  # least recently written first
    dropped = order[: max(0, len(order) - MAX_ENTRIES)]
    kept = order[len(dropped) :]
    while True:
        data = _document({name: entries[name] for name in kept})
        if len(data) <= MAX_FILE_BYTES:
            return data, dropped
        cut = max(1, len(kept) // 8)
        dropped, kept = dropped + kept[:cut], kept[cut:]


def _document(entries: Mapping[str, _Entry]) -> bytes:
    lines = []
    for name in sorted(entries):
        entry = entries[name]
        record = {"fields": entry.key.to_json(), "samples": list(entry.samples), "seq": entry.seq}
        lines.append(f"  {json.dumps(name)}: {json.dumps(record, sort_keys=True)}")
    body = "{\n" + ",\n".join(lines) + "\n }" if lines else "{}"
    text = f'{{\n "entries": {body},\n "format": {json.dumps(FORMAT)},\n "version": {VERSION}\n}}\n'
    return text.encode("ascii")


def _replace(target: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file next to ``target``, then rename it over ``target`` (atomic)."""
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        mode = 0o644  # a new file: readable, as a file meant to be checked in
    fd, partial = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(partial, mode)
        os.replace(partial, target)
    except BaseException:
        with suppress(OSError):
            os.unlink(partial)
        raise


@contextmanager
def _folder_lock(folder: Path) -> Iterator[bool]:
    """An exclusive ``flock`` on ``folder`` (released by the kernel if this process dies); yields whether
    it was taken within :data:`_LOCK_WAIT_S` (False also where folders cannot be locked).
    """
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        yield False
        return
    try:
        deadline = time.monotonic() + _LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
                break
            except OSError as err:
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EINTR) or (
                    time.monotonic() > deadline
                ):
                    locked = False
                    break
                time.sleep(0.02)
        yield locked
    finally:
        os.close(fd)  # closing the only descriptor releases the lock
