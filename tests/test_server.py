"""The model server, as its users meet it: a real server process on loopback, driven by plain HTTP and
by the ``tensorflow-serving-api`` gRPC client, serving models traced with each backend and plain ones.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

import tfaccel
from conftest import STATIC, assert_close, installed_script

SERVER = installed_script(
    "tfaccel-model-server", ["-c", "import sys, tfaccel_cli; sys.exit(tfaccel_cli.serve_main())"]
)
UNLIMITED = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


class _Scaled(tf.Module):
    """y = relu(x @ w) * scale: ``scale`` tells versions apart."""

    def __init__(self, scale: float) -> None:
        rng = np.random.default_rng(5)
        self.w = tf.Variable(rng.normal(size=(6, 4)).astype("float32"))
        self.scale = tf.Variable(scale)

    @tf.function(input_signature=[tf.TensorSpec([None, 6], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        y = tf.nn.relu(tf.matmul(x, self.w)) * self.scale
        return {"y": y, "best": tf.argmax(y, axis=1, output_type=tf.int32)}


class _Text(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"length": tf.strings.length(text), "echo_bytes": text, "upper": tf.strings.upper(text)}


def _save_plain(path: Path, scale: float) -> None:
    module = _Scaled(scale)
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


def _trace(src: Path, dst: Path, batch: int, flags: str) -> None:
    loaded = tf.saved_model.load(str(src))
    examples = {"x": np.random.default_rng(0).random((batch, 6), dtype=np.float32)}
    traced = tfaccel.trace(loaded.signatures["serving_default"], examples, **_flags(flags))
    traced.save(str(dst))


def _flags(text: str) -> dict[str, Any]:
    from tfaccel.options import parse_flags

    return parse_flags(f"{STATIC} {text}", "test")


def _free_ports(count: int) -> list[int]:
    """Distinct free ports (all held open while choosing, so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class Server:
    """A server subprocess; ``rest(...)``/``stub`` talk to it; stopped and its log kept on exit."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.grpc_port, self.rest_port = _free_ports(2)
        self.log = log
        env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
        self.proc = subprocess.Popen(
            [*SERVER, f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}", *args],
            stdout=subprocess.DEVNULL,
            stderr=open(log, "w"),  # noqa: SIM115 - closed with the process
            env=env,
        )
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}", options=UNLIMITED)
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited ({self.proc.returncode}):\n{log.read_text()}")
            try:
                self.rest("GET", "/v1/models/nonexistent")
                return
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"the server did not start:\n{log.read_text()}")

    def rest(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        request = urllib.request.Request(f"http://127.0.0.1:{self.rest_port}{path}", data=data, method=method)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                raw = response.read()
                status = response.status
        except urllib.error.HTTPError as err:
            raw, status = err.read(), err.code
        text = raw.decode()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def predict(
        self, model: str, x: np.ndarray, version: int | None = None, timeout: float | None = 60, **extra: Any
    ) -> Any:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        if version is not None:
            request.model_spec.version.value = version
        for key, value in extra.items():
            setattr(request.model_spec, key, value)
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
        return self.stub.Predict(request, timeout=timeout)

    def stop(self) -> str:
        self.channel.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.log.read_text()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """plain/1, plain/2 (scale 1 and 2); xla/1 and ov/1 traced at batch 2; ovdyn/1 traced for any batch."""
    root = tmp_path_factory.mktemp("serving")
    _save_plain(root / "plain" / "1", 1.0)
    _save_plain(root / "plain" / "2", 2.0)
    _trace(root / "plain" / "1", root / "xla" / "1", 2, "--backend=xla")
    _trace(root / "plain" / "1", root / "ov" / "1", 2, "--backend=openvino")
    _trace(root / "plain" / "1", root / "ovdyn" / "1", 4, "--backend=openvino --dynamic-batch-size")
    text = _Text()
    tf.saved_model.save(text, str(root / "text" / "1"), signatures={"serving_default": text.serve})
    _save_plain(root / "broken" / "1", 1.0)
    (root / "broken" / "2").mkdir()
    (root / "broken" / "2" / "saved_model.pb").write_bytes(b"this is not a SavedModel")
    extra = {
        "plain": "model_version_policy { all {} } version_labels { key: 'stable' value: 1 }",
        "broken": "model_version_policy { latest { num_versions: 2 } }",
    }
    config = "model_config_list {\n"
    for name in ("plain", "xla", "ov", "ovdyn", "text", "broken"):
        config += f'  config {{ name: "{name}" base_path: "{root / name}" {extra.get(name, "")} }}\n'
    config += "}\n"
    (root / "models.config").write_text(config)
    (root / "monitoring.config").write_text(
        'prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }'
    )
    return root


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("logs") / "server.log"
    srv = Server(
        [
            f"--model_config_file={repo / 'models.config'}",
            f"--monitoring_config_file={repo / 'monitoring.config'}",
            "--file_system_poll_wait_seconds=0",
        ],
        log,
    )
    yield srv
    srv.stop()


def _reference(repo: Path, model: str, x: np.ndarray, version: int = 1) -> dict[str, np.ndarray]:
    loaded = tf.saved_model.load(str(repo / model / str(version)))
    return {k: v.numpy() for k, v in loaded.signatures["serving_default"](x=tf.constant(x)).items()}


@pytest.mark.parametrize("model", ["xla", "ov", "plain"])
def test_predict_equals_in_process(server: Server, repo: Path, model: str) -> None:
    x = np.random.default_rng(1).random((2, 6), dtype=np.float32)
    version = 1
    want = _reference(repo, model, x, version)
    original = _reference(repo, "plain", x, 1)
    assert_close(want["y"], original["y"])  # the traced model itself agrees with the original
    # REST, row format: one object per row, outputs by name
    status, body = server.rest(
        "POST", f"/v1/models/{model}/versions/{version}:predict", {"instances": x.tolist()}
    )
    assert status == 200, body
    rows = body["predictions"]
    assert [sorted(r) for r in rows] == [["best", "y"], ["best", "y"]]
    assert_close(np.array([r["y"] for r in rows], np.float32), want["y"])
    assert [r["best"] for r in rows] == want["best"].tolist()
    # REST, columnar format
    status, body = server.rest(
        "POST", f"/v1/models/{model}/versions/{version}:predict", {"inputs": {"x": x.tolist()}}
    )
    assert status == 200, body
    assert_close(np.array(body["outputs"]["y"], np.float32), want["y"])
    # gRPC: typed fields, the resolved version and signature in the response
    response = server.predict(model, x, version=version)
    assert response.model_spec.name == model and response.model_spec.version.value == version
    assert response.model_spec.signature_name == "serving_default"
    y = response.outputs["y"]
    assert not y.tensor_content and len(y.float_val) == 8
    assert [d.size for d in y.tensor_shape.dim] == [2, 4]
    assert_close(np.array(y.float_val, np.float32).reshape(2, 4), want["y"])
    assert list(response.outputs["best"].int_val) == want["best"].tolist()


def test_versions_labels_and_latest(server: Server, repo: Path) -> None:
    x = np.ones((1, 6), np.float32)
    one, two = _reference(repo, "plain", x, 1)["y"], _reference(repo, "plain", x, 2)["y"]
    assert_close(two, 2 * one)
    latest = server.predict("plain", x)
    assert latest.model_spec.version.value == 2
    assert_close(np.array(latest.outputs["y"].float_val).reshape(1, 4), two)
    status, body = server.rest("POST", "/v1/models/plain/labels/stable:predict", {"instances": x.tolist()})
    assert status == 200 and np.allclose(body["predictions"][0]["y"], one[0], rtol=1e-6)
    status, body = server.rest("GET", "/v1/models/plain")
    assert status == 200
    assert body == {
        "model_version_status": [
            {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
        ]
    }
    status, body = server.rest("GET", "/v1/models/plain/versions/1")
    assert status == 200 and [v["version"] for v in body["model_version_status"]] == ["1"]
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "plain"
    reply = server.models.GetModelStatus(request, timeout=30)
    assert [(s.version, s.state) for s in reply.model_version_status] == [(2, 30), (1, 30)]


def test_strings_travel_as_utf8_or_b64(server: Server) -> None:
    raw = "héllo".encode()
    status, body = server.rest(
        "POST", "/v1/models/text:predict", {"instances": [{"b64": base64.b64encode(raw).decode()}, "ab"]}
    )
    assert status == 200, body
    assert body["predictions"] == [
        {"echo_bytes": {"b64": base64.b64encode(raw).decode()}, "length": len(raw), "upper": "HéLLO"},
        {"echo_bytes": {"b64": "YWI="}, "length": 2, "upper": "AB"},
    ]
    status, body = server.rest("POST", "/v1/models/text:predict", {"inputs": {"text": [{"b64": "%%%"}]}})
    assert status == 400 and "base64" in body["error"]
    status, body = server.rest("POST", "/v1/models/text:predict", {"instances": [1, 2]})
    assert status == 400 and "not a string" in body["error"]


def test_a_version_that_fails_to_load_is_reported_and_the_other_serves(server: Server) -> None:
    status, body = server.rest("GET", "/v1/models/broken")
    assert status == 200, body
    (failed, good) = body["model_version_status"]
    assert (failed["version"], failed["state"], failed["status"]["error_code"]) == ("2", "END", "UNKNOWN")
    assert "saved_model" in failed["status"]["error_message"].lower(), failed
    assert (good["version"], good["state"]) == ("1", "AVAILABLE")
    assert server.predict("broken", np.ones((1, 6), np.float32)).model_spec.version.value == 1
    assert '"event": "load_failed"' in server.log.read_text()


def test_metadata(server: Server) -> None:
    status, body = server.rest("GET", "/v1/models/ov/metadata")
    assert status == 200, body
    assert body["model_spec"] == {"name": "ov", "signature_name": "", "version": "1"}
    signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in signature["inputs"]["x"]["tensor_shape"]["dim"]] == ["2", "6"]
    assert sorted(signature["outputs"]) == ["best", "y"]
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "ov"
    request.metadata_field.append("signature_def")
    reply = server.stub.GetModelMetadata(request, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    reply.metadata["signature_def"].Unpack(signatures)
    assert signatures.signature_def["serving_default"].inputs["x"].dtype == tf.float32.as_datatype_enum
    assert reply.model_spec.version.value == 1


def test_errors_get_tf_servings_codes(server: Server) -> None:
    good = {"instances": np.zeros((2, 6)).tolist()}
    cases = [
        ("POST", "/v1/models/xla:predict", b'{"instances": [[1, 2', 400, "JSON Parse error"),
        ("POST", "/v1/models/xla:predict", b"", 400, "The document is empty"),
        (
            "POST",
            "/v1/models/xla:predict",
            {"instances": [["a"] * 6] * 2},
            400,
            "expects float32 numbers, but the JSON holds strings",
        ),
        ("POST", "/v1/models/xla:predict", {"instances": [[1.0] * 5] * 2}, 400, "does not fit"),
        ("POST", "/v1/models/ov:predict", {"instances": [[1.0] * 6]}, 400, "[1,6]"),  # traced at batch 2
        ("POST", "/v1/models/xla:predict", {"rows": []}, 400, "Missing 'inputs' or 'instances' key"),
        ("POST", "/v1/models/xla:predict", {"inputs": {"z": [1]}}, 400, "input size does not match"),
        ("POST", "/v1/models/nope:predict", good, 404, "Servable not found for request: Latest(nope)"),
        ("POST", "/v1/models/xla/versions/7:predict", good, 404, "Specific(xla, 7)"),
        ("POST", "/v1/models/xla:predict", {**good, "signature_name": "nope"}, 400, '"nope" not found'),
        ("POST", "/v1/models/xla:classify", good, 501, "not implemented"),
        ("GET", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
        ("DELETE", "/v1/models/xla", None, 400, "Malformed request: DELETE /v1/models/xla"),
    ]
    for method, path, body, code, words in cases:
        status, reply = server.rest(method, path, body)
        assert status == code, (path, body, status, reply)
        assert set(reply) == {"error"} and words in reply["error"], (path, reply)
    status, _ = server.rest("GET", "/nothing/here")
    assert status == 404
    # gRPC: the same conditions, as status codes
    x = np.zeros((2, 6), np.float32)
    for kwargs, code in [
        ({"model": "nope"}, grpc.StatusCode.NOT_FOUND),
        ({"model": "xla", "version": 9}, grpc.StatusCode.NOT_FOUND),
        ({"model": "xla", "signature_name": "nope"}, grpc.StatusCode.FAILED_PRECONDITION),
        ({"model": "xla", "x": np.zeros((2, 6), np.int32)}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"model": "xla", "x": np.zeros((2, 5), np.float32)}, grpc.StatusCode.INVALID_ARGUMENT),
    ]:
        args = {"x": x, **kwargs}
        with pytest.raises(grpc.RpcError) as caught:
            server.predict(args.pop("model"), args.pop("x"), **args)
        assert caught.value.code() == code, (kwargs, caught.value.details())


def test_large_messages_and_nan(server: Server) -> None:
    """No 4 MB cap; NaN and Infinity travel as TF Serving writes them."""
    big = np.random.default_rng(2).random((300_000, 6), dtype=np.float32)  # 7.2 MB in, 4.8 MB out
    response = server.predict("plain", big, version=1)
    assert [d.size for d in response.outputs["y"].tensor_shape.dim] == [300_000, 4]
    special = np.array([[np.nan, 1, 1, 1, 1, 1], [np.inf, 0, 0, 0, 0, 0]], np.float32)
    request = b'{"inputs": {"x": [[NaN, 1, 1, 1, 1, 1], [Infinity, 0, 0, 0, 0, 0]]}}'
    status, raw = server.rest("POST", "/v1/models/plain/versions/1:predict", request)
    assert status == 200 and isinstance(raw, dict)
    want = _reference_values(special)
    assert np.array_equal(np.isnan(np.array(raw["outputs"]["y"], np.float32)), np.isnan(want))


def _reference_values(x: np.ndarray) -> np.ndarray:
    module = _Scaled(1.0)
    return module.serve(tf.constant(x))["y"].numpy()


def test_metrics_and_structured_logs(server: Server) -> None:
    server.rest("POST", "/v1/models/nope:predict", {"instances": [[0.0] * 6]})
    status, text = server.rest("GET", "/monitoring/prometheus/metrics")
    assert status == 200 and isinstance(text, str)
    assert ':tensorflow:serving:request_count_total{model_name="nope",status="NOT_FOUND"}' in text
    assert ':tensorflow:serving:request_latency_bucket{API="predict",entrypoint="REST"' in text
    assert ":tensorflow:serving:model_invocations_total" in text
    log = server.log.read_text()
    events = [json.loads(line.split(": ", 1)[1]) for line in log.splitlines() if ': {"' in line]
    loads = {(e["model"], e["version"]) for e in events if e["event"] == "load"}
    assert {("plain", 1), ("plain", 2), ("xla", 1), ("ov", 1), ("ovdyn", 1)} <= loads
    failed = [e for e in events if e["event"] == "request_failed"]
    assert any(e["model"] == "nope" and e["code"] == "NOT_FOUND" for e in failed)


def test_bad_flags_and_configs_are_refused(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*SERVER, *args], capture_output=True, text=True, timeout=120)

    usage = run("--port=0", "--model_name=m")
    assert usage.returncode == 2 and "--model_base_path" in usage.stderr
    usage = run("--model_base_path=/x", "--batching_parameters_file=/b")
    assert usage.returncode == 2 and "--enable_batching" in usage.stderr
    (tmp_path / "bad.config").write_text("model_config_list { config { nme: 'x' } }")
    bad = run(f"--model_config_file={tmp_path / 'bad.config'}", "--port=0")
    assert bad.returncode == 1 and "bad.config" in bad.stderr and "nme" in bad.stderr


def test_tfaccel_serve_is_the_same_server() -> None:
    tfaccel_cmd = installed_script("tfaccel", ["-m", "tfaccel_cli"])
    shown = subprocess.run([*tfaccel_cmd, "serve", "--help"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "--model_config_file" in shown.stdout and "tfaccel serve" in shown.stdout
    refused = subprocess.run(
        [*tfaccel_cmd, "serve", "--model_name=m"], capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 2 and "--model_base_path" in refused.stderr


def _copy_slowly(src: Path, dst: Path, pause: float) -> None:
    """Copy a SavedModel file by file with pauses: the version directory is half-written for a while."""
    files = sorted(p for p in src.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name != "saved_model.pb")  # the graph first, the weights last
    for path in files:
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        time.sleep(pause)


def test_version_roll_over_under_load(repo: Path, tmp_path: Path) -> None:
    base = tmp_path / "rolling"
    shutil.copytree(repo / "plain" / "1", base / "1")
    srv = Server(
        ["--model_name=rolling", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1"],
        tmp_path / "rolling.log",
    )
    x = np.ones((1, 6), np.float32)
    one = _reference(repo, "plain", x, 1)["y"]
    seen: list[int] = []
    failures: list[str] = []
    stop = threading.Event()

    def client() -> None:
        until = time.monotonic() + 120  # bounded: the test must end even if version 2 never comes
        while not stop.is_set() and time.monotonic() < until:
            try:
                response = srv.predict("rolling", x)
                version = response.model_spec.version.value
                got = np.array(response.outputs["y"].float_val, np.float32).reshape(1, 4)
                if not np.allclose(got, one * version, rtol=1e-5):
                    failures.append(f"version {version} answered {got}")
                seen.append(version)
            except grpc.RpcError as err:
                failures.append(f"{err.code()}: {err.details()}")

    try:
        workers = [threading.Thread(target=client) for _ in range(2)]
        for worker in workers:
            worker.start()
        time.sleep(1.0)
        _copy_slowly(repo / "plain" / "2", base / "2", pause=0.3)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not seen or seen[-1] != 2):
            time.sleep(0.2)
        time.sleep(1.0)
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
        status, body = srv.rest("GET", "/v1/models/rolling")
    finally:
        log = srv.stop()
    assert status == 200 and not failures, (status, failures[:5])
    assert 1 in seen and seen[-1] == 2, (seen[:3], seen[-3:])
    assert seen.index(2) > 0 and all(v == 2 for v in seen[seen.index(2) + 10 :])
    assert [(v["version"], v["state"]) for v in body["model_version_status"]] == [
        ("2", "AVAILABLE"),
        ("1", "END"),
    ]
    assert '"event": "unload"' in log and '"version": 1' in log
    assert "load_failed" not in log  # the half-written directory was never tried


def test_batching_merges_concurrent_requests(repo: Path, tmp_path: Path) -> None:
    (tmp_path / "batching.config").write_text(
        "max_batch_size { value: 8 }\nbatch_timeout_micros { value: 50000 }\n"
        "num_batch_threads { value: 1 }\nallowed_batch_sizes: 2\nallowed_batch_sizes: 4\n"
        "allowed_batch_sizes: 8\n"
    )
    (tmp_path / "monitoring.config").write_text("prometheus_config { enable: true }")
    (tmp_path / "models.config").write_text(
        "model_config_list {\n"
        f'  config {{ name: "ovdyn" base_path: "{repo / "ovdyn"}" }}\n'
        f'  config {{ name: "ov" base_path: "{repo / "ov"}" }}\n'
        "}\n"
    )
    srv = Server(
        [
            f"--model_config_file={tmp_path / 'models.config'}",
            "--enable_batching",
            f"--batching_parameters_file={tmp_path / 'batching.config'}",
            f"--monitoring_config_file={tmp_path / 'monitoring.config'}",
            "--rest_api_timeout_in_ms=5",  # shorter than the 50 ms batching window: REST predicts time out
        ],
        tmp_path / "batching.log",
    )
    rng = np.random.default_rng(9)
    inputs = [rng.random((1, 6), dtype=np.float32) for _ in range(48)]
    want = [_reference(repo, "plain", x, 1)["y"] for x in inputs[:4]]
    results: dict[int, np.ndarray] = {}
    errors: list[str] = []
    start = threading.Barrier(16)

    def client(index: int) -> None:
        start.wait()
        for i in range(index, len(inputs), 16):
            try:
                response = srv.predict("ovdyn", inputs[i], timeout=None)  # no deadline: waits for its batch
                results[i] = np.array(response.outputs["y"].float_val, np.float32).reshape(1, 4)
            except grpc.RpcError as err:
                errors.append(f"{err.code()}: {err.details()}")

    try:
        threads = [threading.Thread(target=client, args=(k,)) for k in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        dynamic = tf.saved_model.load(str(repo / "ovdyn" / "1")).signatures["serving_default"]
        serial = {i: dynamic(x=tf.constant(inputs[i]))["y"].numpy() for i in range(len(inputs))}
        # a model traced at batch 2, without dynamic batch: single rows are padded to its batch
        padded = srv.predict("ov", inputs[0])
        late_status, late = srv.rest("POST", "/v1/models/ovdyn:predict", {"instances": inputs[0].tolist()})
        with pytest.raises(grpc.RpcError) as empty:
            srv.predict("ovdyn", np.zeros((0, 6), np.float32))
        assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "no rows" in empty.value.details()
        status, metrics = srv.rest("GET", "/monitoring/prometheus/metrics")
    finally:
        srv.stop()
    assert status == 200 and not errors, (status, errors[:3])
    assert sorted(results) == list(range(len(inputs)))
    for i, got in results.items():
        assert_close(got, serial[i])
    for i in range(4):
        assert_close(results[i], want[i])
    assert_close(np.array(padded.outputs["y"].float_val, np.float32).reshape(1, 4), want[0])
    assert late_status == 504 and "Deadline Exceeded" in late["error"], (late_status, late)
    invocations = _metric(
        metrics, ':tensorflow:serving:model_invocations_total{model_name="ovdyn",version="1"}'
    )
    assert 0 < invocations < len(inputs) / 2, invocations  # merged: far fewer calls than requests
    assert _metric(metrics, ':tensorflow:serving:batching_session:padding_rows_total{model_name="ov"}') == 1.0


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in the metrics:\n{text[:2000]}")
