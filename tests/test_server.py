"""The model server, as its users meet it: a real server process on loopback, driven by plain HTTP and
by the ``tensorflow-serving-api`` gRPC client, serving models traced with each backend and plain ones.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
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
from server_process import SERVER, ServerProcess

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


class _Echo(tf.Module):
    """y = x (float32) and d = x as float64: the response shows how each is written."""

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": tf.identity(x), "d": tf.cast(x, tf.float64)}


class _Counting(tf.Module):
    """``serving_default`` counts its calls in a variable; ``count`` reads the count (warm-up shows)."""

    def __init__(self) -> None:
        self.calls = tf.Variable(0, dtype=tf.int64)

    @tf.function(input_signature=[tf.TensorSpec([None, 6], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        with tf.control_dependencies([self.calls.assign_add(1)]):
            return {"y": tf.identity(x)}

    @tf.function(input_signature=[tf.TensorSpec([None, 6], tf.float32, name="x")])
    def count(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"calls": tf.fill(tf.shape(x)[:1], self.calls.read_value())}


class _Gate(tf.Module):
    """``serving_default`` (y = x) waits for a token in a queue that ``release`` fills: a model call the
    test holds, so a batching queue fills deterministically.
    """

    def _queue(self) -> tf.Tensor:
        return tf.raw_ops.FIFOQueueV2(
            component_types=[tf.float32], shapes=[[]], capacity=-1, shared_name="tfaccel_test_gate"
        )

    @tf.function(input_signature=[tf.TensorSpec([None, 6], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        token = tf.raw_ops.QueueDequeueV2(handle=self._queue(), component_types=[tf.float32])
        with tf.control_dependencies(token):
            return {"y": tf.identity(x)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, name="n")])
    def release(self, n: tf.Tensor) -> dict[str, tf.Tensor]:
        put = tf.raw_ops.QueueEnqueueManyV2(handle=self._queue(), components=[tf.zeros([tf.reduce_sum(n)])])
        with tf.control_dependencies([put]):
            return {"n": tf.identity(n)}


def _warmup_file(path: Path, signature: str, inputs: dict[str, np.ndarray], count: int) -> None:
    """TF Serving's ``assets.extra/tf_serving_warmup_requests``: ``count`` PredictionLog records."""
    from tensorflow_serving.apis import prediction_log_pb2

    target = path / "assets.extra" / "tf_serving_warmup_requests"
    target.parent.mkdir(parents=True, exist_ok=True)
    log = prediction_log_pb2.PredictionLog()
    log.predict_log.request.model_spec.signature_name = signature
    for key, value in inputs.items():
        log.predict_log.request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    with tf.io.TFRecordWriter(str(target)) as writer:
        for _ in range(count):
            writer.write(log.SerializeToString())


def _save_plain(path: Path, scale: float) -> None:
    module = _Scaled(scale)
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


def _trace(src: Path, dst: Path, batch: int, flags: str) -> None:
    loaded = tf.saved_model.load(str(src))
    examples = {"x": np.random.default_rng(0).random((batch, 6), dtype=np.float32)}
    traced = tfaccel.trace(loaded.signatures["serving_default"], examples, **_flags(flags))
    traced.save(str(dst))


def _flags(text: str) -> dict[str, Any]:
    from tfaccel.compiler.options import parse_flags

    return parse_flags(f"{STATIC} {text}", "test")


