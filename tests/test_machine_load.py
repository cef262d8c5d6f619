"""Busy-machine detection (compiler/machine.py) with real busy-looping processes; its /proc/stat parser.

The machine is shared: other processes may be busy at any moment. Assertions that need load make it
themselves, one busy process per core, which takes the whole machine whatever else runs. Assertions about
the rest are checked against the processes' own CPU accounting (/proc/PID/stat) over the same window, so
they hold on a quiet machine and a loaded one alike.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import SRC
from tfaccel.compiler import machine
from tfaccel.compiler.machine import BUSY_SHARE, LoadMonitor, LoadReading, probe, usable_cores

LINUX = Path("/proc/stat").exists()
needs_proc_stat = pytest.mark.skipif(not LINUX, reason="reads /proc/stat")
HOG = "while True: pass"
ATTEMPTS = 4  # windows compared with /proc/PID/stat: the best of this many (processes come and go)


def _start_hogs(hogs: list[subprocess.Popen[bytes]], count: int, cpu: int | None = None) -> None:
    """Start ``count`` busy-looping processes into ``hogs`` (the caller's list: it stops them, also after
    a failure here)."""
    for _ in range(count):
        hogs.append(subprocess.Popen([sys.executable, "-c", HOG]))
        if cpu is not None:
            os.sched_setaffinity(hogs[-1].pid, {cpu})
    time.sleep(0.3)  # let them get going


def _stop(hogs: list[subprocess.Popen[bytes]]) -> None:
    for hog in hogs:
        hog.kill()
    for hog in hogs:
        hog.wait(timeout=10)


@pytest.fixture
def hog_per_core() -> Iterator[None]:
    hogs: list[subprocess.Popen[bytes]] = []
    try:
        _start_hogs(hogs, usable_cores())
        yield
    finally:
        _stop(hogs)


def _spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


# --- real load -------------------------------------------------------------------------------------------


@needs_proc_stat
def test_one_busy_process_per_core_makes_the_machine_busy(hog_per_core: None) -> None:
    monitor = LoadMonitor()
    time.sleep(0.6)
    reading = monitor.reading()
    assert reading.available and reading.cores == usable_cores()
    assert reading.busy, reading.describe()
    assert reading.others_share > max(0.8, 2 * BUSY_SHARE), reading.describe()
    assert reading.describe().startswith("other processes used ")


@needs_proc_stat
def test_probe_sees_the_busy_processes(hog_per_core: None) -> None:
    reading = probe(0.5)
    assert reading.busy and reading.others_share > 0.8, reading.describe()
    assert reading.wall_s >= 0.5


@needs_proc_stat
def test_restart_starts_a_new_window(hog_per_core: None) -> None:
    monitor = LoadMonitor()
    time.sleep(0.4)
    assert monitor.reading().busy
    restarted = time.monotonic()
    monitor.restart()
    time.sleep(0.4)
    again = monitor.reading()
    assert again.wall_s <= time.monotonic() - restarted and again.busy, again.describe()


@needs_proc_stat
def test_one_busy_process_takes_one_core_of_the_share() -> None:
    hogs: list[subprocess.Popen[bytes]] = []
    try:
        _start_hogs(hogs, 1)
        reading = probe(0.6)
    finally:
        _stop(hogs)
    # one whole core of `cores`; other users of the machine can only add to it
    assert reading.others_share > 0.85 / reading.cores, reading.describe()
    if reading.cores <= 3:  # the chosen BUSY_SHARE calls one busy core in up to 3 busy (see machine.py)
        assert reading.busy


def _cpu_ticks_by_pid() -> dict[int, int]:
    """utime+stime of every process we can see, from /proc/PID/stat: each process's own accounting, an
    independent check of the per-CPU counters (which also hold processes that start and exit meanwhile)."""
    ticks: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                text = f.read()
        except OSError:
            continue  # gone meanwhile
        fields = text[text.rfind(")") + 2 :].split()
        ticks[int(name)] = int(fields[11]) + int(fields[12])
    return ticks


def _by_pid_s(before: dict[int, int], after: dict[int, int], exclude: set[int]) -> float:
    """CPU seconds the processes not in ``exclude`` used between two snapshots."""
    delta = sum(t - before.get(pid, 0) for pid, t in after.items() if pid not in exclude)
    return max(0, delta) / os.sysconf("SC_CLK_TCK")


def _window(action: Callable[[], None], exclude: set[int]) -> tuple[LoadReading, float]:
    """One monitored window around ``action``, with what the processes not in ``exclude`` say they used."""
    before = _cpu_ticks_by_pid()
    monitor = LoadMonitor()
    action()
    reading = monitor.reading()
    return reading, _by_pid_s(before, _cpu_ticks_by_pid(), exclude | {os.getpid()})


def _best_agreement(action: Callable[[], None], exclude: set[int]) -> tuple[LoadReading, float]:
    """The window where /proc/stat and the processes' own accounting agree best (a process that starts and
    exits inside a window is seen only by the former): the best of a few."""
    windows: list[tuple[LoadReading, float]] = []
    for _ in range(ATTEMPTS):
        windows.append(_window(action, exclude))
        reading, others_s = windows[-1]
        if abs(reading.others_cpu_s - others_s) < 0.05 * reading.cores * reading.wall_s:
            break  # good enough
    return min(windows, key=lambda w: abs(w[0].others_cpu_s - w[1]))


def _pinned(cpu: int, action: Callable[[], None]) -> Callable[[], None]:
    """``action`` run with this thread pinned to ``cpu`` (a monitor takes our affinity set when it starts)."""

    def run() -> None:
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {cpu})
        try:
            action()
        finally:
            os.sched_setaffinity(0, before)

    return run


def _sleep(seconds: float) -> Callable[[], None]:
    return lambda: time.sleep(seconds)


@needs_proc_stat
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or usable_cores() < 2, reason="needs 2 usable cores")
def test_only_our_own_cores_count() -> None:
    ours, theirs = sorted(os.sched_getaffinity(0))[:2]
    readings: dict[str, LoadReading] = {}

    def monitored(label: str, seconds: float) -> Callable[[], None]:
        def run() -> None:
            monitor = LoadMonitor()
            time.sleep(seconds)
            readings[label] = monitor.reading()

        return run

    hogs: list[subprocess.Popen[bytes]] = []
    try:
        _start_hogs(hogs, 1, cpu=theirs)
        _pinned(theirs, monitored("with the hog", 0.4))()
        # a hog on another core is not ours to count: we see at most what the rest of the machine did
        elsewhere, rest_s = _best_agreement(_pinned(ours, monitored("elsewhere", 0.3)), {h.pid for h in hogs})
    finally:
        _stop(hogs)
    on_ours = readings["with the hog"]
    assert on_ours.cores == 1 and on_ours.busy and on_ours.others_share > 0.8, on_ours.describe()
    elsewhere = readings["elsewhere"]
    assert elsewhere.cores == 1
    assert elsewhere.others_cpu_s < rest_s + 0.15 * elsewhere.wall_s, (elsewhere.describe(), rest_s)


@needs_proc_stat
def test_our_own_cpu_time_is_not_counted_as_others() -> None:
    reading, others_s = _best_agreement(lambda: _spin(0.5), set())
    assert reading.own_cpu_s >= 0.5
    # counted as others, our spin would add its 0.5 s of CPU time
    assert abs(reading.others_cpu_s - others_s) < 0.15 * reading.cores * reading.wall_s, (
        reading.describe(),
        others_s,
    )


@needs_proc_stat
def test_probe_agrees_with_the_processes_own_accounting() -> None:
    windows = []
    for _ in range(ATTEMPTS):
        before = _cpu_ticks_by_pid()
        reading = probe(0.3)
        windows.append((reading, _by_pid_s(before, _cpu_ticks_by_pid(), {os.getpid()})))
    reading, others_s = min(windows, key=lambda w: abs(w[0].others_cpu_s - w[1]))
    assert reading.available and reading.own_cpu_s < 0.1  # probe sleeps
    assert abs(reading.others_cpu_s - others_s) < 0.15 * reading.cores * reading.wall_s, (
        reading.describe(),
        others_s,
    )
    # the machine is shared, so "not busy" holds only when the other processes say they were quiet
    if others_s < (BUSY_SHARE - 0.15) * reading.cores * reading.wall_s:
        assert not reading.busy, (reading.describe(), others_s)


def test_probe_rejects_negative_seconds() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        probe(-1)


# --- the reading and its words ---------------------------------------------------------------------------


def test_describe_busy_idle_and_unavailable() -> None:
    busy = LoadReading(wall_s=2.3, own_cpu_s=0.2, others_cpu_s=3.68, cores=2)
    assert busy.busy and busy.others_share == pytest.approx(0.8)
    assert busy.describe() == "other processes used 1.6 of 2 cores (80%) over 2.3 s"
    idle = LoadReading(wall_s=1.0, own_cpu_s=0.9, others_cpu_s=0.04, cores=2)
    assert not idle.busy
    assert idle.describe() == "other processes used 0.0 of 2 cores (2%) over 1.0 s"
    one = LoadReading(wall_s=0.5, own_cpu_s=0.0, others_cpu_s=0.5, cores=1)
    assert one.busy and one.describe() == "other processes used 1.0 of 1 core (100%) over 0.5 s"
    unknown = LoadReading(wall_s=1.0, own_cpu_s=0.0, others_cpu_s=5.0, cores=2, available=False)
    assert not unknown.busy and unknown.others_share == 0.0
    assert unknown.describe() == "cannot tell (no /proc/stat)"


def test_share_of_an_empty_window_is_zero() -> None:
    empty = LoadReading(wall_s=0.0, own_cpu_s=0.0, others_cpu_s=0.01, cores=2)
    assert empty.others_share == 0.0 and not empty.busy


def test_busy_is_strictly_above_the_threshold() -> None:
    at = LoadReading(wall_s=1.0, own_cpu_s=0.0, others_cpu_s=BUSY_SHARE * 4, cores=4)
    above = LoadReading(wall_s=1.0, own_cpu_s=0.0, others_cpu_s=BUSY_SHARE * 4 + 0.01, cores=4)
    assert not at.busy and above.busy


# --- the /proc/stat parser -------------------------------------------------------------------------------

STAT = """\
cpu  2460786 0 576072 858826 1710 0 2122 13410 0 0
cpu0 100 1 10 5000 7 2 3 4 50 0
cpu1 1000 0 200 4000 9 0 30 40 0 0
cpu2 7 7 7 7 7 7 7 7 7 7
intr 123 4 5
ctxt 42
btime 1796100000
"""


def test_parser_sums_busy_columns_of_our_cpus_only() -> None:
    # user+nice+system+irq+softirq+steal; idle, iowait and guest (already in user) are not busy
    assert machine._busy_ticks(STAT, [0]) == 100 + 1 + 10 + 2 + 3 + 4
    assert machine._busy_ticks(STAT, [1]) == 1000 + 200 + 30 + 40
    assert machine._busy_ticks(STAT, {0, 1}) == 120 + 1270
    assert machine._busy_ticks(STAT, [2]) == 6 * 7


def test_parser_accepts_a_kernel_without_guest_columns() -> None:
    assert machine._busy_ticks("cpu0 1 2 3 4 5 6 7 8\n", [0]) == 1 + 2 + 3 + 6 + 7 + 8


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage\n\x00\xff",
        "cpu  1 2 3 4 5 6 7 8\n",  # only the total line
        "cpu0 1 2 3 4 5 6 7 8\n",  # our cpu1 is missing
        "cpu0 1 2 3 4 5 6 7 8\ncpu1 1 2 3\n",  # too few columns
        "cpu0 1 2 3 4 5 6 7 8\ncpu1 1 2 x 4 5 6 7 8\n",  # not a number
        "cpu0 1 2 3 4 5 6 7 8\ncpu1 1 2 -3 4 5 6 7 8\n",  # negative
        "cpu0 1 2 3 4 5 6 7 8\ncpu1 1 2 \u00b2 4 5 6 7 8\n",  # a digit int() does not take
        "cpu0 1 2 3 4 5 6 7 8\ncpu1 1 2 3 4 5 6 7 8\ncpu1 1 2 3 4 5 6 7 8\n",  # twice
        "cpu0\ncpu1\n",
    ],
)
def test_parser_gives_none_on_malformed_text(text: str) -> None:
    assert machine._busy_ticks(text, [0, 1]) is None


def test_parser_needs_some_cpus() -> None:
    assert machine._busy_ticks(STAT, []) is None


# --- the module itself -----------------------------------------------------------------------------------


def test_machine_module_imports_only_the_standard_library() -> None:
    """It must stay cheap to import and usable without TensorFlow (the measure stage calls it often)."""
    tree = ast.parse(Path(SRC, "tfaccel", "compiler", "machine.py").read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert names, "the checker found no imports at all"
    outside = {n for n in names if n.split(".")[0] not in sys.stdlib_module_names}
    assert not outside, f"machine.py imports {outside}"


def test_usable_cores_and_cpu_model() -> None:
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    assert usable_cores() == expected >= 1
    model = machine.cpu_model()
    assert model and model == model.strip() and "\n" not in model
    if Path("/proc/cpuinfo").exists() and "model name" in Path("/proc/cpuinfo").read_text():
        assert model != "unknown CPU"
