"""Health: is the server alive, is it ready, and is each model ready; over REST and ``grpc.health.v1``.

Why: an orchestrator (a Kubernetes probe, a load balancer's health check) needs to know when to send
traffic here and when to stop. The answers are computed from the server's state at the moment they are
asked (the models' versions, the drain), never from a status someone had to remember to update:

* **live**: the process answers. (A server that cannot answer this is restarted.)
* **ready**: every configured model has a version AVAILABLE, and the server is not draining. Per model:
  that model has a version AVAILABLE and the server is not draining.

REST: ``GET /livez`` and ``GET /readyz`` (``/readyz?model=NAME`` for one model): 200 or 503, with a
one-line JSON reason. gRPC: the standard ``grpc.health.v1.Health`` service (``Check``, ``Watch``,
``List``), service ``""`` for the whole server and a model's name for that model.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tfaccel.serving.manager import Manager

__all__ = ["Health", "HealthServicer", "Readiness"]

#: seconds between looks at the state while a ``Watch`` stream is open
WATCH_POLL_S = 0.5


@dataclass(frozen=True)
class Readiness:
    """The answer to "ready?": ``known`` is False for a model name the server is not configured with."""

    ready: bool
    reason: str
    known: bool = True


class Health:
    """The server's health, read from the manager and the drain flag."""

    def __init__(self, manager: Manager) -> None:
        self.manager = manager
        #: set on SIGTERM: the server stops being ready at once, before it stops taking requests
        self.draining = threading.Event()

    def readiness(self, model: str = "") -> Readiness:
        """The server's readiness (``model`` empty) or one model's."""
        names = self.manager.model_names()
        if model and model not in names:
            return Readiness(False, f"no model named {model[:200]!r} is configured here", known=False)
        if self.draining.is_set():
            return Readiness(False, "draining: the server is shutting down")
        missing = self.manager.without_available_version([model] if model else names)
        if missing:
            return Readiness(False, f"no version AVAILABLE yet for: {', '.join(missing)}")
        return Readiness(True, "a version is AVAILABLE" if model else "every model has a version AVAILABLE")


def _status(readiness: Readiness) -> Any:
    serving = health_pb2.HealthCheckResponse
    if not readiness.known:
        return serving.SERVICE_UNKNOWN
    return serving.SERVING if readiness.ready else serving.NOT_SERVING


class HealthServicer(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """``grpc.health.v1.Health`` on :class:`Health`; ``stop()`` ends the open ``Watch`` streams."""

    def __init__(self, health: Health) -> None:
        self.health = health
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()

    def Check(self, request: Any, context: grpc.ServicerContext) -> Any:
        readiness = self.health.readiness(request.service)
        if not readiness.known:  # the protocol's answer to an unknown service
            context.abort(grpc.StatusCode.NOT_FOUND, readiness.reason)
        return health_pb2.HealthCheckResponse(status=_status(readiness))

    def Watch(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        """The status now, then each change, until the client leaves or the server stops."""
        last = None
        while context.is_active() and not self._stopped.is_set():
            status = _status(self.health.readiness(request.service))
            if status != last:
                last = status
                yield health_pb2.HealthCheckResponse(status=status)
            self._stopped.wait(WATCH_POLL_S)

    def List(self, request: Any, context: grpc.ServicerContext) -> Any:
        response = health_pb2.HealthListResponse()
        for name in ["", *self.health.manager.model_names()]:
            response.statuses[name].status = _status(self.health.readiness(name))
        return response
