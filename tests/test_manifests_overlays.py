"""The autoscaler overlays deploy what the autoscaler needs, valid, and not a right more.

`manifests/overlays/aks` and `manifests/overlays/clusterapi` (base + `components/autoscaler` + a
configuration with one SGX pool) are rendered with the real `kubectl kustomize` and every object
is checked offline against the Kubernetes OpenAPI schemas (`kubernetes-validate`, strict, for
the oldest Kubernetes the manifests support and the newest the package knows); only Prometheus
Operator kinds, which have no built-in schema, are skipped, by name. The tests protect what a
wrong manifest shows only on a live cluster, or never: RBAC granting exactly the calls the
autoscaler makes (no wildcard, no Secrets, Cluster API rights only where the Cluster API provider
runs, in the MachineDeployments' namespace), a command line the CLI accepts, probes and the
metrics Service on the port the program listens on, the same locked-down security contexts as
the scheduler, an embedded configuration that `epcsched.config.load_config` accepts with one pool
of the right provider whose template is a real DC4s_v3 node, and, for AKS, workload identity on
the autoscaler alone and an image built with the `aks` extra.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from epcsched.autoscaler.runtime import provider_problems
from epcsched.cli import build_parser
from epcsched.config import Config, NodePoolSettings, load_config
from epcsched.objects import template_node
from epcsched.skus import sku_table
from tests.test_manifests import (
    MANIFESTS,
    NAMESPACE,
    ROOT,
    Obj,
    all_containers,
    by_kind,
    container_ports,
    epcsched_config,
    flag,
    generated_configmap,
    kustomize,
    mounted_file,
    one,
    pod_spec,
    registered_commands,
    rules_for,
    selects,
    service_account,
    unhashed,
    workloads,
)

OVERLAYS = ("aks", "clusterapi")
AUTOSCALER = "epcsched-autoscaler"
LEASE = "epcsched-autoscaler"
STATUS_CONFIGMAP = "epcsched-autoscaler-status"
PORT = 8085
CONFIG_PATH = "/etc/epcsched/config.yaml"

# Kinds served by CustomResourceDefinitions (the Prometheus Operator's), for which
# kubernetes-validate has no schema. Every other kind must validate; a kind missing from both
# fails the test instead of passing unchecked.
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
# The native sidecar in base/scheduler/deployment.yaml needs 1.29; check the newest too.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())

# What each provider's section of a pool must name (DESIGN.md section 5).
PROVIDER_KEYS = {
    "aks": {"subscriptionId", "resourceGroup", "cluster", "agentPool"},
    "clusterapi": {"namespace", "machineDeployment"},
}

# (namespace or None for cluster-wide, API group, resource, verb, resourceName or None): every
# call the autoscaler makes, and nothing else.
Grant = tuple[str | None, str, str, str, str | None]


def grants(
    scope: str | None, group: str, resource: str, verbs: str, name: str | None = None
) -> set[Grant]:
    return {(scope, group, resource, verb, name) for verb in verbs.split()}


COMMON_GRANTS = (
    grants(None, "", "pods", "get list watch")
    | grants(None, "", "pods/eviction", "create")
    | grants(None, "", "nodes", "get list watch patch update")
    | grants(None, "", "events", "create patch")
    | grants(NAMESPACE, "coordination.k8s.io", "leases", "create")
    | grants(NAMESPACE, "coordination.k8s.io", "leases", "get update", LEASE)
    | grants(NAMESPACE, "", "configmaps", "create")
    | grants(NAMESPACE, "", "configmaps", "get update", STATUS_CONFIGMAP)
)


def clusterapi_grants(namespace: str) -> set[Grant]:
    return (
        grants(namespace, "cluster.x-k8s.io", "machinedeployments", "get list watch")
        | grants(namespace, "cluster.x-k8s.io", "machinedeployments/scale", "get update patch")
        | grants(namespace, "cluster.x-k8s.io", "machines", "get list watch patch")
    )


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Obj]]:
    return {name: kustomize(MANIFESTS / "overlays" / name) for name in OVERLAYS}


@pytest.fixture(scope="module")
def base() -> list[Obj]:
    return kustomize(MANIFESTS / "base")


@pytest.fixture(params=OVERLAYS)
def overlay(
    request: pytest.FixtureRequest, rendered: dict[str, list[Obj]]
) -> tuple[str, list[Obj]]:
    return request.param, rendered[request.param]


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Obj]]:
    """Each overlay plus both monitoring components, as the overlays' comments describe."""
    builds = {}
    for name in OVERLAYS:
        directory = tmp_path_factory.mktemp(f"{name}-monitored")
        (directory / "manifests").symlink_to(MANIFESTS, target_is_directory=True)
        (directory / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "resources": [f"manifests/overlays/{name}"],
                    "components": [
                        "manifests/components/monitoring",
                        "manifests/components/autoscaler/monitoring",
                    ],
                }
            )
        )
        builds[name] = kustomize(directory)
    return builds


