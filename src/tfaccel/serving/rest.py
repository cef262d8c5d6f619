"""TF Serving's REST API: ``:predict``, model status, metadata, Prometheus metrics.

URLs, JSON layouts, error bodies (``{"error": "..."}``) and HTTP codes follow TF Serving's own handler:
a ``/v1/...`` path that matches no route is 400 "Malformed request", any other path 404; a failed
request maps its gRPC code to HTTP (400 bad request, 404 unknown model/version, 503 overloaded, 504
deadline, 501 not implemented). Requests are served by a thread pool with HTTP/1.1 keep-alive.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from google.protobuf import json_format

from tfaccel.serving.config import MonitoringConfig
from tfaccel.serving.errors import ServingError
from tfaccel.serving.grpc_service import model_spec, signature_map, status_response
from tfaccel.serving.manager import log_event
from tfaccel.serving.service import Service
from tfaccel.serving.tensors import columns_from_json, columns_to_json, dumps, rows_from_json, rows_to_json

__all__ = ["RestServer"]

_PREDICT = re.compile(
    r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)"
)
_GET = re.compile(
    r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?"
)


def _parse_json(body: bytes) -> Any:
    text = body.decode("utf-8", errors="replace")
    if not text.strip():
        raise ServingError.invalid("JSON Parse error: The document is empty")
    try:
        value, _end = json.JSONDecoder().raw_decode(text.lstrip())  # trailing bytes ignored, as TF Serving
    except json.JSONDecodeError as err:
        raise ServingError.invalid(f"JSON Parse error: {err.msg} at offset: {err.pos}") from err
    if not isinstance(value, dict):
        raise ServingError.invalid(f"JSON Value: {text[:256]} Is not object")
    return value


class RestServer:
    """The REST front end on ``port``; ``timeout_ms`` bounds each predict (0: no bound)."""

    def __init__(self, service: Service, port: int, timeout_ms: int, monitoring: MonitoringConfig) -> None:
        self.service = service
        self.timeout_ms = timeout_ms
        self.monitoring = monitoring
        handler = _make_handler(self)
        self.httpd = ThreadingHTTPServer(("0.0.0.0", port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- routes ----------------------------------------------------------------------------------------
    def handle(self, method: str, raw_path: str, body: bytes) -> tuple[int, str, bytes]:
        """(HTTP status, content type, body) for one request."""
        path = urlsplit(raw_path).path
        if self.monitoring.prometheus_enabled and path == self.monitoring.prometheus_path and method == "GET":
            return 200, "text/plain; version=0.0.4", self.service.metrics.exposition()
        if not path.lower().startswith("/v1/"):
            return 404, "application/json", _error_body(f"Not found: {method} {path}")
        try:
            return 200, "application/json", self._route(method, path, body).encode()
        except ServingError as err:
            self.service.record_failure(_model_in(path), "predict" if method == "POST" else "", "REST", err)
            return err.http_status, "application/json", _error_body(err.message)

    def _route(self, method: str, path: str, body: bytes) -> str:
        if method == "POST" and (match := _PREDICT.fullmatch(path)):
            name, version, label, verb = match.groups()
            model = unquote(name)
            if verb != "predict":
                raise ServingError.unimplemented(
                    f"{verb} is not implemented by this server (it serves predict); use :predict"
                )
            return self._predict(
                model, int(version) if version else None, unquote(label) if label else None, body
            )
        if method == "GET" and (match := _GET.fullmatch(path)):
            name, version, label, metadata = match.groups()
            if not name:
                raise ServingError.invalid("Missing model name in request.")
            model = unquote(name)
            number = int(version) if version else None
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
        request = _parse_json(body)
        signature_name = request.get("signature_name", "")
        if not isinstance(signature_name, str):
            raise ServingError.invalid("'signature_name' key must be a string value.")
        has_rows, has_columns = "instances" in request, "inputs" in request
        if has_rows and has_columns:
            raise ServingError.invalid(
                "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist"
            )
        if not (has_rows or has_columns):
            raise ServingError.invalid("Missing 'inputs' or 'instances' key")

        def decode(signature: Any) -> Any:
            if has_rows:
                return rows_from_json(request["instances"], signature.inputs)
            return columns_from_json(request["inputs"], signature.inputs)

        deadline = time.monotonic() + self.timeout_ms / 1000.0 if self.timeout_ms > 0 else None
        _servable, _signature, outputs = self.service.predict(
            model, version, label, signature_name, decode, deadline, "predict", "REST"
        )
        if has_rows:
            return dumps({"predictions": rows_to_json(outputs)})
        return dumps({"outputs": columns_to_json(outputs)})


def _model_in(path: str) -> str:
    match = re.match(r"(?i)/v1/models/([^/:]+)", path)
    return unquote(match.group(1)) if match else ""


def _error_body(message: str) -> bytes:
    return ('{\n    "error": ' + json.dumps(message, ensure_ascii=False) + "\n}").encode()


def _make_handler(server: RestServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: a client's connection serves many requests

        timeout = 300  # seconds a connection may sit idle or half-sent before it is closed

        def _serve(self, method: str) -> None:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                self._answer(411, "application/json", _error_body("send the body with a Content-Length"))
                self.close_connection = True
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                if length < 0:
                    raise ValueError(length)
            except ValueError:
                self._answer(400, "application/json", _error_body("Content-Length is not a valid length"))
                self.close_connection = True
                return
            body = self.rfile.read(length) if length else b""
            try:
                status, content_type, payload = server.handle(method, self.path, body)
            except Exception as err:  # never drop a connection without an answer: a server bug is a 500
                status, content_type = 500, "application/json"
                message = f"internal error: {type(err).__name__}: {err}"
                payload = _error_body(message)
                log_event("request_failed", path=self.path, entrypoint="REST", code="INTERNAL", error=message)
            self._answer(status, content_type, payload)

        def _answer(self, status: int, content_type: str, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
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
