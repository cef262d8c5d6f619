"""The model server's cost: throughput and p50/p99 latency over REST and gRPC, with and without
server-side batching, at client concurrency 1, 4 and 16, next to calling the same model in-process.

    python benchmarks/bench_server.py [--model mobilenetv2] [--duration 6] [--concurrency 1 4 16]
    python benchmarks/bench_server.py --json-costs        # REST's JSON work per request, old vs new path
    python benchmarks/bench_server.py --scale-out         # Ray Data and Spark rows/s vs predict loops
    python benchmarks/bench_server.py --http-servers      # the HTTP layer: standard library vs uvicorn
    python benchmarks/bench_server.py --startup           # seconds from process start to ready
    python benchmarks/bench_server.py --throughput-hint   # + batching with --performance-hint=throughput

The model is traced with the openvino backend and --dynamic-batch-size (so batching can merge requests),
saved as version 1 and served by two tfaccel-model-server processes (batching off and on). Clients are
threads in this process sending pre-encoded requests (the JSON body or the PredictRequest is built
once), so the numbers are the server's, not the client's encoder ("REST" opens a connection per request,
"REST, keep-alive" keeps one per client). For each concurrency the six
variants run in alternating slices (A B C ... A B C ...), so they share the machine's noise.
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


def _rest_keepalive_caller(port: int, x: np.ndarray) -> Any:
    """REST as HTTP client libraries and load balancers call it: one kept-alive connection per client."""
    import threading

    body = json.dumps({"instances": x.tolist()}).encode()
    local = threading.local()

    def call() -> None:
        _keepalive_post(local, port, body)

    return call


def _keepalive_post(local: Any, port: int, body: bytes) -> None:
    """POST ``body`` on this thread's kept-alive connection; a connection the server closed while idle
    (uvicorn closes after 5 s) is reopened once, as HTTP client libraries do.
    """
    import http.client

    for attempt in (1, 2):
        if getattr(local, "conn", None) is None:
            local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            local.conn.request("POST", "/v1/models/m:predict", body, {"Content-Type": "application/json"})
            reply = local.conn.getresponse()
            reply.read()
        except (ConnectionError, http.client.HTTPException):
            local.conn.close()
            local.conn = None
            if attempt == 2:
                raise
            continue
        if reply.status != 200:
            raise RuntimeError(f"status {reply.status}")
        return


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


#: the two HTTP layers compared by --http-servers, each answering POST /v1/models/m:predict by parsing the
#: JSON body with orjson and writing a small JSON answer, the model call replaced by handing the work to a
#: thread (as a blocking TensorFlow call must be, off uvicorn's event loop) or running in the connection's
#: thread (the standard library's model). Nothing else differs.
_STDLIB_SERVER = """
import sys, orjson
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
ANSWER = orjson.dumps({"predictions": [[0.5] * 10]})
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # as tfaccel's REST front end: else keep-alive answers stall 40 ms
    def log_message(self, *args):
        pass
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        orjson.loads(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(ANSWER)))
        self.end_headers()
        self.wfile.write(ANSWER)