def autoscaler_workload(objs: list[Obj]) -> tuple[Obj, Obj]:
    workload = one(objs, "Deployment", AUTOSCALER)
    (container,) = pod_spec(workload)["containers"]
    return workload, container


def argv_of(container: Obj) -> list[str]:
    return [*container.get("command", []), *container.get("args", [])]


def loaded_config(objs: list[Obj], tmp_path: Path) -> Config:
    """The embedded configuration, read the way the program reads it: from a file."""
    cm = generated_configmap(objs, "epcsched-config")
    path = tmp_path / "config.yaml"
    path.write_text(cm["data"]["config.yaml"])
    return load_config(path)


def the_pool(config: Config) -> NodePoolSettings:
    pools = config.autoscaler.node_pools
    assert len(pools) == 1, [p.name for p in pools]
    return pools[0]


# ---- schemas --------------------------------------------------------------------------------


def validate_all(objs: list[Obj]) -> tuple[set[str], set[str]]:
    """Validate every object strictly for each version; (kinds validated, CRD kinds skipped)."""
    checked, skipped = set(), set()
    for obj in objs:
        kind = obj["kind"]
        if kind in CRD_KINDS:
            assert obj["apiVersion"] == "monitoring.coreos.com/v1", obj["apiVersion"]
            skipped.add(kind)
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{kind} {obj['metadata']['name']} (Kubernetes {version}): {exc}")
            except kubernetes_validate.SchemaNotFoundError as exc:
                pytest.fail(f"{exc.message}: not a built-in kind, and not in CRD_KINDS")
        checked.add(kind)
    return checked, skipped


def test_every_object_validates_against_the_kubernetes_schemas(
    overlay: tuple[str, list[Obj]],
) -> None:
    _, objs = overlay
    checked, skipped = validate_all(objs)
    assert not skipped, "the overlays apply without the Prometheus Operator"
    assert {
        "Deployment",
        "DaemonSet",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Service",
        "NetworkPolicy",
        "PodDisruptionBudget",
    } <= checked


def test_with_monitoring_only_the_operator_kinds_are_skipped(
    monitored: dict[str, list[Obj]],
) -> None:
    for objs in monitored.values():
        checked, skipped = validate_all(objs)
        assert skipped == CRD_KINDS
        assert "Deployment" in checked