class Server(ServerProcess):
    """A server subprocess; ``rest(...)``/``stub`` talk to it; stopped and its log kept on exit."""

    def __init__(self, args: list[str], log: Path) -> None:
        # any answer means it listens (an unknown model is a 404)
        listening = lambda srv: bool(srv.rest("GET", "/v1/models/nonexistent"))  # noqa: E731
        super().__init__(args, log, listening, (), UNLIMITED)
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def rest(self, method: str, path: str, body: Any = None, raw: bool = False) -> tuple[int, Any]:
        """The status and the JSON answer (parsed unless ``raw``: then the text as sent)."""
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        request = urllib.request.Request(f"http://127.0.0.1:{self.rest_port}{path}", data=data, method=method)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                raw_bytes = response.read()
                status = response.status
        except urllib.error.HTTPError as err:
            raw_bytes, status = err.read(), err.code
        text = raw_bytes.decode()
        if raw:
            return status, text
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
    # an xla model (its weights are constants of saved_model.pb) with one bit of the graph flipped, next
    # to an intact copy: TensorFlow loads both, the recorded digests tell them apart
    _trace(root / "plain" / "1", root / "damaged" / "1", 2, "--backend=xla")
    shutil.copytree(root / "damaged" / "1", root / "damaged" / "2")
    _flip_a_weight_bit(root / "damaged" / "2" / "saved_model.pb")
    for version in (1, 2, 3):
        _save_plain(root / "specific" / str(version), float(version))
    echo = _Echo()
    tf.saved_model.save(echo, str(root / "echo" / "1"), signatures={"serving_default": echo.serve})
    for name in ("warm", "badwarm"):
        counting = _Counting()
        signatures = {"serving_default": counting.serve, "count": counting.count}
        tf.saved_model.save(counting, str(root / name / "1"), signatures=signatures)
    _warmup_file(root / "warm" / "1", "", {"x": np.ones((2, 6), np.float32)}, count=3)
    _warmup_file(root / "badwarm" / "1", "", {"x": np.ones((2, 5), np.float32)}, count=1)
    extra = {
        "plain": "model_version_policy { all {} } version_labels { key: 'stable' value: 1 }",
        "broken": "model_version_policy { latest { num_versions: 2 } }",
        "specific": "model_version_policy { specific { versions: 1 versions: 3 } }",
    }
    config = "model_config_list {\n"
    extra["damaged"] = "model_version_policy { all {} }"
    names = ("plain", "xla", "ov", "ovdyn", "text", "broken", "specific", "echo", "warm", "badwarm")
    for name in (*names, "damaged"):
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


def _flip_a_weight_bit(path: Path) -> None:
    """Flip the lowest bit of the first float32 of the (6, 4) weight constant in the graph file."""
    data = bytearray(path.read_bytes())
    weights = np.random.default_rng(5).normal(size=(6, 4)).astype("float32").tobytes()
    at = data.find(weights[:16])
    assert at > 0, "the weight constant is not in the graph"
    data[at] ^= 1
    path.write_bytes(bytes(data))


def test_a_traced_model_whose_files_changed_is_refused_not_served(server: Server, repo: Path) -> None:
    """TF loads a graph with a flipped weight bit and answers wrongly; the server checks a traced model's
    files against the digests saved with it (as tfaccel.load does) and refuses that version.
    """
    status, body = server.rest("GET", "/v1/models/damaged")
    assert status == 200, body
    states = {v["version"]: v for v in body["model_version_status"]}
    assert states["1"]["state"] == "AVAILABLE", states
    assert (states["2"]["state"], states["2"]["status"]["error_code"]) == ("END", "UNKNOWN"), states
    assert "saved_model.pb is not the file saved with the model" in states["2"]["status"]["error_message"]
    x = np.random.default_rng(4).random((2, 6), dtype=np.float32)
    response = server.predict("damaged", x, version=1)
    got = np.array(response.outputs["y"].float_val, np.float32).reshape(2, 4)
    assert_close(got, _reference(repo, "damaged", x)["y"])


def test_metadata(server: Server) -> None:
    status, body = server.rest("GET", "/v1/models/ov/metadata")
    assert status == 200, body
    assert body["model_spec"] == {"name": "ov", "signature_name": "", "version": "1"}
    signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["inputs"]["x"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in signature["inputs"]["x"]["tensor_shape"]["dim"]] == ["-1", "6"]  # any batch
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


