"""Progress of a trace (which subgraph is compiling or being measured), for a person at a terminal.

Why a hook and not prints: the library never prints on its own (design §9); ``trace`` only announces
its steps to whatever sink the caller installed with :func:`reporting`, and the CLI installs a
:class:`TerminalProgress`, which draws one self-overwriting line and only when its stream is a terminal
(a build log or a pipe gets nothing). A library user can do the same::

    from tfaccel.compiler.progress import TerminalProgress, reporting

    with reporting(TerminalProgress()):
        traced = tfaccel.trace(model, x)

In a Jupyter notebook, where a terminal line cannot be rewritten, ``trace`` installs a
:class:`TqdmProgress` by itself (:func:`automatic`) when ``tqdm`` is installed (``pip install tqdm``, or the
``notebook`` extra) and the caller installed no sink.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

__all__ = [
    "Event",
    "ProgressSink",
    "TerminalProgress",
    "TqdmProgress",
    "automatic",
    "clear",
    "emit",
    "in_notebook",
    "reporting",
]


@dataclass(frozen=True)
class Event:
    """One step of a trace: ``phase`` ("compiling" or "measuring") item ``index`` (1-based) of ``total``."""

    phase: str
    index: int
    total: int
    subgraph: str
    backend: str
    nodes: int


class ProgressSink(Protocol):
    def update(self, event: Event) -> None: ...

    def clear(self) -> None:
        """Erase what is on screen (a log line is about to be written)."""

    def close(self) -> None: ...


_sink: ContextVar[ProgressSink | None] = ContextVar("tfaccel_progress", default=None)


def emit(phase: str, index: int, total: int, subgraph: str, backend: str, nodes: int) -> None:
    """Announce a step to the installed sink (nothing happens without one)."""
    sink = _sink.get()
    if sink is not None:
        sink.update(Event(phase, index, total, subgraph, backend, nodes))


def clear() -> None:
    """Ask the installed sink to erase its line (before someone else writes to the terminal)."""
    sink = _sink.get()
    if sink is not None:
        sink.clear()


@contextlib.contextmanager
def reporting(sink: ProgressSink) -> Iterator[ProgressSink]:
    """Send the progress of every ``trace`` inside the block to ``sink``; close it on the way out."""
    token = _sink.set(sink)
    try:
        yield sink
    finally:
        _sink.reset(token)
        sink.close()


class TerminalProgress:
    """One line, rewritten in place: ``[12.3 s] compiling subgraph 2/5: tfaccel_subgraph_1 on openvino
    (140 nodes)``. Draws nothing unless ``stream`` is a terminal; erases itself when closed.
    """

    def __init__(self, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.start = clock()
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self._width = 0

    def line(self, event: Event) -> str:
        elapsed = self.clock() - self.start
        return (
            f"[{elapsed:6.1f} s] {event.phase} subgraph {event.index}/{event.total}: {event.subgraph} "
            f"on {event.backend} ({event.nodes} nodes)"
        )

    def update(self, event: Event) -> None:
        if not self.enabled:
            return
        # never wider than the terminal: a wrapped line could not be rewritten in place
        columns = shutil.get_terminal_size((100, 24)).columns
        text = self.line(event)[: max(columns - 1, 20)]
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = max(self._width, len(text))

    def clear(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0

    def close(self) -> None:
        self.clear()


class TqdmProgress:
    """A tqdm bar per phase (``compiling``, ``measuring``, ``quantizing``): subgraphs done of the total, the
    current one's name, backend and size after it. ``tqdm.auto`` draws a widget in a notebook and text
    elsewhere; ``file`` (default stderr) is for the text form.
    """

    def __init__(self, file: TextIO | None = None) -> None:
        from tqdm.auto import tqdm  # an optional dependency: automatic() checks it is there

        self._tqdm = tqdm
        self._file = file
        self._bar: Any = None
        self._phase = ""

    def update(self, event: Event) -> None:
        if self._bar is None or event.phase != self._phase or self._bar.total != event.total:
            self.close()
            self._bar = self._tqdm(
                total=event.total, desc=event.phase, unit="subgraph", file=self._file, leave=False
            )
            self._phase = event.phase
        self._bar.n = event.index - 1  # the event announces a subgraph starting: the ones before are done
        self._bar.set_postfix_str(f"{event.subgraph} on {event.backend} ({event.nodes} nodes)")

    def clear(self) -> None:
        if self._bar is not None:
            self._bar.clear()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.n = self._bar.total
            self._bar.close()
            self._bar = None


def in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython's ZMQ shell, or a subclass such as Colab's), without importing
    IPython when it is not loaded.
    """
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython is not None else None
    return any(cls.__name__ == "ZMQInteractiveShell" for cls in type(shell).__mro__)


def automatic() -> contextlib.AbstractContextManager[object]:
    """What ``trace`` reports to when its caller installed nothing: a :class:`TqdmProgress` in a notebook
    with tqdm installed, else nothing (a script or a test stays silent, as the library never prints).
    """
    if _sink.get() is not None or not in_notebook():
        return contextlib.nullcontext()
    try:
        sink = TqdmProgress()
    except ImportError:
        return contextlib.nullcontext()
    return reporting(sink)
