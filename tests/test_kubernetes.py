"""The Kubernetes manifests in ``deploy/kubernetes`` (issue 18, item 3), checked without a cluster.

Why these checks: there is no cluster here, so a manifest could drift from the server silently. Each
resource is validated against Kubernetes' own OpenAPI schema (``kubernetes-validate``, offline), and
everything it says about the server is checked against the server itself: every container argument
parses as a ``tfaccel-model-server`` flag, the probes name routes the REST API has (``/livez``,
``/readyz``) on the REST port, the drain fits in the termination grace period, the Service's target
ports exist, and the autoscaler's metric is a gauge the server exports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tfaccel.serving.server import parse_flags

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes"
#: the Kubernetes release the schemas are checked against
KUBERNETES = "1.32.0"


def _documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return found


DOCUMENTS = _documents()


def _kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in DOCUMENTS if doc["kind"] == kind]


def _server_containers() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(pod spec, container) of every container running the model server."""
    pods = [d["spec"]["template"]["spec"] for d in _kind("Deployment")]
    pods += [d["spec"] for d in _kind("ServingRuntime")]
    return [
        (pod, c) for pod in pods for c in pod["containers"] if c.get("command") == ["tfaccel-model-server"]
    ]


def test_the_manifests_are_there() -> None:
    kinds = sorted(doc["kind"] for _, doc in DOCUMENTS)
    assert kinds == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Service", "ServingRuntime"]


@pytest.mark.parametrize(("name", "doc"), [d for d in DOCUMENTS if d[1]["kind"] != "ServingRuntime"])
def test_each_resource_validates_against_kubernetes_schema(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is in the dev extra: pip install -e '.[dev]'"
    )
    kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_a_schema_violation_is_caught() -> None:
    """The schema check can fail: a probe port of the wrong type is refused."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    (deployment,) = _kind("Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["periodSeconds"] = "often"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def test_the_serving_runtime_has_kserves_required_fields() -> None:
    (runtime,) = _kind("ServingRuntime")
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1"
    spec = runtime["spec"]
    assert {"name": "tensorflow", "version": "2", "autoSelect": True} in spec["supportedModelFormats"]
    assert set(spec["protocolVersions"]) <= {"v1", "v2", "grpc-v1", "grpc-v2"}
    (container,) = spec["containers"]
    assert container["name"] == "kserve-container"  # the name KServe looks for


@pytest.mark.parametrize("index", range(len(_server_containers())))
def test_container_arguments_are_the_servers_flags_and_probes_its_routes(index: int) -> None:
    pod, container = _server_containers()[index]
    args = [a.replace("{{.Name}}", "model") for a in container["args"]]
    flags = parse_flags(args)  # a flag the server does not have exits here (SystemExit)
    ports = {p.get("name", str(p["containerPort"])): p["containerPort"] for p in container["ports"]}
    for kind, path in (
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/livez"),
        ("startupProbe", "/livez"),
    ):
        probe = container.get(kind)
        if probe is None:
            assert kind == "startupProbe"
            continue
        assert probe["httpGet"]["path"] == path
        port = probe["httpGet"]["port"]
        assert ports.get(port, port) == flags.rest_api_port, f"{kind} must probe the REST port"
    grace = pod.get("terminationGracePeriodSeconds", 30)  # Kubernetes' default
    drain = flags.drain_delay_seconds + flags.shutdown_timeout_seconds
    assert drain < grace, f"the drain ({drain} s) must end before Kubernetes kills the pod ({grace} s)"


def test_the_service_targets_named_container_ports() -> None:
    (service,) = _kind("Service")
    (deployment,) = _kind("Deployment")
    template = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    names = {p["name"] for c in template["spec"]["containers"] for p in c["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= names


def test_the_autoscaler_reads_a_gauge_the_server_exports() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from tfaccel.serving.metrics import Metrics

    metrics = Metrics()
    metrics.watch(lambda: 0.0, lambda: 3.0)
    exported = {f.name: f.type for f in text_string_to_metric_families(metrics.exposition().decode())}
    (hpa,) = _kind("HorizontalPodAutoscaler")
    (deployment,) = _kind("Deployment")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    for metric in hpa["spec"]["metrics"]:
        assert exported.get(metric["pods"]["metric"]["name"]) == "gauge"
