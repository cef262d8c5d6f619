"""The server's configuration, in TF Serving's own formats: flags, the model config file
(``ModelServerConfig`` text), the batching parameters file, the monitoring config file and the SSL
config file.

The model config file is parsed with the ``tensorflow-serving-api`` package's own message. Its wheel
ships no message for the batching, monitoring and SSL files, so those schemas are declared here (field
names and numbers as TF Serving's protos define them) and parsed with protobuf's text format: a file that
works with ``tensorflow_model_server`` works here, and a typo is an error naming the line.
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2

__all__ = [
    "BatchingParams",
    "ConfigError",
    "ModelConfig",
    "MonitoringConfig",
    "TlsConfig",
    "VersionPolicy",
    "read_batching_params",
    "read_model_config_file",
    "read_monitoring_config",
    "read_ssl_config",
]


class ConfigError(ValueError):
    """A configuration file or flag is unusable; the message names the file and the problem."""


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions on disk to serve: the latest N, all of them, or specific ones."""

    kind: str = "latest"  # latest | all | specific
    count: int = 1
    versions: tuple[int, ...] = ()

    def select(self, on_disk: list[int]) -> list[int]:
        ordered = sorted(on_disk)
        if self.kind == "all":
            return ordered
        if self.kind == "specific":
            return [v for v in ordered if v in self.versions]
        return ordered[-self.count :] if self.count > 0 else []


@dataclass(frozen=True)
class ModelConfig:
    name: str
    base_path: str
    policy: VersionPolicy = VersionPolicy()
    labels: dict[str, int] = field(default_factory=dict)


def read_model_config_file(path: str) -> list[ModelConfig]:
    """``--model_config_file``: a ``ModelServerConfig`` in text format with a ``model_config_list``."""
    from tensorflow_serving.config import model_server_config_pb2

    text = _read(path, "--model_config_file")
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as err:
        raise ConfigError(f"--model_config_file {path}: {err}") from err
    if config.WhichOneof("config") != "model_config_list":
        raise ConfigError(f"--model_config_file {path}: needs a model_config_list {{ config {{ ... }} }}")
    models = []
    for entry in config.model_config_list.config:
        if not entry.name or not entry.base_path:
            raise ConfigError(f"--model_config_file {path}: every config needs a name and a base_path")
        if entry.model_platform not in ("", "tensorflow"):
            raise ConfigError(
                f"--model_config_file {path}: model {entry.name!r} has model_platform "
                f"{entry.model_platform!r}; this server serves 'tensorflow' SavedModels"
            )
        policy = VersionPolicy()
        which = entry.model_version_policy.WhichOneof("policy_choice")
        if which == "all":
            policy = VersionPolicy("all")
        elif which == "specific":
            policy = VersionPolicy("specific", versions=tuple(entry.model_version_policy.specific.versions))
        elif which == "latest":
            policy = VersionPolicy("latest", count=entry.model_version_policy.latest.num_versions or 1)
        base = entry.base_path
        if not os.path.isabs(base):
            base = os.path.join(os.path.dirname(os.path.abspath(path)), base)
        models.append(ModelConfig(entry.name, base, policy, dict(entry.version_labels)))
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ConfigError(f"--model_config_file {path}: model names must be unique, got {names}")
    return models


def _read(path: str, flag: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as err:
        raise ConfigError(f"{flag} {path}: {err.strerror or err}") from err


# -- batching and monitoring: schemas declared here, parsed as text protos ------------------------------

_POOL = descriptor_pool.DescriptorPool()
_POOL.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)


