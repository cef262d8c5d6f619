"""The model server's version lifecycle under unlucky file systems and long uptimes (issue 16, items 10,
12 and 13; issue 21's deterministic roll-over).

Why this file: what sits in a base path is written by other programs at any time: odd directory names,
stale shards of an earlier ``save()``, copies in progress. Each such case is DATA here, polled by a real
``Manager`` loading real SavedModels, with the poll moments chosen by the test (no hoping a timer lands
mid-copy). The memory test rolls a real server process over many versions and bounds its RSS: an
unloaded version must give its compiled model back.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

import tfaccel
from conftest import STATIC, assert_close, free_ports, installed_script
from tfaccel.serving.config import ModelConfig
from tfaccel.serving.manager import Manager, State

SERVER = installed_script(
    "tfaccel-model-server", ["-c", "import sys, tfaccel_cli; sys.exit(tfaccel_cli.serve_main())"]
)


class _Affine(tf.Module):
    """y = x @ w * scale, w of ``size`` x ``width``: ``scale`` tells versions apart."""

    def __init__(self, scale: float, size: int = 6, width: int = 4, seed: int = 3) -> None:
        rng = np.random.default_rng(seed)
        self.w = tf.Variable(rng.normal(size=(size, width)).astype("float32"))
        self.scale = tf.Variable(scale)

    @tf.function
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": tf.matmul(x, self.w) * self.scale}


def _save(path: Path, scale: float) -> Path:
    module = _Affine(scale)
    spec = tf.TensorSpec([None, 6], tf.float32, name="x")
    tf.saved_model.save(
        module, str(path), signatures={"serving_default": module.serve.get_concrete_function(spec)}
    )
    return path


def _events(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    found = []
    for record in caplog.records:
        message = record.getMessage()
        if message.startswith("{") and json.loads(message).get("event") == event:
            found.append(json.loads(message))
    return found


def _states(manager: Manager, name: str) -> dict[int, State]:
    return {r.version: r.state for r in manager.status(name)}


def _answer(manager: Manager, name: str, x: np.ndarray) -> tuple[int, np.ndarray]:
    servable = manager.resolve(name)
    return servable.version, servable.signature("")({"x": x})["y"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two plain SavedModels: scale 1 and scale 2 (one variables shard each)."""
    root = tmp_path_factory.mktemp("lifecycle")
    _save(root / "one", 1.0)
    _save(root / "two", 2.0)
    return root


X = np.arange(12, dtype=np.float32).reshape(2, 6) / 10.0


def _want(models: Path, which: str) -> np.ndarray:
    loaded = tf.saved_model.load(str(models / which))
    return loaded.signatures["serving_default"](x=tf.constant(X))["y"].numpy()


# -- item 12: only ASCII-decimal names are versions ------------------------------------------------------
#: names that str.isdigit() or int() might take for a version, and other strays: all ignored
NOT_VERSIONS = [
    "²",  # superscript two: isdigit() is True, int() raises
    "²³",
    "\u0661",  # Arabic-Indic one: int() would give 1
    "\uff11",  # fullwidth one
    "\u0663",  # Arabic-Indic three
    "1.5",
    "-1",
    "+2",
    " 3",
    "3 ",
    "0x1",
    "1e3",
    "99999999999999999999",  # beyond int64: TF Serving's protos cannot carry it
    "v2",
    ".2",
]


