"""The deployment artefacts agree with the code and with each other.

The kustomize builds (`manifests/`, `manifests/monitoring/`, the overlay
`manifests/overlays/clusterapi/`, which adds the autoscaler component) are rendered with
the real `kubectl kustomize` and read as Kubernetes would read them. The tests protect what a
broken manifest would only show on a live cluster: the shipped builds running only `epcsched`
subcommands the CLI registers (so no crash-looping `epcsched autoscaler` before it exists) with
command lines that parse, the scheduler's extender block matching DESIGN.md (node cache, verbs,
weight, the EPC names `epcsched.quantity` knows), the embedded epcsched configuration loading
through `epcsched.config`, the extender's port being the one kube-scheduler calls, Services and
monitors pointing at ports that exist, RBAC granting each program what it does (bind, evict,
scale, its own Lease) to the ServiceAccount it runs as, the exporter seeing the host's /sys
read-only, restricted security settings, the alert rules firing (and not firing) under
`promtool test rules`, and a Dockerfile whose image runs `epcsched` as a non-root user from a
build context that `.dockerignore` does not empty.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from epcsched.cli import build_parser
from epcsched.config import Config, config_from_mapping
from epcsched.quantity import DEFAULT_EPC_RESOURCES, parse_quantity
from epcsched.skus import sku_table

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests"
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
NAMESPACE = "epcsched-system"
SCHEDULER_NAME = "epcsched-scheduler"
WORKLOAD_KINDS = {"Deployment", "DaemonSet", "StatefulSet"}
MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}

Obj = dict[str, Any]


def kustomize(directory: Path) -> list[Obj]:
    if not Path(KUBECTL).exists():
        pytest.fail(f"kubectl not found (looked on PATH and at {KUBECTL}); it renders the builds")
    done = subprocess.run(
        [KUBECTL, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"kubectl kustomize {directory} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc is not None]


@pytest.fixture(scope="module")
def base() -> list[Obj]:
    return kustomize(MANIFESTS)


@pytest.fixture(scope="module")
def monitoring() -> list[Obj]:
    return kustomize(MANIFESTS / "monitoring")


@pytest.fixture(scope="module")
def pools_example() -> list[Obj]:
    return kustomize(MANIFESTS / "overlays" / "clusterapi")


@pytest.fixture(scope="module", params=["base", "monitoring", "pools_example"])
def build(request: pytest.FixtureRequest) -> list[Obj]:
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module", params=["base", "monitoring"])
def shipped_build(request: pytest.FixtureRequest) -> list[Obj]:
    """The builds `kubectl apply -k manifests/` and `manifests/monitoring/` deploy."""
    return request.getfixturevalue(request.param)


def registered_commands() -> set[str]:
    """The subcommands `epcsched` accepts, as its parser registers them."""
    action = next(a for a in build_parser()._actions if a.dest == "command")
    assert action.choices
    return set(action.choices)


# ---- helpers over rendered objects ----------------------------------------------------------


def by_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def generated_configmap(objs: list[Obj], prefix: str) -> Obj:
    """A configMapGenerator output: the name is `prefix-<hash>`."""
    found = [
        o
        for o in by_kind(objs, "ConfigMap")
        if re.fullmatch(re.escape(prefix) + r"-[a-z0-9]{10}", o["metadata"]["name"])
    ]
    assert len(found) == 1, f"expected one generated ConfigMap {prefix}-<hash>, found {found}"
    return found[0]


def workloads(objs: list[Obj]) -> list[Obj]:
    return [o for o in objs if o["kind"] in WORKLOAD_KINDS]


def pod_spec(workload: Obj) -> Obj:
    return workload["spec"]["template"]["spec"]


def all_containers(spec: Obj) -> list[Obj]:
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def epcsched_containers(objs: list[Obj], program: str) -> list[tuple[Obj, Obj]]:
    """(workload, container) for every container that runs `epcsched <program>`."""
    found = []
    for w in workloads(objs):
        for c in all_containers(pod_spec(w)):
            argv = [*c.get("command", []), *c.get("args", [])]
            if argv[:1] == [program] and "epcsched" in c["image"]:
                found.append((w, c))
    return found


def epcsched_programs(objs: list[Obj]) -> list[tuple[Obj, Obj, list[str]]]:
    """(workload, container, argv) for every container of the epcsched image."""
    found = []
    for w in workloads(objs):
        for c in all_containers(pod_spec(w)):
            if c["image"].rsplit("/", 1)[-1].startswith("epcsched"):
                found.append((w, c, [*c.get("command", []), *c.get("args", [])]))
    return found


def the_program(objs: list[Obj], program: str) -> tuple[Obj, Obj]:
    found = epcsched_containers(objs, program)
    assert len(found) == 1, f"expected one container running `epcsched {program}`: {found}"
    return found[0]


def flag(container: Obj, name: str) -> str | None:
    """Value of `--name VALUE` or `--name=VALUE` in a container's argv."""
    argv = [*container.get("command", []), *container.get("args", [])]
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return str(argv[i + 1])
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def mounted_file(spec: Obj, container: Obj, path: str) -> tuple[Obj, str]:
    """The volume and key that back file `path` inside `container`."""
    parent = str(PurePosixPath(path).parent)
    for mount in container.get("volumeMounts", []):
        if mount["mountPath"] == parent:
            volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
            return volume, PurePosixPath(path).name
    raise AssertionError(f"{container['name']}: nothing mounted at {parent} for {path}")