def test_strict_validation_rejects_a_misspelt_field(rendered: dict[str, list[Obj]]) -> None:
    """The schema check is not vacuous: one wrong field name in the Deployment fails it."""
    workload, _ = autoscaler_workload(rendered["aks"])
    bad = yaml.safe_load(yaml.safe_dump(workload))
    bad["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"periodSeconds": 5}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSIONS[0], strict=True)


# ---- what each overlay adds ----------------------------------------------------------------


def test_overlay_is_base_plus_the_autoscaler(
    overlay: tuple[str, list[Obj]], base: list[Obj]
) -> None:
    name, objs = overlay
    assert unhashed(base) <= unhashed(objs)
    added = unhashed(objs) - unhashed(base)
    expected = {
        (kind, AUTOSCALER)
        for kind in (
            "Deployment",
            "PodDisruptionBudget",
            "Service",
            "NetworkPolicy",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
        )
    }
    if name == "clusterapi":
        expected |= {
            ("ClusterRole", "epcsched-autoscaler-clusterapi"),
            ("RoleBinding", "epcsched-autoscaler-clusterapi"),
        }
    assert added == expected
    for o in objs:
        if (o["kind"], o["metadata"]["name"]) in added:
            labels = o["metadata"].get("labels", {})
            assert labels.get("app.kubernetes.io/component") == "autoscaler", o["kind"]
            assert labels.get("app.kubernetes.io/part-of") == "epcsched", o["kind"]


# ---- RBAC ----------------------------------------------------------------------------------


def granted(objs: list[Obj], sa: tuple[str, str]) -> set[Grant]:
    """Every (scope, group, resource, verb, name) the build's RBAC gives the ServiceAccount."""
    found: set[Grant] = set()
    for rule, scope, _ in rules_for(objs, sa):
        names = rule.get("resourceNames") or [None]
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                for verb in rule.get("verbs", []):
                    found |= {(scope, group, resource, verb, n) for n in names}
    return found


def test_autoscaler_rbac_is_exactly_what_it_calls(
    overlay: tuple[str, list[Obj]], tmp_path: Path
) -> None:
    name, objs = overlay
    workload, _ = autoscaler_workload(objs)
    sa = service_account(workload)
    assert sa == (NAMESPACE, AUTOSCALER)
    expected = set(COMMON_GRANTS)
    if name == "clusterapi":
        pool = the_pool(loaded_config(objs, tmp_path))
        expected |= clusterapi_grants(pool.clusterapi["namespace"])
    assert granted(objs, sa) == expected
    # Every role the ServiceAccount is bound to is in the build (no dangling roleRef that a
    # cluster might happen to satisfy with something broader).
    for binding in by_kind(objs, "RoleBinding") + by_kind(objs, "ClusterRoleBinding"):
        if any(s["name"] == AUTOSCALER for s in binding["subjects"]):
            ref = binding["roleRef"]
            assert [o for o in by_kind(objs, ref["kind"]) if o["metadata"]["name"] == ref["name"]]


def test_no_wildcards_no_secrets_and_cluster_api_only_in_its_overlay(
    overlay: tuple[str, list[Obj]],
) -> None:
    name, objs = overlay
    for role in by_kind(objs, "Role") + by_kind(objs, "ClusterRole"):
        for rule in role.get("rules", []):
            where = f"{role['kind']} {role['metadata']['name']}: {rule}"
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(key, []), where
            assert "secrets" not in rule.get("resources", []), where
            if "cluster.x-k8s.io" in rule.get("apiGroups", []):
                assert name == "clusterapi", where
                assert role["metadata"]["name"] == "epcsched-autoscaler-clusterapi", where
    # The component itself is provider-neutral: its ClusterRole has no Cluster API group.
    component_role = one(objs, "ClusterRole", AUTOSCALER)
    assert not [r for r in component_role["rules"] if "cluster.x-k8s.io" in r["apiGroups"]]


def test_cluster_api_rights_are_bound_in_the_pools_namespace_only(
    rendered: dict[str, list[Obj]], tmp_path: Path
) -> None:
    objs = rendered["clusterapi"]
    pool = the_pool(loaded_config(objs, tmp_path))
    bindings = [
        b
        for b in by_kind(objs, "RoleBinding") + by_kind(objs, "ClusterRoleBinding")
        if b["roleRef"]["name"] == "epcsched-autoscaler-clusterapi"
    ]
    assert len(bindings) == 1
    assert bindings[0]["kind"] == "RoleBinding"
    assert bindings[0]["metadata"]["namespace"] == pool.clusterapi["namespace"]


# ---- the Deployment ------------------------------------------------------------------------


def test_deployment_command_line_parses(
    overlay: tuple[str, list[Obj]],
) -> None:
    _, objs = overlay
    _, container = autoscaler_workload(objs)
    argv = argv_of(container)
    assert argv[0] == "autoscaler"
    assert flag(container, "--config") == CONFIG_PATH
    assert flag(container, "--port") == str(PORT)
    assert not [a for a in argv if a in ("--once", "--dry-run", "--snapshot")], argv
    assert "autoscaler" in registered_commands()
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"`epcsched {' '.join(argv)}` does not parse")
    assert (args.command, args.config, args.port) == ("autoscaler", CONFIG_PATH, PORT)
    assert args.namespace == flag(container, "--namespace")