def test_names_that_are_not_ascii_decimal_are_ignored_once(
    models: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every name of NOT_VERSIONS, at start-up and appearing later: ignored with one log line; this model
    and the next keep being polled (a ``²`` used to stop the start-up, and later the polling of every
    model after it).
    """
    caplog.set_level(logging.INFO, logger="tfaccel.serving")
    first, second = tmp_path / "first", tmp_path / "second"
    shutil.copytree(models / "one", first / "1")
    shutil.copytree(models / "one", second / "1")
    for name in NOT_VERSIONS:
        shutil.copytree(models / "one", first / name)  # a loadable model: were it taken, it would load
    manager = Manager([ModelConfig("first", str(first)), ModelConfig("second", str(second))], warmup=False)
    manager.start(poll_seconds=0)
    assert _states(manager, "first") == {1: State.AVAILABLE}
    assert _states(manager, "second") == {1: State.AVAILABLE}
    # they appear later in the second model's path, next to a new version of each
    for name in NOT_VERSIONS:
        (second / name).mkdir()
    shutil.copytree(models / "two", first / "2")
    shutil.copytree(models / "two", second / "2")
    for _ in range(3):
        manager.poll()
    assert _states(manager, "first") == {2: State.AVAILABLE, 1: State.END}
    assert _states(manager, "second") == {2: State.AVAILABLE, 1: State.END}
    for model in ("first", "second"):
        version, got = _answer(manager, model, X)
        assert version == 2
        assert_close(got, _want(models, "two"))
    ignored = sorted((e["model"], e["name"]) for e in _events(caplog, "ignored"))
    want = sorted([("first", n) for n in NOT_VERSIONS] + [("second", n) for n in NOT_VERSIONS])
    assert ignored == want  # one line each, not one per poll
    manager.stop()


# -- item 13: completeness judged by what variables.index announces ---------------------------------------
SHARD = os.path.join("variables", "variables.data-00000-of-00001")


def _stale(i: int, n: int) -> str:
    return os.path.join("variables", f"variables.data-{i:05d}-of-{n:05d}")


#: (case, files to add (stale), files to remove, loads?) on top of a good one-shard SavedModel
COMPLETENESS = [
    ("a stale shard of a 2-shard save", [_stale(0, 2)], [], True),
    ("a stale shard numbered 1 of 2", [_stale(1, 2)], [], True),
    ("both stale shards of a 2-shard save", [_stale(0, 2), _stale(1, 2)], [], True),
    ("stale shards of a 3-shard save", [_stale(0, 3), _stale(2, 3)], [], True),
    ("a stale shard of a 5-shard save", [_stale(4, 5)], [], True),
    ("stale shards of 2- and 4-shard saves", [_stale(1, 2), _stale(3, 4), _stale(0, 4)], [], True),
    ("a stale 2-shard set, the announced shard missing", [_stale(0, 2), _stale(1, 2)], [SHARD], False),
    ("the announced shard missing", [], [SHARD], False),
    ("the index missing", [], [os.path.join("variables", "variables.index")], False),
    ("the graph missing", [], ["saved_model.pb"], False),
    ("an unrelated extra file", ["notes.txt", os.path.join("variables", "README")], [], True),
]


@pytest.mark.parametrize(("case", "add", "remove", "loads"), COMPLETENESS, ids=[c[0] for c in COMPLETENESS])
def test_completeness_is_judged_by_the_index(
    models: Path, tmp_path: Path, case: str, add: list[str], remove: list[str], loads: bool
) -> None:
    """A version with stale extra shards (``model.save()`` into an old folder) loads whatever the hash
    seed; one missing a file the index announces is never tried (no load failure), however long it sits.
    """
    base = tmp_path / "m"
    shutil.copytree(models / "two", base / "1")
    for name in add:
        (base / "1" / name).write_bytes(b"stale bytes of an earlier save")
    for name in remove:
        (base / "1" / name).unlink()
    manager = Manager([ModelConfig("m", str(base))], warmup=False)
    for _ in range(3):
        manager.poll()
    (record,) = manager.status("m")
    if loads:
        assert (record.state, record.error_message) == (State.AVAILABLE, ""), case
        assert_close(_answer(manager, "m", X)[1], _want(models, "two"))
    else:
        assert (record.state, record.error_message) == (State.START, ""), case  # waiting, never tried


# -- issue 21: a copy in progress is never loaded, polled at chosen moments ----------------------------
def test_a_version_copied_in_steps_is_loaded_only_once_settled(models: Path, tmp_path: Path) -> None:
    """Each step of a copy is polled (the test picks the moments); nothing is tried until two polls see
    the same complete directory, and version 1 serves meanwhile.
    """
    base = tmp_path / "m"
    shutil.copytree(models / "one", base / "1")
    manager = Manager([ModelConfig("m", str(base))], warmup=False)
    manager.poll()
    manager.poll()
    assert _states(manager, "m") == {1: State.AVAILABLE}
    src, dst = models / "two", base / "2"
    shard = (src / SHARD).read_bytes()
    steps: list[tuple[str, Any]] = [
        ("graph", lambda: shutil.copytree(src, dst, ignore=shutil.ignore_patterns("variables*"))),
        (
            "index",
            lambda: shutil.copytree(src / "variables", dst / "variables", ignore=lambda *_: [SHARD[10:]]),
        ),
        ("half of the shard", lambda: (dst / SHARD).write_bytes(shard[: len(shard) // 2])),
        ("the whole shard", lambda: (dst / SHARD).write_bytes(shard)),
    ]
    for step, write in steps:
        write()
        manager.poll()
        states = _states(manager, "m")
        assert states == {2: State.START, 1: State.AVAILABLE}, (step, states)
        assert _answer(manager, "m", X)[0] == 1, step
    manager.poll()  # unchanged since the last poll: settled
    assert _states(manager, "m") == {2: State.AVAILABLE, 1: State.END}
    version, got = _answer(manager, "m", X)
    assert version == 2
    assert_close(got, _want(models, "two"))
    assert not any(r.error_message for r in manager.status("m"))


# -- item 10: memory over version roll-overs -----------------------------------------------------------


def _rest(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def _traced_versions(root: Path, backend: str, size: int, count: int) -> list[tuple[Path, np.ndarray]]:
    """``count`` traced versions and their reference answers. openvino versions differ in content (its
    cache is keyed by content); xla versions are copies of one (each load compiles anew anyway).
    """
    x = np.ones((2, size), np.float32) / size
    found = []
    for index in range(count if backend == "openvino" else 1):
        module = _Affine(1.0 + index, size=size, width=size, seed=index)
        from tfaccel.compiler.options import parse_flags

        traced = tfaccel.trace(module.serve, {"x": x}, **parse_flags(f"{STATIC} --backend={backend}", "test"))
        path = root / f"{backend}-{index}"
        traced.save(str(path))
        found.append((path, module.serve(tf.constant(x))["y"].numpy()))
    return [found[i % len(found)] for i in range(count)]


def _roll_over(tmp_path: Path, backend: str, size: int, rollovers: int) -> list[float]:
    """Serve version 1, then copy in versions 2..rollovers+1 one at a time (each appearing at once, by a
    rename), waiting for each to replace the last; the server's RSS (MiB) after each.
    """
    versions = _traced_versions(tmp_path / "traced", backend, size, rollovers + 1)
    base, staging = tmp_path / "base", tmp_path / "staging"
    base.mkdir()
    shutil.copytree(versions[0][0], base / "1")
    grpc_port, rest_port = free_ports(2)
    log = tmp_path / "server.log"
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["MALLOC_ARENA_MAX"] = "2"  # fewer malloc arenas: RSS then shows what is kept, not where it was freed
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            [
                *SERVER,
                f"--port={grpc_port}",
                f"--rest_api_port={rest_port}",
                "--model_name=m",
                f"--model_base_path={base}",
                "--file_system_poll_wait_seconds=1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
        )
    rss = []
    x = (np.ones((2, size), np.float32) / size).tolist()
    try:
        for version in range(1, rollovers + 2):
            if version > 1:
                shutil.copytree(versions[version - 1][0], staging / str(version))
                os.rename(staging / str(version), base / str(version))
            deadline = time.monotonic() + 180
            while True:
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, (
                    f"version {version} never replaced the last:\n{log.read_text()[-3000:]}"
                )
                try:
                    status, body = _rest(rest_port, "GET", "/v1/models/m")
                except OSError:  # not listening yet
                    status, body = 0, {}
                states = [(v["version"], v["state"]) for v in body.get("model_version_status", [])]
                if (
                    status == 200
                    and states[0] == (str(version), "AVAILABLE")
                    and all(s == "END" for _, s in states[1:])
                ):
                    break
                time.sleep(0.2)
            status, body = _rest(rest_port, "POST", "/v1/models/m:predict", {"instances": x})
            assert status == 200, body
            assert_close(np.array(body["predictions"], np.float32), versions[version - 1][1])
            rss.append(_rss_mib(proc.pid))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return rss


def _assert_flat(rss: list[float], weights_mib: float, backend: str) -> None:
    """RSS after the last roll-overs against RSS after the first few (medians of three: single readings
    swing by tens of MiB as the allocator reuses memory): at most four times the weights plus 24 MiB
    apart. Keeping each unloaded version (its graph, variables and compiled model each hold a copy of
    the weights) would add at least twice the weights per roll-over, over the 14 or so between them.
    """
    early, late = float(np.median(rss[3:6])), float(np.median(rss[-3:]))
    bound = 4 * weights_mib + 24
    shown = [round(r) for r in rss]
    assert late - early < bound, f"{backend}: RSS grew {late - early:.0f} MiB (bound {bound:.0f}): {shown}"


@pytest.fixture(scope="module")
def traced_xla(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    root = tmp_path_factory.mktemp("traced")
    ((path, want),) = _traced_versions(root, "xla", 64, 1)
    return path, want


def _parts(servable: Any) -> dict[str, weakref.ref[Any]]:
    """Weak references to a servable, its session and its graph (the graph sits in reference cycles)."""
    return {
        "servable": weakref.ref(servable),
        "session": weakref.ref(servable.session),
        "graph": weakref.ref(servable.session.graph),
    }


def _alive(parts: dict[str, weakref.ref[Any]]) -> list[str]:
    return [name for name, ref in parts.items() if ref() is not None]


def test_an_unloaded_version_is_freed_once_its_last_request_ends(
    traced_xla: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    """With the collector left to itself (as in a server, whose few Python allocations rarely trigger its
    oldest generation), an unloaded xla version is freed by the poll that unloads it, or, while a request
    still holds it, by the first poll after that request ends; it answers that request meanwhile.
    """
    path, want = traced_xla
    x = np.ones((2, 64), np.float32) / 64
    base = tmp_path / "m"
    shutil.copytree(path, base / "1")
    manager = Manager([ModelConfig("m", str(base))])
    enabled = gc.isenabled()
    gc.disable()
    try:
        manager.poll()
        manager.poll()
        first = _parts(manager.resolve("m"))
        for version in (2, 3):
            shutil.copytree(path, base / str(version))
        manager.poll()
        manager.poll()  # 3 replaces 1 (2 is never wanted)
        assert manager.resolve("m").version == 3
        assert _alive(first) == [], "version 1 outlived its unload"
        held = manager.resolve("m")  # a request in flight on version 3
        shutil.copytree(path, base / "4")
        manager.poll()
        manager.poll()
        assert manager.resolve("m").version == 4
        assert_close(held.signature("")({"x": x})["y"], want)  # still answers the request holding it
        third = _parts(held)
        del held
        manager.poll()
        assert _alive(third) == [], "version 3 outlived the request that held it"
    finally:
        if enabled:
            gc.enable()
        manager.stop()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["xla", "openvino"])
def test_twenty_rollovers_keep_memory_flat(tmp_path: Path, backend: str) -> None:
    """Issue 16, item 10: 20 roll-overs of a 16 MiB model (distinct content for openvino)."""
    size = 2048
    rss = _roll_over(tmp_path, backend, size, rollovers=20)
    _assert_flat(rss, size * size * 4 / 2**20, backend)
