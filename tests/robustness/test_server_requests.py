"""The model server against hostile or malformed requests (issue 16, items 8, 9, 11 and 14).

Why this file: every request the server receives is untrusted. Each bad request here is DATA (a REST
request and the status and words the client must get, a gRPC request and its code), sent to one real
server process on loopback; the answer must be a clear 4xx/INVALID_ARGUMENT, never a 500, a dropped
connection or a memory blow-up, and the good requests next to them must still get exact answers. A
hypothesis fuzz test drives the JSON decoder directly (and a few real HTTP requests) with random shapes,
types, sizes and nesting.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import selectors
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from conftest import assert_close, free_ports
from server_process import SERVER, ServerProcess
from tfaccel.serving.errors import ServingError
from tfaccel.serving.tensors import columns_from_json, parse_request_json, rows_from_json

#: the REST body limit the module's server runs with (small, so a 413 costs little to provoke)
BODY_LIMIT = 1 << 20
WEIGHTS = (np.arange(24, dtype=np.float32).reshape(6, 4) - 12.0) / 10.0


class _Plain(tf.Module):
    """y = x @ WEIGHTS, one float input [None, 6]."""

    def __init__(self) -> None:
        self.w = tf.Variable(WEIGHTS)

    @tf.function(input_signature=[tf.TensorSpec([None, 6], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": tf.matmul(x, self.w)}


class _Mixed(tf.Module):
    """One input of each wire type: int32, int64, bool, string, float32 [None, 2]."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.int32, name="i"),
            tf.TensorSpec([None], tf.int64, name="l"),
            tf.TensorSpec([None], tf.bool, name="b"),
            tf.TensorSpec([None], tf.string, name="s"),
            tf.TensorSpec([None, 2], tf.float32, name="f"),
        ]
    )
    def serve(self, i: tf.Tensor, l: tf.Tensor, b: tf.Tensor, s: tf.Tensor, f: tf.Tensor) -> Any:  # noqa: E741
        return {
            "i": i + 1,
            "l": l * 2,
            "b": tf.logical_not(b),
            "n": tf.strings.length(s),
            "f": tf.reduce_sum(f, axis=1),
        }