def test_deployment_namespace_flag_is_the_pods_namespace(overlay: tuple[str, list[Obj]]) -> None:
    """`$(POD_NAMESPACE)` is expanded by the kubelet only if the container defines it."""
    _, objs = overlay
    workload, container = autoscaler_workload(objs)
    value = flag(container, "--namespace")
    assert value is not None
    reference = re.fullmatch(r"\$\((\w+)\)", value)
    assert reference, value
    env = {e["name"]: e for e in container.get("env", [])}
    assert env[reference[1]]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    # The Role for the Lease and the status ConfigMap lives where the pod does.
    assert (
        workload["metadata"]["namespace"] == one(objs, "Role", AUTOSCALER)["metadata"]["namespace"]
    )


def test_deployment_reads_the_generated_config(overlay: tuple[str, list[Obj]]) -> None:
    _, objs = overlay
    workload, container = autoscaler_workload(objs)
    volume, key = mounted_file(pod_spec(workload), container, CONFIG_PATH)
    cm = generated_configmap(objs, "epcsched-config")
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    assert key in cm["data"]


def test_probes_service_and_network_policy_use_the_metrics_port(
    overlay: tuple[str, list[Obj]],
) -> None:
    _, objs = overlay
    workload, container = autoscaler_workload(objs)
    (port,) = container["ports"]
    assert (port["name"], port["containerPort"]) == ("metrics", PORT)
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    labels = workload["spec"]["template"]["metadata"]["labels"]
    service = one(objs, "Service", AUTOSCALER)
    assert selects(service["spec"]["selector"], labels)
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(PORT, "metrics")]
    policy = one(objs, "NetworkPolicy", AUTOSCALER)
    assert selects(policy["spec"]["podSelector"]["matchLabels"], labels)
    assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == [PORT]
    budget = one(objs, "PodDisruptionBudget", AUTOSCALER)
    assert selects(budget["spec"]["selector"]["matchLabels"], labels)
    # Two replicas elect one leader; the budget keeps one through a node drain.
    assert workload["spec"]["replicas"] == 2
    assert budget["spec"]["maxUnavailable"] == 1


def test_security_contexts_are_the_schedulers(overlay: tuple[str, list[Obj]]) -> None:
    _, objs = overlay
    workload, container = autoscaler_workload(objs)
    scheduler = one(objs, "Deployment", "epcsched-scheduler")
    (extender,) = [c for c in all_containers(pod_spec(scheduler)) if c["name"] == "extender"]
    assert pod_spec(workload)["securityContext"] == pod_spec(scheduler)["securityContext"]
    assert container["securityContext"] == extender["securityContext"]
    # The read-only root filesystem leaves /tmp as the one writable place, as for the extender.
    tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    (volume,) = [v for v in pod_spec(workload)["volumes"] if v["name"] == tmp[0]["name"]]
    assert "emptyDir" in volume
    assert not [v for v in pod_spec(workload)["volumes"] if "hostPath" in v]