def epcsched_config(objs: list[Obj]) -> tuple[dict[str, Any], Config]:
    cm = generated_configmap(objs, "epcsched-config")
    raw = yaml.safe_load(cm["data"]["config.yaml"])
    return raw, config_from_mapping(raw, source="ConfigMap epcsched-config")


def scheduler_config(objs: list[Obj]) -> dict[str, Any]:
    cm = generated_configmap(objs, "epcsched-scheduler-config")
    return yaml.safe_load(cm["data"]["config.yaml"])


def extender_block(objs: list[Obj]) -> dict[str, Any]:
    extenders = scheduler_config(objs)["extenders"]
    assert len(extenders) == 1, extenders
    return extenders[0]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def service_account(workload: Obj) -> tuple[str, str]:
    return workload["metadata"]["namespace"], pod_spec(workload).get(
        "serviceAccountName", "default"
    )


def rules_for(objs: list[Obj], sa: tuple[str, str]) -> list[tuple[Obj, str | None, str]]:
    """(rule, namespace it applies in or None for cluster-wide, role name) for a ServiceAccount.

    Roles outside the build (the built-in system:* ClusterRoles) contribute no rules here.
    """
    namespace, name = sa
    found = []
    for binding in by_kind(objs, "RoleBinding") + by_kind(objs, "ClusterRoleBinding"):
        if not any(
            s["kind"] == "ServiceAccount" and s["name"] == name and s.get("namespace") == namespace
            for s in binding.get("subjects", [])
        ):
            continue
        ref = binding["roleRef"]
        scope = binding["metadata"].get("namespace") if binding["kind"] == "RoleBinding" else None
        role_ns = scope if ref["kind"] == "Role" else None
        roles = [
            o
            for o in objs
            if o["kind"] == ref["kind"]
            and o["metadata"]["name"] == ref["name"]
            and o["metadata"].get("namespace") == role_ns
        ]
        for role in roles:
            found += [(rule, scope, ref["name"]) for rule in role.get("rules", [])]
    return found


def bound_roles(objs: list[Obj], sa: tuple[str, str]) -> set[str]:
    namespace, name = sa
    return {
        b["roleRef"]["name"]
        for b in by_kind(objs, "RoleBinding") + by_kind(objs, "ClusterRoleBinding")
        for s in b.get("subjects", [])
        if s["kind"] == "ServiceAccount" and s["name"] == name and s.get("namespace") == namespace
    }


def allowed(
    objs: list[Obj],
    sa: tuple[str, str],
    verb: str,
    group: str,
    resource: str,
    *,
    namespace: str | None = None,
    name: str | None = None,
) -> bool:
    """Whether RBAC in the build lets `sa` do `verb` on `group/resource` (in `namespace`)."""

    def has(values: list[str], value: str) -> bool:
        return "*" in values or value in values

    for rule, scope, _ in rules_for(objs, sa):
        if scope is not None and scope != namespace:
            continue
        if not (
            has(rule.get("verbs", []), verb)
            and has(rule.get("apiGroups", []), group)
            and has(rule.get("resources", []), resource)
        ):
            continue
        names = rule.get("resourceNames")
        if names and (name is None or name not in names):
            continue
        return True
    return False


# ---- every build ---------------------------------------------------------------------------


