"""What both front ends (REST and gRPC) call: predict, model status and metadata, counted and logged.

Keeping the protocol-free core here means a request means the same thing over either protocol: the same
model/version/label resolution, the same input checks and error texts, the same batching and metrics.
Metrics are labelled with configured model names only: a request naming any other model is counted under
one fixed label, so clients cannot grow the metric series without bound (or write into their labels).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import grpc
import numpy as np

from tfaccel.serving.admission import Admission
from tfaccel.serving.batching import Batcher
from tfaccel.serving.config import BatchingParams
from tfaccel.serving.errors import ServingError
from tfaccel.serving.manager import Manager, VersionRecord, log_event
from tfaccel.serving.metrics import UNKNOWN_MODEL, Metrics, label_value
from tfaccel.serving.servable import Servable, Signature

__all__ = ["Service"]


class Service:
    """``admission`` bounds the predictions running and waiting (default: no bound worth naming)."""

    def __init__(
        self,
        manager: Manager,
        metrics: Metrics,
        batching: BatchingParams | None,
        admission: Admission | None = None,
    ) -> None:
        self.manager = manager
        self.metrics = metrics
        self._labels = {name: label_value(name) for name in manager.model_names()}
        self.batcher = Batcher(batching, self._count_batch) if batching is not None else None
        if self.batcher is not None:
            manager.on_unload.append(self.batcher.forget)
        self.admission = admission or Admission(1 << 20, 1 << 20)
        batcher = self.batcher
        metrics.watch(
            lambda: self.admission.running,
            lambda: self.admission.waiting + (batcher.queued() if batcher is not None else 0),
        )

    def label(self, model: str) -> str:
        """The metric label of a requested model name: its own if configured, else one fixed label."""
        return self._labels.get(model, UNKNOWN_MODEL)

    def _count_batch(self, servable: Servable, rows: int, size: int) -> None:
        self.metrics.invocations.labels(self.label(servable.name), str(servable.version)).inc()
        self.metrics.batch_size.labels(self.label(servable.name)).observe(size)
        if size > rows:
            self.metrics.padding.labels(self.label(servable.name)).inc(size - rows)

    def predict(
        self,
        model: str,
        version: int | None,
        label: str | None,
        signature_name: str | Callable[[], str],
        decode: Callable[[Signature], Mapping[str, np.ndarray]],
        deadline: float | None,
        api: str,
        entrypoint: str,
    ) -> tuple[Servable, Signature, dict[str, np.ndarray]]:
        """Resolve, decode the inputs against the signature (``decode``), check, run (batched or not).

        Everything after the admission gate, parsing included: ``signature_name`` may be a function that
        parses the request and names its signature, so a refused request never pays for its parse.
        """

        def work() -> tuple[Servable, Signature, dict[str, np.ndarray]]:
            with self.admission.slot(deadline):
                return admitted()

        def admitted() -> tuple[Servable, Signature, dict[str, np.ndarray]]:
            name = signature_name() if callable(signature_name) else signature_name
            servable = self.manager.resolve(model, version, label)
            signature = servable.signature(name, entrypoint)
            inputs = dict(decode(signature))
            # a model whose rows mix runs each request alone (padding or merging would change answers)
            batcher = self.batcher if not servable.batch_alone else None
            signature.check(inputs, any_batch=batcher is not None)
            if deadline is not None and time.monotonic() > deadline:
                raise ServingError.deadline()
            if batcher is not None:
                outputs = batcher.run(servable, signature, inputs, deadline)
            else:
                outputs = signature(inputs)
                self.metrics.invocations.labels(self.label(servable.name), str(servable.version)).inc()
            if deadline is not None and time.monotonic() > deadline:  # as TF Serving's run timeout does
                raise ServingError.deadline()
            return servable, signature, outputs

        result: tuple[Servable, Signature, dict[str, np.ndarray]] = self.counted(model, api, entrypoint, work)
        return result

    def counted(self, model: str, api: str, entrypoint: str, work: Callable[[], Any]) -> Any:
        """Run ``work`` with the request metrics and, on failure, one structured log line."""
        start = time.perf_counter()
        try:
            result = work()
        except ServingError as err:
            self.record_failure(model, api, entrypoint, err)  # marks it: the front end won't count it again
            raise
        except Exception as err:  # a server bug: reported to the client as INTERNAL, logged, counted
            self.metrics.requests.labels(self.label(model), "INTERNAL").inc()
            message = f"{type(err).__name__}: {err}"
            log_event(
                "request_failed",
                model=model[:200],
                api=api,
                entrypoint=entrypoint,
                code="INTERNAL",
                error=message[:500],
            )
            raise ServingError(grpc.StatusCode.INTERNAL, message) from err
        self.metrics.requests.labels(self.label(model), "OK").inc()
        self.metrics.latency.labels(self.label(model), api, entrypoint).observe(
            (time.perf_counter() - start) * 1e6
        )
        return result

    def record_failure(self, model: str, api: str, entrypoint: str, error: ServingError) -> None:
        """Count and log an error found outside :meth:`counted` (a malformed request); idempotent."""
        if getattr(error, "counted", False):
            return
        error.counted = True  # type: ignore[attr-defined]
        self.metrics.requests.labels(self.label(model), error.code.name).inc()
        log_event(
            "request_failed",
            model=model[:200],
            api=api,
            entrypoint=entrypoint,
            code=error.code.name,
            error=error.message[:500],
        )

    def status(
        self, model: str, version: int | None, label: str | None, entrypoint: str
    ) -> list[VersionRecord]:
        records: list[VersionRecord] = self.counted(
            model, "GetModelStatus", entrypoint, lambda: self.manager.status(model, version, label)
        )
        return records

    def metadata(self, model: str, version: int | None, label: str | None, entrypoint: str) -> Servable:
        servable: Servable = self.counted(
            model, "GetModelMetadata", entrypoint, lambda: self.manager.resolve(model, version, label)
        )
        return servable