def test_autoscaler_service_is_scraped_with_the_monitoring_components(
    monitored: dict[str, list[Obj]],
) -> None:
    for objs in monitored.values():
        monitor = one(objs, "ServiceMonitor", AUTOSCALER)
        assert monitor["metadata"]["labels"]["app.kubernetes.io/part-of"] == "epcsched"
        service = one(objs, "Service", AUTOSCALER)
        assert (
            service["metadata"]["namespace"] in monitor["spec"]["namespaceSelector"]["matchNames"]
        )
        assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
        # It selects that Service alone, not the extender's or the exporter's.
        assert [
            s["metadata"]["name"]
            for s in by_kind(objs, "Service")
            if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ] == [AUTOSCALER]
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics"
        assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]]
        workload, _ = autoscaler_workload(objs)
        names, _ = container_ports(pod_spec(workload))
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= names


# ---- the embedded configuration ------------------------------------------------------------


def test_config_loads_with_one_pool_of_the_overlays_provider(
    overlay: tuple[str, list[Obj]], tmp_path: Path
) -> None:
    name, objs = overlay
    pool = the_pool(loaded_config(objs, tmp_path))
    assert pool.provider == name
    assert set(getattr(pool, name)) == PROVIDER_KEYS[name]
    assert all(getattr(pool, name).values())
    other = next(p for p in OVERLAYS if p != name)
    assert not getattr(pool, other)
    assert 0 <= pool.min_size < pool.max_size


def test_config_is_the_base_config_plus_the_pool(
    overlay: tuple[str, list[Obj]], base: list[Obj]
) -> None:
    _, objs = overlay
    _, base_config = epcsched_config(base)
    _, config = epcsched_config(objs)
    assert base_config.autoscaler.node_pools == []
    config.autoscaler.node_pools = []
    assert config == base_config


def test_pool_template_is_one_dc4s_v3_node_of_the_pool(
    overlay: tuple[str, list[Obj]], tmp_path: Path
) -> None:
    _, objs = overlay
    config = loaded_config(objs, tmp_path)
    pool = the_pool(config)
    assert pool.template is not None
    node = template_node(
        "new", pool.template.resources, config.epc.resources, labels=pool.template.labels
    )
    # A node the pool adds is counted as the pool's.
    assert selects(pool.node_selector, node.labels)
    sku = sku_table()[node.labels["node.kubernetes.io/instance-type"]]
    assert sku.name == "Standard_DC4s_v3"
    # All of the VM's EPC (16 GiB), under the name the device plugin advertises, in bytes.
    assert node.epc_allocatable == {"sgx.intel.com/epc": sku.epc}
    assert node.epc_allocatable["sgx.intel.com/epc"] == 16384 * 2**20
    # Allocatable is below the VM size (the kubelet's reservations), never above.
    assert 0 < node.cpu_milli <= sku.vcpu * 1000
    assert 0 < node.memory < sku.memory
    assert node.pods > 0


def test_pool_settings_satisfy_the_provider(overlay: tuple[str, list[Obj]], tmp_path: Path) -> None:
    """The placeholders have the shape the provider checks at start (a UUID subscription, ...)."""
    _, objs = overlay
    pool = the_pool(loaded_config(objs, tmp_path))
    assert provider_problems(pool, 0) == []


def pending_pod(name: str, epc: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": f"uid-{name}",
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "enclave", "uid": "rs"}
            ],
        },
        "spec": {
            "schedulerName": "epcsched-scheduler",
            "containers": [
                {
                    "name": "enclave",
                    "image": "registry.k8s.io/pause:3.10",
                    "resources": {
                        "requests": {"sgx.intel.com/epc": epc, "cpu": "500m", "memory": "1Gi"},
                        "limits": {"sgx.intel.com/epc": epc},
                    },
                }
            ],
        },
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
        },
    }


