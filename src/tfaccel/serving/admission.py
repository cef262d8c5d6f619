"""Admission: how many predictions run at once, how many may wait, and the drain at shutdown.

Why a gate of its own: without one, every request a client sends starts running (a thread per REST
connection, a gRPC worker each), so an overloaded server slows every request down together and queues
without bound until clients time out. With it, at most ``max_concurrent`` predictions run, at most
``max_queued`` wait for a slot (in arrival order), and any request beyond that is refused at once
(gRPC ``RESOURCE_EXHAUSTED``, REST 503 with ``Retry-After``), which is what a load balancer or an
autoscaler can act on; the two gauges (running, waiting) are what an autoscaler scales on.

Both front ends go through the same gate (:meth:`Service.predict`), so the limits hold across REST and
gRPC together. Status, metadata, metrics and health requests never wait here: a probe must answer while
the server is full.

Draining (SIGTERM): new predictions are refused with ``UNAVAILABLE`` once the front ends stop taking
them; the drain then watches :attr:`Admission.running` and :attr:`Admission.waiting` (with the front
ends' own counts) until they reach 0 or the timeout passes. :meth:`Admission.wait_idle` is the same wait
for callers with only the gate to watch.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tfaccel.serving.errors import ServingError

__all__ = ["Admission"]


class Admission:
    """The gate (see the module docstring). ``on_change(running, waiting)`` is called under the lock
    after every change, for the gauges.
    """

    def __init__(
        self,
        max_concurrent: int,
        max_queued: int,
        on_change: Callable[[int, int], None] | None = None,
    ) -> None:
        if max_concurrent < 1 or max_queued < 0:
            raise ValueError(f"max_concurrent {max_concurrent} must be >= 1 and max_queued {max_queued} >= 0")
        self.max_concurrent = max_concurrent
        self.max_queued = max_queued
        self._on_change = on_change
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._running = 0
        #: one event per waiting request, first come first served
        self._waiting: collections.deque[threading.Event] = collections.deque()
        self._closed = False

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self._running, len(self._waiting))

    @contextmanager
    def slot(self, deadline: float | None = None) -> Iterator[None]:
        """Hold one of the running slots for the ``with`` block; wait for one (until ``deadline``, a
        ``time.monotonic()`` value) if all are taken and the queue has room; else refuse at once.
        """
        ticket: threading.Event | None = None
        with self._lock:
            if self._closed:
                raise ServingError.unavailable(
                    "the server is shutting down; send the request to another replica"
                )
            if self._running < self.max_concurrent and not self._waiting:
                self._running += 1
            elif len(self._waiting) < self.max_queued:
                ticket = threading.Event()
                self._waiting.append(ticket)
            else:
                raise _full(self.max_concurrent, self.max_queued)
            self._changed()
        if ticket is not None:
            self._wait_for(ticket, deadline)
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
                self._hand_on()
                self._changed()
                self._idle.notify_all()

    def _wait_for(self, ticket: threading.Event, deadline: float | None) -> None:
        """Block until :meth:`_hand_on` gives ``ticket`` a slot, or give up at the deadline."""
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if ticket.wait(timeout):
            return
        with self._lock:
            if ticket.is_set():  # handed a slot just as the wait ended: keep it
                return
            self._waiting.remove(ticket)
            self._changed()
            self._idle.notify_all()
        raise ServingError.deadline("Deadline Exceeded while waiting for a free slot (the server is busy)")

    def _hand_on(self) -> None:
        """Give free slots to the longest-waiting requests (called with the lock held)."""
        while self._waiting and self._running < self.max_concurrent:
            self._running += 1
            self._waiting.popleft().set()

    def close(self) -> None:
        """Refuse every prediction from now on (the ones running or waiting go on)."""
        with self._lock:
            self._closed = True

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing runs or waits, at most ``timeout`` seconds; True if it got there."""
        until = time.monotonic() + timeout
        with self._lock:
            while self._running or self._waiting:
                left = until - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True


def _full(max_concurrent: int, max_queued: int) -> ServingError:
    return ServingError.overloaded(
        f"the server is full: {max_concurrent} requests running and {max_queued} waiting "
        "(--max_concurrent_requests, --max_queued_requests); retry shortly or on another replica"
    )