def test_every_object_is_well_formed_and_unique(build: list[Obj]) -> None:
    seen = set()
    for obj in build:
        assert obj.get("apiVersion"), obj
        assert obj.get("kind"), obj
        assert obj.get("metadata", {}).get("name"), obj
        key = (obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"])
        assert key not in seen, f"duplicate {key}"
        seen.add(key)
        namespace = obj["metadata"].get("namespace")
        if obj["kind"] in CLUSTER_SCOPED:
            assert namespace is None, key
        elif key == ("RoleBinding", "kube-system", "epcsched-scheduler-authentication-reader"):
            # Delegated authn reads kube-system/extension-apiserver-authentication.
            assert obj["roleRef"]["name"] == "extension-apiserver-authentication-reader"
        elif key == ("RoleBinding", "default", "epcsched-autoscaler-clusterapi"):
            # Cluster API rights hold in the MachineDeployments' namespace only.
            assert obj["roleRef"]["name"] == "epcsched-autoscaler-clusterapi"
        else:
            assert namespace == NAMESPACE, key


def test_base_applies_without_prometheus_operator_and_monitoring_adds_only_its_objects(
    base: list[Obj], monitoring: list[Obj]
) -> None:
    assert not [o for o in base if o["apiVersion"].startswith("monitoring.coreos.com/")]

    def keys(objs: list[Obj]) -> set[tuple[str, str]]:
        return {(o["kind"], o["metadata"]["name"]) for o in objs}

    added = keys(monitoring) - keys(base)
    assert {kind for kind, _ in added} == MONITORING_KINDS
    assert keys(base) <= keys(monitoring)
    for o in monitoring:
        if o["kind"] in MONITORING_KINDS:
            assert o["apiVersion"] == "monitoring.coreos.com/v1"


def test_images_are_tagged_and_epcsched_is_one_image(build: list[Obj]) -> None:
    epcsched_images = set()
    for w in workloads(build):
        for c in all_containers(pod_spec(w)):
            image = c["image"]
            last = image.rsplit("/", 1)[-1]
            assert ":" in last or "@" in image, f"{c['name']}: untagged image {image}"
            assert not image.endswith(":latest"), image
            if last.startswith("epcsched"):
                epcsched_images.add(image)
    assert len(epcsched_images) == 1, epcsched_images


def test_readme_overlay_builds_and_maps_the_image(tmp_path: Path) -> None:
    """The overlay manifests/README.md tells operators to write works as written."""
    readme = (MANIFESTS / "README.md").read_text()
    block = re.search(r"`my-cluster/kustomization.yaml`.*?```yaml\n(.*?)```", readme, re.S)
    assert block, "README shows a my-cluster/kustomization.yaml"
    (tmp_path / "epcsched").symlink_to(ROOT, target_is_directory=True)
    overlay = tmp_path / "my-cluster"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(block[1])
    shutil.copy(MANIFESTS / "base" / "config" / "epcsched.yaml", overlay / "epcsched.yaml")
    objs = kustomize(overlay)
    images = {c["image"] for w in workloads(objs) for c in all_containers(pod_spec(w))}
    declared = yaml.safe_load(block[1])["images"]
    mapped = next(i for i in declared if i["name"] == "epcsched")
    assert f"{mapped['newName']}:{mapped['newTag']}" in images
    assert not [i for i in images if i.split(":")[0] in ("epcsched", "docker.io/library/epcsched")]
    assert {o["kind"] for o in objs} >= MONITORING_KINDS


# ---- kube-scheduler and the extender -------------------------------------------------------


def test_scheduler_extender_block_follows_the_design(base: list[Obj]) -> None:
    config = scheduler_config(base)
    assert config["apiVersion"] == "kubescheduler.config.k8s.io/v1"
    assert config["kind"] == "KubeSchedulerConfiguration"
    assert config["percentageOfNodesToScore"] == 100
    assert [p["schedulerName"] for p in config["profiles"]] == [SCHEDULER_NAME]
    ext = extender_block(base)
    assert ext["nodeCacheCapable"] is True
    assert ext["filterVerb"] == "filter"
    assert ext["prioritizeVerb"] == "prioritize"
    assert ext["weight"] == 5
    assert ext["httpTimeout"] == "2s"
    managed = ext["managedResources"]
    assert sorted(m["name"] for m in managed) == sorted(DEFAULT_EPC_RESOURCES)
    assert all(m["ignoredByScheduler"] is False for m in managed)
    assert ext["preemptVerb"] == "preempt"
    # With bind off, kube-scheduler binds; an extender bind verb would take that over.
    assert "bindVerb" not in ext
    # Every verb kube-scheduler will post to is one the extender app serves.
    from epcsched.config import Config
    from epcsched.core.snapshot import ClusterSnapshot
    from epcsched.extender.app import create_app
    from epcsched.state import SnapshotState

    app = create_app(Config(), SnapshotState(ClusterSnapshot(DEFAULT_EPC_RESOURCES)))
    served = {r.canonical for r in app.router.resources()}
    for key in ("filterVerb", "prioritizeVerb", "preemptVerb"):
        assert "/" + ext[key] in served, key


# Field names of kubescheduler.config.k8s.io/v1 (k8s.io/kube-scheduler/config/v1/types.go and
# component-base's LeaderElectionConfiguration) that this configuration may use. kube-scheduler
# decodes strictly, so a misspelt field stops it from starting.
SCHEDULER_FIELDS = {
    "": {
        "apiVersion",
        "kind",
        "parallelism",
        "leaderElection",
        "clientConnection",
        "enableProfiling",
        "enableContentionProfiling",
        "percentageOfNodesToScore",
        "podInitialBackoffSeconds",
        "podMaxBackoffSeconds",
        "profiles",
        "extenders",
        "delayCacheUntilActive",
    },
    "leaderElection": {
        "leaderElect",
        "leaseDuration",
        "renewDeadline",
        "retryPeriod",
        "resourceLock",
        "resourceName",
        "resourceNamespace",
    },
    "profiles": {"schedulerName", "percentageOfNodesToScore", "plugins", "pluginConfig"},
    "extenders": {
        "urlPrefix",
        "filterVerb",
        "preemptVerb",
        "prioritizeVerb",
        "weight",
        "bindVerb",
        "enableHTTPS",
        "tlsConfig",
        "httpTimeout",
        "nodeCacheCapable",
        "managedResources",
        "ignorable",
    },
    "managedResources": {"name", "ignoredByScheduler"},
}


def test_scheduler_config_uses_only_known_fields(base: list[Obj]) -> None:
    config = scheduler_config(base)
    assert set(config) <= SCHEDULER_FIELDS[""]
    assert set(config["leaderElection"]) <= SCHEDULER_FIELDS["leaderElection"]
    for profile in config["profiles"]:
        assert set(profile) <= SCHEDULER_FIELDS["profiles"]
    for ext in config["extenders"]:
        assert set(ext) <= SCHEDULER_FIELDS["extenders"], set(ext) - SCHEDULER_FIELDS["extenders"]
        for managed in ext["managedResources"]:
            assert set(managed) <= SCHEDULER_FIELDS["managedResources"]
    assert re.fullmatch(r"\d+(\.\d+)?(ms|s|m)", extender_block(base)["httpTimeout"])


def test_scheduler_leader_election_uses_its_own_lease_it_may_update(base: list[Obj]) -> None:
    election = scheduler_config(base)["leaderElection"]
    assert election["leaderElect"] is True
    assert election["resourceName"] == SCHEDULER_NAME != "kube-scheduler"
    namespace = election["resourceNamespace"]
    workload = one(base, "Deployment", SCHEDULER_NAME)
    sa = service_account(workload)
    for verb in ("get", "update"):
        assert allowed(
            base,
            sa,
            verb,
            "coordination.k8s.io",
            "leases",
            namespace=namespace,
            name=election["resourceName"],
        ), verb
    assert allowed(base, sa, "create", "coordination.k8s.io", "leases", namespace=namespace)
    assert {"system:kube-scheduler", "system:volume-scheduler"} <= bound_roles(base, sa)


def test_kube_scheduler_calls_the_extender_where_it_listens(base: list[Obj]) -> None:
    _, config = epcsched_config(base)
    workload, extender = the_program(base, "extender")
    spec = pod_spec(workload)
    schedulers = [c for c in spec["containers"] if "kube-scheduler" in c["image"]]
    assert len(schedulers) == 1, "the extender runs beside kube-scheduler in one pod"
    url = urlsplit(extender_block(base)["urlPrefix"])
    assert url.scheme == "http"
    assert url.hostname in ("127.0.0.1", "localhost")
    port = int(flag(extender, "--port") or config.extender.port)
    assert url.port == port
    assert url.path.rstrip("/") == config.extender.prefix.rstrip("/")
    # The verbs listen on loopback (kube-scheduler is in the same pod); only the metrics
    # port is a container port, for Prometheus and the probes.
    assert config.extender.metrics_port in [p["containerPort"] for p in extender["ports"]]
    # A plain init container that never exits would keep kube-scheduler from ever starting.
    if extender in spec.get("initContainers", []):
        assert extender.get("restartPolicy") == "Always"
    assert (flag(extender, "--host") or config.extender.host) == "127.0.0.1"
    # Its metrics listener must listen on more than loopback to be scraped.
    assert config.extender.metrics_host == "0.0.0.0"
    # kube-scheduler reads the generated scheduler ConfigMap at the path it is given.
    scheduler = schedulers[0]
    volume, key = mounted_file(spec, scheduler, flag(scheduler, "--config") or "")
    cm = generated_configmap(base, "epcsched-scheduler-config")
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    assert key in cm["data"]


def test_example_workload_is_handled_by_epcsched(base: list[Obj]) -> None:
    docs = list(
        yaml.safe_load_all((MANIFESTS / "examples" / "enclave-deployment.yaml").read_text())
    )
    deployments = [d for d in docs if d and d["kind"] == "Deployment"]
    assert deployments
    managed = {m["name"] for m in extender_block(base)["managedResources"]}
    for d in deployments:
        spec = pod_spec(d)
        assert spec["schedulerName"] == SCHEDULER_NAME
        epc = {
            name: value
            for c in spec["containers"]
            for name, value in c["resources"].get("requests", {}).items()
            if name in DEFAULT_EPC_RESOURCES
        }
        assert epc, "the example requests EPC"
        assert set(epc) <= managed, "kube-scheduler would not call the extender for this pod"
        assert all(parse_quantity(v) > 0 for v in epc.values())


def test_shipped_builds_run_only_registered_commands(shipped_build: list[Obj]) -> None:
    """Nothing in `manifests/` or `manifests/monitoring/` runs a subcommand the CLI lacks.

    In particular no `epcsched autoscaler` (nor its ServiceAccount and RBAC) until the CLI
    registers `autoscaler`; it lives in the opt-in components/autoscaler/ until then.
    """
    commands = registered_commands()
    programs = epcsched_programs(shipped_build)
    assert programs
    for w, c, argv in programs:
        assert argv[:1] and argv[0] in commands, (
            f"{w['metadata']['name']}/{c['name']} runs `epcsched {' '.join(argv)}`; "
            f"the CLI has only {sorted(commands)}"
        )
    if "autoscaler" not in commands:
        assert not epcsched_containers(shipped_build, "autoscaler")
        leftovers = [
            (o["kind"], o["metadata"]["name"])
            for o in shipped_build
            if "autoscaler" in o["metadata"]["name"]
            or o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "autoscaler"
        ]
        assert not leftovers, leftovers


def test_manifest_command_lines_parse(shipped_build: list[Obj]) -> None:
    """Each `epcsched ...` argv in the shipped builds is one the CLI accepts."""
    parser = build_parser()
    programs = epcsched_programs(shipped_build)
    assert {"extender", "exporter"} <= {argv[0] for _, _, argv in programs if argv}
    for _, _, argv in programs:
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"`epcsched {' '.join(argv)}` does not parse")


