"""The model server's cost: throughput and p50/p99 latency over REST and gRPC, with and without
server-side batching, at client concurrency 1, 4 and 16, next to calling the same model in-process.

    python benchmarks/bench_server.py [--model mobilenetv2] [--duration 6] [--concurrency 1 4 16]
    python benchmarks/bench_server.py --json-costs        # REST's JSON work per request, old vs new path

The model is traced with the openvino backend and --dynamic-batch-size (so batching can merge requests),
saved as version 1 and served by two tfaccel-model-server processes (batching off and on). Clients are
threads in this process sending pre-encoded requests (the JSON body or the PredictRequest is built
once), so the numbers are the server's, not the client's encoder. For each concurrency the five
variants run in alternating slices (A B C D E A B C D E ...), so they share the machine's noise.
Client and servers share this machine's cores: at concurrency 16 everything competes for them.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

import tfaccel
from tfaccel.cli import loadtest
from tfaccel.tools.examples import EXAMPLES, example_input


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server(repo: Path, batching: Path | None, log: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    grpc_port, rest_port = _free_port(), _free_port()
    args = [
        sys.executable,
        "-c",
        "import sys, tfaccel_cli; sys.exit(tfaccel_cli.serve_main())",
        f"--port={grpc_port}",
        f"--rest_api_port={rest_port}",
        "--model_name=m",
        f"--model_base_path={repo}",
    ]
    if batching is not None:
        args += ["--enable_batching", f"--batching_parameters_file={batching}"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(log, "w"))  # noqa: SIM115
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/v1/models/m", timeout=5) as reply:
                if b"AVAILABLE" in reply.read():
                    return proc, grpc_port, rest_port
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the server did not start; see {log}")


def _grpc_caller(port: int, x: np.ndarray) -> Any:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", -1)])
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.inputs["input"].CopyFrom(tf.make_tensor_proto(x))

    def call() -> None:
        stub.Predict(request, timeout=60)

    return call


def _rest_caller(port: int, x: np.ndarray) -> Any:
    body = json.dumps({"instances": x.tolist()}).encode()
    url = f"http://127.0.0.1:{port}/v1/models/m:predict"

    def call() -> None:
        request = urllib.request.Request(url, data=body, method="POST")
        with urllib.request.urlopen(request, timeout=60) as reply:
            reply.read()

    return call


def json_costs(runs: int) -> list[dict[str, Any]]:
    """REST's JSON work for one request, in this process (TensorFlow loaded, as in the server): parsing
    and decoding a request, encoding a response, the server's path before this change (the standard
    library, value by value, the collector on) and the current one (orjson, array-wide writing, the
    collector paused), timed interleaved (medians of ``runs``). The HTTP exchange around it is the same.
    """
    from tfaccel.serving.tensors import (
        F32,
        _nested,
        columns_from_json,
        columns_to_json,
        dumps,
        fast_parse,
        gc_paused,
        standard_parse,
    )

    rng = np.random.default_rng(0)
    image = rng.random((1, 224, 224, 3), dtype=np.float32)
    ids = rng.integers(0, 8000, (1, 128)).astype(np.int32)
    logits = rng.normal(size=(1, 1000)).astype(np.float32)
    image_spec = {"input": tf.TensorSpec([None, 224, 224, 3], tf.float32)}
    ids_spec = {"input": tf.TensorSpec([None, 128], tf.int32)}

    def request(body: bytes, spec: Any, parse: Any) -> Any:
        return lambda: columns_from_json(parse(body)["inputs"], spec, False)

    def paused(work: Any) -> Any:
        def run() -> Any:
            with gc_paused():
                return work()

        return run

    image_body = json.dumps({"inputs": {"input": image.tolist()}}).encode()
    ids_body = json.dumps({"inputs": {"input": ids.tolist()}}).encode()
    cases = {
        "request: 224x224x3 float32 image (3 MB JSON)": (
            request(image_body, image_spec, standard_parse),
            paused(request(image_body, image_spec, lambda b: fast_parse(b) or standard_parse(b))),
        ),
        "request: 128 int32 token ids": (
            request(ids_body, ids_spec, standard_parse),
            paused(request(ids_body, ids_spec, lambda b: fast_parse(b) or standard_parse(b))),
        ),
        "response: 1,000 float32 logits": (
            lambda: dumps({"outputs": _nested(logits, lambda v: F32(v))}),
            paused(lambda: dumps({"outputs": columns_to_json({"output": logits})})),
        ),
        "response: 224x224x3 float32 (an image out)": (
            lambda: dumps({"outputs": _nested(image, lambda v: F32(v))}),
            paused(lambda: dumps({"outputs": columns_to_json({"output": image})})),
        ),
    }
    rows = []
    for name, (before, after) in cases.items():
        times: dict[str, list[float]] = {"standard": [], "current": []}
        for _ in range(runs):
            for label, fn in (("standard", before), ("current", after)):
                start = time.perf_counter()
                fn()
                times[label].append(time.perf_counter() - start)
        old, new = (1000 * float(np.median(times[k])) for k in ("standard", "current"))
        rows.append({"case": name, "standard_ms": old, "current_ms": new, "speedup": old / new})
        print(f"{name:<46} standard {old:9.3f} ms   current {new:9.3f} ms   {old / new:6.1f}x", flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="mobilenetv2", choices=sorted(EXAMPLES))
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per variant and concurrency")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--out", help="also write the rows as JSON here")
    parser.add_argument("--json-costs", action="store_true", help="only REST's JSON work, in-process")
    parser.add_argument("--runs", type=int, default=20, help="interleaved runs per case (--json-costs)")
    args = parser.parse_args()
    if args.json_costs:
        rows = json_costs(args.runs)
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=1))
        return 0

    work = Path(tempfile.mkdtemp(prefix="bench_server_"))
    model = EXAMPLES[args.model]()
    x = np.asarray(example_input(args.model, 1))

    @tf.function(input_signature=[tf.TensorSpec([None, *x.shape[1:]], tf.as_dtype(x.dtype), name="input")])
    def serve(input: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"output": model(input, training=False)}

    traced = tfaccel.trace(serve, {"input": x}, backend="openvino", dynamic_batch_size=True)
    traced.save(str(work / "repo" / "1"))
    (work / "batching.config").write_text(
        "max_batch_size { value: 16 }\nbatch_timeout_micros { value: 2000 }\nnum_batch_threads { value: 2 }\n"
        "max_enqueued_batches { value: 100 }\n"
    )
    plain, grpc_a, rest_a = _server(work / "repo", None, work / "server.log")
    batched, grpc_b, rest_b = _server(work / "repo", work / "batching.config", work / "server_batching.log")
    local = tf.saved_model.load(str(work / "repo" / "1")).signatures["serving_default"]
    tensor = tf.constant(x)

    def in_process() -> None:
        local(input=tensor)["output"].numpy()

    variants = {
        "in-process": in_process,
        "gRPC": _grpc_caller(grpc_a, x),
        "REST": _rest_caller(rest_a, x),
        "gRPC, batching": _grpc_caller(grpc_b, x),
        "REST, batching": _rest_caller(rest_b, x),
    }
    rows = []
    try:
        for concurrency in args.concurrency:
            results = loadtest.run(variants, batch=1, concurrency=concurrency, duration=args.duration)
            base = results["in-process"].summary()
            for name, result in results.items():
                row = result.summary()
                row["variant"] = name
                row["vs_in_process"] = row["calls_per_s"] / base["calls_per_s"] if base["calls_per_s"] else 0
                rows.append(row)
                if result.errors:
                    print(f"  {name}: {result.errors} failed calls, e.g. {result.first_error}")
    finally:
        for proc in (plain, batched):
            proc.terminate()
            proc.wait(timeout=30)
    print(f"\n{args.model}, batch 1 per request, {args.duration:g} s per variant and concurrency")
    print(f"{'variant':<16} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'vs in-process':>14}")
    for row in rows:
        print(
            f"{row['variant']:<16} {row['concurrency']:>7} {row['calls_per_s']:>8.1f} {row['p50_ms']:>8.2f} "
            f"{row['p99_ms']:>8.2f} {row['vs_in_process']:>13.2f}x"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
