"""The `clusterapi` node-pool provider scales MachineDeployments and removes exactly the node asked.

Protects issue 7 point 6. A kubernetes-asyncio client talks to the fake API server over HTTP:
sizes come from the MachineDeployment's scale subresource; a target is written once (the same
target again writes nothing); a removal annotates the node's Machine before replicas drop, so
that Cluster API's controllers (played by `epcsched.testing.capi`) delete that node and no other;
a node whose Machine is gone never makes replicas drop below the Machines that remain; and every
failure (missing MachineDeployment, unserved version, conflicts, 5xx, unreachable server,
timeouts, bad settings) is a ProviderError naming the MachineDeployment. Also protects the parts
of the fake's scale subresource the provider relies on behaving like kube-apiserver's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from epcsched.autoscaler.providers.base import PoolSize, ProviderError
from epcsched.autoscaler.providers.clusterapi import (
    DELETE_MACHINE_ANNOTATION,
    ClusterApiProvider,
    validate_clusterapi_settings,
)
from epcsched.config import NodePoolSettings, NodeTemplate
from epcsched.netutil import free_port
from epcsched.testing.apiserver import FakeApiServer
from epcsched.testing.capi import CapiReconciler, deletion_order
from epcsched.testing.store import BY_KIND
from tests.kube_helpers import configuration

pytestmark = pytest.mark.timeout(30)

CAPI = ("cluster.x-k8s.io", "v1beta1")
MD = BY_KIND["MachineDeployment"]
MACHINE = BY_KIND["Machine"]
NODE = BY_KIND["Node"]
Obj = dict[str, Any]


class Cluster:
    def __init__(self, api: FakeApiServer, k8s: client.ApiClient) -> None:
        self.api = api
        self.k8s = k8s
        self.custom = client.CustomObjectsApi(k8s)
        self.provider = ClusterApiProvider(k8s, request_timeout=2.0)

    def replicas(self, name: str = "md-dcsv3", namespace: str = "default") -> int:
        replicas: int = self.api.store.get(MD, namespace, name)["spec"]["replicas"]
        return replicas

    def marked(self, namespace: str = "default") -> list[str]:
        return [
            m["metadata"]["name"]
            for m in self.api.store.items(MACHINE, namespace)
            if DELETE_MACHINE_ANNOTATION in (m["metadata"].get("annotations") or {})
        ]

    def writes(self) -> int:
        by_verb = self.api.faults.by_verb
        return sum(by_verb.get(v, 0) for v in ("create", "update", "patch", "delete"))


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with FakeApiServer() as api:
        k8s = client.ApiClient(await configuration(api, tmp_path))
        try:
            yield Cluster(api, k8s)
        finally:
            await k8s.close()


def pool(md: str = "md-dcsv3", namespace: str = "default", **settings: str) -> NodePoolSettings:
    return NodePoolSettings(
        name="dcsv3",
        provider="clusterapi",
        max_size=10,
        clusterapi={"namespace": namespace, "machineDeployment": md, **settings},
    )


def deployment(name: str, replicas: int, namespace: str = "default") -> Obj:
    return {
        "apiVersion": "cluster.x-k8s.io/v1beta1",
        "kind": "MachineDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"clusterName": "c1", "replicas": replicas},
    }


def machine(name: str, md: str, node: str | None, *, deleting: bool = False) -> Obj:
    """A Machine as Cluster API leaves it: the node it runs is `status.nodeRef.name`."""
    obj: Obj = {
        "apiVersion": "cluster.x-k8s.io/v1beta1",
        "kind": "Machine",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {"cluster.x-k8s.io/deployment-name": md},
        },
        "spec": {"clusterName": "c1"},
        "status": {"phase": "Running"},
    }
    if node is not None:
        obj["status"]["nodeRef"] = {"apiVersion": "v1", "kind": "Node", "name": node}
    if deleting:
        obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        obj["metadata"]["finalizers"] = ["machine.cluster.x-k8s.io"]
    return obj


def seed(api: FakeApiServer, replicas: int, nodes: dict[str, str | None]) -> None:
    """MachineDeployment md-dcsv3 with one Machine per entry (machine name -> node name)."""
    api.store.load(MD, deployment("md-dcsv3", replicas))
    for name, node in nodes.items():
        api.store.load(MACHINE, machine(name, "md-dcsv3", node))


async def until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


# ----- size and set_target ---------------------------------------------------------------


async def test_size_is_the_scale_subresource_replicas(cluster: Cluster) -> None:
    cluster.api.store.load(MD, deployment("md-dcsv3", 3))
    assert await cluster.provider.size(pool()) == PoolSize(target=3, busy=False)

    # Status lagging behind spec (machines still provisioning) does not make the pool busy:
    # a new absolute target may be sent at any time.
    md = cluster.api.store.get(MD, "default", "md-dcsv3")
    lagging = {**md, "status": {"replicas": 1, "readyReplicas": 0, "phase": "ScalingUp"}}
    cluster.api.store.update(MD, "default", "md-dcsv3", lagging, subresource="status")
    assert await cluster.provider.size(pool()) == PoolSize(target=3, busy=False)

    # autoscaling/v1 omits replicas 0 (omitempty): the provider must read that as 0.
    cluster.api.store.load(MD, deployment("md-empty", 0))
    scale = await cluster.custom.get_namespaced_custom_object_scale(
        *CAPI, "default", "machinedeployments", "md-empty"
    )
    assert scale["spec"] == {}
    assert await cluster.provider.size(pool("md-empty")) == PoolSize(target=0)


async def test_set_target_writes_replicas_once(cluster: Cluster) -> None:
    cluster.api.store.load(MD, deployment("md-dcsv3", 2))
    await cluster.provider.set_target(pool(), 5)
    md = cluster.api.store.get(MD, "default", "md-dcsv3")
    assert md["spec"] == {"clusterName": "c1", "replicas": 5}
    assert cluster.api.faults.by_verb.get("update") == 1

    # The same target again: read, nothing written, the resourceVersion unchanged.
    version = md["metadata"]["resourceVersion"]
    await cluster.provider.set_target(pool(), 5)
    after = cluster.api.store.get(MD, "default", "md-dcsv3")
    assert after["metadata"]["resourceVersion"] == version
    assert cluster.writes() == 1

    await cluster.provider.set_target(pool(), 0)
    assert cluster.replicas() == 0
    assert await cluster.provider.size(pool()) == PoolSize(target=0)


async def test_a_conflict_is_retried_once_from_a_fresh_read_then_reported_retryable(
    cluster: Cluster,
) -> None:
    cluster.api.store.load(MD, deployment("md-dcsv3", 2))
    scale_path = "/machinedeployments/md-dcsv3/scale"
    cluster.api.faults.fail_next(409, path=scale_path, method="PUT")
    await cluster.provider.set_target(pool(), 4)
    assert cluster.replicas() == 4
    # read the scale, read the MachineDeployment (not paused), conflicting write, read the
    # scale again, write
    assert cluster.api.faults.by_verb == {"get": 3, "update": 2}

    cluster.api.faults.fail_next(409, count=2, path=scale_path, method="PUT")
    with pytest.raises(ProviderError) as exc:
        await cluster.provider.set_target(pool(), 6)
    assert exc.value.retryable
    assert "default/md-dcsv3" in str(exc.value) and "409" in str(exc.value)
    assert cluster.replicas() == 4


async def test_a_real_conflict_uses_the_new_replicas_read(cluster: Cluster) -> None:
    """The write carries the resourceVersion read: a change in between is a 409, not lost."""
    cluster.api.store.load(MD, deployment("md-dcsv3", 2))
    scale = await cluster.custom.get_namespaced_custom_object_scale(
        *CAPI, "default", "machinedeployments", "md-dcsv3"
    )
    await cluster.provider.set_target(pool(), 3)
    scale["spec"]["replicas"] = 7
    with pytest.raises(ApiException) as exc:
        await cluster.custom.replace_namespaced_custom_object_scale(
            *CAPI, "default", "machinedeployments", "md-dcsv3", scale
        )
    assert exc.value.status == 409
    assert cluster.replicas() == 3


# ----- remove_node -----------------------------------------------------------------------


def change_versions(api: FakeApiServer) -> tuple[list[int], list[int]]:
    """resourceVersions at which a Machine was marked for deletion, and replicas dropped."""
    marks, drops = [], []
    for change in api.store.history:
        if change.resource is MACHINE and change.old is not None:
            before = change.old["metadata"].get("annotations") or {}
            after = change.new["metadata"].get("annotations") or {}
            if DELETE_MACHINE_ANNOTATION in after and DELETE_MACHINE_ANNOTATION not in before:
                marks.append(change.rv)
        if (
            change.resource is MD
            and change.old is not None
            and change.new["spec"].get("replicas", 0) < change.old["spec"].get("replicas", 0)
        ):
            drops.append(change.rv)
    return marks, drops


async def test_remove_node_marks_that_machine_before_replicas_drop(cluster: Cluster) -> None:
    seed(cluster.api, 3, {"md-dcsv3-aaaaa": "vm-1", "md-dcsv3-bbbbb": "vm-2", "md-c": "vm-3"})
    await cluster.provider.remove_node(pool(), "vm-2", 2)
    assert cluster.marked() == ["md-dcsv3-bbbbb"]
    assert cluster.replicas() == 2
    marks, drops = change_versions(cluster.api)
    assert len(marks) == 1 and len(drops) == 1 and marks[0] < drops[0]

    # Repeating the call (a retry after a lost reply) writes nothing.
    version = cluster.api.store.rv
    await cluster.provider.remove_node(pool(), "vm-2", 2)
    assert cluster.api.store.rv == version


async def test_cluster_api_then_deletes_exactly_that_node(cluster: Cluster) -> None:
    template = NodeTemplate(
        resources={"sgx.intel.com/epc": "16Gi", "cpu": "4", "memory": "27Gi", "pods": "110"},
        labels={"agentpool": "dcsv3"},
        taints=[{"key": "sgx", "value": "true", "effect": "NoSchedule"}],
    )
    cluster.api.store.load(MD, deployment("md-dcsv3", 3))
    async with CapiReconciler(cluster.api, {"md-dcsv3": template}, node_delay=0.05) as capi:

        def machines() -> list[Obj]:
            return cluster.api.store.items(MACHINE, "default")

        def nodes() -> set[str]:
            return {n["metadata"]["name"] for n in cluster.api.store.items(NODE, None)}

        await until(
            lambda: len(nodes()) == 3 and all(m["status"].get("nodeRef") for m in machines())
        )
        node = cluster.api.store.items(NODE, None)[0]
        assert node["metadata"]["labels"]["agentpool"] == "dcsv3"
        assert node["status"]["allocatable"] == template.resources
        assert node["spec"]["taints"] == template.taints
        assert node["status"]["conditions"][0] == {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
        }
        # Remove the node Cluster API would keep longest if nothing were annotated.
        keep_longest = deletion_order(machines())[-1]
        victim = keep_longest["status"]["nodeRef"]["name"]
        others = nodes() - {victim}
        await cluster.provider.remove_node(pool(), victim, 2)
        await until(lambda: nodes() == others and len(machines()) == 2)
        assert capi.deleted == [keep_longest["metadata"]["name"]]
        assert len(capi.created) == 3
        await until(
            lambda: (
                cluster.api.store.get(MD, "default", "md-dcsv3")["status"].get("readyReplicas") == 2
            )
        )


async def test_machines_made_before_the_controllers_ran_are_removed_with_their_node(
    cluster: Cluster,
) -> None:
    """Machines and Nodes restored from a snapshot, without Cluster API's finalizer yet."""
    seed(cluster.api, 2, {"m-1": "vm-1", "m-2": "vm-2"})
    for name in ("vm-1", "vm-2"):
        cluster.api.store.load(NODE, {"metadata": {"name": name}, "status": {}})
    async with CapiReconciler(cluster.api) as capi:
        # Unannotated, m-2 would go first (same age, later name): remove vm-1 instead.
        assert (
            deletion_order(cluster.api.store.items(MACHINE, "default"))[0]["metadata"]["name"]
            == "m-2"
        )
        await cluster.provider.remove_node(pool(), "vm-1", 1)
        await until(
            lambda: [n["metadata"]["name"] for n in cluster.api.store.items(NODE, None)] == ["vm-2"]
        )
        assert [m["metadata"]["name"] for m in cluster.api.store.items(MACHINE, "default")] == [
            "m-2"
        ]
        assert capi.deleted == ["m-1"] and capi.created == []