@pytest.mark.parametrize("model", ["xla", "ov"])
def test_a_model_traced_at_batch_two_serves_any_number_of_instances(
    server: Server, repo: Path, model: str
) -> None:
    """Issue 15: the batch propagates, so the traced model takes any batch, as the reference's does."""
    for rows in (1, 3):
        x = np.random.default_rng(rows).random((rows, 6), dtype=np.float32)
        status, body = server.rest("POST", f"/v1/models/{model}:predict", {"instances": x.tolist()})
        assert status == 200, body
        got = np.array([r["y"] for r in body["predictions"]], np.float32)
        assert_close(got, _reference(repo, "plain", x)["y"])


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


def _scrape(server: Server) -> list[tuple[str, dict[str, str], float]]:
    from prometheus_client.parser import text_string_to_metric_families

    status, text = server.rest("GET", "/monitoring/prometheus/metrics", raw=True)
    assert status == 200, text
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def _value(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
    return sum(v for n, got, v in samples if n == name and labels.items() <= got.items())


def test_metrics_count_what_happened_and_logs_are_structured(server: Server) -> None:
    from tfaccel.serving.metrics import UNKNOWN_MODEL

    before = _scrape(server)
    body = {"instances": [[1.0, 2.0]]}
    for _ in range(3):
        assert server.rest("POST", "/v1/models/echo:predict", body)[0] == 200
    for _ in range(2):
        assert server.rest("POST", "/v1/models/echo/versions/9:predict", body)[0] == 404
    assert server.rest("POST", "/v1/models/nope:predict", body)[0] == 404
    after = _scrape(server)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    prefix = ":tensorflow:serving:"
    assert delta(prefix + "request_count_total", model_name="echo", status="OK") == 3
    assert delta(prefix + "request_count_total", model_name="echo", status="NOT_FOUND") == 2
    assert delta(prefix + "request_count_total", model_name=UNKNOWN_MODEL, status="NOT_FOUND") == 1
    assert delta(prefix + "model_invocations_total", model_name="echo", version="1") == 3
    latency = {"model_name": "echo", "API": "Predict", "entrypoint": "REST"}  # gRPC's name, one per API
    assert delta(prefix + "request_latency_count", **latency) == 3  # successful requests only
    assert delta(prefix + "request_latency_bucket", le="+Inf", **latency) == 3
    assert delta(prefix + "request_latency_sum", **latency) > 0
    log = server.log.read_text()
    events = [e for line in log.splitlines() if line.startswith("{") and "event" in (e := json.loads(line))]
    loads = {(e["model"], e["version"]) for e in events if e["event"] == "load"}
    assert {("plain", 1), ("plain", 2), ("xla", 1), ("ov", 1), ("ovdyn", 1)} <= loads
    failed = [e for e in events if e["event"] == "request_failed"]
    assert any(e["model"] == "nope" and e["code"] == "NOT_FOUND" for e in failed)


def test_specific_version_policy(server: Server, repo: Path) -> None:
    """``specific { versions: 1 versions: 3 }``: exactly those two are served; 2 is never loaded."""
    status, body = server.rest("GET", "/v1/models/specific")
    assert status == 200, body
    assert [(v["version"], v["state"]) for v in body["model_version_status"]] == [
        ("3", "AVAILABLE"),
        ("1", "AVAILABLE"),
    ]
    x = np.ones((1, 6), np.float32)
    one = _reference(repo, "plain", x, 1)["y"]
    latest = server.predict("specific", x)
    assert latest.model_spec.version.value == 3
    assert_close(np.array(latest.outputs["y"].float_val, np.float32).reshape(1, 4), 3 * one)
    first = server.predict("specific", x, version=1)
    assert_close(np.array(first.outputs["y"].float_val, np.float32).reshape(1, 4), one)
    with pytest.raises(grpc.RpcError) as caught:
        server.predict("specific", x, version=2)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_warmup_requests_are_replayed_at_load(server: Server) -> None:
    """The three records of ``tf_serving_warmup_requests`` ran before any client request (the model
    counts its calls), instead of the zeros warm-up; a warm-up record the model refuses fails the load.
    """
    x = np.zeros((1, 6), np.float32)
    status, body = server.rest(
        "POST", "/v1/models/warm:predict", {"signature_name": "count", "instances": x.tolist()}
    )
    assert status == 200, body
    assert body["predictions"] == [3]
    status, body = server.rest("GET", "/v1/models/badwarm")
    assert status == 200, body
    ((version, state, code, message),) = [
        (v["version"], v["state"], v["status"]["error_code"], v["status"]["error_message"])
        for v in body["model_version_status"]
    ]
    assert (version, state, code) == ("1", "END", "UNKNOWN")
    assert "'x'" in message and "does not fit" in message, message


def test_grpc_classify_regress_and_multi_inference_are_unimplemented(server: Server) -> None:
    from tensorflow_serving.apis import classification_pb2, inference_pb2, regression_pb2

    calls = [
        (server.stub.Classify, classification_pb2.ClassificationRequest(), "Classify"),
        (server.stub.Regress, regression_pb2.RegressionRequest(), "Regress"),
        (server.stub.MultiInference, inference_pb2.MultiInferenceRequest(), "MultiInference"),
    ]
    for call, request, name in calls:
        spec = request.tasks.add().model_spec if name == "MultiInference" else request.model_spec
        spec.name = "plain"
        with pytest.raises(grpc.RpcError) as caught:
            call(request, timeout=30)
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED, name
        assert name in caught.value.details()


def test_numbers_are_written_as_tf_serving_writes_them(server: Server) -> None:
    """float32 in its shortest round-trip digits (6 when they suffice, else 9), float64 likewise (else
    17), ``.0`` on integral values, and NaN/Infinity/-Infinity as bare tokens (not strings, not null).
    """
    request = (
        b'{"inputs": {"x": [[0.1, 1, 1e-7, 3.4028235e38, 100000, 1234567, 0.5, -2.25, NaN, Infinity,'
        b" -Infinity, -0.0]]}}"
    )
    status, text = server.rest("POST", "/v1/models/echo:predict", request, raw=True)
    assert status == 200, text
    float32 = (
        "[[0.1, 1.0, 1e-07, 3.40282347e+38, 100000.0, 1234567.0, 0.5, -2.25, NaN, Infinity, -Infinity, -0.0]]"
    )
    float64 = (
        "[[0.10000000149011612, 1.0, 1.0000000116860974e-07, 3.4028234663852886e+38, 100000.0, 1234567.0, "
        "0.5, -2.25, NaN, Infinity, -Infinity, -0.0]]"
    )
    assert (
        text == '{\n    "outputs": {\n        "d": ' + float64 + ',\n        "y": ' + float32 + "\n    }\n}"
    )


def _threads(pid: int) -> Counter[str]:
    """Thread names of a process (``tf_Compute``: TensorFlow's inter-op pool)."""
    names: Counter[str] = Counter()
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            names[Path(f"/proc/{pid}/task/{task}/comm").read_text().strip()] += 1
        except OSError:  # the thread ended while we looked
            continue
    return names


def test_thread_flags_size_tensorflows_pools(repo: Path, tmp_path: Path) -> None:
    """--tensorflow_inter_op_parallelism sizes the inter-op pool (threads named tf_Compute) exactly;
    --tensorflow_intra_op_parallelism adds exactly the difference in intra-op threads.
    """
    counts = []
    for intra, inter in ((1, 2), (4, 3)):
        srv = Server(
            [
                "--model_name=t",
                f"--model_base_path={repo / 'plain'}",
                "--file_system_poll_wait_seconds=0",
                f"--tensorflow_intra_op_parallelism={intra}",
                f"--tensorflow_inter_op_parallelism={inter}",
            ],
            tmp_path / f"threads{intra}.log",
        )
        try:
            response = srv.predict("t", np.ones((3, 6), np.float32))
            assert response.model_spec.version.value == 2
            counts.append(_threads(srv.proc.pid))
        finally:
            srv.stop()
    assert (counts[0]["tf_Compute"], counts[1]["tf_Compute"]) == (2, 3), counts
    others = [sum(c.values()) - c["tf_Compute"] for c in counts]
    assert others[1] - others[0] == 4 - 1, counts


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


def _log_events(log: Path, event: str) -> list[dict[str, Any]]:
    """The server's structured log lines of one kind."""
    found = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):  # every line of the server's own log is one JSON object
            fields = json.loads(line)
            if fields.get("event") == event:
                found.append(fields)
    return found


