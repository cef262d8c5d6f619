"""Is the machine too busy to trust timings? Other processes' CPU use on our cores, from /proc/stat.

Why: measured placement times each compiled subgraph on TF and on a backend and keeps the faster. Next to
other busy processes OpenVINO's statically partitioned threads slow down far more than TF's work-stealing
pool (ResNet50: OpenVINO 60 ms vs TF 46 ms with one busy process per core; 28 vs 40 ms idle), so a
placement measured on a busy machine describes the moment, not the model. The measure stage watches the
machine with a :class:`LoadMonitor` and distrusts its timings when :attr:`LoadReading.busy`.

How: the kernel counts, per CPU, the ticks spent busy (user, nice, system, irq, softirq, and steal: a
hypervisor gave the CPU to another guest). Summed over the CPUs this process may run on (a container may
see more CPUs than it can use) and minus this process's own CPU time, that is what everything else took
from us in the window. Child processes count as others. Stdlib only (no TensorFlow): it must be cheap
to import and to call. Where /proc/stat cannot be read (not Linux, a sandbox) the reading says so
(``available=False``) and is never busy: we cannot tell, so we do not override the measurement.
"""

from __future__ import annotations

import os
import platform
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["BUSY_SHARE", "LoadMonitor", "LoadReading", "cpu_model", "probe", "usable_cores"]

# Others' share of our usable cores above which timings are not trusted. Measured on the 2-core development
# VM (AMD EPYC), 0.5 s probes next to `python -c "while True: pass"` processes: idle 0.00-0.02 (0.25 s
# probes too: the 10 ms ticks quantise to 0.02), one busy process 0.50-0.53, two (one per core, the issue's
# scenario) 0.99-1.02. One busy core in two already distorts timings: an 8-conv-layer net (64x64, static
# placement, interleaved medians) went TF 5.1 -> 7.1 ms, OpenVINO 3.9 -> 5.9 ms, OpenVINO/TF 0.77 -> 0.83
# (two: 12.5 and 12.0 ms, 0.95), and such numbers must not reach the timing cache. 0.3 sits far above the
# idle noise and well below one busy core in two; on a machine with more cores one busy core weighs less.
BUSY_SHARE = 0.3

_PROC_STAT = "/proc/stat"
_CPU_LINE = re.compile(r"cpu(\d+)")
# Column indexes after "cpuN": user nice system idle iowait irq softirq steal [guest guest_nice].
# guest time is already included in user, and idle/iowait are not busy.
_BUSY_COLUMNS = (0, 1, 2, 5, 6, 7)
_MIN_COLUMNS = 8  # up to steal (Linux >= 2.6.11)


def usable_cores() -> int:
    """The number of CPUs this process may run on (its affinity set), at least 1."""
    return len(_usable_cpus())


def _usable_cpus() -> frozenset[int]:
    """Our affinity set; on platforms without it, CPUs 0..cpu_count-1."""
    try:
        cpus = frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = frozenset()
    return cpus or frozenset(range(max(1, os.cpu_count() or 1)))


def cpu_model() -> str:
    """The CPU's marketing name (part of the timing cache's key): /proc/cpuinfo, else the platform's."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor().strip() or "unknown CPU"


def _busy_ticks(stat_text: str, cpus: Iterable[int]) -> int | None:
    """Busy ticks summed over ``cpus`` from the text of /proc/stat.

    None when any of them is missing or its line is malformed: then we cannot tell how busy the machine is.
    """
    wanted = set(cpus)
    if not wanted:
        return None
    ticks: dict[int, int] = {}
    for line in stat_text.splitlines():
        fields = line.split()
        if not fields:
            continue
        match = _CPU_LINE.fullmatch(fields[0])
        if match is None:
            continue
        cpu = int(match.group(1))
        if cpu not in wanted:
            continue
        columns = fields[1:]
        if (
            len(columns) < _MIN_COLUMNS
            or not all(c.isascii() and c.isdigit() for c in columns)
            or cpu in ticks
        ):
            return None
        ticks[cpu] = sum(int(columns[i]) for i in _BUSY_COLUMNS)
    if set(ticks) != wanted:
        return None
    return sum(ticks.values())


def _read_busy_ticks(cpus: Iterable[int]) -> int | None:
    try:
        with open(_PROC_STAT, encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    return _busy_ticks(text, cpus)


def _ticks_per_second() -> int:
    try:
        hz = os.sysconf("SC_CLK_TCK")
    except (AttributeError, ValueError, OSError):
        return 100
    return hz if hz > 0 else 100


@dataclass(frozen=True)
class LoadReading:
    """What happened on our usable cores over one window of wall time."""

    wall_s: float
    own_cpu_s: float
    others_cpu_s: float
    cores: int
    available: bool = True

    @property
    def others_share(self) -> float:
        """Others' CPU time as a share of our cores' capacity in the window (1.0: all of it)."""
        if not self.available or self.wall_s <= 0 or self.cores <= 0:
            return 0.0
        return self.others_cpu_s / (self.cores * self.wall_s)

    @property
    def busy(self) -> bool:
        return self.available and self.others_share > BUSY_SHARE

    def describe(self) -> str:
        """One clause for a warning or report line."""
        if not self.available:
            return "cannot tell (no /proc/stat)"
        used = self.others_cpu_s / self.wall_s if self.wall_s > 0 else 0.0
        core_word = "core" if self.cores == 1 else "cores"
        return (
            f"other processes used {used:.1f} of {self.cores} {core_word} ({self.others_share:.0%})"
            f" over {self.wall_s:.1f} s"
        )


class LoadMonitor:
    """Started at construction; reading() is the window since then (or since the last restart())."""

    def __init__(self) -> None:
        self._cpus = _usable_cpus()
        self._hz = _ticks_per_second()
        self.restart()

    def restart(self) -> None:
        self._ticks = _read_busy_ticks(self._cpus)
        self._cpu_s = time.process_time()
        self._wall_s = time.monotonic()

    def reading(self) -> LoadReading:
        wall_s = time.monotonic() - self._wall_s
        own_cpu_s = max(0.0, time.process_time() - self._cpu_s)
        cores = len(self._cpus)
        ticks = _read_busy_ticks(self._cpus)
        if ticks is None or self._ticks is None:
            return LoadReading(wall_s, own_cpu_s, 0.0, cores, available=False)
        # Counters may step back (CPU hotplug, some hypervisors' steal): never report negative time.
        busy_s = max(0, ticks - self._ticks) / self._hz
        return LoadReading(wall_s, own_cpu_s, max(0.0, busy_s - own_cpu_s), cores)


def probe(seconds: float = 0.25) -> LoadReading:
    """Sleep for ``seconds`` and report what other processes did on our cores meanwhile."""
    if not seconds >= 0:
        raise ValueError(f"probe needs a non-negative number of seconds, got {seconds!r}")
    monitor = LoadMonitor()
    time.sleep(seconds)
    return monitor.reading()