async def test_remove_node_whose_machine_is_gone_never_drops_another(cluster: Cluster) -> None:
    # Replicas 3 and three Machines: lowering to 2 would delete a node nobody drained.
    seed(cluster.api, 3, {"m-1": "vm-1", "m-2": "vm-2", "m-3": "vm-3"})
    version = cluster.api.store.rv
    await cluster.provider.remove_node(pool(), "vm-9", 2)
    assert cluster.replicas() == 3 and cluster.api.store.rv == version

    # Its Machine went without replicas dropping (two remain): now replicas may drop.
    cluster.api.store.delete(MACHINE, "default", "m-3")
    await cluster.provider.remove_node(pool(), "vm-3", 2)
    assert cluster.replicas() == 2
    assert cluster.marked() == []


async def test_a_machine_being_deleted_does_not_count_as_remaining(cluster: Cluster) -> None:
    seed(cluster.api, 3, {"m-1": "vm-1", "m-2": "vm-2"})
    cluster.api.store.load(MACHINE, machine("m-3", "md-dcsv3", "vm-3", deleting=True))
    await cluster.provider.remove_node(pool(), "vm-9", 1)
    # max(target 1, min(replicas 3, Machines not being deleted 2))
    assert cluster.replicas() == 2


async def test_remove_node_refuses_what_would_not_delete_that_node(cluster: Cluster) -> None:
    seed(cluster.api, 2, {"m-1": "vm-1", "m-2": "vm-2"})
    cluster.api.store.load(MD, deployment("md-other", 1))
    cluster.api.store.load(MACHINE, machine("o-1", "md-other", "vm-7"))
    version = cluster.api.store.rv

    with pytest.raises(ProviderError) as exc:
        await cluster.provider.remove_node(pool(), "vm-1", 2)
    assert "vm-1" in str(exc.value) and "2 Machines" in str(exc.value)
    with pytest.raises(ProviderError) as exc:
        await cluster.provider.remove_node(pool(), "vm-7", 1)
    assert "MachineDeployment md-other, not of default/md-dcsv3" in str(exc.value)
    assert cluster.api.store.rv == version and cluster.marked() == []


