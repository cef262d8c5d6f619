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
from collections.abc import Sequence

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
    add("--rest_api_num_threads", type=int, default=0, help="accepted; REST uses a thread per connection")
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

    from tfaccel.serving.config import (
        ConfigError,
        ModelConfig,
        read_batching_params,
        read_model_config_file,
        read_monitoring_config,
        read_ssl_config,
    )
    from tfaccel.serving.grpc_service import GrpcServer
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
    service = Service(manager, Metrics(), batching)
    stopping = threading.Event()
    servers: list[GrpcServer | RestServer] = []
    secure = " (TLS)" if tls is not None else ""
    try:
        if args.port:
            grpc_server = GrpcServer(service, args.port, args.grpc_max_threads, args.grpc_bind_address, tls)
            grpc_server.start()
            servers.append(grpc_server)
            logger.info("gRPC API at %s:%d%s", _host(args.grpc_bind_address), grpc_server.port, secure)
        if args.rest_api_port:
            rest = RestServer(
                service,
                args.rest_api_port,
                args.rest_api_timeout_in_ms,
                monitoring,
                args.rest_api_bind_address,
                args.rest_api_max_body_bytes,
                tls.server_context() if tls is not None else None,
            )
            rest.start()
            servers.append(rest)
            scheme = "https" if tls is not None else "http"
            logger.info("REST API at %s://%s:%d", scheme, _host(args.rest_api_bind_address), rest.port)
    except OSError as err:
        sys.stderr.write(f"{prog}: error: {err}\n")
        return 1
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    stopping.wait()
    logger.info("stopping")
    for server in servers:
        server.stop()
    manager.stop()
    return 0


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _absolute(path: str) -> str:
    import os

    return os.path.abspath(path)


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("tfaccel")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False


if __name__ == "__main__":
    raise SystemExit(main())