def unhashed(objs: list[Obj]) -> set[tuple[str, str]]:
    """(kind, name) of each object, generated ConfigMaps without their content hash."""
    return {
        (o["kind"], re.sub(r"-[a-z0-9]{10}$", "", o["metadata"]["name"]))
        if o["kind"] == "ConfigMap"
        else (o["kind"], o["metadata"]["name"])
        for o in objs
    }


def test_pool_example_is_base_plus_the_autoscaler_component(
    base: list[Obj], pools_example: list[Obj]
) -> None:
    assert unhashed(base) <= unhashed(pools_example)
    added = unhashed(pools_example) - unhashed(base)
    assert added == {
        (kind, "epcsched-autoscaler")
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
    } | {(kind, "epcsched-autoscaler-clusterapi") for kind in ("ClusterRole", "RoleBinding")}
    for o in pools_example:
        if (o["kind"], o["metadata"]["name"]) in added:
            labels = o["metadata"].get("labels", {})
            assert labels.get("app.kubernetes.io/component") == "autoscaler", o["kind"]
            assert labels.get("app.kubernetes.io/part-of") == "epcsched", o["kind"]
    workload, container = the_program(pools_example, "autoscaler")
    assert workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"] == (
        "epcsched"
    )
    # Only the exporter touches the host.
    assert not [v for v in pod_spec(workload).get("volumes", []) if "hostPath" in v]
    argv = [*container.get("command", []), *container.get("args", [])]
    if "autoscaler" in registered_commands():
        try:
            build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"`epcsched {' '.join(argv)}` does not parse")