async def test_a_failed_scale_down_takes_the_mark_off_again(cluster: Cluster) -> None:
    seed(cluster.api, 2, {"m-1": "vm-1", "m-2": "vm-2"})
    cluster.api.faults.fail_next(500, path="/scale", method="PUT")
    with pytest.raises(ProviderError) as exc:
        await cluster.provider.remove_node(pool(), "vm-1", 1)
    assert not exc.value.retryable
    assert "default/md-dcsv3" in str(exc.value) and "500" in str(exc.value)
    assert cluster.replicas() == 2
    # Left marked, m-1 would be the first to go at the next unrelated scale-down.
    assert cluster.marked() == []
    marks, drops = change_versions(cluster.api)
    assert len(marks) == 1 and drops == []


# ----- failures --------------------------------------------------------------------------


async def test_a_missing_machine_deployment_is_named(cluster: Cluster) -> None:
    missing = pool("md-missing", namespace="capi")
    for call in (
        cluster.provider.size(missing),
        cluster.provider.set_target(missing, 2),
        cluster.provider.remove_node(missing, "vm-1", 0),
    ):
        with pytest.raises(ProviderError) as exc:
            await call
        assert "MachineDeployment capi/md-missing not found" in str(exc.value)
        assert not exc.value.retryable


async def test_a_version_the_server_does_not_serve_is_named(cluster: Cluster) -> None:
    cluster.api.store.load(MD, deployment("md-dcsv3", 1))
    provider = ClusterApiProvider(cluster.k8s, version="v1beta2")
    with pytest.raises(ProviderError) as exc:
        await provider.size(pool())
    assert "does not serve cluster.x-k8s.io/v1beta2" in str(exc.value)
    assert "default/md-dcsv3" in str(exc.value)


