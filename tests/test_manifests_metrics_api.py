"""The metrics API component deploys an aggregated API server that kube-apiserver can reach and
trust, with exactly the rights it needs, and the example HPA asks it for a metric it serves.

`manifests/components/metrics-api` is added to `manifests/base` in an overlay made here, rendered
with the real `kubectl kustomize` and validated offline and strictly with `kubernetes-validate`
for the oldest and newest Kubernetes the manifests support; `manifests/examples/enclave-hpa.yaml`
is validated the same way. Protects DESIGN.md section 5b and issue 8's point 4: APIServices for
custom.metrics.k8s.io v1beta2/v1beta1 and external.metrics.k8s.io v1beta1 on the Service's port,
the Service on the port the program listens on, the delegated-auth RBAC (system:auth-delegator,
the extension-apiserver-authentication-reader RoleBinding in kube-system), read-only pods and
nodes and nothing else, the HPA controller's read on the metrics, two replicas with the
scheduler's security contexts and HTTPS probes, a command line the CLI accepts with the deployed
config, and an HPA whose Pods metric and target the API and the example Deployment provide.
"""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from epcsched.cli import build_parser
from epcsched.metricsapi.command import settings_from
from epcsched.metricsapi.values import POD_METRICS, USAGE_RATIO
from epcsched.metricsapi.wire import VERSIONS
from tests.test_manifests import (
    MANIFESTS,
    NAMESPACE,
    Obj,
    all_containers,
    by_kind,
    container_ports,
    flag,
    generated_configmap,
    kustomize,
    one,
    pod_spec,
    registered_commands,
    rules_for,
    selects,
    service_account,
    unhashed,
)

NAME = "epcsched-metrics-api"
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
EXAMPLES = MANIFESTS / "examples"


@pytest.fixture(scope="module")
def base() -> list[Obj]:
    return kustomize(MANIFESTS / "base")


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> list[Obj]:
    """base + components/metrics-api, as the component's comment tells operators to add it."""
    directory = tmp_path_factory.mktemp("metrics-api-overlay")
    (directory / "manifests").symlink_to(MANIFESTS, target_is_directory=True)
    (directory / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": ["manifests/base"],
                "components": ["manifests/components/metrics-api"],
            }
        )
    )
    return kustomize(directory)


def workload(build: list[Obj]) -> tuple[Obj, Obj]:
    deployment = one(build, "Deployment", NAME)
    (container,) = pod_spec(deployment)["containers"]
    return deployment, container


def validate(obj: Obj) -> None:
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']} (Kubernetes {version}): {exc}")


def test_every_object_validates_against_the_kubernetes_schemas(build: list[Obj]) -> None:
    for obj in build:
        validate(obj)
    assert {"APIService", "Deployment", "PodDisruptionBudget", "Service"} <= {
        o["kind"] for o in build
    }


def test_component_adds_only_the_metrics_api(base: list[Obj], build: list[Obj]) -> None:
    assert unhashed(base) <= unhashed(build)
    assert unhashed(build) - unhashed(base) == {
        ("ServiceAccount", NAME),
        ("ClusterRoleBinding", "epcsched-metrics-api-auth-delegator"),
        ("RoleBinding", "epcsched-metrics-api-authentication-reader"),
        ("ClusterRole", NAME),
        ("ClusterRoleBinding", NAME),
        ("ClusterRole", "epcsched-metrics-reader"),
        ("ClusterRoleBinding", "epcsched-metrics-reader-hpa"),
        ("Deployment", NAME),
        ("PodDisruptionBudget", NAME),
        ("Service", NAME),
        ("APIService", "v1beta2.custom.metrics.k8s.io"),
        ("APIService", "v1beta1.custom.metrics.k8s.io"),
        ("APIService", "v1beta1.external.metrics.k8s.io"),
    }
    for obj in build:
        if obj["metadata"]["name"].startswith("epcsched-metrics") or obj["kind"] == "APIService":
            assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "epcsched"


def test_apiservices_register_every_served_version_on_the_service(build: list[Obj]) -> None:
    services = by_kind(build, "APIService")
    assert {(s["spec"]["group"], s["spec"]["version"]) for s in services} == {
        (group, version) for group, versions in VERSIONS.items() for version in versions
    }
    service = one(build, "Service", NAME)
    (port,) = service["spec"]["ports"]
    for api in services:
        spec = api["spec"]
        assert api["metadata"]["name"] == f"{spec['version']}.{spec['group']}"
        assert spec["service"] == {"name": NAME, "namespace": NAMESPACE, "port": port["port"]}
    # The HPA's client takes the preferred version: v1beta2 must rank above v1beta1.
    custom = {
        s["spec"]["version"]: s["spec"]["versionPriority"]
        for s in services
        if "custom" in s["spec"]["group"]
    }
    assert custom["v1beta2"] > custom["v1beta1"]