class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
Server(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""
_UVICORN_SERVER = """
import asyncio, sys, orjson, uvicorn
ANSWER = orjson.dumps({"predictions": [[0.5] * 10]})
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    await asyncio.to_thread(orjson.loads, body)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="error", access_log=False)
"""


def startup(model_name: str, runs: int) -> list[dict[str, Any]]:
    """Seconds from starting ``tfaccel-model-server`` to ``/readyz`` answering 200 (the model loaded and
    warmed up; what a Kubernetes readiness probe waits for), for the model traced with each backend, in
    ``runs`` fresh processes each (median and range).
    """
    import statistics

    work = Path(tempfile.mkdtemp(prefix="bench_startup_"))
    model = EXAMPLES[model_name]()
    x = np.asarray(example_input(model_name, 1))
    rows = []
    for backend in ("openvino", "xla"):
        repo = work / backend
        tfaccel.trace(model, x, backend=backend).save(str(repo / "1"))
        times = []
        for _ in range(runs):
            rest_port = _free_port()
            args = [
                sys.executable,
                "-c",
                "import sys, tfaccel_cli; sys.exit(tfaccel_cli.serve_main())",
                "--port=0",  # REST only: a default gRPC port could collide
                f"--rest_api_port={rest_port}",
                "--model_name=m",
                f"--model_base_path={repo}",
            ]
            began = time.perf_counter()
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                while True:
                    if proc.poll() is not None or time.perf_counter() - began > 300:
                        raise SystemExit(f"the server for {backend} did not become ready")
                    try:
                        with urllib.request.urlopen(
                            f"http://127.0.0.1:{rest_port}/readyz", timeout=5
                        ) as reply:
                            if reply.status == 200:
                                break
                    except OSError:
                        pass
                    time.sleep(0.05)
                times.append(time.perf_counter() - began)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
        row = {
            "backend": backend,
            "median_s": statistics.median(times),
            "min_s": min(times),
            "max_s": max(times),
        }
        rows.append(row)
        print(
            f"{model_name}, {backend}: start to ready {row['median_s']:.2f} s median "
            f"({row['min_s']:.2f}-{row['max_s']:.2f} s, {runs} fresh processes)"
        )
    return rows


def _load_rows(
    variants: dict[str, Any], concurrencies: list[int], duration: float, base: str | None = None
) -> list[dict[str, Any]]:
    """Load-test the variants interleaved at each concurrency: one summary row per variant and
    concurrency (with ``vs_<base>``, its throughput over ``base``'s, when ``base`` names a variant).
    """
    rows = []
    for concurrency in concurrencies:
        results = loadtest.run(variants, batch=1, concurrency=concurrency, duration=duration)
        reference = results[base].summary()["calls_per_s"] if base else 0.0
        for name, result in results.items():
            row = result.summary()
            row["variant"] = name
            if base:
                row[f"vs_{base.replace('-', '_')}"] = row["calls_per_s"] / reference if reference else 0
            rows.append(row)
            if result.errors:
                print(f"  {name}: {result.errors} failed calls, e.g. {result.first_error}")
    return rows


def http_servers(duration: float, concurrencies: list[int]) -> list[dict[str, Any]]:
    """Requests/s and p50/p99 of the two HTTP layers (the standard library's threads, tfaccel's REST
    front end's model, and uvicorn's event loop) on one small predict body (128 floats), with keep-alive
    connections, at each client concurrency; the servers run in their own processes, the clients are
    threads here. The difference per request is what choosing one over the other could save.
    """
    import threading

    body = json.dumps({"instances": [[0.25] * 128]}).encode()
    procs, variants = [], {}
    for name, code in (("stdlib threads", _STDLIB_SERVER), ("uvicorn (asyncio)", _UVICORN_SERVER)):
        port = _free_port()
        procs.append(subprocess.Popen([sys.executable, "-c", code, str(port)]))
        local = threading.local()

        def call(port: int = port, local: Any = local) -> None:
            _keepalive_post(local, port, body)

        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{name} did not start") from None
                time.sleep(0.2)
        variants[name] = call
    try:
        rows = _load_rows(variants, concurrencies, duration)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"\nHTTP layer alone: POST of {len(body)} bytes, orjson parse, small answer; {duration:g} s each")
    print(f"{'server':<20} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for row in rows:
        print(
            f"{row['variant']:<20} {row['concurrency']:>7} {row['calls_per_s']:>8.1f} {row['p50_ms']:>8.3f} "
            f"{row['p99_ms']:>8.3f}"
        )
    return rows


def scale_out(rows: int, batch: int) -> list[dict[str, Any]]:
    """Rows/s scoring the zoo's BERT-like model (seq 128) on this machine's cores, four ways: the original
    Keras ``model.predict``; the traced model in a plain loop in this process (tfaccel's BatchPredictor,
    as the engines' workers run it); Ray Data ``map_batches`` with one actor given every core; Spark
    ``predict_batch_udf`` on ``local[N]`` with one partition per core. Each engine runs the job twice:
    the first pays its workers' start-up and model load, the second shows the steady rate (Spark's
    Python workers keep the loaded model; Ray Data starts new actors per job, so it loads again). Every
    answer is checked against the original's (max |difference| / max |original|).
    """
    import ray
    from pyspark.sql import SparkSession

    from tfaccel.scaleout.predictor import BatchPredictor, describe
    from tfaccel.scaleout.ray import TracedModelPredictor
    from tfaccel.scaleout.spark import predict_batch_udf
    from tfaccel.tools.zoo import ZOO

    cores = os.cpu_count() or 1
    entry = ZOO["bert"]
    model = entry.build()
    data = np.asarray(entry.example(rows, 0))
    path = str(Path(tempfile.mkdtemp(prefix="bench_scaleout_")) / "bert")
    tfaccel.trace(model, entry.example(batch, 1)).save(path)
    name = describe(path).inputs[0].name
    expected = np.asarray(model.predict(data[:batch], batch_size=batch, verbose=0))
    results: list[dict[str, Any]] = []

    def record(variant: str, job: int, seconds: float, first: np.ndarray) -> None:
        error = float(np.max(np.abs(first - expected)) / max(float(np.max(np.abs(expected))), 1e-30))
        results.append(
            {"variant": variant, "job": job, "seconds": seconds, "rows_per_s": rows / seconds, "error": error}
        )
        print(f"{variant:<34} job {job}: {rows / seconds:8.1f} rows/s ({seconds:.2f} s), error {error:.1e}")

    for job in (1, 2):
        start = time.perf_counter()
        out = np.asarray(model.predict(data, batch_size=batch, verbose=0))
        record("Keras model.predict (TF)", job, time.perf_counter() - start, out[:batch])
    start = time.perf_counter()
    predictor = BatchPredictor(path)
    print(f"{'(traced model load in-process)':<34} {time.perf_counter() - start:.2f} s")
    for job in (1, 2):
        start = time.perf_counter()
        parts = [predictor.predict({name: data[i : i + batch]}) for i in range(0, rows, batch)]
        output = next(iter(parts[0]))
        record("traced, in-process loop", job, time.perf_counter() - start, parts[0][output][:batch])

    ray.init(num_cpus=cores + 1, include_dashboard=False, log_to_driver=False)  # +1: room for Data's tasks
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.execution_options.preserve_order = True
    try:
        for job in (1, 2):
            start = time.perf_counter()
            ds = ray.data.from_numpy(data).map_batches(
                TracedModelPredictor,
                fn_constructor_args=(path,),
                fn_constructor_kwargs={"columns": {name: "data"}},
                batch_size=batch,
                compute=ray.data.ActorPoolStrategy(size=1),
                num_cpus=cores,
                batch_format="numpy",
            )
            scored = ds.materialize()
            seconds = time.perf_counter() - start
            assert scored.count() == rows
            first = scored.take_batch(batch)[output]  # rows in order: preserve_order is on
            record(f"Ray Data map_batches (1 actor, {cores} CPUs)", job, seconds, first)
    finally:
        ray.shutdown()

    os.environ["PYSPARK_PYTHON"] = sys.executable
    spark = (
        SparkSession.builder.master(f"local[{cores}]")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.executorEnv.TF_CPP_MIN_LOG_LEVEL", "3")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    try:
        frame = spark.createDataFrame(
            [(i, row.tolist()) for i, row in enumerate(data)], "id long, ids array<int>"
        )
        frame = frame.repartition(cores, "id").cache()
        frame.count()
        score = predict_batch_udf(path, batch_size=batch)
        for job in (1, 2):
            start = time.perf_counter()
            scored = frame.withColumn("out", score("ids")).select("id", "out").collect()
            seconds = time.perf_counter() - start
            by_id = {r["id"]: r["out"] for r in scored}
            assert len(by_id) == rows
            first = np.asarray([by_id[i] for i in range(batch)])
            record(f"Spark predict_batch_udf (local[{cores}])", job, seconds, first)
    finally:
        spark.stop()
    return results


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
    parser.add_argument("--scale-out", action="store_true", help="only Ray Data and Spark vs predict loops")
    parser.add_argument("--rows", type=int, default=2048, help="rows scored per job (--scale-out)")
    parser.add_argument("--batch", type=int, default=32, help="rows per model call (--scale-out)")
    parser.add_argument("--http-servers", action="store_true", help="only the HTTP layers, no model")
    parser.add_argument("--startup", action="store_true", help="only start-to-ready times (--runs each)")
    parser.add_argument(
        "--throughput-hint",
        action="store_true",
        help="also a batching server of the model traced with --performance-hint=throughput (issue 19)",
    )
    args = parser.parse_args()
    if args.startup:
        rows = startup(args.model, min(args.runs, 5))
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=1))
        return 0
    if args.http_servers:
        rows = http_servers(args.duration, args.concurrency)
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=1))
        return 0
    if args.scale_out:
        rows = scale_out(args.rows, args.batch)
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=1))
        return 0
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
    servers = [plain, batched]
    extra: dict[str, Any] = {}
    if args.throughput_hint:  # the same model, its openvino subgraphs with OpenVINO's throughput hint
        hinted = tfaccel.trace(
            serve, {"input": x}, backend="openvino", dynamic_batch_size=True, performance_hint="throughput"
        )
        hinted.save(str(work / "repo_throughput" / "1"))
        proc, grpc_t, rest_t = _server(
            work / "repo_throughput", work / "batching.config", work / "server_throughput.log"
        )
        servers.append(proc)
        extra = {
            "gRPC, batching, throughput hint": _grpc_caller(grpc_t, x),
            "REST, batching, throughput hint": _rest_caller(rest_t, x),
        }
    local = tf.saved_model.load(str(work / "repo" / "1")).signatures["serving_default"]
    tensor = tf.constant(x)

    def in_process() -> None:
        local(input=tensor)["output"].numpy()

    variants = {
        "in-process": in_process,
        "gRPC": _grpc_caller(grpc_a, x),
        "REST": _rest_caller(rest_a, x),
        "REST, keep-alive": _rest_keepalive_caller(rest_a, x),
        "gRPC, batching": _grpc_caller(grpc_b, x),
        "REST, batching": _rest_caller(rest_b, x),
        **extra,
    }
    try:
        rows = _load_rows(variants, args.concurrency, args.duration, base="in-process")
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"\n{args.model}, batch 1 per request, {args.duration:g} s per variant and concurrency")
    print(f"{'variant':<32} {'clients':>7} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'vs in-process':>14}")
    for row in rows:
        print(
            f"{row['variant']:<32} {row['concurrency']:>7} {row['calls_per_s']:>8.1f} {row['p50_ms']:>8.2f} "
            f"{row['p99_ms']:>8.2f} {row['vs_in_process']:>13.2f}x"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