async def test_server_errors_are_provider_errors(cluster: Cluster) -> None:
    seed(cluster.api, 2, {"m-1": "vm-1", "m-2": "vm-2"})
    faults = cluster.api.faults
    faults.fail_next(500, path="/scale", method="GET")
    with pytest.raises(ProviderError) as exc:
        await cluster.provider.size(pool())
    assert str(exc.value) == (
        "pool dcsv3: cannot read the scale of MachineDeployment default/md-dcsv3: "
        "500 InternalError: internal error (injected)"
    )
    faults.fail_next(503, path="/machines", method="GET")
    with pytest.raises(ProviderError) as exc:
        await cluster.provider.remove_node(pool(), "vm-1", 1)
    assert "cannot list the Machines of MachineDeployment default/md-dcsv3: 503" in str(exc.value)
    faults.fail_next(500, path="/machines/m-1", method="PATCH")
    with pytest.raises(ProviderError):
        await cluster.provider.remove_node(pool(), "vm-1", 1)
    assert cluster.replicas() == 2 and cluster.marked() == []

    # A server slower than the request timeout.
    slow = ClusterApiProvider(cluster.k8s, request_timeout=0.2)
    faults.delay_next(1.0, count=1)
    with pytest.raises(ProviderError) as exc:
        await slow.size(pool())
    assert "unreachable" in str(exc.value)