# ---- the epcsched configuration ------------------------------------------------------------

CONFIG_KEYS = {
    "epc": {"resources", "headroom"},
    "extender": {
        "host",
        "port",
        "prefix",
        "strategy",
        "maxBodyBytes",
        "preferNonSgx",
        "bind",
        "reservationTtl",
    },
    "prometheus": {"url", "interval", "staleAfter", "accounting", "nodeLabel"},
    "pressure": {"pagingRate", "usageWatermark"},
    "autoscaler": {
        "interval",
        "expander",
        "targetUtilization",
        "tolerance",
        "scaleDownUtilization",
        "scaleDownUnneededTime",
        "scaleDownDelayAfterAdd",
        "maxNodeProvisionTime",
        "backoff",
        "nodePools",
    },
}


def test_configmap_config_loads_and_spells_out_every_setting(base: list[Obj]) -> None:
    raw, config = epcsched_config(base)
    for section, keys in CONFIG_KEYS.items():
        assert keys <= set(raw[section]), f"{section}: missing {keys - set(raw[section])}"
    assert config.epc.resources == DEFAULT_EPC_RESOURCES
    # Binding by the extender is only safe with ignoredByScheduler: true (DESIGN.md section 3).
    assert config.extender.bind is False


def test_every_epcsched_program_reads_the_generated_config(build: list[Obj]) -> None:
    cm = generated_configmap(build, "epcsched-config")
    # The autoscaler is in the pool example (its component) only; the_program there is asserted
    # by test_pool_example_is_base_plus_the_autoscaler_component.
    present = [p for p in ("extender", "autoscaler") if epcsched_containers(build, p)]
    assert "extender" in present
    for program in present:
        workload, container = the_program(build, program)
        path = flag(container, "--config")
        assert path, f"epcsched {program} runs without --config"
        volume, key = mounted_file(pod_spec(workload), container, path)
        assert volume["configMap"]["name"] == cm["metadata"]["name"]
        assert key in cm["data"]


def test_pool_example_changes_only_the_node_pools(
    base: list[Obj], pools_example: list[Obj]
) -> None:
    _, base_config = epcsched_config(base)
    _, example = epcsched_config(pools_example)
    pools = example.autoscaler.node_pools
    assert pools and all(p.provider == "clusterapi" and p.clusterapi for p in pools)
    assert all(p.template and p.template.resources for p in pools)
    example.autoscaler.node_pools = []
    assert example == base_config


# ---- Services and monitors -----------------------------------------------------------------


def container_ports(spec: Obj) -> tuple[set[str], set[int]]:
    ports = [p for c in all_containers(spec) for p in c.get("ports", [])]
    return {p["name"] for p in ports if "name" in p}, {p["containerPort"] for p in ports}