def _run_server(args: list[str], timeout: int = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    return subprocess.run([*SERVER, *args], capture_output=True, text=True, timeout=timeout, env=env)


class Server(ServerProcess):
    """One server process on 127.0.0.1 (both APIs bound to loopback only)."""

    def __init__(self, args: list[str], log: Path) -> None:
        super().__init__(args, log, lambda srv: srv.http("GET", "/v1/models/plain")[0] == 200)
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    def http(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, str]:
        """One request on a fresh connection; ``headers`` may lie (Content-Length) or add chunking."""
        conn = http.client.HTTPConnection("127.0.0.1", self.rest_port, timeout=60)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            headers = dict(headers or {})
            if body is not None and "Content-Length" not in headers:
                headers["Content-Length"] = str(len(body))
            for key, value in headers.items():
                conn.putheader(key, value)
            conn.endheaders()
            if body:
                # the server may answer (413) and stop reading before the body is sent
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    conn.send(body)
            response = conn.getresponse()
            return response.status, response.read().decode("utf-8", errors="replace")
        finally:
            conn.close()

    def peak_rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("robust_serving")
    plain, mixed = _Plain(), _Mixed()
    tf.saved_model.save(plain, str(root / "plain" / "1"), signatures={"serving_default": plain.serve})
    tf.saved_model.save(mixed, str(root / "mixed" / "1"), signatures={"serving_default": mixed.serve})
    (root / "models.config").write_text(
        "model_config_list {\n"
        + "".join(f'  config {{ name: "{n}" base_path: "{root / n}" }}\n' for n in ("plain", "mixed"))
        + "}\n"
    )
    (root / "monitoring.config").write_text("prometheus_config { enable: true }")
    srv = Server(
        [
            f"--model_config_file={root / 'models.config'}",
            f"--monitoring_config_file={root / 'monitoring.config'}",
            "--file_system_poll_wait_seconds=0",
            f"--rest_api_max_body_bytes={BODY_LIMIT}",
        ],
        root / "server.log",
    )
    yield srv
    srv.stop()


# -- REST: request -> (status, words in the error) -------------------------------------------------------


def _nested(depth: int, leaf: str = "1") -> bytes:
    return ('{"instances": ' + "[" * depth + leaf + "]" * depth + "}").encode()


def _body(value: Any) -> bytes:
    return json.dumps(value).encode()


ROW = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
MIXED = {"i": [1], "l": [2], "b": [True], "s": ["ab"], "f": [[0.5, 1.5]]}
PLAIN = "/v1/models/plain:predict"
MIX = "/v1/models/mixed:predict"

#: (id, method, path, body, extra headers, HTTP status, words the error must contain)
REST_CASES: list[tuple[str, str, str, bytes | None, dict[str, str], int, str]] = [
    ("deep-array-100k", "POST", PLAIN, _nested(100_000), {}, 400, "nested too deeply"),
    ("deep-object-100k", "POST", PLAIN, b'{"a": ' * 100_000 + b"1" + b"}" * 100_000, {}, 400, "nested"),
    ("deep-array-80", "POST", PLAIN, _nested(80), {}, 400, "input 'x'"),
    (
        "deep-strings-900",
        "POST",
        MIX,
        _body({"inputs": {**MIXED, "s": "__S__"}}).replace(b'"__S__"', b"[" * 900 + b'"a"' + b"]" * 900),
        {},
        400,
        "input 's'",
    ),
    (
        "million-digit-int",
        "POST",
        PLAIN,
        b'{"instances": [[' + b"7" * 1_000_000 + b", 1, 1, 1, 1, 1]]}",
        {},
        400,
        "digits",
    ),
    ("true-in-floats", "POST", PLAIN, b'{"instances": [[1.0, true, 3, 4, 5, 6]]}', {}, 400, "booleans"),
    (
        "false-in-floats-columns",
        "POST",
        PLAIN,
        b'{"inputs": {"x": [[false, 2, 3, 4, 5, 6]]}}',
        {},
        400,
        "booleans",
    ),
    ("true-in-int32", "POST", MIX, _body({"inputs": {**MIXED, "i": [True]}}), {}, 400, "booleans"),
    ("true-in-int64", "POST", MIX, _body({"inputs": {**MIXED, "l": [1, False]}}), {}, 400, "booleans"),
    ("number-for-bool", "POST", MIX, _body({"inputs": {**MIXED, "b": [1]}}), {}, 400, "expects bool"),
    ("null-in-floats", "POST", PLAIN, b'{"instances": [[null, 2, 3, 4, 5, 6]]}', {}, 400, "input 'x'"),
    ("string-in-floats", "POST", PLAIN, _body({"instances": [["a"] * 6]}), {}, 400, "strings"),
    ("object-in-floats", "POST", PLAIN, _body({"instances": [[{"b64": "AA=="}] * 6]}), {}, 400, "input 'x'"),
    ("ragged", "POST", PLAIN, _body({"instances": [ROW, ROW[:5]]}), {}, 400, "input 'x'"),
    (
        "int32-overflow",
        "POST",
        MIX,
        _body({"inputs": {**MIXED, "i": [2**31]}}),
        {},
        400,
        "does not fit int32",
    ),
    ("int64-overflow", "POST", MIX, _body({"inputs": {**MIXED, "l": [2**70]}}), {}, 400, "input 'l'"),
    (
        "int-309-digits",
        "POST",
        MIX,
        _body({"inputs": {**MIXED, "i": "__I__"}}).replace(b'"__I__"', b"[" + b"9" * 309 + b"]"),
        {},
        400,
        "beyond 64 bits",
    ),
    ("fraction-in-int", "POST", MIX, _body({"inputs": {**MIXED, "i": [1.5]}}), {}, 400, "input 'i'"),
    (
        "nan-in-int",
        "POST",
        MIX,
        b'{"inputs": {"i": [NaN], "l": [1], "b": [true], "s": ["a"], "f": [[1, 2]]}}',
        {},
        400,
        "input 'i'",
    ),
    ("bad-b64", "POST", MIX, _body({"inputs": {**MIXED, "s": [{"b64": "%%"}]}}), {}, 400, "base64"),
    ("number-for-string", "POST", MIX, _body({"inputs": {**MIXED, "s": [7]}}), {}, 400, "not a string"),
    ("not-an-object", "POST", PLAIN, b"[1, 2]", {}, 400, "Is not object"),
    ("not-utf8", "POST", PLAIN, b'{"instances": [[\xff\xfe]]}', {}, 400, "JSON Parse error"),
    ("empty-body", "POST", PLAIN, b"", {}, 400, "The document is empty"),
    ("both-keys", "POST", PLAIN, _body({"instances": [ROW], "inputs": [ROW]}), {}, 400, "only one of"),
    ("empty-instances", "POST", PLAIN, _body({"instances": []}), {}, 400, "non-empty"),
    (
        "signature-not-string",
        "POST",
        PLAIN,
        _body({"instances": [ROW], "signature_name": 3}),
        {},
        400,
        "signature_name",
    ),
    (
        "huge-version",
        "POST",
        "/v1/models/plain/versions/" + "9" * 5000 + ":predict",
        _body({"instances": [ROW]}),
        {},
        400,
        "Failed to convert version",
    ),
    (
        "huge-version-status",
        "GET",
        "/v1/models/plain/versions/" + "9" * 30,
        None,
        {},
        400,
        "Failed to convert version",
    ),
    (
        "nul-model",
        "POST",
        "/v1/models/a%00b:predict",
        _body({"instances": [ROW]}),
        {},
        404,
        "Servable not found",
    ),
    (
        "content-length-1e12",
        "POST",
        PLAIN,
        b'{"instances": []}',
        {"Content-Length": str(10**12)},
        413,
        "--rest_api_max_body_bytes",
    ),
    (
        "expect-100-over-limit",
        "POST",
        PLAIN,
        b"{}",
        {"Expect": "100-continue", "Content-Length": str(BODY_LIMIT + 1)},
        413,
        "--rest_api_max_body_bytes",
    ),
    ("body-over-limit", "POST", PLAIN, b" " * (BODY_LIMIT + 1), {}, 413, "--rest_api_max_body_bytes"),
    ("content-length-words", "POST", PLAIN, b"{}", {"Content-Length": "ten"}, 400, "Content-Length"),
    ("content-length-negative", "POST", PLAIN, b"{}", {"Content-Length": "-5"}, 400, "Content-Length"),
    (
        "content-length-signed",
        "POST",
        PLAIN,
        b"{}",
        {"Content-Length": "+2"},
        400,
        "Content-Length",
    ),
    (
        "chunked",
        "POST",
        PLAIN,
        b"2\r\n{}\r\n0\r\n\r\n",
        {"Transfer-Encoding": "chunked"},
        411,
        "Content-Length",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "words"),
    [pytest.param(*case[1:], id=case[0]) for case in REST_CASES],
)
def test_rest_bad_request(
    server: Server,
    method: str,
    path: str,
    body: bytes | None,
    headers: dict[str, str],
    status: int,
    words: str,
) -> None:
    got, text = server.http(method, path, body, headers)
    assert got == status, (got, text[:500])
    assert words in json.loads(text)["error"], text[:500]
    assert server.proc.poll() is None


#: (id, path, body, the exact outputs) next to the bad ones: the decoder still gets good requests right
REST_GOOD: list[tuple[str, str, bytes, Any]] = [
    (
        "ints-for-floats",
        PLAIN,
        _body({"instances": [[1, 2, 3, 4, 5, 6]]}),
        [np.array(ROW, np.float32) @ WEIGHTS],
    ),
    ("mixed", MIX, _body({"inputs": MIXED}), {"i": [2], "l": [4], "b": [False], "n": [2], "f": [2.0]}),
    (
        "int64-large",
        MIX,
        _body({"inputs": {**MIXED, "l": [2**62]}}),
        {"i": [2], "l": [-(2**63)], "b": [False], "n": [2], "f": [2.0]},
    ),
    (
        "trailing-bytes-ignored",
        PLAIN,
        _body({"instances": [ROW]}) + b" trailing",
        [np.array(ROW, np.float32) @ WEIGHTS],
    ),
]


@pytest.mark.parametrize(("path", "body", "want"), [pytest.param(*c[1:], id=c[0]) for c in REST_GOOD])
def test_rest_good_requests_next_to_bad_ones(server: Server, path: str, body: bytes, want: Any) -> None:
    status, text = server.http("POST", path, body)
    assert status == 200, text[:500]
    reply = json.loads(text)
    if isinstance(want, dict):
        got = reply["outputs"]
        assert sorted(got) == sorted(want)
        for key, value in want.items():
            if key == "f":
                assert_close(np.array(got[key], np.float32), np.array(value, np.float32))
            else:
                assert got[key] == value, (key, got[key])
    else:
        assert_close(np.array(reply["predictions"], np.float32), np.array(want, np.float32))


# -- gRPC: request -> code (and words) --------------------------------------------------------------------


def _proto(dtype: int, shape: list[int] | None, **fields: Any) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=dtype)
    if shape is None:
        proto.tensor_shape.CopyFrom(tensor_shape_pb2.TensorShapeProto(unknown_rank=True))
    else:
        proto.tensor_shape.CopyFrom(tensor_shape_pb2.TensorShapeProto(dim=[{"size": d} for d in shape]))
    for key, value in fields.items():
        if key == "tensor_content":
            proto.tensor_content = value
        else:
            getattr(proto, key).extend(value)
    return proto