async def test_an_unreachable_server_is_a_provider_error(tmp_path: Path) -> None:
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{free_port()}"
    async with client.ApiClient(configuration) as k8s:
        provider = ClusterApiProvider(k8s)
        for call in (
            provider.size(pool()),
            provider.set_target(pool(), 1),
            provider.remove_node(pool(), "vm-1", 0),
        ):
            with pytest.raises(ProviderError) as exc:
                await call
            assert "default/md-dcsv3: API server unreachable" in str(exc.value)


# ----- settings --------------------------------------------------------------------------


def test_settings_are_validated_with_their_key_path() -> None:
    assert validate_clusterapi_settings(pool(), 0) == []
    assert validate_clusterapi_settings(NodePoolSettings(name="a", provider="simulated")) == []
    empty = NodePoolSettings(name="dcsv3", provider="clusterapi")
    assert validate_clusterapi_settings(empty, 1) == [
        "autoscaler.nodePools[1].clusterapi.namespace: required (the MachineDeployment's "
        "namespace)",
        "autoscaler.nodePools[1].clusterapi.machineDeployment: required (the MachineDeployment "
        "that owns this pool's nodes: kubectl get machinedeployments -A)",
    ]
    typo = NodePoolSettings(
        name="dcsv3",
        provider="clusterapi",
        clusterapi={"namespace": "default", "machinedeployment": "md-dcsv3"},
    )
    assert validate_clusterapi_settings(typo, 0) == [
        "autoscaler.nodePools[0].clusterapi.machinedeployment: unknown key (known: "
        "machineDeployment, namespace)",
        "autoscaler.nodePools[0].clusterapi.machineDeployment: required (the MachineDeployment "
        "that owns this pool's nodes: kubectl get machinedeployments -A)",
    ]
    bad = pool("md_dcsv3", namespace="Default")
    assert validate_clusterapi_settings(bad) == [
        "autoscaler.nodePools['dcsv3'].clusterapi.namespace: 'Default' is not a namespace name "
        "(lowercase letters, digits and '-', at most 63 characters)",
        "autoscaler.nodePools['dcsv3'].clusterapi.machineDeployment: 'md_dcsv3' is not an "
        "object name (lowercase letters, digits, '-' and '.', at most 253 characters)",
    ]
    assert validate_clusterapi_settings(pool("md.dcsv3-1", namespace="capi-system")) == []


async def test_bad_settings_fail_before_any_request(cluster: Cluster) -> None:
    with pytest.raises(ProviderError) as exc:
        await cluster.provider.set_target(pool("md_dcsv3"), 1)
    assert str(exc.value).startswith("pool dcsv3: clusterapi.machineDeployment: 'md_dcsv3'")
    assert cluster.api.faults.requests == 0


# ----- the fake's scale subresource and Cluster API reconciler ----------------------------


