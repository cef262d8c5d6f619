"""Server-side batching: concurrent requests to one signature merged into one model call.

A queue per (model version, signature, per-row input shapes): its batch threads take the first waiting
request, wait up to ``batch_timeout_micros`` for more while the rows fit ``max_batch_size``, concatenate
the inputs, pad the batch to the next ``allowed_batch_sizes`` entry (to the model's own batch for a
model traced at one batch size) by repeating the first row, call the model once, and hand each request
its rows of every output. A full queue answers UNAVAILABLE (HTTP 503) at once; a request whose deadline
passes while it waits answers DEADLINE_EXCEEDED and is never run.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tfaccel.serving.config import BatchingParams
from tfaccel.serving.errors import ServingError
from tfaccel.serving.servable import Servable, Signature

__all__ = ["Batcher"]

_IDLE_EXIT_S = 30.0


@dataclass
class _Task:
    inputs: Mapping[str, np.ndarray]
    rows: int
    deadline: float | None
    done: threading.Event = field(default_factory=threading.Event)
    outputs: dict[str, np.ndarray] | None = None
    error: BaseException | None = None
    taken: bool = False


class _Queue:
    def __init__(
        self, signature: Signature, params: BatchingParams, on_batch: Callable[[int, int], None]
    ) -> None:
        self.signature = signature
        self.params = params
        self.fixed = signature.fixed_batch()
        self.limit = min(params.max_batch_size, self.fixed) if self.fixed else params.max_batch_size
        self.tasks: deque[_Task] = deque()
        self.cond = threading.Condition()
        self.on_batch = on_batch
        self.threads: list[threading.Thread] = []
        self.last_used = time.monotonic()
        #: set when the version is unloaded: the threads finish what is queued, then end at once
        self.closed = False

    def submit(self, task: _Task) -> None:
        with self.cond:
            if len(self.tasks) >= self.params.max_enqueued_batches * self.limit:
                raise ServingError.unavailable(
                    f"the batching queue of signature {self.signature.name!r} is full "
                    f"({len(self.tasks)} requests waiting); retry later"
                )
            self.tasks.append(task)
            self.last_used = time.monotonic()
            self.cond.notify_all()
            # threads leave ``self.threads`` under this lock before they end, so a count here is exact
            if len(self.threads) < self.params.num_batch_threads:
                thread = threading.Thread(target=self._work, daemon=True)
                self.threads.append(thread)
                thread.start()

    def _take_batch(self) -> list[_Task] | None:
        with self.cond:
            while not self.tasks:
                if self.closed or (not self.cond.wait(timeout=_IDLE_EXIT_S) and not self.tasks):
                    # idle or closed: the thread ends (dropping its hold on the model version), leaving
                    # the list first so that a new request starts another
                    self.threads.remove(threading.current_thread())
                    return None
            first = self.tasks.popleft()
            batch, rows = [first], first.rows
            until = time.monotonic() + self.params.batch_timeout_micros / 1e6
            while rows < self.limit:
                if self.tasks:
                    if rows + self.tasks[0].rows > self.limit:
                        break
                    task = self.tasks.popleft()
                    batch.append(task)
                    rows += task.rows
                    continue
                remaining = until - time.monotonic()
                if remaining <= 0:
                    break
                self.cond.wait(timeout=remaining)
            return batch

    def _work(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            now = time.monotonic()
            live = []
            for task in batch:
                if task.deadline is not None and now > task.deadline:
                    task.error = ServingError.deadline(
                        "Deadline Exceeded while waiting in the batching queue"
                    )
                    task.done.set()
                else:
                    live.append(task)
            if live:
                self._run(live)

    def _run(self, batch: list[_Task]) -> None:
        rows = sum(t.rows for t in batch)
        size = self.fixed or self.params.padded_size(rows)
        try:
            merged = {}
            for name in batch[0].inputs:
                parts = [t.inputs[name] for t in batch]
                if size > rows:
                    pad = np.repeat(parts[0][:1], size - rows, axis=0)
                    parts.append(pad)
                merged[name] = np.concatenate(parts, axis=0)
            outputs = self.signature(merged)
            self.on_batch(rows, size)
            unbatched = [k for k, v in outputs.items() if v.ndim == 0 or v.shape[0] != size]
            if unbatched:
                raise ServingError.invalid(
                    f"batching needs every output batched like the inputs, but output {unbatched[0]!r} has "
                    f"shape {list(outputs[unbatched[0]].shape)} for a batch of {size}; serve this model "
                    "without --enable_batching"
                )
            start = 0
            for task in batch:
                task.outputs = {k: v[start : start + task.rows] for k, v in outputs.items()}
                start += task.rows
        except BaseException as err:  # every waiting request gets the error; none is left hanging
            for task in batch:
                task.error = err
        for task in batch:
            task.done.set()


class Batcher:
    """Routes requests into per-signature queues; ``run`` blocks until the request's rows are back."""

    def __init__(self, params: BatchingParams, on_batch: Callable[[Servable, int, int], None]) -> None:
        self.params = params
        self.on_batch = on_batch
        self._queues: dict[tuple[Any, ...], _Queue] = {}
        self._lock = threading.Lock()

    def run(
        self,
        servable: Servable,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        deadline: float | None,
    ) -> dict[str, np.ndarray]:
        firsts = {v.shape[0] if v.ndim else None for v in inputs.values()}
        if len(firsts) != 1 or None in firsts:
            raise ServingError.invalid(
                "with batching on, every input needs the same first (batch) dimension; got "
                + ", ".join(f"{k}: {list(v.shape)}" for k, v in inputs.items())
            )
        rows = int(next(iter(firsts)) or 0)
        if rows == 0:
            raise ServingError.invalid("a request with no rows (batch dimension 0) cannot be batched")
        key = (
            id(servable),
            signature.name,
            tuple(sorted((k, v.dtype.str, v.shape[1:]) for k, v in inputs.items())),
        )
        with self._lock:
            queue = self._queues.get(key)
            if queue is None:
                queue = _Queue(signature, self.params, lambda r, s: self.on_batch(servable, r, s))
                self._queues[key] = queue
                self._forget_idle()
        if rows > queue.limit:
            raise ServingError.invalid(
                f"the request has {rows} rows, more than the batch limit {queue.limit} "
                f"(max_batch_size{' and the model batch' if queue.fixed else ''}); send smaller requests"
            )
        task = _Task(inputs, rows, deadline)
        queue.submit(task)
        timeout = (
            None if deadline is None else min(max(deadline - time.monotonic(), 0.0), threading.TIMEOUT_MAX)
        )
        if not task.done.wait(timeout):
            raise ServingError.deadline("Deadline Exceeded while waiting for a batch")
        if task.error is not None:
            raise task.error
        assert task.outputs is not None
        return task.outputs

    def queued(self) -> int:
        """Requests waiting in the queues for their batch (a gauge reads it at each scrape)."""
        with self._lock:
            queues = list(self._queues.values())
        return sum(len(q.tasks) for q in queues)

    def forget(self, servable: Servable) -> None:
        """Drop the queues of an unloaded version; their threads finish what is queued and end, so the
        version can be freed.
        """
        with self._lock:
            for key in [k for k in self._queues if k[0] == id(servable)]:
                queue = self._queues.pop(key)
                with queue.cond:
                    queue.closed = True
                    queue.cond.notify_all()

    def _forget_idle(self) -> None:
        cutoff = time.monotonic() - 2 * _IDLE_EXIT_S
        for key, queue in list(self._queues.items()):
            if queue.last_used < cutoff and not queue.tasks:
                del self._queues[key]