F32, INVALID = types_pb2.DT_FLOAT, grpc.StatusCode.INVALID_ARGUMENT
#: 256 MiB of float32 claimed by a request of a few bytes
HUGE_ROWS = (256 << 20) // (6 * 4)

#: (id, model, {input: TensorProto}, gRPC code, words in the details)
GRPC_CASES: list[tuple[str, str, dict[str, tensor_pb2.TensorProto], grpc.StatusCode, str]] = [
    ("dt-resource", "plain", {"x": _proto(types_pb2.DT_RESOURCE, [2, 6])}, INVALID, "DT_RESOURCE"),
    ("dt-variant", "plain", {"x": _proto(types_pb2.DT_VARIANT, [2, 6])}, INVALID, "DT_VARIANT"),
    ("dt-unknown-enum", "plain", {"x": _proto(999, [2, 6])}, INVALID, "999"),
    (
        "dt-int32-for-float",
        "plain",
        {"x": _proto(types_pb2.DT_INT32, [1, 6], int_val=[1] * 6)},
        INVALID,
        "expects float32",
    ),
    (
        "dt-string-for-float",
        "plain",
        {"x": _proto(types_pb2.DT_STRING, [1, 6], string_val=[b"a"] * 6)},
        INVALID,
        "expects float32",
    ),
    ("huge-shape-no-values", "plain", {"x": _proto(F32, [HUGE_ROWS, 6])}, INVALID, "carries only 0 values"),
    (
        "huge-shape-one-value",
        "plain",
        {"x": _proto(F32, [HUGE_ROWS, 6], float_val=[1.0])},
        INVALID,
        "carries only 1 values",
    ),
    (
        "shape-overflows-int64",
        "plain",
        {"x": _proto(F32, [2**62, 6], float_val=[1.0])},
        INVALID,
        "carries only",
    ),
    ("huge-inner-dims", "plain", {"x": _proto(F32, [1, 2**40])}, INVALID, "does not fit"),
    ("negative-dim", "plain", {"x": _proto(F32, [-1, 6], float_val=[1.0] * 6)}, INVALID, "dimension"),
    ("unknown-rank", "plain", {"x": _proto(F32, None, float_val=[1.0] * 6)}, INVALID, "unknown rank"),
    ("wrong-rank", "plain", {"x": _proto(F32, [6], float_val=[1.0] * 6)}, INVALID, "does not fit"),
    ("wrong-inner-dim", "plain", {"x": _proto(F32, [2, 5], float_val=[1.0] * 10)}, INVALID, "does not fit"),
    (
        "content-too-short",
        "plain",
        {"x": _proto(F32, [2, 6], tensor_content=b"\0" * 40)},
        INVALID,
        "tensor_content has 40 bytes",
    ),
    (
        "content-too-long",
        "plain",
        {"x": _proto(F32, [1, 6], tensor_content=b"\0" * 4000)},
        INVALID,
        "tensor_content has 4000 bytes",
    ),
    (
        "content-claims-huge",
        "plain",
        {"x": _proto(F32, [HUGE_ROWS, 6], tensor_content=b"\0" * 24)},
        INVALID,
        "tensor_content has 24 bytes",
    ),
    (
        "more-values-than-shape",
        "plain",
        {"x": _proto(F32, [1, 6], float_val=[1.0] * 7)},
        INVALID,
        "more than",
    ),
    (
        "unknown-input",
        "plain",
        {"z": _proto(F32, [1, 6], float_val=[1.0] * 6)},
        INVALID,
        "input size does not match",
    ),
    (
        "nul-model",
        "a\0b",
        {"x": _proto(F32, [1, 6], float_val=[1.0] * 6)},
        grpc.StatusCode.NOT_FOUND,
        "Servable not found",
    ),
    (
        "string-content",
        "mixed",
        {
            "i": _proto(types_pb2.DT_INT32, [1], int_val=[1]),
            "l": _proto(types_pb2.DT_INT64, [1], int64_val=[1]),
            "b": _proto(types_pb2.DT_BOOL, [1], bool_val=[True]),
            "s": _proto(types_pb2.DT_STRING, [1], tensor_content=b"abcdefgh"),
            "f": _proto(F32, [1, 2], float_val=[1.0, 2.0]),
        },
        INVALID,
        "input 's'",
    ),
]