async def test_fake_scale_subresource_behaves_like_kube_apiserver(cluster: Cluster) -> None:
    custom = cluster.custom
    store = cluster.api.store
    store.load(MD, deployment("md-dcsv3", 2))
    md = store.get(MD, "default", "md-dcsv3")
    status = {"replicas": 2, "selector": "cluster.x-k8s.io/deployment-name=md-dcsv3"}
    store.update(MD, "default", "md-dcsv3", {**md, "status": status}, subresource="status")
    args = (*CAPI, "default", "machinedeployments", "md-dcsv3")

    scale = await custom.get_namespaced_custom_object_scale(*args)
    assert scale["apiVersion"] == "autoscaling/v1" and scale["kind"] == "Scale"
    assert scale["spec"] == {"replicas": 2}
    assert scale["status"] == status
    # The same replicas: no write, no new resourceVersion.
    same = await custom.replace_namespaced_custom_object_scale(*args, scale)
    assert same["metadata"]["resourceVersion"] == scale["metadata"]["resourceVersion"]
    for body, code in (
        ({**scale, "metadata": {**scale["metadata"], "name": "other"}}, 400),
        ({**scale, "metadata": {**scale["metadata"], "resourceVersion": "1"}, "spec": {}}, 409),
    ):
        with pytest.raises(ApiException) as exc:
            await custom.replace_namespaced_custom_object_scale(*args, body)
        assert exc.value.status == code, json.loads(exc.value.body)
    # Go decodes a missing replicas as 0.
    zero = await custom.replace_namespaced_custom_object_scale(*args, {"spec": {}})
    assert zero["spec"] == {} and store.get(MD, "default", "md-dcsv3")["spec"]["replicas"] == 0

    # Custom resources take JSON and merge patches, never strategic merge patches.
    store.load(MACHINE, machine("m-1", "md-dcsv3", "vm-1"))
    smp = "application/strategic-merge-patch+json"
    for call in (
        custom.patch_namespaced_custom_object_scale(
            *args, {"spec": {"replicas": 1}}, _content_type=smp
        ),
        custom.patch_namespaced_custom_object(
            *CAPI,
            "default",
            "machines",
            "m-1",
            {"metadata": {"labels": {"a": "b"}}},
            _content_type=smp,
        ),
    ):
        with pytest.raises(ApiException) as exc:
            await call
        assert exc.value.status == 415
    # At 0 the Scale has no spec.replicas to replace (as with kube-apiserver): "add" it.
    with pytest.raises(ApiException) as exc:
        await custom.patch_namespaced_custom_object_scale(
            *args, [{"op": "replace", "path": "/spec/replicas", "value": 3}]
        )
    assert exc.value.status == 422
    patched = await custom.patch_namespaced_custom_object_scale(
        *args, [{"op": "add", "path": "/spec/replicas", "value": 3}]
    )
    assert patched["spec"] == {"replicas": 3}


