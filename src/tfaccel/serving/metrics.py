"""Prometheus metrics, named as TF Serving names its own (``:tensorflow:serving:...``).

One registry per server (not the process-global one), so tests can run servers side by side and a
scrape shows this server's numbers only. Label values come from the configuration (model names), never
from a request: :data:`UNKNOWN_MODEL` stands for every name the server does not serve.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["UNKNOWN_MODEL", "Metrics", "label_value"]

#: the model_name label of requests naming a model this server is not configured with
UNKNOWN_MODEL = "(unknown)"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def label_value(text: str) -> str:
    """``text`` fit for a label: control characters (NUL, newlines) replaced, at most 200 characters."""
    return _CONTROL.sub("?", text)[:200]


_LATENCY_BUCKETS_US = (100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1e6, 5e6)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            ":tensorflow:serving:request_count",
            "Requests by model and status code (OK or the error code's name).",
            ["model_name", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            ":tensorflow:serving:request_latency",
            "Latency of successful requests in microseconds, by model, API and entry point (REST, GRPC).",
            ["model_name", "API", "entrypoint"],
            buckets=_LATENCY_BUCKETS_US,
            registry=self.registry,
        )
        self.invocations = Counter(
            ":tensorflow:serving:model_invocations",
            "Calls of a model signature (one per batch when batching is on).",
            ["model_name", "version"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            ":tensorflow:serving:batching_session:processed_batch_size",
            "Rows in each batch the model ran, padding included.",
            ["model_name"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.padding = Counter(
            ":tensorflow:serving:batching_session:padding_rows",
            "Rows added to batches to reach an allowed batch size.",
            ["model_name"],
            registry=self.registry,
        )

    def watch(self, in_flight: Callable[[], float], queued: Callable[[], float]) -> None:
        """The autoscaling gauges, read at each scrape: predictions admitted and not yet answered, and
        predictions waiting (for a free slot, or admitted and waiting in a batching queue for their batch).
        One series each across REST and gRPC: the server's load, whatever the protocol.
        """
        Gauge(
            "tfaccel_serving_requests_in_flight",
            "Predictions admitted and not yet answered (running, or in a batching queue).",
            registry=self.registry,
        ).set_function(in_flight)
        Gauge(
            "tfaccel_serving_requests_queued",
            "Predictions waiting: for a free slot (--max_concurrent_requests), or in a batching queue.",
            registry=self.registry,
        ).set_function(queued)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
