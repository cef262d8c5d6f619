"""Model lifecycle: numeric version directories under each base path, polled, loaded, warmed, swapped.

The rules (TF Serving's, plus one of ours):
- The version policy picks the versions to serve: the latest N (default 1), all, or specific ones.
- A new version is loaded and warmed before an old one it replaces is unloaded; requests in flight keep
  their reference to the old version and finish on it (an unloaded version is freed when the last one
  lets go).
- Ours: after an unload, each poll runs the garbage collector until the unloaded version is gone. A
  loaded TensorFlow graph is full of reference cycles, and a server allocates too few Python objects for
  the collector's oldest generation to run on its own: without this, every rolled-over version (its
  graph, weights and compiled model) stayed in memory.
- Ours: a version directory is loaded only once its files have stopped changing between two polls and
  every file its ``variables.index`` announces is there, so a version being copied in is never
  half-loaded; a load that fails is retried when the directory changes again, and the failure is reported
  in the model status meanwhile.
- Only ASCII-decimal directory names are versions (``int()`` would also take ``²`` or ``٣``); anything else
  in a base path is ignored, with one log line per name. One model's broken base path never stops the
  polling of the others.

Every load, unload and failure is one structured (JSON) log line.
"""

from __future__ import annotations

import enum
import gc
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import grpc

from tfaccel.serving.config import ModelConfig
from tfaccel.serving.errors import ServingError
from tfaccel.serving.logs import log_event
from tfaccel.serving.servable import Servable, load_servable

__all__ = ["Manager", "State", "VersionRecord", "log_event"]

logger = logging.getLogger("tfaccel.serving")


class State(enum.IntEnum):
    """``ModelVersionStatus.State`` values of TF Serving's model status API."""

    UNKNOWN = 0
    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclass
class VersionRecord:
    version: int
    state: State = State.START
    error_code: grpc.StatusCode = grpc.StatusCode.OK
    error_message: str = ""
    servable: Servable | None = None
    fingerprint: tuple[tuple[str, int, int], ...] | None = None
    failed_fingerprint: tuple[tuple[str, int, int], ...] | None = None


@dataclass
class _Model:
    config: ModelConfig
    versions: dict[int, VersionRecord] = field(default_factory=dict)
    #: names in the base path that are not versions, each logged once
    ignored: set[str] = field(default_factory=set)


#: the largest version TF Serving's protos carry (``int64``)
_MAX_VERSION = 2**63 - 1


