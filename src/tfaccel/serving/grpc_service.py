"""TF Serving's gRPC API on the ``tensorflow-serving-api`` package's service stubs:
``PredictionService.Predict`` and ``GetModelMetadata``, ``ModelService.GetModelStatus``.

Outputs are written to typed TensorProto fields; the response names the version that served it; the
client's deadline is honoured (a request whose deadline passes in a batching queue is never run); there
is no message size cap (TF Serving has none either), but every input tensor is checked against the
signature (dtype, shape, size) before it is decoded, so a small message cannot claim a huge tensor.
Classify, Regress, MultiInference and HandleReloadConfigRequest answer UNIMPLEMENTED.
"""

from __future__ import annotations

import threading
import time
from concurrent import futures
from typing import Any

import grpc
from google.protobuf import any_pb2
from grpc_health.v1 import health_pb2_grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tfaccel.serving.config import TlsConfig
from tfaccel.serving.errors import ServingError
from tfaccel.serving.health import Health, HealthServicer
from tfaccel.serving.manager import VersionRecord
from tfaccel.serving.servable import Servable
from tfaccel.serving.service import Service
from tfaccel.serving.tensors import check_names, from_tensor_proto, to_tensor_proto

__all__ = ["GrpcServer", "metadata_response", "model_spec", "signature_map", "status_response"]

#: no cap on message sizes (gRPC's default receive cap is 4 MB)
_UNLIMITED = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


def status_response(records: list[VersionRecord]) -> get_model_status_pb2.GetModelStatusResponse:
    response = get_model_status_pb2.GetModelStatusResponse()
    for record in records:
        status = response.model_version_status.add()
        status.version = record.version
        status.state = int(record.state)
        status.status.error_code = record.error_code.value[0]
        status.status.error_message = record.error_message
    return response


def signature_map(servable: Servable) -> get_model_metadata_pb2.SignatureDefMap:
    """The servable's SignatureDefs as saved, in TF Serving's metadata message."""
    found = get_model_metadata_pb2.SignatureDefMap()
    for key, value in servable.signature_defs.items():
        found.signature_def[key].CopyFrom(value)
    return found


def model_spec(servable: Servable, signature_name: str = "") -> model_pb2.ModelSpec:
    """The ModelSpec a response carries: the model, the version that answered, the signature used."""
    spec = model_pb2.ModelSpec(name=servable.name, signature_name=signature_name)
    spec.version.value = servable.version
    return spec


def metadata_response(servable: Servable) -> get_model_metadata_pb2.GetModelMetadataResponse:
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.CopyFrom(model_spec(servable))
    packed = any_pb2.Any()
    packed.Pack(signature_map(servable))
    response.metadata["signature_def"].CopyFrom(packed)
    return response


def _spec(request: Any) -> tuple[str, int | None, str | None]:
    spec = request.model_spec
    version = spec.version.value if spec.HasField("version") else None
    label = spec.version_label if spec.WhichOneof("version_choice") == "version_label" else None
    return spec.name, version, label


#: gRPC reports "no deadline" as a remaining time of ~9e18 s; anything beyond a day means none
_NO_DEADLINE_S = 86400.0


def _deadline(context: grpc.ServicerContext) -> float | None:
    remaining: float | None = context.time_remaining()
    if remaining is None or remaining > _NO_DEADLINE_S:
        return None
    return time.monotonic() + remaining