def test_service_ports_exist_on_the_pods_they_select(build: list[Obj]) -> None:
    for svc in by_kind(build, "Service"):
        selector = svc["spec"]["selector"]
        targets = [
            w
            for w in workloads(build)
            if w["metadata"]["namespace"] == svc["metadata"]["namespace"]
            and selects(selector, w["spec"]["template"]["metadata"]["labels"])
        ]
        assert targets, f"Service {svc['metadata']['name']} selects no workload"
        for w in targets:
            names, numbers = container_ports(pod_spec(w))
            for port in svc["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                if isinstance(target, str):
                    assert target in names, f"{svc['metadata']['name']}: no port named {target}"
                else:
                    assert target in numbers, f"{svc['metadata']['name']}: no port {target}"


def test_monitors_select_existing_services_and_pod_ports(monitoring: list[Obj]) -> None:
    for sm in by_kind(monitoring, "ServiceMonitor"):
        services = [
            s
            for s in by_kind(monitoring, "Service")
            if s["metadata"]["namespace"] in sm["spec"]["namespaceSelector"]["matchNames"]
            and selects(sm["spec"]["selector"]["matchLabels"], s["metadata"].get("labels", {}))
        ]
        assert services, f"ServiceMonitor {sm['metadata']['name']} selects no Service"
        for endpoint in sm["spec"]["endpoints"]:
            for s in services:
                assert endpoint["port"] in [p["name"] for p in s["spec"]["ports"]]
    for pm in by_kind(monitoring, "PodMonitor"):
        pods = [
            w
            for w in workloads(monitoring)
            if w["metadata"]["namespace"] in pm["spec"]["namespaceSelector"]["matchNames"]
            and selects(
                pm["spec"]["selector"]["matchLabels"], w["spec"]["template"]["metadata"]["labels"]
            )
        ]
        assert pods, f"PodMonitor {pm['metadata']['name']} selects no pods"
        for endpoint in pm["spec"]["podMetricsEndpoints"]:
            for w in pods:
                assert endpoint["port"] in container_ports(pod_spec(w))[0]
            # The exporter's own `pod` label (enclave pods) must survive the target's `pod`.
            assert endpoint.get("honorLabels") is True


# ---- RBAC ----------------------------------------------------------------------------------


def test_rbac_lets_the_extender_do_its_job(base: list[Obj]) -> None:
    extender_sa = service_account(the_program(base, "extender")[0])
    for verb in ("list", "watch"):
        for resource in ("pods", "nodes"):
            assert allowed(base, extender_sa, verb, "", resource), (verb, resource)
    assert allowed(base, extender_sa, "create", "", "pods/binding")
    assert allowed(base, extender_sa, "create", "", "events")


def test_rbac_lets_the_autoscaler_do_its_job(pools_example: list[Obj]) -> None:
    """Against the Cluster API overlay: components/autoscaler/ plus its Cluster API rights."""
    objs = pools_example
    autoscaler_sa = service_account(the_program(objs, "autoscaler")[0])
    for verb in ("get", "list", "watch"):
        for resource in ("pods", "nodes"):
            assert allowed(objs, autoscaler_sa, verb, "", resource), (verb, resource)
    assert allowed(objs, autoscaler_sa, "patch", "", "nodes")
    assert allowed(objs, autoscaler_sa, "create", "", "pods/eviction")
    capi = epcsched_config(objs)[1].autoscaler.node_pools[0].clusterapi["namespace"]
    for verb, resource in (
        ("update", "machinedeployments/scale"),
        ("get", "machinedeployments/scale"),
        ("list", "machinedeployments"),
        ("patch", "machines"),
    ):
        assert allowed(objs, autoscaler_sa, verb, "cluster.x-k8s.io", resource, namespace=capi)
    # Its own Lease and status ConfigMap by name (create cannot be limited by name).
    for verb in ("get", "create", "update"):
        assert allowed(
            objs,
            autoscaler_sa,
            verb,
            "coordination.k8s.io",
            "leases",
            namespace=NAMESPACE,
            name="epcsched-autoscaler",
        )
        assert allowed(
            objs,
            autoscaler_sa,
            verb,
            "",
            "configmaps",
            namespace=NAMESPACE,
            name="epcsched-autoscaler-status",
        )
    assert not allowed(
        objs, autoscaler_sa, "get", "", "configmaps", namespace=NAMESPACE, name="epcsched-config"
    )
    # State and Lease stay in epcsched's namespace.
    assert not allowed(objs, autoscaler_sa, "update", "", "configmaps", namespace="default")
    # Scaling goes through the scale subresource, never by editing the MachineDeployment.
    assert not allowed(
        objs, autoscaler_sa, "update", "cluster.x-k8s.io", "machinedeployments", namespace=capi
    )


def test_exporter_has_no_api_access(base: list[Obj]) -> None:
    workload, _ = the_program(base, "exporter")
    sa = service_account(workload)
    assert not bound_roles(base, sa)
    assert pod_spec(workload)["automountServiceAccountToken"] is False


# ---- the exporter DaemonSet ----------------------------------------------------------------


def test_exporter_sees_host_sys_read_only_and_knows_its_node(base: list[Obj]) -> None:
    workload, container = the_program(base, "exporter")
    assert workload["kind"] == "DaemonSet"
    spec = pod_spec(workload)
    sys_volumes = {
        v["name"] for v in spec["volumes"] if v.get("hostPath", {}).get("path") == "/sys"
    }
    assert len(sys_volumes) == 1
    mounts = [m for m in container["volumeMounts"] if m["name"] in sys_volumes]
    assert mounts and all(m.get("readOnly") is True for m in mounts)
    root = flag(container, "--sysfs-root")
    assert root is not None
    assert {m["mountPath"] for m in mounts} == {str(PurePosixPath(root) / "sys")}
    env = {e["name"]: e for e in container.get("env", [])}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    # Nothing but the exporter touches the host.
    for w in workloads(base):
        if w is not workload:
            assert not [v for v in pod_spec(w).get("volumes", []) if "hostPath" in v]


def test_exporter_runs_on_sgx_nodes_only(base: list[Obj]) -> None:
    workload, _ = the_program(base, "exporter")
    spec = pod_spec(workload)
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    sizes = [
        set(e["values"])
        for t in terms
        for e in t["matchExpressions"]
        if e["key"] == "node.kubernetes.io/instance-type"
    ]
    assert sizes == [set(sku_table())], "instance types differ from epcsched/data/skus.csv"
    tolerated = {t["key"] for t in spec["tolerations"] if t.get("operator") == "Exists"}
    assert set(DEFAULT_EPC_RESOURCES) <= tolerated


def test_control_pods_prefer_nodes_without_sgx(base: list[Obj], pools_example: list[Obj]) -> None:
    for program, objs in (("extender", base), ("autoscaler", pools_example)):
        workload, _ = the_program(objs, program)
        preferred = pod_spec(workload)["affinity"]["nodeAffinity"][
            "preferredDuringSchedulingIgnoredDuringExecution"
        ]
        avoided = [
            set(e["values"])
            for p in preferred
            for e in p["preference"]["matchExpressions"]
            if e["key"] == "node.kubernetes.io/instance-type" and e["operator"] == "NotIn"
        ]
        assert avoided == [set(sku_table())], program


# ---- pod security, probes, resources -------------------------------------------------------


def test_containers_are_locked_down_and_bounded(build: list[Obj]) -> None:
    for w in workloads(build):
        spec = pod_spec(w)
        pod_security = spec.get("securityContext", {})
        for c in all_containers(spec):
            where = f"{w['metadata']['name']}/{c['name']}"
            security = {**pod_security, **c.get("securityContext", {})}
            assert security.get("runAsNonRoot") is True, where
            assert security.get("runAsUser", 0) != 0, where
            assert security.get("allowPrivilegeEscalation") is False, where
            assert security.get("readOnlyRootFilesystem") is True, where
            assert "ALL" in security.get("capabilities", {}).get("drop", []), where
            assert security.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
            assert not security.get("privileged"), where
            resources = c.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), where
            assert "memory" in resources.get("limits", {}), where


