"""Errors a request can end in, carrying the gRPC status code; REST maps the same code to HTTP.

One class for both protocols, so a request rejected over REST and over gRPC is rejected for the same
reason with the same words, and the metrics count it under the same code.
"""

from __future__ import annotations

import grpc

__all__ = ["HTTP_STATUS", "ServingError"]

#: gRPC status -> HTTP status, as TF Serving's REST front end maps them
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


class ServingError(Exception):
    """A request failed with ``code``; ``message`` is what the client reads."""

    def __init__(self, code: grpc.StatusCode, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self._http_status = http_status

    @property
    def http_status(self) -> int:
        """The REST status: TF Serving's mapping of the code, unless the error names its own."""
        return self._http_status or HTTP_STATUS.get(self.code, 500)

    @classmethod
    def overloaded(cls, message: str) -> ServingError:
        """The server is full: RESOURCE_EXHAUSTED over gRPC, and 503 over REST (what load balancers
        retry elsewhere; TF Serving's mapping of the code would say 429).
        """
        return cls(grpc.StatusCode.RESOURCE_EXHAUSTED, message, http_status=503)

    @classmethod
    def invalid(cls, message: str) -> ServingError:
        return cls(grpc.StatusCode.INVALID_ARGUMENT, message)

    @classmethod
    def not_found(cls, message: str) -> ServingError:
        return cls(grpc.StatusCode.NOT_FOUND, message)

    @classmethod
    def unavailable(cls, message: str) -> ServingError:
        return cls(grpc.StatusCode.UNAVAILABLE, message)

    @classmethod
    def deadline(cls, message: str = "Deadline Exceeded") -> ServingError:
        return cls(grpc.StatusCode.DEADLINE_EXCEEDED, message)

    @classmethod
    def unimplemented(cls, message: str) -> ServingError:
        return cls(grpc.StatusCode.UNIMPLEMENTED, message)