def _fingerprint(path: str) -> tuple[tuple[str, int, int], ...]:
    entries = []
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            try:
                stat = os.stat(full)
            except FileNotFoundError:  # removed while we looked: the directory is still changing
                continue
            entries.append((os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


_INDEX = os.path.join("variables", "variables.index")


def _announced_shards(index_path: str) -> int | None:
    """How many data shards a checkpoint index announces (its header's ``num_shards``); None when the
    header cannot be read (a truncated or foreign file: then the loader has the last word).

    The index is a table whose first entry, at offset 0, has the empty key and the BundleHeaderProto as
    its value: three varints (shared and unshared key lengths, value length), then the value.
    """
    from tensorflow.core.protobuf import tensor_bundle_pb2

    try:
        with open(index_path, "rb") as handle:
            head = handle.read(4096)
        pos, numbers = 0, []
        for _ in range(3):
            value = shift = 0
            while True:
                byte = head[pos]
                pos += 1
                value |= (byte & 0x7F) << shift
                shift += 7
                if byte < 0x80:
                    break
            numbers.append(value)
        shared, unshared, length = numbers
        if shared or unshared or pos + length > len(head):
            return None
        header = tensor_bundle_pb2.BundleHeaderProto.FromString(head[pos : pos + length])
    except (OSError, IndexError, ValueError):
        return None
    return header.num_shards if header.num_shards > 0 else None


def _complete(path: str, fingerprint: tuple[tuple[str, int, int], ...]) -> bool:
    """The files a SavedModel needs are all there: the graph and, if it has variables, the index and
    every data shard the index announces (a copy in progress usually lacks one of them). Judged by the
    index's own shard count, never by which stray ``variables.data-*`` file is listed first, so the answer
    does not depend on set order (PYTHONHASHSEED); extra files, e.g. stale shards of an earlier save, are
    ignored.
    """
    names = {entry[0] for entry in fingerprint}
    if "saved_model.pb" not in names and "saved_model.pbtxt" not in names:
        return False
    if not any(n.startswith("variables" + os.sep) for n in names):
        return True
    if _INDEX not in names:
        return False
    total = _announced_shards(os.path.join(path, _INDEX))
    if total is None:
        return True  # unreadable header: settled files go to the loader, which says what is wrong
    prefix = os.path.join("variables", "variables.data")
    return all(f"{prefix}-{i:05d}-of-{total:05d}" in names for i in range(total))


def is_version_name(name: str) -> bool:
    """ASCII digits only (``str.isdigit`` also accepts ``²``, which ``int()`` then refuses), within int64."""
    return name.isascii() and name.isdecimal() and int(name) <= _MAX_VERSION


def _versions_on_disk(base_path: str) -> tuple[dict[int, str], list[str]] | None:
    """Version directories by number, and the other names found; None when the base path cannot be
    listed (nothing is unloaded then).
    """
    try:
        names = os.listdir(base_path)
    except OSError as err:
        log_event("poll_failed", base_path=base_path, error=f"{type(err).__name__}: {err}")
        return None
    found, other = {}, []
    for name in sorted(names):
        full = os.path.join(base_path, name)
        if is_version_name(name) and os.path.isdir(full):
            found[int(name)] = full
        else:
            other.append(name)
    return found, other


def _labelled(model: _Model, version: int | None, label: str | None) -> int | None:
    """The version a request names, through its label when it gives one."""
    if not label:
        return version
    if label not in model.config.labels:
        raise ServingError.invalid(f"Unrecognized servable version label: {label}")
    return model.config.labels[label]


class Manager:
    """Loads and serves the configured models; ``resolve`` hands out servables to requests."""

    def __init__(self, models: Iterable[ModelConfig], warmup: bool = True) -> None:
        self._models = {m.name: _Model(m) for m in models}
        self._lock = threading.Lock()
        self._warmup = warmup
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: unloaded versions not yet freed (see the module docstring)
        self._unloaded: list[weakref.ref[Servable]] = []
        #: called with each servable that is unloaded (e.g. the batcher drops its queues)
        self.on_unload: list[Callable[[Servable], None]] = []

    # -- polling ---------------------------------------------------------------------------------------
    def start(self, poll_seconds: float) -> None:
        """Load what is on disk now (looking again every 0.2 s, up to 30 s, while a version directory is
        still changing), then keep polling every ``poll_seconds`` (0: never again, as TF Serving's flag
        means).
        """
        self.poll()
        until = time.monotonic() + 30.0
        while time.monotonic() < until:
            time.sleep(0.2)
            self.poll()
            with self._lock:
                pending = any(
                    r.state is State.START for m in self._models.values() for r in m.versions.values()
                )
            if not pending:
                break
        if poll_seconds > 0:
            self._thread = threading.Thread(target=self._loop, args=(poll_seconds,), daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self, poll_seconds: float) -> None:
        while not self._stop.wait(poll_seconds):
            self.poll()

    def poll(self) -> None:
        """Look at every model's base path once; a failure with one model is logged and the others are
        still polled.
        """
        for model in list(self._models.values()):
            try:
                self._poll_model(model)
            except Exception:  # a poll must never stop at one model; logged with its trace
                logger.exception("polling model %s (%s) failed", model.config.name, model.config.base_path)
        self._collect_unloaded()

    def _collect_unloaded(self) -> None:
        """Free unloaded versions no request holds any more (their graphs sit in reference cycles)."""
        with self._lock:
            if not self._unloaded:
                return
        gc.collect()
        with self._lock:
            self._unloaded = [ref for ref in self._unloaded if ref() is not None]

    def _poll_model(self, model: _Model) -> None:
        config = model.config
        listed = _versions_on_disk(config.base_path)
        if listed is None:
            return
        on_disk, other = listed
        for name in other:
            if name not in model.ignored:
                model.ignored.add(name)
                log_event("ignored", model=config.name, base_path=config.base_path, name=name)
        wanted = config.policy.select(sorted(on_disk))
        for version in sorted(wanted, reverse=True):
            with self._lock:
                record = model.versions.setdefault(version, VersionRecord(version))
            if record.state is State.AVAILABLE:
                continue
            path = on_disk[version]
            fingerprint = _fingerprint(path)
            complete = _complete(path, fingerprint)
            settled = fingerprint == record.fingerprint and complete
            if fingerprint != record.fingerprint:  # once per change, so a stuck directory logs once
                log_event(
                    "version_pending",
                    model=config.name,
                    version=version,
                    files=len(fingerprint),
                    bytes=sum(entry[1] for entry in fingerprint),
                    complete=complete,
                )
            record.fingerprint = fingerprint
            if not settled or fingerprint == record.failed_fingerprint:
                continue  # still being written, or failed as it is now: wait for a change
            self._load(model, record, path)
        self._unload_unwanted(model, wanted, on_disk)

    def _load(self, model: _Model, record: VersionRecord, path: str) -> None:
        name = model.config.name
        with self._lock:
            record.state = State.LOADING
        try:
            servable = load_servable(name, record.version, path, warmup=self._warmup)
        except Exception as err:  # any load failure is reported in the status and retried on change
            message = f"{type(err).__name__}: {' '.join(str(err).split())[:1000]}"
            with self._lock:
                record.state = State.END
                record.error_code = grpc.StatusCode.UNKNOWN
                record.error_message = message
                record.failed_fingerprint = record.fingerprint
            log_event("load_failed", model=name, version=record.version, path=path, error=message)
            logger.warning("model %s version %d failed to load: %s", name, record.version, message)
            return
        with self._lock:
            record.servable = servable
            record.state = State.AVAILABLE
            record.error_code, record.error_message = grpc.StatusCode.OK, ""
        log_event(
            "load", model=name, version=record.version, path=path, seconds=round(servable.load_seconds, 3)
        )

    def _unload_unwanted(self, model: _Model, wanted: list[int], on_disk: dict[int, str]) -> None:
        """Unload a version the policy no longer wants once every wanted version on disk is available
        (or has failed to load), and at once when its directory is gone.
        """
        with self._lock:
            settled = all(
                (r := model.versions.get(v)) is not None and r.state in (State.AVAILABLE, State.END)
                for v in wanted
            )
            any_available = any(
                model.versions[v].state is State.AVAILABLE for v in wanted if v in model.versions
            )
            for version, record in list(model.versions.items()):
                if version in wanted or record.state is not State.AVAILABLE:
                    if version not in on_disk and record.state is not State.AVAILABLE:
                        del model.versions[version]  # a failed or pending version whose directory went away
                    continue
                gone = version not in on_disk
                if gone or (settled and any_available):
                    unloaded = record.servable
                    record.servable = None  # requests holding it finish; then it is freed
                    record.state = State.END
                    if unloaded is not None:
                        self._unloaded.append(weakref.ref(unloaded))
                        for hook in self.on_unload:
                            hook(unloaded)
                    log_event(
                        "unload",
                        model=model.config.name,
                        version=version,
                        reason="removed" if gone else "policy",
                    )

    # -- requests --------------------------------------------------------------------------------------
    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
        """The servable for a request: a version, a label, or the latest available (NOT_FOUND if none)."""
        with self._lock:
            model = self._models.get(name)
            if model is None:
                raise ServingError.not_found(f"Servable not found for request: Latest({name})")
            version = _labelled(model, version, label)
            if version is not None:
                record = model.versions.get(version)
                if record is None or record.servable is None:
                    raise ServingError.not_found(
                        f"Servable not found for request: Specific({name}, {version})"
                    )
                return record.servable
            available = [r for r in model.versions.values() if r.servable is not None]
            if not available:
                raise ServingError.not_found(f"Servable not found for request: Latest({name})")
            servable = max(available, key=lambda r: r.version).servable
            assert servable is not None
            return servable

    def status(self, name: str, version: int | None = None, label: str | None = None) -> list[VersionRecord]:
        with self._lock:
            model = self._models.get(name)
            if model is None:
                raise ServingError.not_found(f"Could not find any versions of model {name}")
            version = _labelled(model, version, label)
            if version is not None:
                record = model.versions.get(version)
                if record is None:
                    raise ServingError.not_found(f"Could not find version {version} of model {name}")
                return [replace(record)]
            if not model.versions:
                raise ServingError.not_found(f"Could not find any versions of model {name}")
            return [replace(model.versions[v]) for v in sorted(model.versions, reverse=True)]

    def model_names(self) -> list[str]:
        return sorted(self._models)

    def without_available_version(self, names: Iterable[str]) -> list[str]:
        """Those of the configured models ``names`` that have no version AVAILABLE now (health uses it)."""
        with self._lock:
            return sorted(
                name
                for name in names
                if name in self._models
                and not any(r.servable is not None for r in self._models[name].versions.values())
            )
