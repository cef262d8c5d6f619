"""The model server as an operator runs it behind a load balancer (issue 18, item 1): health over REST
and ``grpc.health.v1``, limits that refuse at once, the load gauges, one metric label per API, JSON log
lines, and the graceful drain on SIGTERM. Real server processes on loopback, real clients.

A model that takes a known time (tf.data's sleep, ``ms`` an input) holds requests in flight, so the
tests see the server full or draining without racing it.
"""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from server_process import ServerProcess

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class _Sleepy(tf.Module):
    """y = 2x, answered after sleeping ``ms`` milliseconds (tf.data's sleep: a call of known length)."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 2], tf.float32, name="x"),
            tf.TensorSpec([], tf.int64, name="ms"),
        ]
    )
    def serve(self, x: tf.Tensor, ms: tf.Tensor) -> dict[str, tf.Tensor]:
        rows = tf.data.Dataset.from_tensors(x)
        sleeping = tf.raw_ops.SleepDataset(
            input_dataset=rows._variant_tensor,
            sleep_microseconds=ms * 1000,
            output_types=[tf.float32],
            output_shapes=[tf.TensorShape([None, 2])],
        )
        slept = tf.data.experimental.from_variant(sleeping, rows.element_spec)
        return {"y": slept.reduce(tf.zeros_like(x), lambda total, value: total + value) * 2.0}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("operations")
    sleepy = _Sleepy()
    tf.saved_model.save(sleepy, str(root / "sleepy" / "1"), signatures={"serving_default": sleepy.serve})
    return root


class Server(ServerProcess):
    """A server process on loopback with both APIs; the log is kept."""

    def __init__(self, args: list[str], log: Path, wait_for: str = "/livez") -> None:
        # as an operator starts it: TensorFlow's C++ log level left to the server
        super().__init__(args, log, lambda srv: bool(srv.http("GET", wait_for)), ("TF_CPP_MIN_LOG_LEVEL",))
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def http(self, method: str, path: str, body: Any = None, timeout: float = 60) -> tuple[int, Any, Any]:
        """Status, parsed JSON body (or text) and headers of one request on a fresh connection."""
        conn = http.client.HTTPConnection("127.0.0.1", self.rest_port, timeout=timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=data)
            response = conn.getresponse()
            text = response.read().decode()
            try:
                return response.status, json.loads(text), response.headers
            except ValueError:
                return response.status, text, response.headers
        finally:
            conn.close()

    def sleepy(self, ms: int, x: list[list[float]] | None = None) -> tuple[int, Any, Any]:
        inputs = {"x": x or [[1.0, 2.0]], "ms": ms}
        return self.http("POST", "/v1/models/sleepy:predict", {"inputs": inputs})

    def grpc_sleepy(self, ms: int, timeout: float = 60) -> Any:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "sleepy"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[3.0, 4.0]], np.float32)))
        request.inputs["ms"].CopyFrom(tf.make_tensor_proto(np.int64(ms)))
        return self.stub.Predict(request, timeout=timeout)

    def gauge(self, name: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        status, text, _ = self.http("GET", "/monitoring/prometheus/metrics")
        assert status == 200
        return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        from prometheus_client.parser import text_string_to_metric_families

        _, text, _ = self.http("GET", "/monitoring/prometheus/metrics")
        return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]


def _monitoring(root: Path) -> str:
    path = root / "monitoring.config"
    path.write_text('prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }')
    return f"--monitoring_config_file={path}"


def _until(condition: Any, timeout: float = 30.0, what: str = "condition") -> None:
    until = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < until, f"{what} not reached in {timeout} s"
        time.sleep(0.05)


def _in_thread(work: Any) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(work())
        except Exception as err:  # the test asserts on it
            result.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Server] = []

    def start(args: list[str], wait_for: str = "/livez") -> Server:
        started.append(Server(args, tmp_path / f"server{len(started)}.log", wait_for))
        return started[-1]

    yield start
    for srv in started:
        srv.stop()


# -- health --------------------------------------------------------------------------------------------------


def test_health_says_ready_only_when_every_model_has_a_version(
    repo: Path, tmp_path: Path, server_factory: Any
) -> None:
    """``later`` has no version at start: not ready (REST 503 naming it, gRPC NOT_SERVING) while
    ``sleepy`` is; a version copied in makes the server ready, and a gRPC Watch sees the change.
    """
    later = tmp_path / "later"
    later.mkdir()
    config = tmp_path / "models.config"
    config.write_text(
        "model_config_list {\n"
        f'  config {{ name: "sleepy" base_path: "{repo / "sleepy"}" }}\n'
        f'  config {{ name: "later" base_path: "{later}" }}\n'
        "}\n"
    )
    srv = server_factory([f"--model_config_file={config}", "--file_system_poll_wait_seconds=1"])
    assert srv.http("GET", "/livez")[:2] == (200, {"live": True})
    status, body, _ = srv.http("GET", "/readyz")
    assert (status, body["ready"]) == (503, False) and "later" in body["reason"], body
    assert srv.http("GET", "/readyz?model=sleepy")[:2] == (
        200,
        {"ready": True, "reason": "a version is AVAILABLE"},
    )
    assert srv.http("GET", "/readyz?model=later")[0] == 503
    assert srv.http("GET", "/readyz?model=ghost")[0] == 404
    check = health_pb2.HealthCheckRequest
    assert srv.health.Check(check(service=""), timeout=30).status == NOT_SERVING
    assert srv.health.Check(check(service="sleepy"), timeout=30).status == SERVING
    assert srv.health.Check(check(service="later"), timeout=30).status == NOT_SERVING
    with pytest.raises(grpc.RpcError) as unknown:
        srv.health.Check(check(service="ghost"), timeout=30)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    listed = srv.health.List(health_pb2.HealthListRequest(), timeout=30).statuses
    assert {name: s.status for name, s in listed.items()} == {
        "": NOT_SERVING,
        "sleepy": SERVING,
        "later": NOT_SERVING,
    }
    watch = srv.health.Watch(check(service=""), timeout=120)
    assert next(watch).status == NOT_SERVING
    staged = tmp_path / "staged"
    shutil.copytree(repo / "sleepy" / "1", staged)
    staged.rename(later / "1")  # appears whole, as a deployment tool renames a finished copy in
    assert next(watch).status == SERVING
    watch.cancel()
    assert srv.http("GET", "/readyz")[:2] == (
        200,
        {"ready": True, "reason": "every model has a version AVAILABLE"},
    )
    assert srv.health.Check(check(service=""), timeout=30).status == SERVING


# -- limits, gauges, labels, logs ----------------------------------------------------------------------------


def test_a_full_server_refuses_at_once_and_the_gauges_show_its_load(repo: Path, server_factory: Any) -> None:
    """One running, one waiting: a third request is refused at once over either API (REST 503 with
    Retry-After, gRPC RESOURCE_EXHAUSTED), the gauges show 1 and 1, and both admitted requests are
    answered exactly. Latency is labelled ``Predict`` over both APIs.
    """
    srv = server_factory(
        [
            f"--model_base_path={repo / 'sleepy'}",
            "--model_name=sleepy",
            "--max_concurrent_requests=1",
            "--max_queued_requests=1",
            _monitoring(repo),
        ]
    )
    running, first = _in_thread(lambda: srv.sleepy(3000, [[1.0, -2.0]]))
    _until(lambda: srv.gauge("tfaccel_serving_requests_in_flight") == 1, what="one request running")
    waiting, second = _in_thread(lambda: srv.grpc_sleepy(0))
    _until(lambda: srv.gauge("tfaccel_serving_requests_queued") == 1, what="one request waiting")
    start = time.monotonic()
    status, body, headers = srv.sleepy(0)
    assert status == 503 and "the server is full" in body["error"], body
    assert headers["Retry-After"] == "1"
    # a body is parsed only once the request has a slot: a full server refuses even a malformed one as
    # full (an image's JSON took 30-50 ms to parse, paid by every refused request before)
    status, body, _ = srv.http("POST", "/v1/models/sleepy:predict", "not a JSON object")
    assert status == 503 and "the server is full" in body["error"], body
    with pytest.raises(grpc.RpcError) as refused:
        srv.grpc_sleepy(0)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert time.monotonic() - start < 2.0, "refusals must not wait for a slot"
    running.join(60)
    waiting.join(60)
    assert first[0][:2] == (200, {"outputs": [[2.0, -4.0]]}), first
    np.testing.assert_array_equal(tf.make_ndarray(second[0].outputs["y"]), [[6.0, 8.0]])
    assert srv.gauge("tfaccel_serving_requests_in_flight") == 0
    assert srv.gauge("tfaccel_serving_requests_queued") == 0
    latency = [
        labels
        for name, labels, value in srv.samples()
        if name == ":tensorflow:serving:request_latency_count" and value > 0
    ]
    assert {(labels["API"], labels["entrypoint"]) for labels in latency} == {
        ("Predict", "REST"),
        ("Predict", "GRPC"),
    }
    events = srv.events()  # every line of the log is one JSON object
    assert len(events) == len(srv.log.read_text().splitlines())
    assert all({"time", "level", "logger"} <= e.keys() for e in events)
    refusals = [e for e in events if e.get("event") == "request_failed" and e["code"] == "RESOURCE_EXHAUSTED"]
    assert {e["entrypoint"] for e in refusals} == {"REST", "GRPC"}


def test_connections_beyond_the_limit_are_answered_503_and_closed(repo: Path, server_factory: Any) -> None:
    srv = server_factory(
        [f"--model_base_path={repo / 'sleepy'}", "--model_name=sleepy", "--rest_api_max_connections=2"]
    )
    # the start-up probe's connection counts until its thread sees the close: let it go first, or one of
    # the two held below is the one refused
    time.sleep(0.5)
    held = [socket.create_connection(("127.0.0.1", srv.rest_port), timeout=30) for _ in range(2)]
    try:
        time.sleep(0.3)  # both accepted, each holding its thread
        extra = socket.create_connection(("127.0.0.1", srv.rest_port), timeout=30)
        answer = b""
        while chunk := extra.recv(4096):
            answer += chunk
        extra.close()
        assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
        assert b"too many connections" in answer
    finally:
        for sock in held:
            sock.close()
    _until(lambda: srv.sleepy(0)[0] == 200, what="a connection accepted again")


# -- the drain -----------------------------------------------------------------------------------------------


def test_sigterm_drains_not_ready_first_then_closed_then_exit_0(repo: Path, server_factory: Any) -> None:
    """On SIGTERM: not ready at once (REST 503 "draining", gRPC NOT_SERVING) while still serving for the
    drain delay; then the port closes; the request in flight is answered in full; exit status 0.
    """
    srv = server_factory(
        [
            f"--model_base_path={repo / 'sleepy'}",
            "--model_name=sleepy",
            "--drain_delay_seconds=2",
            _monitoring(repo),
        ]
    )
    assert srv.http("GET", "/readyz")[0] == 200
    flight, answer = _in_thread(lambda: srv.sleepy(5000, [[0.5, 1.5]]))
    _until(lambda: srv.gauge("tfaccel_serving_requests_in_flight") == 1, what="the request in flight")
    srv.proc.send_signal(signal.SIGTERM)
    _until(lambda: srv.http("GET", "/readyz")[0] == 503, timeout=5, what="not ready")
    assert "draining" in srv.http("GET", "/readyz")[1]["reason"]
    check = health_pb2.HealthCheckRequest(service="")
    assert srv.health.Check(check, timeout=10).status == NOT_SERVING

    def refused() -> bool:
        try:
            socket.create_connection(("127.0.0.1", srv.rest_port), timeout=5).close()
        except OSError:
            return True
        return False

    _until(refused, timeout=10, what="the REST port closed")
    flight.join(60)
    assert answer and answer[0][:2] == (200, {"outputs": [[1.0, 3.0]]}), answer
    assert srv.proc.wait(timeout=30) == 0
    events = srv.events()
    assert [e["event"] for e in events if e.get("event") in ("draining", "stopped")] == [
        "draining",
        "stopped",
    ]
    stopped = next(e for e in events if e.get("event") == "stopped")
    assert stopped["graceful"] is True and stopped["abandoned_predictions"] == 0


def test_the_shutdown_timeout_bounds_the_drain(repo: Path, server_factory: Any) -> None:
    srv = server_factory(
        [
            f"--model_base_path={repo / 'sleepy'}",
            "--model_name=sleepy",
            "--shutdown_timeout_seconds=1",
            _monitoring(repo),
        ]
    )
    _in_thread(lambda: srv.sleepy(60000))
    _until(lambda: srv.gauge("tfaccel_serving_requests_in_flight") == 1, what="the request in flight")
    start = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(timeout=30) == 0
    assert time.monotonic() - start < 15
    stopped = next(e for e in srv.events() if e.get("event") == "stopped")
    assert stopped["graceful"] is False and stopped["abandoned_predictions"] == 1
