"""TF Serving's REST API: ``:predict``, model status, metadata, Prometheus metrics.

URLs, JSON layouts, error bodies (``{"error": "..."}``) and HTTP codes follow TF Serving's own handler:
a ``/v1/...`` path that matches no route is 400 "Malformed request", any other path 404; a failed
request maps its gRPC code to HTTP (400 bad request, 404 unknown model/version, 503 overloaded, 504
deadline, 501 not implemented). Requests are served by a thread per connection with HTTP/1.1 keep-alive.

Requests are untrusted: a body above ``max_body_bytes`` is answered 413 before it is read (its
``Content-Length`` says so), the listen backlog is deep enough for a burst of a thousand connections,
and whatever a request holds ends in an answer (a server bug is a 500, never a dropped connection).
With an SSL config the port speaks HTTPS only (TF Serving leaves REST in plaintext; this server never
serves plaintext once TLS is asked for).
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from google.protobuf import json_format

from tfaccel.serving.config import MonitoringConfig
from tfaccel.serving.errors import ServingError
from tfaccel.serving.grpc_service import model_spec, signature_map, status_response
from tfaccel.serving.health import Health
from tfaccel.serving.manager import log_event
from tfaccel.serving.service import Service
from tfaccel.serving.tensors import PredictRequest

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_CONNECTIONS", "RestServer"]

#: ``--rest_api_max_body_bytes``'s default: above a typical predict (a batch of 16 224x224x3 images
#: as JSON is about 50 MB) and bounding what one request can cost (JSON decoding takes up to ~20x the
#: body in memory)
DEFAULT_MAX_BODY_BYTES = 64 << 20
#: connections the kernel queues before the server accepts them (Python's default of 5 reset bursts)
LISTEN_BACKLOG = 1024
#: after a 413, bytes of the unread body drained (and seconds waited) so the client reads the answer
_DRAIN_BYTES, _DRAIN_SECONDS = 1 << 20, 2.0
#: seconds a client has to complete the TLS handshake
_HANDSHAKE_SECONDS = 10.0
#: connections served at once (``--rest_api_max_connections``'s default); each holds a thread
DEFAULT_MAX_CONNECTIONS = 1024
_FULL_BODY = b'{"error": "the server has too many connections open; retry shortly or on another replica"}'
_FULL_ANSWER = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: " + str(len(_FULL_BODY)).encode() + b"\r\n\r\n" + _FULL_BODY
)

_PREDICT = re.compile(
    r"(?i)/v1/models/([^/:]+)(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)"
)
_GET = re.compile(
    r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?(?:/(metadata))?"
)
_LENGTH = re.compile(r"[0-9]{1,19}")


def _version(text: str | None) -> int | None:
    """A version from the URL: an int64, as TF Serving parses it."""
    if not text:
        return None
    if len(text) > 19 or int(text) >= 2**63:
        raise ServingError.invalid(f"Failed to convert version: {text[:40]} to numeric.")
    return int(text)


class _HTTPServer(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` of them: one more is answered 503 at once
    (and closed) by the accepting thread, so a flood of connections cannot grow the threads without bound.
    """

    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True
    tls: ssl.SSLContext | None = None
    max_connections = DEFAULT_MAX_CONNECTIONS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections = 0
        self._count_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._count_lock:
            full = self.connections >= self.max_connections
            if not full:
                self.connections += 1
        if not full:
            super().process_request(request, client_address)
            return
        log_event("connection_refused", entrypoint="REST", connections=self.connections)
        if self.tls is None:  # (over TLS there is no handshake yet to answer through: just closed)
            try:
                request.settimeout(1.0)
                request.sendall(_FULL_ANSWER)
            except OSError:
                pass
        self.shutdown_request(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._count_lock:
                self.connections -= 1

    def finish_request(self, request: Any, client_address: Any) -> None:
        """With TLS, the handshake runs here, in the connection's own thread (a slow or failing client
        holds up no one else); a client that does not complete it gets no HTTP at all.
        """
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(_HANDSHAKE_SECONDS)
        try:
            connection = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            request.close()
            return
        try:
            super().finish_request(connection, client_address)
        finally:
            connection.close()


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class RestServer:
    """The REST front end on ``bind_address:port`` (HTTPS with ``tls``); ``timeout_ms`` bounds each
    predict (0: no bound); bodies above ``max_body_bytes`` are refused (413) unread; at most
    ``max_connections`` connections at once. ``health`` answers ``/livez`` and ``/readyz``.

    Shutting down is two steps: :meth:`stop_accepting` (the port closes; a request still arriving on an
    open connection is answered 503 and the connection closed); :attr:`busy` then counts the requests
    still being answered.
    """

    def __init__(
        self,
        service: Service,
        health: Health,
        port: int,
        timeout_ms: int,
        monitoring: MonitoringConfig,
        bind_address: str = "0.0.0.0",
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        tls: ssl.SSLContext | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self.service = service
        self.health = health
        self.timeout_ms = timeout_ms
        self.monitoring = monitoring
        self.max_body_bytes = max_body_bytes
        handler = _make_handler(self)
        server_class = _HTTPServer6 if ":" in bind_address else _HTTPServer
        self.httpd = server_class((bind_address, port), handler)
        self.httpd.tls = tls
        self.httpd.max_connections = max_connections
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        #: requests being answered now (their bodies read or being read), for the drain
        self._busy = 0
        self._busy_lock = threading.Lock()
        self.closing = False

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> None:
        self.thread.start()

    def stop_accepting(self) -> None:
        """Close the port: no new connections; requests on open ones are refused from now on."""
        self.closing = True
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def busy(self) -> int:
        return self._busy

    def enter(self) -> None:
        with self._busy_lock:
            self._busy += 1

    def leave(self) -> None:
        with self._busy_lock:
            self._busy -= 1

    # -- routes ----------------------------------------------------------------------------------------
    def handle(self, method: str, raw_path: str, body: bytes) -> tuple[int, str, bytes]:
        """(HTTP status, content type, body) for one request."""
        parts = urlsplit(raw_path)
        path = parts.path
        if self.monitoring.prometheus_enabled and path == self.monitoring.prometheus_path and method == "GET":
            return 200, "text/plain; version=0.0.4", self.service.metrics.exposition()
        if path in ("/livez", "/readyz") and method == "GET":
            return self._health(path, parts.query)
        if not path.lower().startswith("/v1/"):
            return 404, "application/json", _error_body(f"Not found: {method} {path}")
        try:
            return 200, "application/json", self._route(method, path, body).encode()
        except ServingError as err:
            self.service.record_failure(_model_in(path), _api(method, path), "REST", err)
            return err.http_status, "application/json", _error_body(err.message)

    def _health(self, path: str, query: str) -> tuple[int, str, bytes]:
        """``/livez``: 200 while the process answers; ``/readyz[?model=NAME]``: 200 when ready, else 503
        (404 for a model not configured here); both with a one-line JSON reason.
        """
        if path == "/livez":
            return 200, "application/json", b'{"live": true}'
        model = (parse_qs(query).get("model") or [""])[0]
        readiness = self.health.readiness(model)
        status = 200 if readiness.ready else (503 if readiness.known else 404)
        body = json.dumps({"ready": readiness.ready, "reason": readiness.reason}, ensure_ascii=False)
        return status, "application/json", body.encode()

    def _route(self, method: str, path: str, body: bytes) -> str:
        if method == "POST" and (match := _PREDICT.fullmatch(path)):
            name, version, label, verb = match.groups()
            model = unquote(name)
            if verb != "predict":
                raise ServingError.unimplemented(
                    f"{verb} is not implemented by this server (it serves predict); use :predict"
                )
            return self._predict(model, _version(version), unquote(label) if label else None, body)
        if method == "GET" and (match := _GET.fullmatch(path)):
            name, version, label, metadata = match.groups()
            if not name:
                raise ServingError.invalid("Missing model name in request.")
            model = unquote(name)
            number = _version(version)
            tag = unquote(label) if label else None
            if metadata:
                servable = self.service.metadata(model, number, tag, "REST")
                spec = json_format.MessageToDict(
                    model_spec(servable),
                    preserving_proto_field_name=True,
                    always_print_fields_with_no_presence=True,
                )
                signatures = json_format.MessageToDict(
                    signature_map(servable),
                    preserving_proto_field_name=True,
                    always_print_fields_with_no_presence=True,
                )
                return json.dumps({"model_spec": spec, "metadata": {"signature_def": signatures}}, indent=1)
            records = self.service.status(model, number, tag, "REST")
            return str(
                json_format.MessageToJson(
                    status_response(records),
                    preserving_proto_field_name=True,
                    always_print_fields_with_no_presence=True,
                )
            )
        raise ServingError.invalid(f"Malformed request: {method} {path}")

    def _predict(self, model: str, version: int | None, label: str | None, body: bytes) -> str:
        parsed: list[PredictRequest] = []

        def signature_name() -> str:  # called once the request holds a slot: refusals skip the parse
            parsed.append(PredictRequest.parse(body))
            return parsed[0].signature_name

        def decode(signature: Any) -> Any:
            return parsed[0].inputs(signature.inputs)

        deadline = time.monotonic() + self.timeout_ms / 1000.0 if self.timeout_ms > 0 else None
        _servable, _signature, outputs = self.service.predict(
            model, version, label, signature_name, decode, deadline, "Predict", "REST"
        )
        return parsed[0].answer(outputs)


def _api(method: str, path: str) -> str:
    """The API a failed request was for, named as over gRPC (one metric label per API)."""
    if method == "POST":
        return "Predict"
    return "GetModelMetadata" if path.lower().endswith("/metadata") else "GetModelStatus"


def _model_in(path: str) -> str:
    match = re.match(r"(?i)/v1/models/([^/:]+)", path)
    return unquote(match.group(1)) if match else ""


def _error_body(message: str) -> bytes:
    return ('{\n    "error": ' + json.dumps(message, ensure_ascii=False) + "\n}").encode()


def _make_handler(server: RestServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: a client's connection serves many requests
        # headers and body go out as two writes: with Nagle's algorithm the body waits for the ACK of the
        # headers, which a keep-alive client delays by up to 40 ms, on every request
        disable_nagle_algorithm = True

        timeout = 300  # seconds a connection may sit idle or half-sent before it is closed

        def _length(self) -> int | None:
            """The body's length, or None after answering a request that cannot be read."""
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                self._refuse(411, "send the body with a Content-Length")
                return None
            text = (self.headers.get("Content-Length") or "0").strip()
            if not _LENGTH.fullmatch(text):
                self._refuse(400, f"Content-Length {text[:40]!r} is not a valid length")
                return None
            length = int(text)
            if length > server.max_body_bytes:
                self._refuse(
                    413,
                    f"the request body has {length} bytes, more than this server accepts "
                    f"({server.max_body_bytes} bytes, --rest_api_max_body_bytes)",
                )
                return None
            return length

        def _refuse(self, status: int, message: str) -> None:
            """Answer without reading the body, then close: drain a little of it first, so the client
            (still sending) reads this answer rather than a connection reset.
            """
            log_event(
                "request_refused", path=self.path[:200], entrypoint="REST", status=status, error=message
            )
            self.close_connection = True
            self._answer(status, "application/json", _error_body(message), close=True)
            try:
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_WR)
                self.connection.settimeout(_DRAIN_SECONDS)
                drained, until = 0, time.monotonic() + _DRAIN_SECONDS
                while drained < _DRAIN_BYTES and time.monotonic() < until:
                    chunk = self.connection.recv(65536)
                    if not chunk:
                        break
                    drained += len(chunk)
            except OSError:
                pass  # the client went away: nothing left to tell it

        def handle_expect_100(self) -> bool:
            # a client waiting for "100 Continue" hears the refusal instead, before sending the body
            if self._length() is None:
                return False
            return bool(super().handle_expect_100())

        def _serve(self, method: str) -> None:
            server.enter()
            try:
                if server.closing:  # shutting down: this connection's last answer
                    self._refuse(503, "the server is shutting down; send the request to another replica")
                    return
                length = self._length()
                if length is None:
                    return
                body = self.rfile.read(length) if length else b""
                try:
                    status, content_type, payload = server.handle(method, self.path, body)
                except Exception as err:  # never drop a connection without an answer: a bug is a 500
                    status, content_type = 500, "application/json"
                    message = f"internal error: {type(err).__name__}: {err}"
                    payload = _error_body(message)
                    log_event(
                        "request_failed",
                        path=self.path[:200],
                        entrypoint="REST",
                        code="INTERNAL",
                        error=message,
                    )
                if server.closing:
                    self.close_connection = True
                self._answer(status, content_type, payload, close=server.closing)
            finally:
                server.leave()

        def _answer(self, status: int, content_type: str, payload: bytes, close: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            if status == 503:
                self.send_header("Retry-After", "1")
            if close:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_PUT(self) -> None:
            self._serve("PUT")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def log_message(self, format: str, *args: Any) -> None:
            pass  # request lines are not logged; failed requests are, once, by the service

    return Handler