def _message(package: str, name: str, fields: list[tuple[str, int, Any, str | None, bool]]) -> Any:
    """A message class with ``fields`` = (name, number, type, message type or None, repeated)."""
    proto = descriptor_pb2.FileDescriptorProto(
        name=f"tfaccel/{package}/{name}.proto",
        package=package,
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    message = proto.message_type.add(name=name)
    for fname, number, ftype, type_name, repeated in fields:
        spec = message.field.add(name=fname, number=number, type=ftype)
        spec.label = spec.LABEL_REPEATED if repeated else spec.LABEL_OPTIONAL
        if type_name:
            spec.type_name = type_name
    _POOL.Add(proto)
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{package}.{name}"))


_F = descriptor_pb2.FieldDescriptorProto
_I64, _STR, _BOOLV = (
    ".google.protobuf.Int64Value",
    ".google.protobuf.StringValue",
    ".google.protobuf.BoolValue",
)
#: TF Serving's ``BatchingParameters`` (session_bundle_config.proto)
_BatchingParameters = _message(
    "tfaccel.serving",
    "BatchingParameters",
    [
        ("max_batch_size", 1, _F.TYPE_MESSAGE, _I64, False),
        ("batch_timeout_micros", 2, _F.TYPE_MESSAGE, _I64, False),
        ("max_enqueued_batches", 3, _F.TYPE_MESSAGE, _I64, False),
        ("num_batch_threads", 4, _F.TYPE_MESSAGE, _I64, False),
        ("thread_pool_name", 5, _F.TYPE_MESSAGE, _STR, False),
        ("allowed_batch_sizes", 6, _F.TYPE_INT64, None, True),
        ("pad_variable_length_inputs", 7, _F.TYPE_BOOL, None, False),
        ("enable_large_batch_splitting", 8, _F.TYPE_MESSAGE, _BOOLV, False),
        ("max_execution_batch_size", 9, _F.TYPE_MESSAGE, _I64, False),
    ],
)
_PrometheusConfig = _message(
    "tfaccel.serving.monitoring",
    "PrometheusConfig",
    [("enable", 1, _F.TYPE_BOOL, None, False), ("path", 2, _F.TYPE_STRING, None, False)],
)
_MonitoringConfig = _message(
    "tfaccel.serving.monitoring2",
    "MonitoringConfig",
    [("prometheus_config", 1, _F.TYPE_MESSAGE, ".tfaccel.serving.monitoring.PrometheusConfig", False)],
)


@dataclass(frozen=True)
class BatchingParams:
    """Server-side batching: merge requests up to ``max_batch_size`` within ``batch_timeout_micros``."""

    # TF Serving's defaults when --enable_batching has no parameters file (TF's shared batch scheduler)
    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    def padded_size(self, size: int) -> int:
        for allowed in self.allowed_batch_sizes:
            if allowed >= size:
                return allowed
        return size


def read_batching_params(path: str | None) -> BatchingParams:
    """``--batching_parameters_file`` (or the defaults, without one)."""
    if not path:
        return BatchingParams()
    message = _BatchingParameters()
    try:
        text_format.Parse(_read(path, "--batching_parameters_file"), message)
    except text_format.ParseError as err:
        raise ConfigError(f"--batching_parameters_file {path}: {err}") from err
    defaults = BatchingParams()

    def value(name: str, default: int) -> int:
        return int(getattr(message, name).value) if message.HasField(name) else default

    for ignored in ("pad_variable_length_inputs", "enable_large_batch_splitting", "max_execution_batch_size"):
        if (
            message.HasField(ignored)
            if ignored != "pad_variable_length_inputs"
            else message.pad_variable_length_inputs
        ):
            logging.getLogger("tfaccel.serving").warning(
                "--batching_parameters_file %s: %s is accepted and has no effect here", path, ignored
            )
    params = BatchingParams(
        max_batch_size=value("max_batch_size", defaults.max_batch_size),
        batch_timeout_micros=value("batch_timeout_micros", defaults.batch_timeout_micros),
        max_enqueued_batches=value("max_enqueued_batches", defaults.max_enqueued_batches),
        num_batch_threads=value("num_batch_threads", defaults.num_batch_threads),
        allowed_batch_sizes=tuple(message.allowed_batch_sizes),
        pad_variable_length_inputs=message.pad_variable_length_inputs,
    )
    sizes = params.allowed_batch_sizes
    if sizes and (list(sizes) != sorted(set(sizes)) or sizes[-1] != params.max_batch_size):
        raise ConfigError(
            f"--batching_parameters_file {path}: allowed_batch_sizes must increase and end with "
            f"max_batch_size ({params.max_batch_size}), got {list(sizes)}"
        )
    if min(params.max_batch_size, params.num_batch_threads, params.max_enqueued_batches) < 1:
        raise ConfigError(
            f"--batching_parameters_file {path}: max_batch_size, num_batch_threads and "
            "max_enqueued_batches must be >= 1"
        )
    return params


@dataclass(frozen=True)
class MonitoringConfig:
    prometheus_enabled: bool = False
    prometheus_path: str = "/monitoring/prometheus/metrics"


def read_monitoring_config(path: str | None) -> MonitoringConfig:
    """``--monitoring_config_file``: ``prometheus_config { enable: true path: "..." }``."""
    if not path:
        return MonitoringConfig()
    message = _MonitoringConfig()
    try:
        text_format.Parse(_read(path, "--monitoring_config_file"), message)
    except text_format.ParseError as err:
        raise ConfigError(f"--monitoring_config_file {path}: {err}") from err
    prometheus = message.prometheus_config
    return MonitoringConfig(bool(prometheus.enable), prometheus.path or MonitoringConfig.prometheus_path)


#: TF Serving's ``SSLConfig`` (ssl_config.proto): PEM text inline, not file names
_SSLConfig = _message(
    "tfaccel.serving.ssl",
    "SSLConfig",
    [
        ("server_key", 1, _F.TYPE_STRING, None, False),
        ("server_cert", 2, _F.TYPE_STRING, None, False),
        ("custom_ca", 3, _F.TYPE_STRING, None, False),
        ("client_verify", 4, _F.TYPE_BOOL, None, False),
    ],
)


@dataclass(frozen=True)
class TlsConfig:
    """TLS for both APIs: the server's key and certificate (PEM), the CA that signs client certificates,
    and whether a client must present one.
    """

    server_key: bytes = field(repr=False)
    server_cert: bytes
    custom_ca: bytes = b""
    client_verify: bool = False

    def server_context(self) -> ssl.SSLContext:
        """An ``ssl`` server context (TLS 1.2 or later) with this key, certificate and client policy."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        with tempfile.TemporaryDirectory() as private:  # ssl loads a key from a file only; 0700
            key, cert = os.path.join(private, "key.pem"), os.path.join(private, "cert.pem")
            for path, data in ((key, self.server_key), (cert, self.server_cert)):
                with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
                    handle.write(data)
            context.load_cert_chain(cert, key)
        if self.custom_ca:
            context.load_verify_locations(cadata=self.custom_ca.decode())
        if self.client_verify:
            context.verify_mode = ssl.CERT_REQUIRED
        return context


def read_ssl_config(path: str) -> TlsConfig:
    """``--ssl_config_file``: ``server_key``, ``server_cert`` (PEM text), ``custom_ca``, ``client_verify``;
    the key and certificate are checked here, so a bad pair stops the server before it listens.
    """
    message = _SSLConfig()
    try:
        text_format.Parse(_read(path, "--ssl_config_file"), message)
    except text_format.ParseError as err:
        raise ConfigError(f"--ssl_config_file {path}: {err}") from err
    if not message.server_key or not message.server_cert:
        raise ConfigError(f"--ssl_config_file {path}: needs server_key and server_cert (their PEM text)")
    if message.client_verify and not message.custom_ca:
        raise ConfigError(
            f"--ssl_config_file {path}: client_verify needs custom_ca (the CA that signs client certificates)"
        )
    config = TlsConfig(
        message.server_key.encode(),
        message.server_cert.encode(),
        message.custom_ca.encode(),
        bool(message.client_verify),
    )
    try:
        config.server_context()
    except (ssl.SSLError, ValueError) as err:
        raise ConfigError(
            f"--ssl_config_file {path}: the key, certificate or CA does not load: {err}"
        ) from err
    return config