def test_service_reaches_the_port_the_program_listens_on(build: list[Obj]) -> None:
    deployment, container = workload(build)
    service = one(build, "Service", NAME)
    assert selects(
        service["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"]
    )
    (port,) = service["spec"]["ports"]
    names, numbers = container_ports(pod_spec(deployment))
    (declared,) = container["ports"]
    assert port["targetPort"] in names and declared["name"] == port["targetPort"]
    assert int(flag(container, "--port") or 0) == declared["containerPort"] in numbers
    for probe in ("livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert (get["port"], get["scheme"]) == ("https", "HTTPS")
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_rbac_is_delegated_auth_plus_reading_pods_and_nodes(build: list[Obj]) -> None:
    deployment, _ = workload(build)
    sa = service_account(deployment)
    assert sa == (NAMESPACE, NAME)
    bindings = [
        b
        for b in by_kind(build, "RoleBinding") + by_kind(build, "ClusterRoleBinding")
        if any(s.get("name") == NAME and s.get("namespace") == NAMESPACE for s in b["subjects"])
    ]
    assert {
        (b["kind"], b["metadata"].get("namespace"), b["roleRef"]["kind"], b["roleRef"]["name"])
        for b in bindings
    } == {
        ("ClusterRoleBinding", None, "ClusterRole", "system:auth-delegator"),
        ("RoleBinding", "kube-system", "Role", "extension-apiserver-authentication-reader"),
        ("ClusterRoleBinding", None, "ClusterRole", NAME),
    }
    # The one rule of its own: read pods and nodes, cluster-wide; no writes, no Secrets.
    assert [(r, scope) for r, scope, _ in rules_for(build, sa)] == [
        (
            {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]},
            None,
        )
    ]


def test_the_hpa_controller_may_read_the_metrics(build: list[Obj]) -> None:
    binding = one(build, "ClusterRoleBinding", "epcsched-metrics-reader-hpa")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "horizontal-pod-autoscaler", "namespace": "kube-system"}
    ]
    role = one(build, "ClusterRole", binding["roleRef"]["name"])
    assert role["rules"] == [
        {
            "apiGroups": ["custom.metrics.k8s.io", "external.metrics.k8s.io"],
            "resources": ["*"],
            "verbs": ["get", "list"],
        }
    ]


def test_two_replicas_with_the_schedulers_security_contexts(build: list[Obj]) -> None:
    deployment, container = workload(build)
    assert deployment["spec"]["replicas"] == 2
    assert one(build, "PodDisruptionBudget", NAME)["spec"]["maxUnavailable"] == 1
    scheduler = one(build, "Deployment", "epcsched-scheduler")
    (extender,) = [c for c in all_containers(pod_spec(scheduler)) if c["name"] == "extender"]
    assert pod_spec(deployment)["securityContext"] == pod_spec(scheduler)["securityContext"]
    assert container["securityContext"] == extender["securityContext"]
    # The self-signed certificate goes to /tmp, the one writable place.
    (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    (volume,) = [v for v in pod_spec(deployment)["volumes"] if v["name"] == tmp["name"]]
    assert "emptyDir" in volume


def test_command_line_parses_and_the_config_loads(build: list[Obj], tmp_path: Path) -> None:
    _, container = workload(build)
    argv = [*container.get("command", []), *container["args"]]
    assert argv[0] == "metrics-api" in registered_commands()
    config_file = flag(container, "--config")
    assert config_file == "/etc/epcsched/config.yaml"
    local = tmp_path / "config.yaml"
    local.write_text(generated_configmap(build, "epcsched-config")["data"]["config.yaml"])
    args = build_parser().parse_args(
        [argv[0], *[str(local) if a == config_file else a for a in argv[1:]]]
    )
    config = settings_from(args)
    assert config.prometheus.url == flag(container, "--prometheus-url")
    assert config.metrics_api.port == 6443


def test_example_hpa_scales_the_example_deployment_on_usage_ratio() -> None:
    (hpa,) = [d for d in yaml.safe_load_all((EXAMPLES / "enclave-hpa.yaml").read_text()) if d]
    validate(hpa)
    (deployment,) = [
        d for d in yaml.safe_load_all((EXAMPLES / "enclave-deployment.yaml").read_text()) if d
    ]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert hpa["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == USAGE_RATIO in POD_METRICS
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "800m"}
    assert (
        hpa["spec"]["minReplicas"] <= deployment["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    )