def test_the_autoscaler_plans_with_the_deployed_config(
    overlay: tuple[str, list[Obj]], tmp_path: Path
) -> None:
    """`epcsched autoscaler --once --dry-run` with the overlay's own config file.

    One system node without EPC and, pending, three 6 GiB enclave pods and one of 17 GiB. A
    16 GiB template holds two 6 GiB pods (12 GiB; a third would make 18), so the pool goes from
    0 to 2 nodes; no template holds 17 GiB.
    """
    name, objs = overlay
    config = tmp_path / "config.yaml"
    config.write_text(generated_configmap(objs, "epcsched-config")["data"]["config.yaml"])
    system = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "system-0", "labels": {"kubernetes.io/os": "linux"}},
        "status": {
            "allocatable": {"cpu": "4", "memory": "16Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    pods = [pending_pod(f"enclave-{i}", "6Gi") for i in range(3)] + [pending_pod("huge", "17Gi")]
    snapshot = tmp_path / "cluster.json"
    snapshot.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [system, *pods]}))
    done = subprocess.run(
        [
            *(sys.executable, "-m", "epcsched", "autoscaler"),
            *("--config", str(config), "--snapshot", str(snapshot), "--once", "--dry-run"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    (pool,) = plan["pools"]
    assert {k: pool[k] for k in ("name", "currentSize", "targetSize", "action")} == {
        "name": the_pool(loaded_config(objs, tmp_path)).name,
        "currentSize": 0,
        "targetSize": 2,
        "action": "scale-up",
    }, (name, pool)
    assert [(u["namespace"], u["name"]) for u in plan["unschedulable"]] == [("default", "huge")]


# ---- AKS: identity and image ---------------------------------------------------------------


WORKLOAD_IDENTITY_USE = "azure.workload.identity/use"
WORKLOAD_IDENTITY_CLIENT = "azure.workload.identity/client-id"


def test_aks_autoscaler_alone_uses_workload_identity(rendered: dict[str, list[Obj]]) -> None:
    objs = rendered["aks"]
    workload, _ = autoscaler_workload(objs)
    sa = one(objs, "ServiceAccount", pod_spec(workload)["serviceAccountName"])
    client_id = sa["metadata"]["annotations"][WORKLOAD_IDENTITY_CLIENT]
    assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", client_id), client_id
    assert workload["spec"]["template"]["metadata"]["labels"][WORKLOAD_IDENTITY_USE] == "true"
    # The token goes to the pods that change the agent pool, not to the scheduler or exporter,
    # and only the autoscaler's ServiceAccount names an identity.
    for w in workloads(objs):
        if w is not workload:
            assert WORKLOAD_IDENTITY_USE not in w["spec"]["template"]["metadata"]["labels"]
    for other in by_kind(objs, "ServiceAccount"):
        if other is not sa:
            assert WORKLOAD_IDENTITY_CLIENT not in other["metadata"].get("annotations", {})
    # The Cluster API overlay has no Azure identity at all.
    for o in rendered["clusterapi"]:
        text = yaml.safe_dump(o)
        assert "azure.workload.identity" not in text, o["kind"]


def test_aks_image_is_built_with_the_aks_extra(rendered: dict[str, list[Obj]]) -> None:
    """The overlay's build command names extras that pyproject.toml and the Dockerfile take."""
    kustomization = (MANIFESTS / "overlays" / "aks" / "kustomization.yaml").read_text()
    build = re.search(r"docker build --build-arg EXTRAS=(\S+) -t \S+:(\S+) \.", kustomization)
    assert build, "overlays/aks/kustomization.yaml shows how to build its image"
    extras = build[1].split(",")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert "aks" in extras
    assert set(extras) <= set(declared)
    sdk = {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0] for r in declared["aks"]}
    assert {"azure-identity", "azure-mgmt-containerservice"} <= sdk
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG EXTRAS=", dockerfile, re.M)
    assert re.search(r"pip install \"\.\[\$EXTRAS\]\"", dockerfile)
    # The overlay maps `epcsched` to an image whose tag says it holds the extra, and it is the
    # one epcsched image in the build.
    images = {
        c["image"]
        for w in workloads(rendered["aks"])
        for c in all_containers(pod_spec(w))
        if c["image"].rsplit("/", 1)[-1].startswith("epcsched")
    }
    assert len(images) == 1
    (image,) = images
    assert image.endswith("-aks"), image
    assert build[2].endswith("-aks")
