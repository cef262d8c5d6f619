"""``tfaccel-model-server``: TF Serving's ``tensorflow_model_server`` flags, protocol and model lifecycle,
for SavedModels traced by tfaccel (every backend) and plain SavedModels alike.

Why it exists: stock TF Serving rejects a model holding tfaccel's OpenVINO op ("Op type not
registered"); this server registers tfaccel's op library, so the op is there, and otherwise behaves as TF
Serving does, so clients, containers and KServe set-ups written for TF Serving work unchanged. It parses
its flags before importing TensorFlow, so ``--help`` and a flag error answer at once.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tfaccel.serving.admission import Admission
    from tfaccel.serving.grpc_service import GrpcServer
    from tfaccel.serving.health import Health
    from tfaccel.serving.rest import RestServer

__all__ = ["main", "parse_flags"]

logger = logging.getLogger("tfaccel.serving")

#: tensorflow_model_server flags accepted for compatibility but without effect here (a warning says so)
_IGNORED = (
    "grpc_socket_path",
    "grpc_channel_arguments",
    "platform_config_file",
    "per_process_gpu_memory_fraction",
    "saved_model_tags",
    "enable_model_warmup",
    "num_load_threads",
    "num_unload_threads",
    "max_num_load_retries",
    "load_retry_interval_micros",
    "model_config_file_poll_wait_seconds",
    "tensorflow_session_parallelism",
    "rest_api_enable_cors_support",
    "allow_version_labels_for_unavailable_models",
    "enable_signature_method_name_check",
    "prefer_tflite_model",
    "use_tflite_model",
)


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes"):
        return True
    if lowered in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (true or false)")


def build_parser(prog: str = "tfaccel-model-server") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="A TensorFlow-Serving-compatible model server for tfaccel-traced and plain SavedModels "
        "(tensorflow_model_server's flags, REST and gRPC APIs, version lifecycle and batching).",
        epilog="example: tfaccel-model-server --port=8500 --rest_api_port=8501 --model_name=resnet "
        "--model_base_path=/models/resnet",
    )
    add = parser.add_argument
    add("--port", type=int, default=8500, help="gRPC port (0: no gRPC)")
    add("--rest_api_port", type=int, default=0, help="REST port (0: no REST)")
    add(
        "--rest_api_num_threads",
        type=int,
        default=0,
        help="accepted; REST uses a thread per connection, at most --rest_api_max_connections",
    )
    add(
        "--rest_api_max_connections",
        type=int,
        default=1024,
        help="REST connections served at once; one more is answered 503 and closed (1024)",
    )
    add(
        "--max_concurrent_requests",
        type=int,
        default=0,
        help="predictions running at once, REST and gRPC together (0: 4 per core; with batching, "
        "as many as the front ends hold, the batching queues bounding them)",
    )
    add(
        "--max_queued_requests",
        type=int,
        default=128,
        help="predictions waiting for a free slot; one more is refused at once "
        "(gRPC RESOURCE_EXHAUSTED, REST 503) (128)",
    )
    add(
        "--drain_delay_seconds",
        type=float,
        default=0.0,
        help="on SIGTERM: seconds to keep serving while reporting not ready, so load balancers move "
        "traffic away, before the ports close (0)",
    )
    add(
        "--shutdown_timeout_seconds",
        type=float,
        default=30.0,
        help="on SIGTERM, after the ports close: seconds the requests still running get to finish (30)",
    )
    add("--rest_api_timeout_in_ms", type=int, default=30000, help="bound on each REST predict (<=0: none)")
    add(
        "--grpc_bind_address",
        default="0.0.0.0",
        help="address gRPC listens on (0.0.0.0: every interface, as TF Serving; 127.0.0.1: this host only)",
    )
    add("--rest_api_bind_address", default="0.0.0.0", help="address REST listens on (as --grpc_bind_address)")
    add(
        "--rest_api_max_body_bytes",
        type=int,
        default=64 << 20,
        help="largest REST request body accepted; larger ones are answered 413 unread (64 MiB)",
    )
    add(
        "--ssl_config_file",
        default="",
        help="SSLConfig text file (server_key, server_cert, custom_ca, client_verify): TLS on gRPC and REST",
    )
    add("--model_name", default="default", help="the model's name (with --model_base_path)")
    add("--model_base_path", default="", help="directory holding numeric version directories")
    add("--model_config_file", default="", help="ModelServerConfig text file (several models)")
    add("--file_system_poll_wait_seconds", type=int, default=1, help="poll interval (0: poll once)")
    add("--enable_batching", type=_bool, nargs="?", const=True, default=False, help="server-side batching")
    add("--batching_parameters_file", default="", help="BatchingParameters text file")
    add("--tensorflow_intra_op_parallelism", type=int, default=0, help="threads per op (0: TF's choice)")
    add("--tensorflow_inter_op_parallelism", type=int, default=0, help="ops in parallel (0: TF's choice)")
    add("--monitoring_config_file", default="", help="MonitoringConfig text file (Prometheus)")
    add(
        "--xla_cpu_compilation_enabled",
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        help="accepted: XLA-traced models always compile (their functions say so)",
    )
    add("--grpc_max_threads", type=int, default=32, help="gRPC worker threads")
    for name in _IGNORED:
        add(f"--{name}", default=None, help=argparse.SUPPRESS)
    return parser


def parse_flags(argv: Sequence[str], prog: str = "tfaccel-model-server") -> argparse.Namespace:
    args = build_parser(prog).parse_args(list(argv))
    if args.port == args.rest_api_port and args.port:
        build_parser(prog).error("--port and --rest_api_port must differ")
    if not args.model_config_file and not args.model_base_path:
        build_parser(prog).error("give --model_base_path (with --model_name) or --model_config_file")
    if args.model_config_file and args.model_base_path:
        build_parser(prog).error("give either --model_base_path or --model_config_file, not both")
    if args.batching_parameters_file and not args.enable_batching:
        build_parser(prog).error("--batching_parameters_file needs --enable_batching")
    if args.rest_api_max_body_bytes < 1:
        build_parser(prog).error("--rest_api_max_body_bytes must be at least 1")
    for name in ("rest_api_max_connections", "grpc_max_threads"):
        if getattr(args, name) < 1:
            build_parser(prog).error(f"--{name} must be at least 1")
    for name in ("max_concurrent_requests", "max_queued_requests"):
        if getattr(args, name) < 0:
            build_parser(prog).error(f"--{name} must be 0 or more")
    for name in ("drain_delay_seconds", "shutdown_timeout_seconds"):
        if not 0 <= getattr(args, name) <= 86400:
            build_parser(prog).error(f"--{name} must be between 0 and 86400")
    return args


def main(argv: Sequence[str] | None = None, prog: str = "tfaccel-model-server") -> int:
    args = parse_flags(sys.argv[1:] if argv is None else argv, prog)
    _configure_logging()
    for name in _IGNORED:
        if getattr(args, name) is not None:
            logger.warning("--%s is accepted for compatibility and has no effect here", name)

    # only now TensorFlow: a flag error above answers at once (the entry point deferred the op library)
    from tfaccel.cli.startup import load_tensorflow

    if not load_tensorflow(prog, verbose=False):  # registers the op of openvino-traced models
        return 1
    import tensorflow as tf

    if args.tensorflow_intra_op_parallelism:
        tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
    if args.tensorflow_inter_op_parallelism:
        tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)

    from tfaccel.serving.admission import Admission
    from tfaccel.serving.config import (
        ConfigError,
        ModelConfig,
        read_batching_params,
        read_model_config_file,
        read_monitoring_config,
        read_ssl_config,
    )
    from tfaccel.serving.grpc_service import GrpcServer
    from tfaccel.serving.health import Health
    from tfaccel.serving.manager import Manager
    from tfaccel.serving.metrics import Metrics
    from tfaccel.serving.rest import RestServer
    from tfaccel.serving.service import Service

    try:
        if args.model_config_file:
            models = read_model_config_file(args.model_config_file)
        else:
            models = [ModelConfig(args.model_name, _absolute(args.model_base_path))]
        batching = read_batching_params(args.batching_parameters_file) if args.enable_batching else None
        monitoring = read_monitoring_config(args.monitoring_config_file)
        tls = read_ssl_config(args.ssl_config_file) if args.ssl_config_file else None
    except ConfigError as err:
        sys.stderr.write(f"{prog}: error: {err}\n")
        return 1
    if not args.port and not args.rest_api_port:
        sys.stderr.write(
            f"{prog}: error: no endpoint: --port and --rest_api_port are both 0; give at least one of them\n"
        )
        return 1
    for model in models:
        logger.info("serving model %s from %s (%s)", model.name, model.base_path, model.policy)
    manager = Manager(models)
    manager.start(args.file_system_poll_wait_seconds)
    running = args.max_concurrent_requests or _automatic_concurrency(args, batching is not None)
    admission = Admission(running, args.max_queued_requests)
    service = Service(manager, Metrics(), batching, admission)
    health = Health(manager)
    signalled = threading.Event()
    grpc_server: GrpcServer | None = None
    rest: RestServer | None = None
    secure = " (TLS)" if tls is not None else ""
    try:
        if args.port:
            grpc_server = GrpcServer(
                service,
                health,
                args.port,
                args.grpc_max_threads,
                args.grpc_bind_address,
                tls,
                max_pending=args.grpc_max_threads + args.max_queued_requests,
            )
            grpc_server.start()
            logger.info("gRPC API at %s:%d%s", _host(args.grpc_bind_address), grpc_server.port, secure)
        if args.rest_api_port:
            rest = RestServer(
                service,
                health,
                args.rest_api_port,
                args.rest_api_timeout_in_ms,
                monitoring,
                args.rest_api_bind_address,
                args.rest_api_max_body_bytes,
                tls.server_context() if tls is not None else None,
                args.rest_api_max_connections,
            )
            rest.start()
            scheme = "https" if tls is not None else "http"
            logger.info("REST API at %s://%s:%d", scheme, _host(args.rest_api_bind_address), rest.port)
    except OSError as err:
        sys.stderr.write(f"{prog}: error: {err}\n")
        return 1
    hurry = threading.Event()

    def on_signal(*_: object) -> None:
        if signalled.is_set():
            hurry.set()  # a second signal: stop waiting for the drain
        signalled.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    ready = health.readiness()
    logger.info("%s", "ready" if ready.ready else f"not ready: {ready.reason}")
    # in slices: the kernel may deliver SIGTERM to any thread (TensorFlow's, gRPC's), and Python runs the
    # handler only when the main thread wakes; an untimed wait then slept through it (seen: 5 s late)
    while not signalled.wait(_WAKE_S):
        pass
    _drain(args, health, admission, grpc_server, rest, hurry)
    manager.stop()
    return 0


#: seconds between the main thread's looks for a signal (see ``main``)
_WAKE_S = 0.1


def _automatic_concurrency(args: argparse.Namespace, batching: bool) -> int:
    """``--max_concurrent_requests=0``: 4 per core (more in parallel only adds latency on a CPU); with
    batching, every request the front ends hold (the batching queues bound them, and a batch needs many
    requests waiting together).
    """
    import os

    if batching:
        return int(args.rest_api_max_connections) + int(args.grpc_max_threads)
    return 4 * (os.cpu_count() or 1)


def _drain(
    args: argparse.Namespace,
    health: Health,
    admission: Admission,
    grpc_server: GrpcServer | None,
    rest: RestServer | None,
    hurry: threading.Event,
) -> None:
    """The graceful shutdown: not ready at once, serving for ``--drain_delay_seconds``, then the ports
    close, the requests still running get ``--shutdown_timeout_seconds``, and the server exits (a second
    signal cuts the waits short).
    """
    from tfaccel.serving.logs import log_event

    health.draining.set()
    log_event("draining", delay_seconds=args.drain_delay_seconds)
    until = time.monotonic() + args.drain_delay_seconds
    while time.monotonic() < until and not hurry.wait(min(_WAKE_S, max(0.0, until - time.monotonic()))):
        pass
    admission.close()
    grpc_done = grpc_server.stop_accepting(args.shutdown_timeout_seconds) if grpc_server else None
    if rest is not None:
        rest.stop_accepting()
    until = time.monotonic() + args.shutdown_timeout_seconds

    def settled() -> bool:
        return (
            admission.running == 0
            and admission.waiting == 0
            and (rest is None or rest.busy == 0)
            and (grpc_done is None or grpc_done.is_set())
        )

    while not settled() and time.monotonic() < until and not hurry.is_set():
        hurry.wait(0.05)
    log_event(
        "stopped",
        graceful=settled(),
        abandoned_predictions=admission.running + admission.waiting,
        abandoned_rest_requests=rest.busy if rest is not None else 0,
    )


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _absolute(path: str) -> str:
    import os

    return os.path.abspath(path)


def _configure_logging() -> None:
    """The server's log lines: one JSON object each, on stderr (:mod:`tfaccel.serving.logs`).

    On the root logger, before TensorFlow is imported: TensorFlow's own Python logger then adds no
    handler of its own, so its warnings (a deprecation, a retracing) come out as JSON lines too, as do
    Python warnings. tfaccel's records from INFO, everyone else's from WARNING.
    """
    from tfaccel.serving.logs import JsonLines

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("tfaccel").setLevel(logging.INFO)
    logging.captureWarnings(True)


if __name__ == "__main__":
    raise SystemExit(main())