def _grpc_predict(server: Server, model: str, inputs: dict[str, tensor_pb2.TensorProto]) -> Any:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(value)
    return server.stub.Predict(request, timeout=60)


@pytest.mark.parametrize(
    ("model", "inputs", "code", "words"), [pytest.param(*c[1:], id=c[0]) for c in GRPC_CASES]
)
def test_grpc_bad_request(
    server: Server, model: str, inputs: dict[str, tensor_pb2.TensorProto], code: grpc.StatusCode, words: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _grpc_predict(server, model, inputs)
    assert caught.value.code() == code, caught.value.details()
    assert words in (caught.value.details() or ""), caught.value.details()


def test_grpc_fill_semantics_still_served(server: Server) -> None:
    """TF's rule stays: fewer values than the shape holds are filled with the last one (when small)."""
    response = _grpc_predict(server, "plain", {"x": _proto(F32, [2, 6], float_val=[1.0, 2.0])})
    x = np.array([1.0] + [2.0] * 11, np.float32).reshape(2, 6)
    got = np.array(response.outputs["y"].float_val, np.float32).reshape(2, 4)
    assert_close(got, x @ WEIGHTS)


def test_huge_shape_claims_allocate_nothing(server: Server) -> None:
    """Refused before anything is allocated: the server's peak RSS does not move by the claimed 256 MiB."""
    before = server.peak_rss_kib()
    for proto in (_proto(F32, [HUGE_ROWS, 6]), _proto(F32, [HUGE_ROWS, 6], float_val=[3.0])):
        with pytest.raises(grpc.RpcError) as caught:
            _grpc_predict(server, "plain", {"x": proto})
        assert caught.value.code() == INVALID
    grown_mib = (server.peak_rss_kib() - before) / 1024
    assert grown_mib < 64, f"peak RSS grew by {grown_mib:.0f} MiB"


# -- metrics, connections, start-up ------------------------------------------------------------------------


def test_metrics_label_only_configured_models(server: Server) -> None:
    names = [f"ghost{i}" for i in range(20)] + ["a%00b", "nul%00%0Aname", "x" * 3000]
    for name in names:
        assert server.http("POST", f"/v1/models/{name}:predict", _body({"instances": [ROW]}))[0] == 404
        assert server.http("GET", f"/v1/models/{name}")[0] == 404
    assert server.http("POST", PLAIN, b"{")[0] == 400
    status, text = server.http("GET", "/monitoring/prometheus/metrics")
    assert status == 200
    series = [
        line for line in text.splitlines() if line.startswith(":tensorflow:serving:request_count_total")
    ]
    labels = {line.split('model_name="')[1].split('"')[0] for line in series}
    assert labels <= {"plain", "mixed", "(unknown)"}, labels
    assert '{model_name="(unknown)",status="NOT_FOUND"}' in text
    assert '{model_name="plain",status="INVALID_ARGUMENT"}' in text
    assert "\0" not in text and "ghost" not in text


def _flood(port: int, count: int, path: str, seconds: float = 90.0) -> dict[str, int]:
    """``count`` connections opened at once, each sending one request; how each ended."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    selector = selectors.DefaultSelector()
    outcomes: dict[str, int] = {}
    received: dict[socket.socket, bytes] = {}
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        selector.register(sock, selectors.EVENT_WRITE)
    deadline = time.monotonic() + seconds
    open_count = count

    def finish(sock: socket.socket, outcome: str) -> None:
        nonlocal open_count
        selector.unregister(sock)
        sock.close()
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        open_count -= 1

    while open_count and time.monotonic() < deadline:
        for key, events in selector.select(timeout=1.0):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                if events & selectors.EVENT_WRITE:
                    sock.sendall(request)
                    selector.modify(sock, selectors.EVENT_READ)
                    received[sock] = b""
                    continue
                chunk = sock.recv(65536)
            except OSError as err:
                finish(sock, type(err).__name__)
                continue
            if chunk:
                received[sock] += chunk
            else:
                finish(sock, received[sock].split(b" ", 2)[1].decode() if received[sock] else "empty")
    for key in list(selector.get_map().values()):
        finish(key.fileobj, "unfinished")  # type: ignore[arg-type]
    return outcomes


def test_a_thousand_concurrent_connections_are_all_answered(server: Server) -> None:
    outcomes = _flood(server.rest_port, 1000, "/v1/models/plain")
    assert outcomes == {"200": 1000}, outcomes


def test_bind_address_keeps_the_server_on_loopback(server: Server) -> None:
    """Bound to 127.0.0.1 (the fixture's flags), the ports are closed on another loopback address."""
    for port in (server.rest_port, server.grpc_port):
        with socket.socket() as sock:
            sock.settimeout(10)
            assert sock.connect_ex(("127.0.0.2", port)) != 0
            with socket.create_connection(("127.0.0.1", port), timeout=10):
                pass
    log = server.log.read_text()
    assert f"REST API at http://127.0.0.1:{server.rest_port}" in log
    assert f"gRPC API at 127.0.0.1:{server.grpc_port}" in log


def test_flag_defaults_follow_tf_serving() -> None:
    from tfaccel.serving.server import parse_flags

    args = parse_flags(["--model_base_path=/models/m"])
    assert (args.grpc_bind_address, args.rest_api_bind_address) == ("0.0.0.0", "0.0.0.0")
    assert args.rest_api_max_body_bytes == 64 << 20


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--ssl_config_file=/nonexistent/ssl.config"], "--ssl_config_file /nonexistent/ssl.config"),
        (["--port=0", "--rest_api_port=0"], "no endpoint"),
    ],
    ids=["ssl-config-unreadable", "no-endpoint-refused"],
)
def test_unsafe_start_up_is_refused(tmp_path: Path, flags: list[str], words: str) -> None:
    (tmp_path / "m" / "1").mkdir(parents=True)
    port = free_ports(1)[0]
    done = _run_server([f"--model_base_path={tmp_path / 'm'}", f"--port={port}", *flags])
    lines = [line for line in done.stderr.splitlines() if ": error: " in line]
    assert done.returncode == 1, done.stderr[-2000:]
    assert len(lines) == 1 and words in lines[0], done.stderr[-2000:]