class _Prediction(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
    def __init__(self, service: Service) -> None:
        self.service = service

    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:
        name, version, label = _spec(request)
        wanted = list(request.output_filter)

        def decode(signature: Any) -> dict[str, Any]:
            unknown = [o for o in wanted if o not in signature.outputs]
            if unknown:
                raise ServingError.invalid(
                    f"output tensor alias not found in signature: {unknown[0]} Outputs expected to be in the "
                    f"set {{{','.join(sorted(signature.outputs))}}}."
                )
            check_names(request.inputs, signature.inputs)
            return {
                key: from_tensor_proto(value, key, signature.inputs[key])
                for key, value in request.inputs.items()
            }

        try:
            servable, signature, outputs = self.service.predict(
                name,
                version,
                label,
                request.model_spec.signature_name,
                decode,
                _deadline(context),
                "Predict",
                "GRPC",
            )
        except ServingError as err:
            context.abort(err.code, err.message)
        response = predict_pb2.PredictResponse()
        response.model_spec.CopyFrom(model_spec(servable, signature.name))
        for key in wanted or outputs:
            response.outputs[key].CopyFrom(to_tensor_proto(outputs[key], signature.outputs[key].dtype))
        return response

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        name, version, label = _spec(request)
        fields = list(request.metadata_field)
        try:
            if fields != ["signature_def"]:
                refused = ServingError.invalid(
                    f"Metadata field(s) {fields} are not supported; ask for metadata_field 'signature_def'"
                )
                self.service.record_failure(name, "GetModelMetadata", "GRPC", refused)
                raise refused
            servable = self.service.metadata(name, version, label, "GRPC")
        except ServingError as err:
            context.abort(err.code, err.message)
        return metadata_response(servable)

    def Classify(self, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED, "Classify is not implemented by this server; use Predict"
        )

    def Regress(self, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "Regress is not implemented by this server; use Predict")

    def MultiInference(self, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "MultiInference is not implemented by this server")


class _Models(model_service_pb2_grpc.ModelServiceServicer):  # type: ignore[misc]
    def __init__(self, service: Service) -> None:
        self.service = service

    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        name, version, label = _spec(request)
        try:
            records = self.service.status(name, version, label, "GRPC")
        except ServingError as err:
            context.abort(err.code, err.message)
        return status_response(records)

    def HandleReloadConfigRequest(self, request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "reloading the model config over gRPC is not implemented; restart with the new "
            "--model_config_file",
        )


class GrpcServer:
    """The gRPC front end: TF Serving's two services and ``grpc.health.v1.Health`` on one port.

    ``max_pending`` bounds the RPCs the server holds at once (running on its ``threads`` or waiting for
    one): gRPC answers any beyond it RESOURCE_EXHAUSTED at once.
    """

    def __init__(
        self,
        service: Service,
        health: Health,
        port: int,
        threads: int,
        bind_address: str = "0.0.0.0",
        tls: TlsConfig | None = None,
        max_pending: int | None = None,
    ) -> None:
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=threads),
            options=_UNLIMITED,
            maximum_concurrent_rpcs=max_pending,
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(_Prediction(service), self.server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(_Models(service), self.server)
        self.health = HealthServicer(health)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        host = f"[{bind_address}]" if ":" in bind_address else bind_address
        try:
            if tls is None:
                self.port = self.server.add_insecure_port(f"{host}:{port}")
            else:
                credentials = grpc.ssl_server_credentials(
                    [(tls.server_key, tls.server_cert)],
                    root_certificates=tls.custom_ca or None,
                    require_client_auth=tls.client_verify,
                )
                self.port = self.server.add_secure_port(f"{host}:{port}", credentials)
        except RuntimeError:  # newer grpcio raises where older ones return 0
            self.port = 0
        if self.port == 0:
            raise OSError(
                f"cannot listen for gRPC on {host}:{port} (in use, or not an address of this host?)"
            )

    def start(self) -> None:
        self.server.start()

    def stop_accepting(self, grace: float) -> threading.Event:
        """Refuse new RPCs from now on; the running ones get ``grace`` seconds, then are cancelled. The
        event is set when every RPC has ended.
        """
        self.health.stop()  # open Watch streams end now: they would hold the grace period to its end
        done: threading.Event = self.server.stop(grace)
        return done

    def stop(self, grace: float = 5.0) -> None:
        self.stop_accepting(grace).wait()