def test_epcsched_servers_are_probed_on_healthz_and_readyz(base: list[Obj]) -> None:
    for program in ("extender", "exporter"):
        workload, c = the_program(base, program)
        names, numbers = container_ports(pod_spec(workload))
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", program
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", program
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if probe in c:
                port = c[probe]["httpGet"]["port"]
                assert port in (names if isinstance(port, str) else numbers), (program, probe)


# ---- alert rules ---------------------------------------------------------------------------


def require_promtool() -> str:
    if not Path(PROMTOOL).exists():
        pytest.fail("promtool not found; `make system-deps` installs Debian's prometheus package")
    return PROMTOOL


def rule_groups(monitoring: list[Obj]) -> list[dict[str, Any]]:
    rules = by_kind(monitoring, "PrometheusRule")
    assert len(rules) == 1
    return rules[0]["spec"]["groups"]


def test_alert_rules_are_valid_prometheus_rules(monitoring: list[Obj], tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule_groups(monitoring)}))
    done = subprocess.run(
        [require_promtool(), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_paging_alert_threshold_is_the_configured_pressure(
    base: list[Obj], monitoring: list[Obj]
) -> None:
    _, config = epcsched_config(base)
    (rule,) = [
        r for g in rule_groups(monitoring) for r in g["rules"] if "evicted_pages_total" in r["expr"]
    ]
    threshold = re.search(r">\s*([0-9.]+)\s*$", rule["expr"].strip())
    assert threshold and float(threshold[1]) == config.pressure.paging_rate


def test_alerts_fire_exactly_when_they_should(monitoring: list[Obj], tmp_path: Path) -> None:
    groups = rule_groups(monitoring)
    names = {r["alert"] for g in groups for r in g["rules"]}
    assert {
        "EpcschedTelemetryStale",
        "EpcschedNodeEpcPaging",
        "EpcschedEpcPodsPending",
    } <= names
    # Annotations are prose checked by `promtool check rules`; unit tests compare expressions,
    # durations and labels, so they are dropped here rather than repeated.
    bare = [
        {**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]}
        for g in groups
    ]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": bare}))
    pending = 'kube_pod_status_phase{namespace="default",pod="%s",phase="Pending"}'
    requests = (
        'kube_pod_container_resource_requests{namespace="default",pod="%s",container="c",'
        'resource="%s",unit="%s"}'
    )
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # 200 and 10 pages/s, scraped every minute.
                    {
                        "series": 'epcsched_node_epc_evicted_pages_total{node="sgx-hot"}',
                        "values": "0+12000x40",
                    },
                    {
                        "series": 'epcsched_node_epc_evicted_pages_total{node="sgx-calm"}',
                        "values": "0+600x40",
                    },
                    {
                        "series": (
                            'epcsched_telemetry_stale{namespace="epcsched-system",pod="sched-0"}'
                        ),
                        "values": "1x40",
                    },
                    {
                        "series": (
                            'epcsched_telemetry_stale{namespace="epcsched-system",pod="sched-1"}'
                        ),
                        "values": "0x40",
                    },
                    {"series": pending % "enclave", "values": "1x40"},
                    {
                        "series": requests % ("enclave", "sgx_intel_com_epc", "integer"),
                        "values": "67108864x40",
                    },
                    {"series": pending % "legacy", "values": "1x40"},
                    {
                        "series": requests
                        % ("legacy", "kubernetes_azure_com_sgx_epc_mem_in_MiB", "integer"),
                        "values": "64x40",
                    },
                    {"series": pending % "plain", "values": "1x40"},
                    {"series": requests % ("plain", "cpu", "core"), "values": "1x40"},
                    {"series": 'up{job="epcsched-extender",pod="sched-0"}', "values": "0x40"},
                ],
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": "EpcschedNodeEpcPaging", "exp_alerts": []},
                    {
                        "eval_time": "20m",
                        "alertname": "EpcschedNodeEpcPaging",
                        "exp_alerts": [{"exp_labels": {"severity": "warning", "node": "sgx-hot"}}],
                    },
                    {
                        "eval_time": "20m",
                        "alertname": "EpcschedTelemetryStale",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "namespace": "epcsched-system",
                                    "pod": "sched-0",
                                }
                            }
                        ],
                    },
                    {"eval_time": "10m", "alertname": "EpcschedEpcPodsPending", "exp_alerts": []},
                    {
                        "eval_time": "20m",
                        "alertname": "EpcschedEpcPodsPending",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "warning",
                                    "namespace": "default",
                                    "pod": pod,
                                }
                            }
                            for pod in ("enclave", "legacy")
                        ],
                    },
                    {
                        "eval_time": "10m",
                        "alertname": "EpcschedExtenderDown",
                        "exp_alerts": [{"exp_labels": {"severity": "critical"}}],
                    },
                ],
            }
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests))
    done = subprocess.run(
        [require_promtool(), "test", "rules", "tests.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# ---- Dockerfile ----------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not logical and (not stripped or stripped.startswith("#")):
            continue
        if logical and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            logical += stripped[:-1] + " "
            continue
        logical += stripped
        word, _, rest = logical.partition(" ")
        yield word.upper(), rest.strip()
        logical = ""


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction in dockerfile_instructions((ROOT / "Dockerfile").read_text()):
        if instruction[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*")
        regex = regex.replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, c) for c in candidates):
            ignored = not negate
    return ignored


def test_dockerfile_builds_a_non_root_epcsched_image() -> None:
    text = (ROOT / "Dockerfile").read_text()
    args = dict(
        a.split("=", 1) for word, a in dockerfile_instructions(text) if word == "ARG" and "=" in a
    )
    all_stages = stages()
    assert len(all_stages) >= 2, "multi-stage build"
    for stage in all_stages:
        image = stage[0][1].split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], image)
        assert image == "python:3.11-slim", image
    final = all_stages[-1]
    users = [a for word, a in final if word == "USER"]
    assert users, "the final stage sets USER"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) != 0, "numeric non-root UID (runAsNonRoot checks it)"
    entrypoints = [a for word, a in final if word == "ENTRYPOINT"]
    assert entrypoints
    argv = json.loads(entrypoints[-1])
    assert PurePosixPath(argv[0]).name == "epcsched"
    exposed = {int(p.split("/")[0]) for word, a in final if word == "EXPOSE" for p in a.split()}
    assert {8888, 8889, 9877} <= exposed
    runs = " ".join(a for stage in all_stages for word, a in stage if word == "RUN")
    assert re.search(r"pip install (\S+ )*\.(\s|$)", runs), "installs the package with pip"
    # The venv built in an earlier stage is copied whole to the same path, and its bin/ is on
    # PATH, which is how the exec-form ENTRYPOINT finds `epcsched`.
    venv = re.search(r"python3? -m venv (\S+)", runs)
    assert venv, "the build stage makes a venv"
    copies = [a.split() for word, a in final if word == "COPY" and a.startswith("--from=")]
    assert any(c[-2:] == [venv[1], venv[1]] for c in copies), copies
    env = " ".join(a for word, a in final if word == "ENV")
    assert re.search(rf"PATH={re.escape(venv[1])}/bin:", env), env


def test_dockerfile_context_survives_dockerignore() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = []
    for stage in stages():
        for word, a in stage:
            if word == "COPY" and "--from" not in a:
                copied += [s for s in shlex.split(a) if not s.startswith("--")][:-1]
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        assert not dockerignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
    # pyproject names a readme; setuptools refuses to build without it.
    assert "README.md" in copied
    for module in ("epcsched/cli.py", "epcsched/config.py", "epcsched/data/skus.csv"):
        assert not dockerignored(module, patterns), module
    for junk in (".venv/bin/python", ".git/HEAD", "tests/test_manifests.py"):
        assert dockerignored(junk, patterns), junk
    assert dockerignored("epcsched/__pycache__/cli.cpython-311.pyc", patterns)


def test_dockerignore_matcher_follows_docker_rules() -> None:
    assert dockerignored("a/b.py", ["*"])
    assert not dockerignored("a/b.py", ["*", "!a"])
    assert dockerignored("a/x/__pycache__/m.pyc", ["*", "!a", "**/__pycache__"])
    assert not dockerignored("a/b.py", ["*.py"])
    assert dockerignored("b.py", ["*.py"])