# -- TLS ------------------------------------------------------------------------------------------------


def _certificates() -> dict[str, bytes]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, both signed by the CA (PEM)."""
    crypto = pytest.importorskip("cryptography")
    del crypto
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def issue(name: str, key: Any, issuer: Any, issuer_key: Any, ca: bool, san: list[Any]) -> Any:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer or subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(issuer_key or key, hashes.SHA256())

    def pem_key(key: Any) -> bytes:
        return bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )

    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = issue("test ca", ca_key, None, None, True, [])
    server = issue(
        "127.0.0.1",
        server_key,
        ca.subject,
        ca_key,
        False,
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client = issue("client", client_key, ca.subject, ca_key, False, [])
    pem = serialization.Encoding.PEM
    return {
        "ca": ca.public_bytes(pem),
        "server_cert": server.public_bytes(pem),
        "server_key": pem_key(server_key),
        "client_cert": client.public_bytes(pem),
        "client_key": pem_key(client_key),
    }


def _ssl_config(certs: dict[str, bytes], client_verify: bool) -> str:
    def quoted(data: bytes) -> str:
        return json.dumps(data.decode())  # a JSON string is a valid text-proto string here (PEM is ASCII)

    return (
        f"server_key: {quoted(certs['server_key'])}\nserver_cert: {quoted(certs['server_cert'])}\n"
        f"custom_ca: {quoted(certs['ca'])}\nclient_verify: {str(client_verify).lower()}\n"
    )


def test_tls_with_client_certificates_and_never_plaintext(tmp_path: Path) -> None:
    """With --ssl_config_file both APIs speak TLS only, and client_verify refuses clients without a
    certificate signed by custom_ca; the answers over TLS are exact.
    """
    import ssl
    import urllib.request

    certs = _certificates()
    plain = _Plain()
    tf.saved_model.save(plain, str(tmp_path / "plain" / "1"), signatures={"serving_default": plain.serve})
    (tmp_path / "ssl.config").write_text(_ssl_config(certs, client_verify=True))
    for name, data in certs.items():
        (tmp_path / f"{name}.pem").write_bytes(data)
    grpc_port, rest_port = free_ports(2)
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    log = tmp_path / "tls.log"
    proc = subprocess.Popen(
        [
            *SERVER,
            f"--port={grpc_port}",
            f"--rest_api_port={rest_port}",
            "--grpc_bind_address=127.0.0.1",
            "--rest_api_bind_address=127.0.0.1",
            "--model_name=plain",
            f"--model_base_path={tmp_path / 'plain'}",
            f"--ssl_config_file={tmp_path / 'ssl.config'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(log, "w"),  # noqa: SIM115 - closed with the process
        env=env,
    )
    trusted = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    with_cert = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    with_cert.load_cert_chain(str(tmp_path / "client_cert.pem"), str(tmp_path / "client_key.pem"))
    url = f"https://127.0.0.1:{rest_port}/v1/models/plain:predict"
    body = _body({"instances": [ROW]})
    try:
        deadline = time.monotonic() + 180
        while "REST API at" not in log.read_text() or "AVAILABLE" not in _status(rest_port, with_cert):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        # REST over TLS with a client certificate: the exact answer
        with urllib.request.urlopen(
            urllib.request.Request(url, data=body), context=with_cert, timeout=60
        ) as r:
            got = json.loads(r.read())["predictions"]
        assert_close(np.array(got, np.float32), np.array([ROW], np.float32) @ WEIGHTS)
        # without a client certificate, or in plaintext: no HTTP answer at all
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            urllib.request.urlopen(urllib.request.Request(url, data=body), context=trusted, timeout=30).read()
        with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
            conn = http.client.HTTPConnection("127.0.0.1", rest_port, timeout=30)
            conn.request("POST", "/v1/models/plain:predict", body)
            conn.getresponse().read()
        # gRPC over TLS with the client certificate; without one, or insecure: UNAVAILABLE
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "plain"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([ROW], np.float32)))
        full = grpc.ssl_channel_credentials(certs["ca"], certs["client_key"], certs["client_cert"])
        with grpc.secure_channel(f"127.0.0.1:{grpc_port}", full) as channel:
            reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
        got = np.array(reply.outputs["y"].float_val, np.float32).reshape(1, 4)
        assert_close(got, np.array([ROW], np.float32) @ WEIGHTS)
        for channel in (
            grpc.secure_channel(f"127.0.0.1:{grpc_port}", grpc.ssl_channel_credentials(certs["ca"])),
            grpc.insecure_channel(f"127.0.0.1:{grpc_port}"),
        ):
            with channel, pytest.raises(grpc.RpcError) as caught:
                prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value.details()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert f"REST API at https://127.0.0.1:{rest_port}" in log.read_text()
    assert f"gRPC API at 127.0.0.1:{grpc_port} (TLS)" in log.read_text()


def _status(port: int, context: Any) -> str:
    import urllib.request

    try:
        with urllib.request.urlopen(
            f"https://127.0.0.1:{port}/v1/models/plain", context=context, timeout=10
        ) as r:
            return str(r.read().decode())
    except OSError:
        return ""


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('server_key: "k"', "needs server_key and server_cert"),
        ('server_key: "k" server_cert: "c" client_verify: true', "client_verify needs custom_ca"),
        ('server_key: "not a key" server_cert: "not a certificate"', "does not load"),
        ("server_kee: 'x'", "server_kee"),
    ],
    ids=["no-cert", "verify-without-ca", "garbage-pem", "typo"],
)
def test_bad_ssl_configs_are_refused(tmp_path: Path, text: str, words: str) -> None:
    from tfaccel.serving.config import ConfigError, read_ssl_config

    (tmp_path / "ssl.config").write_text(text)
    with pytest.raises(ConfigError) as caught:
        read_ssl_config(str(tmp_path / "ssl.config"))
    assert words in str(caught.value) and "ssl.config" in str(caught.value)


def test_good_ssl_config_loads(tmp_path: Path) -> None:
    from tfaccel.serving.config import read_ssl_config

    certs = _certificates()
    (tmp_path / "ssl.config").write_text(_ssl_config(certs, client_verify=False))
    tls = read_ssl_config(str(tmp_path / "ssl.config"))
    assert (tls.server_cert, tls.custom_ca, tls.client_verify) == (certs["server_cert"], certs["ca"], False)
    assert "server_key" not in repr(tls) and certs["server_key"].decode()[40:80] not in repr(tls)


# -- fuzz: the JSON decoder, directly and over HTTP ---------------------------------------------------------

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=6)
        | st.dictionaries(st.sampled_from(["x", "b64", "i", "s"]), inner, max_size=3)
    ),
    max_leaves=40,
)
_SPECS = {
    "float": {"x": tf.TensorSpec([None, 3], tf.float32)},
    "int": {"x": tf.TensorSpec([None], tf.int32)},
    "int64": {"x": tf.TensorSpec([None, 2], tf.int64)},
    "bool": {"x": tf.TensorSpec([None], tf.bool)},
    "string": {"x": tf.TensorSpec([None], tf.string)},
    "many": {
        "i": tf.TensorSpec([None], tf.int32),
        "s": tf.TensorSpec([None], tf.string),
        "x": tf.TensorSpec([None, 2], tf.float64),
    },
}


def _deep(depth: int, leaf: Any) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=_JSON | st.builds(_deep, st.integers(0, 1500), _SCALARS),
    spec=st.sampled_from(sorted(_SPECS)),
    rows=st.booleans(),
)
def test_fuzz_decoder_gives_arrays_or_invalid_argument(value: Any, spec: str, rows: bool) -> None:
    inputs = _SPECS[spec]
    try:
        decoded = rows_from_json(value, inputs) if rows else columns_from_json(value, inputs)
    except ServingError as err:
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.message, err
        return
    assert set(decoded) == set(inputs)
    for name, array in decoded.items():
        assert isinstance(array, np.ndarray)
        want = object if inputs[name].dtype == tf.string else inputs[name].dtype.as_numpy_dtype
        assert array.dtype == want, (name, array.dtype)
        if inputs[name].dtype != tf.bool and array.dtype != object:
            assert not _holds_bools(value), "booleans were taken as numbers"


@settings(max_examples=300, deadline=None)
@given(
    body=st.binary(max_size=200)
    | st.builds(lambda v: json.dumps(v).encode(), _JSON)
    | st.builds(
        lambda n, d: b'{"instances": [' + b"9" * n + b"]}" + b"]" * d, st.integers(1, 2000), st.integers(0, 3)
    )
)
def test_fuzz_body_parser_gives_an_object_or_invalid_argument(body: bytes) -> None:
    try:
        value, may_hold_bools = parse_request_json(body)
    except ServingError as err:
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.message.startswith("JSON"), err
        return
    assert isinstance(value, dict)
    assert may_hold_bools or not _holds_bools(value)


def _holds_bools(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, list):
        return any(_holds_bools(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_bools(v) for v in value.values())
    return False


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(value=_JSON, key=st.sampled_from(["instances", "inputs"]), model=st.sampled_from(["plain", "mixed"]))
def test_fuzz_over_http_never_500(server: Server, value: Any, key: str, model: str) -> None:
    body = json.dumps({key: value}, allow_nan=True).encode()
    status, text = server.http("POST", f"/v1/models/{model}:predict", body)
    assert status in (200, 400), (status, text[:300])
    assert server.proc.poll() is None