async def test_reconciler_scales_machines_and_nodes(cluster: Cluster) -> None:
    store = cluster.api.store
    store.load(MD, deployment("md-dcsv3", 0))
    templates = {"md-dcsv3": {"labels": {"agentpool": "dcsv3"}, "resources": {"cpu": 2}}}

    def machines() -> list[Obj]:
        return store.items(MACHINE, "default")

    def nodes() -> dict[str, Obj]:
        return {n["metadata"]["name"]: n for n in store.items(NODE, None)}

    async with CapiReconciler(cluster.api, templates, node_delay=0.1) as capi:
        await cluster.provider.set_target(pool(), 2)
        await until(lambda: len(machines()) == 2)
        # Machines exist before their nodes do.
        assert nodes() == {} and all(m["status"]["phase"] == "Provisioning" for m in machines())
        await until(
            lambda: len(nodes()) == 2 and all(m["status"].get("nodeRef") for m in machines())
        )
        for m in machines():
            node = nodes()[m["status"]["nodeRef"]["name"]]
            assert node["metadata"]["name"] != m["metadata"]["name"]
            assert (
                node["metadata"]["annotations"]["cluster.x-k8s.io/machine"] == m["metadata"]["name"]
            )
            assert node["spec"]["providerID"] == m["spec"]["providerID"]
            assert node["metadata"]["labels"]["agentpool"] == "dcsv3"
            assert node["status"]["allocatable"] == {"cpu": "2"}
            assert m["status"]["phase"] == "Running"
            assert m["metadata"]["ownerReferences"][0]["name"] == "md-dcsv3"
        await until(
            lambda: store.get(MD, "default", "md-dcsv3").get("status", {}).get("phase") == "Running"
        )
        status = store.get(MD, "default", "md-dcsv3")["status"]
        assert status["readyReplicas"] == 2 and status["replicas"] == 2
        assert status["selector"] == (
            "cluster.x-k8s.io/cluster-name=c1,cluster.x-k8s.io/deployment-name=md-dcsv3"
        )

        # Without an annotation, scale-down takes the newest.
        first = deletion_order(machines())[0]
        await cluster.provider.set_target(pool(), 1)
        await until(lambda: len(machines()) == 1 and len(nodes()) == 1)
        assert capi.deleted == [first["metadata"]["name"]]

        # A Machine deleted by someone else loses its Node and is replaced.
        survivor = machines()[0]
        await cluster.custom.delete_namespaced_custom_object(
            *CAPI, "default", "machines", survivor["metadata"]["name"]
        )
        await until(
            lambda: (
                len(machines()) == 1
                and machines()[0]["metadata"]["name"] != survivor["metadata"]["name"]
                and len(nodes()) == 1
                and survivor["status"]["nodeRef"]["name"] not in nodes()
            )
        )
        assert cluster.replicas() == 1 and len(capi.created) == 3


# ----- a paused MachineDeployment ----------------------------------------------------------


@pytest.mark.parametrize(
    ("paused", "how"),
    [
        ({"spec": {"paused": True}}, "spec.paused is true"),
        (
            {"metadata": {"annotations": {"cluster.x-k8s.io/paused": ""}}},
            "it has the cluster.x-k8s.io/paused annotation",
        ),
    ],
)
async def test_a_paused_machine_deployment_is_refused_before_any_write(
    cluster: Cluster, paused: Obj, how: str
) -> None:
    seed(cluster.api, 2, {"m1": "n1", "m2": "n2"})
    md = cluster.api.store.get(MD, "default", "md-dcsv3")
    for key, value in paused.items():
        md[key] = {**md[key], **value}
    cluster.api.store.update(MD, "default", "md-dcsv3", md)
    message = (
        "pool dcsv3: MachineDeployment default/md-dcsv3 is paused ("
        + how
        + "): Cluster API creates and deletes no Machines for it until it is resumed"
    )
    with pytest.raises(ProviderError) as raised:
        await cluster.provider.set_target(pool(), 3)
    assert str(raised.value) == message
    assert not raised.value.retryable
    with pytest.raises(ProviderError) as raised:
        await cluster.provider.remove_node(pool(), "n2", 1)
    assert str(raised.value) == message
    # Nothing was written: no replicas, no delete-machine mark.
    assert cluster.writes() == 0
    assert cluster.replicas() == 2 and cluster.marked() == []
    # Its size is still read (the loop reports it), and the same target writes nothing.
    assert await cluster.provider.size(pool()) == PoolSize(target=2)
    await cluster.provider.set_target(pool(), 2)
    assert cluster.writes() == 0


async def test_a_removal_reads_the_machine_deployment_once(cluster: Cluster) -> None:
    seed(cluster.api, 2, {"m1": "n1", "m2": "n2"})
    await cluster.provider.remove_node(pool(), "n2", 1)
    assert cluster.replicas() == 1 and cluster.marked() == ["m2"]
    # Scale, MachineDeployment (not paused), Machines, mark, scale again, write: the paused
    # check before the mark also stands for the write that follows it.
    assert cluster.api.faults.by_verb == {"get": 3, "list": 1, "patch": 1, "update": 1}


async def test_a_resumed_machine_deployment_scales_again(cluster: Cluster) -> None:
    seed(cluster.api, 2, {"m1": "n1", "m2": "n2"})
    md = cluster.api.store.get(MD, "default", "md-dcsv3")
    cluster.api.store.update(
        MD, "default", "md-dcsv3", {**md, "spec": {**md["spec"], "paused": False}}
    )
    await cluster.provider.set_target(pool(), 3)
    assert cluster.replicas() == 3