def test_version_roll_over_under_load(repo: Path, tmp_path: Path) -> None:
    """Clients keep calling while version 2 is copied in; the copy stays half-written until the server's
    log shows a poll saw it so (the test waits for that event rather than hoping a poll lands), and the
    half-written directory is never loaded; then 2 replaces 1 with no failed request.
    """
    base = tmp_path / "rolling"
    shutil.copytree(repo / "plain" / "1", base / "1")
    log = tmp_path / "rolling.log"
    srv = Server(
        ["--model_name=rolling", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1"], log
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

    src, dst = repo / "plain" / "2", base / "2"
    shard = Path("variables") / "variables.data-00000-of-00001"
    total = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    try:
        workers = [threading.Thread(target=client) for _ in range(2)]
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + 60
        while len(seen) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.copytree(src, dst, ignore=lambda d, names: [n for n in names if n == shard.name])
        data = (src / shard).read_bytes()
        (dst / shard).write_bytes(data[: len(data) // 2])
        # keep the half-written shard changing (its mtime) until two polls have seen the directory so: a
        # load the first one might wrongly start runs in the poll thread, so it is over by the second
        deadline = time.monotonic() + 60
        tick = time.time_ns()
        partial = total - len(data) + len(data) // 2  # every file there, the shard half-written
        while (
            len(
                [
                    e
                    for e in _log_events(log, "version_pending")
                    if e["version"] == 2 and e["bytes"] == partial
                ]
            )
            < 2
        ):
            assert time.monotonic() < deadline, "no poll saw the half-written version"
            tick += 1_000_000
            os.utime(dst / shard, ns=(tick, tick))
            time.sleep(0.1)
        (dst / shard).write_bytes(data)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not seen or seen[-1] != 2):
            time.sleep(0.2)
        count = len(seen)
        while len(seen) < count + 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
        status, body = srv.rest("GET", "/v1/models/rolling")
    finally:
        stop.set()
        text = srv.stop()
    assert status == 200 and not failures, (status, failures[:5])
    assert 1 in seen and seen[-1] == 2, (seen[:3], seen[-3:])
    assert seen.index(2) > 0 and all(v == 2 for v in seen[seen.index(2) + 10 :])
    assert [(v["version"], v["state"]) for v in body["model_version_status"]] == [
        ("2", "AVAILABLE"),
        ("1", "END"),
    ]
    assert '"event": "unload"' in text and '"version": 1' in text
    assert "load_failed" not in text  # the half-written directory was never tried


@pytest.fixture(scope="module")
def batching(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A batching server: batches of up to 8 rows, one batch thread per queue, a 5 s batching window
    (requests sent together always meet in it), queues of 2 batches, REST predicts bounded at 2 s.
    """
    root = tmp_path_factory.mktemp("batching")
    gate = _Gate()
    tf.saved_model.save(
        gate, str(root / "gate" / "1"), signatures={"serving_default": gate.serve, "release": gate.release}
    )
    _warmup_file(root / "gate" / "1", "release", {"n": np.zeros([1], np.int32)}, count=1)  # no waiting
    (root / "batching.config").write_text(
        "max_batch_size { value: 8 }\nbatch_timeout_micros { value: 5000000 }\n"
        "num_batch_threads { value: 1 }\nmax_enqueued_batches { value: 2 }\n"
        "allowed_batch_sizes: 2\nallowed_batch_sizes: 4\nallowed_batch_sizes: 8\n"
    )
    (root / "monitoring.config").write_text("prometheus_config { enable: true }")
    centred = tfaccel.trace(_centred, np.zeros((4, 3), np.float32), **_flags("--backend=openvino"))
    assert not centred.tfaccel_executable.batch_plan.any_batch  # its rows mix: batch 4 only
    centred.save(str(root / "centred" / "1"))
    (root / "models.config").write_text(
        "model_config_list {\n"
        f'  config {{ name: "centred" base_path: "{root / "centred"}" }}\n'
        f'  config {{ name: "ovdyn" base_path: "{repo / "ovdyn"}" }}\n'
        f'  config {{ name: "ov" base_path: "{repo / "ov"}" }}\n'
        f'  config {{ name: "gate" base_path: "{root / "gate"}" }}\n'
        "}\n"
    )
    srv = Server(
        [
            f"--model_config_file={root / 'models.config'}",
            "--enable_batching",
            f"--batching_parameters_file={root / 'batching.config'}",
            f"--monitoring_config_file={root / 'monitoring.config'}",
            "--rest_api_timeout_in_ms=2000",  # shorter than the batching window
        ],
        root / "batching.log",
    )
    yield srv
    srv.stop()


def _centred(x: tf.Tensor) -> tf.Tensor:
    """Each row minus the batch's mean row: its rows depend on each other."""
    return x - tf.reduce_mean(x, axis=0, keepdims=True)


def test_batching_never_pads_or_merges_a_model_whose_rows_mix(batching: Server) -> None:
    """Padding a request of such a model, or merging two clients' rows, would change the answers (one
    client's data leaking into another's): its requests run alone, at the batch it was traced for.
    """
    srv = batching
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    status, body = srv.rest("POST", "/v1/models/centred:predict", {"instances": x.tolist()})
    assert status == 200, body
    np.testing.assert_allclose(np.array(body["predictions"], np.float32), _centred(x).numpy(), rtol=1e-6)
    answers: list[tuple[int, Any]] = []

    def one_row(row: list[float]) -> None:
        answers.append(srv.rest("POST", "/v1/models/centred:predict", {"instances": [row]}))

    clients = [threading.Thread(target=one_row, args=(row,)) for row in ([0.0, 0, 0], [100.0, 100, 100])]
    for client in clients:
        client.start()
    for client in clients:
        client.join(timeout=60)
    two = srv.rest("POST", "/v1/models/centred:predict", {"instances": x[:2].tolist()})
    for status, body in [*answers, two]:
        assert status == 400 and "does not fit the signature's [4,3]" in body["error"], (status, body)
    assert "model centred version 1 takes its traced batch only" in srv.log.read_text()


def test_batching_merges_concurrent_requests(batching: Server, repo: Path) -> None:
    """48 one-row requests from 16 clients become 6 model calls of 8 rows (each batch fills long before
    its window closes; at most 12 calls on a stalled machine); a lone row for a model traced at batch 2
    is padded to 2; a REST request past its deadline answers 504 and is never run.
    """
    srv = batching
    before = _scrape(srv)
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

    threads = [threading.Thread(target=client, args=(k,)) for k in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    dynamic = tf.saved_model.load(str(repo / "ovdyn" / "1")).signatures["serving_default"]
    serial = {i: dynamic(x=tf.constant(inputs[i]))["y"].numpy() for i in range(len(inputs))}
    # a model traced at batch 2, without dynamic batch: a single row is padded to its batch
    padded = srv.predict("ov", inputs[0])
    late_status, late = srv.rest("POST", "/v1/models/ovdyn:predict", {"instances": inputs[0].tolist()})
    with pytest.raises(grpc.RpcError) as empty:
        srv.predict("ovdyn", np.zeros((0, 6), np.float32))
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "no rows" in empty.value.details()
    after = _scrape(srv)
    assert not errors, errors[:3]
    assert sorted(results) == list(range(len(inputs)))
    for i, got in results.items():
        assert_close(got, serial[i])
    for i in range(4):
        assert_close(results[i], want[i])
    assert_close(np.array(padded.outputs["y"].float_val, np.float32).reshape(1, 4), want[0])
    assert late_status == 504 and "Deadline Exceeded" in late["error"], (late_status, late)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    prefix = ":tensorflow:serving:"
    # 48 rows in batches of at most 8: 6 calls when every batch fills; a client thread the machine
    # stalls past the 5 s window closes one batch early (seen once in a full suite run), so the count is
    # bounded, not exact; the rows are exact (the late request, past its deadline, never ran)
    calls = delta(prefix + "model_invocations_total", model_name="ovdyn", version="1")
    assert 6 <= calls <= 12, calls
    assert delta(prefix + "batching_session:processed_batch_size_count", model_name="ovdyn") == calls
    assert delta(prefix + "batching_session:processed_batch_size_sum", model_name="ovdyn") == 48
    bucket = prefix + "batching_session:processed_batch_size_bucket"
    assert delta(bucket, model_name="ovdyn", le="8.0") == calls  # no batch above the limit
    assert delta(prefix + "batching_session:processed_batch_size_sum", model_name="ov") == 2
    assert delta(prefix + "batching_session:padding_rows_total", model_name="ov") == 1
    assert delta(prefix + "batching_session:padding_rows_total", model_name="ovdyn") == 0


def _release(srv: Server, tokens: int) -> None:
    """Let ``tokens`` calls of the gate model through (8 rows: a full batch, run at once)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "gate"
    request.model_spec.signature_name = "release"
    request.inputs["n"].CopyFrom(tf.make_tensor_proto(np.array([tokens] + [0] * 7, np.int32)))
    response = srv.stub.Predict(request, timeout=60)
    assert list(response.outputs["n"].int_val) == [tokens] + [0] * 7


def test_a_full_batching_queue_answers_503(batching: Server) -> None:
    """The gate model holds the one batch thread; its queue takes 2 batches (16 requests of 8 rows), so
    of 20 concurrent requests at least 3 are refused at once with 503; the accepted ones time out (504)
    and, once the gate opens, are dropped without running.
    """
    srv = batching
    before = _scrape(srv)
    x = np.arange(48, dtype=np.float32).reshape(8, 6)
    replies: list[tuple[int, Any]] = []
    start = threading.Barrier(20)

    def client() -> None:
        start.wait()
        replies.append(srv.rest("POST", "/v1/models/gate:predict", {"instances": x.tolist()}))

    threads = [threading.Thread(target=client) for _ in range(20)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        _release(srv, 30)
    refused = [body for status, body in replies if status == 503]
    assert len(replies) == 20 and {status for status, _ in replies} <= {503, 504}, replies
    assert len(refused) >= 3, [status for status, _ in replies]
    assert all("queue" in body["error"] and "full" in body["error"] for body in refused), refused[:2]
    response = srv.predict("gate", x, timeout=60)  # the gate is open: answered, exactly
    np.testing.assert_array_equal(np.array(response.outputs["y"].float_val, np.float32).reshape(8, 6), x)
    after = _scrape(srv)
    calls = _value(after, ":tensorflow:serving:model_invocations_total", model_name="gate") - _value(
        before, ":tensorflow:serving:model_invocations_total", model_name="gate"
    )
    assert calls == 3  # the held batch, the release, the last request: no timed-out request ran
