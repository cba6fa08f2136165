"""The fake API server behaves like kube-apiserver for everything epcsched's clients use.

Protects issue 3 point 1. Every test talks to it with real kubernetes-asyncio clients over
loopback HTTP: CRUD with NotFound/AlreadyExists/Conflict Status bodies, status and scale
subresources, selectors, pagination, watches from a resourceVersion with bookmarks, timeouts and
410 Gone, pods/binding, pods/eviction with PodDisruptionBudgets, Leases, Events, ConfigMaps,
Cluster API objects, the three patch formats, fault injection, bad input, and the standalone
server the demo runs.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from epcsched.kube.client import load_configuration
from epcsched.testing.apiserver import FakeApiServer
from epcsched.testing.store import BY_KIND
from tests.kube_helpers import configuration, node, pod

ROOT = Path(__file__).resolve().parent.parent
CAPI = ("cluster.x-k8s.io", "v1beta1")
MERGE = "application/merge-patch+json"


class Cluster:
    def __init__(self, api: FakeApiServer, k8s: client.ApiClient) -> None:
        self.api = api
        self.k8s = k8s
        self.core = client.CoreV1Api(k8s)
        self.custom = client.CustomObjectsApi(k8s)
        self.leases = client.CoordinationV1Api(k8s)
        self.policy = client.PolicyV1Api(k8s)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with FakeApiServer(bookmark_interval=0.1) as api:
        k8s = client.ApiClient(await configuration(api, tmp_path))
        try:
            yield Cluster(api, k8s)
        finally:
            await k8s.close()


def status_of(exc: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body)
    assert body["kind"] == "Status" and body["apiVersion"] == "v1"
    assert body["status"] == "Failure" and body["code"] == exc.status
    return body


async def test_crud_with_kubernetes_status_errors(cluster: Cluster) -> None:
    core = cluster.core
    created = await core.create_node(node("n1"))
    assert created.metadata.uid and created.metadata.resource_version == "1"
    with pytest.raises(ApiException) as exc:
        await core.create_node(node("n1"))
    assert exc.value.status == 409 and status_of(exc.value)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as exc:
        await core.read_node("missing")
    body = status_of(exc.value)
    assert body["reason"] == "NotFound" and body["message"] == 'nodes "missing" not found'

    with pytest.raises(ApiException) as exc:
        await core.create_namespaced_pod("team", pod("p", "8Mi", namespace="elsewhere"))
    assert exc.value.status == 400 and "does not match the namespace" in exc.value.body
    p = await core.create_namespaced_pod("team", pod("p", "8Mi", phase="Running", namespace="team"))
    # A new pod's status belongs to the kubelet: the API resets it to Pending.
    assert p.status.phase == "Pending" and p.metadata.namespace == "team"
    stale = p.metadata.resource_version
    p.metadata.labels = {"app": "x"}
    updated = await core.replace_namespaced_pod("p", "team", p)
    assert int(updated.metadata.resource_version) > int(stale)
    p.metadata.resource_version = stale
    with pytest.raises(ApiException) as exc:
        await core.replace_namespaced_pod("p", "team", p)
    assert exc.value.status == 409 and "the object has been modified" in exc.value.body
    deleted = await core.delete_namespaced_pod("p", "team")
    assert deleted.metadata.name == "p"
    with pytest.raises(ApiException) as exc:
        await core.delete_namespaced_pod("p", "team")
    assert exc.value.status == 404


async def test_status_subresource_is_separate(cluster: Cluster) -> None:
    core = cluster.core
    await core.create_namespaced_pod("default", pod("p"))
    await core.patch_namespaced_pod_status(
        "p", "default", {"status": {"phase": "Running"}}, _content_type=MERGE
    )
    # A main-resource write cannot change status, and a status write cannot change the spec.
    changed = await core.patch_namespaced_pod(
        "p", "default", {"status": {"phase": "Failed"}, "metadata": {"labels": {"a": "b"}}}
    )
    assert changed.status.phase == "Running" and changed.metadata.labels == {"a": "b"}
    after = await core.patch_namespaced_pod_status(
        "p",
        "default",
        {"spec": {"nodeName": "sneaky"}, "status": {"phase": "Succeeded"}},
        _content_type=MERGE,
    )
    assert after.spec.node_name is None and after.status.phase == "Succeeded"


async def test_label_and_field_selectors(cluster: Cluster) -> None:
    core = cluster.core
    store = cluster.api.store
    store.load(BY_KIND["Pod"], pod("a", node_name="n1", phase="Running", labels={"app": "x"}))
    store.load(BY_KIND["Pod"], pod("b", node_name="n2", phase="Running", labels={"app": "y"}))
    store.load(BY_KIND["Pod"], pod("c", phase="Pending", labels={"tier": "db"}))
    store.load(BY_KIND["Pod"], pod("d", node_name="n1", phase="Succeeded", namespace="other"))

    async def names(**kwargs: Any) -> list[str]:
        result = await core.list_pod_for_all_namespaces(**kwargs)
        return [p.metadata.name for p in result.items]

    assert await names(field_selector="spec.nodeName=n1") == ["a", "d"]
    assert await names(field_selector="spec.nodeName=") == ["c"]
    assert await names(field_selector="status.phase!=Succeeded,status.phase!=Failed") == [
        "a",
        "b",
        "c",
    ]
    assert await names(field_selector="metadata.name==b") == ["b"]
    assert await names(label_selector="app in (x,y)") == ["a", "b"]
    assert await names(label_selector="app!=x") == ["b", "c", "d"]
    assert await names(label_selector="!app,tier") == ["c"]
    in_ns = await core.list_namespaced_pod("other")
    assert [p.metadata.name for p in in_ns.items] == ["d"]
    for bad in ({"field_selector": "spec.bogus=1"}, {"label_selector": "app in (x"}):
        with pytest.raises(ApiException) as exc:
            await core.list_pod_for_all_namespaces(**bad)
        assert exc.value.status == 400 and status_of(exc.value)["reason"] == "BadRequest"


async def test_pagination_and_expired_continue(cluster: Cluster) -> None:
    for i in range(7):
        cluster.api.store.load(BY_KIND["Node"], node(f"n{i}"))
    first = await cluster.core.list_node(limit=3)
    assert [n.metadata.name for n in first.items] == ["n0", "n1", "n2"]
    assert first.metadata.remaining_item_count == 4
    cluster.api.store.load(BY_KIND["Node"], node("late"))
    second = await cluster.core.list_node(limit=3, _continue=first.metadata._continue)
    # Pages are consistent with the first one: the node created meanwhile is not in them.
    assert [n.metadata.name for n in second.items] == ["n3", "n4", "n5"]
    assert second.metadata.resource_version == first.metadata.resource_version
    cluster.api.store.compact()
    with pytest.raises(ApiException) as exc:
        await cluster.core.list_node(limit=3, _continue=second.metadata._continue)
    assert exc.value.status == 410 and status_of(exc.value)["reason"] == "Expired"


async def test_watch_resumes_from_a_version_with_selector_transitions(cluster: Cluster) -> None:
    core = cluster.core
    store = cluster.api.store
    store.load(BY_KIND["Pod"], pod("a", phase="Running"))
    listed = await core.list_pod_for_all_namespaces(
        field_selector="status.phase!=Succeeded,status.phase!=Failed"
    )
    start = listed.metadata.resource_version
    store.load(BY_KIND["Pod"], pod("b", phase="Running"))
    store.patch(
        BY_KIND["Pod"],
        "default",
        "a",
        MERGE,
        {"status": {"phase": "Succeeded"}},
        subresource="status",
    )
    store.delete(BY_KIND["Pod"], "default", "b")
    store.load(BY_KIND["Node"], node("unrelated"))
    seen: list[tuple[str, str | None]] = []
    bookmark_version = None
    stream = watch.Watch()
    async for event in stream.stream(
        core.list_pod_for_all_namespaces,
        resource_version=start,
        field_selector="status.phase!=Succeeded,status.phase!=Failed",
        allow_watch_bookmarks=True,
        timeout_seconds=1,
    ):
        raw = event["raw_object"]
        if event["type"] == "BOOKMARK":
            bookmark_version = raw["metadata"]["resourceVersion"]
            continue
        seen.append((event["type"], raw["metadata"]["name"]))
    # Leaving the selection reads as DELETED, as kube-apiserver's watch cache reports it.
    assert seen == [("ADDED", "b"), ("DELETED", "a"), ("DELETED", "b")]
    # Bookmarks carry the newest version, past writes to other kinds.
    assert bookmark_version == str(store.rv)


async def test_watch_from_zero_lists_first_and_too_old_is_410(cluster: Cluster) -> None:
    core = cluster.core
    store = cluster.api.store
    store.load(BY_KIND["Node"], node("n1"))
    store.load(BY_KIND["Node"], node("n2"))
    stream = watch.Watch()
    events = [
        (e["type"], e["object"].metadata.name)
        async for e in stream.stream(core.list_node, resource_version="0", timeout_seconds=1)
    ]
    assert events == [("ADDED", "n1"), ("ADDED", "n2")]
    store.compact()
    with pytest.raises(ApiException) as exc:
        async for _ in watch.Watch().stream(
            core.list_node, resource_version="1", timeout_seconds=1
        ):
            pass
    assert exc.value.status == 410 and "too old resource version" in str(exc.value.reason)


async def test_binding_sets_node_once(cluster: Cluster) -> None:
    core = cluster.core
    await core.create_namespaced_pod("default", pod("p", "8Mi"))
    target = client.V1ObjectReference(kind="Node", name="n1")
    binding = client.V1Binding(metadata=client.V1ObjectMeta(name="p"), target=target)
    response = await core.create_namespaced_pod_binding(
        "p", "default", binding, _preload_content=False
    )
    assert response.status == 201
    bound = await core.read_namespaced_pod("p", "default")
    assert bound.spec.node_name == "n1"
    assert any(c.type == "PodScheduled" and c.status == "True" for c in bound.status.conditions)
    with pytest.raises(ApiException) as exc:
        await core.create_namespaced_pod_binding("p", "default", binding)
    assert exc.value.status == 409
    assert 'already assigned to node "n1"' in status_of(exc.value)["message"]
    with pytest.raises(ApiException) as exc:
        await core.create_namespaced_pod_binding("ghost", "default", binding)
    assert exc.value.status == 404


async def test_eviction_honours_disruption_budgets(cluster: Cluster) -> None:
    store = cluster.api.store
    for name in ("w1", "w2"):
        store.load(BY_KIND["Pod"], pod(name, node_name="n1", phase="Running", labels={"app": "w"}))
    store.load(BY_KIND["Pod"], pod("free", node_name="n1", phase="Running"))
    await cluster.policy.create_namespaced_pod_disruption_budget(
        "default",
        {
            "metadata": {"name": "w-budget"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "w"}}},
        },
    )
    eviction = client.V1Eviction(metadata=client.V1ObjectMeta(name="w1", namespace="default"))
    first = await cluster.core.create_namespaced_pod_eviction(
        "w1", "default", eviction, _preload_content=False
    )
    assert first.status == 201
    with pytest.raises(ApiException) as exc:
        await cluster.core.create_namespaced_pod_eviction(
            "w2",
            "default",
            client.V1Eviction(metadata=client.V1ObjectMeta(name="w2", namespace="default")),
        )
    body = status_of(exc.value)
    assert exc.value.status == 429 and body["reason"] == "TooManyRequests"
    assert body["details"]["causes"][0]["reason"] == "DisruptionBudget"
    assert exc.value.headers["Retry-After"]
    unguarded = await cluster.core.create_namespaced_pod_eviction(
        "free",
        "default",
        client.V1Eviction(metadata=client.V1ObjectMeta(name="free", namespace="default")),
        _preload_content=False,
    )
    assert unguarded.status == 201
    left = await cluster.core.list_namespaced_pod("default")
    assert [p.metadata.name for p in left.items] == ["w2"]


async def test_leases_events_and_configmaps(cluster: Cluster) -> None:
    lease = await cluster.leases.create_namespaced_lease(
        "kube-system",
        {
            "metadata": {"name": "epcsched"},
            "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
        },
    )
    lease.spec.holder_identity = "b"
    taken = await cluster.leases.replace_namespaced_lease("epcsched", "kube-system", lease)
    assert taken.spec.holder_identity == "b"
    # A candidate acting on the old version loses: optimistic concurrency is leader election.
    lease.spec.holder_identity = "c"
    with pytest.raises(ApiException) as exc:
        await cluster.leases.replace_namespaced_lease("epcsched", "kube-system", lease)
    assert exc.value.status == 409

    await cluster.core.create_namespaced_event(
        "default",
        {
            "metadata": {"generateName": "scale-"},
            "involvedObject": {"kind": "Pod", "name": "p1", "namespace": "default"},
            "reason": "ScaleUp",
            "message": "asked for 1 more node",
            "type": "Normal",
        },
    )
    events = await cluster.core.list_namespaced_event(
        "default", field_selector="involvedObject.name=p1,reason=ScaleUp"
    )
    assert len(events.items) == 1 and events.items[0].metadata.name.startswith("scale-")

    await cluster.core.create_namespaced_config_map(
        "kube-system", {"metadata": {"name": "state"}, "data": {"k": "v"}}
    )
    patched = await cluster.core.patch_namespaced_config_map(
        "state", "kube-system", {"data": {"k": None, "n": "1"}}
    )
    assert patched.data == {"n": "1"}


async def test_machine_deployments_scale_and_machines(cluster: Cluster) -> None:
    custom = cluster.custom
    await custom.create_namespaced_custom_object(
        *CAPI,
        "default",
        "machinedeployments",
        {
            "apiVersion": "cluster.x-k8s.io/v1beta1",
            "kind": "MachineDeployment",
            "metadata": {"name": "md-dcsv3"},
            "spec": {"replicas": 2, "clusterName": "c"},
            "status": {"replicas": 2, "selector": "pool=dcsv3"},
        },
    )
    scale = await custom.get_namespaced_custom_object_scale(
        *CAPI, "default", "machinedeployments", "md-dcsv3"
    )
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 2
    scaled = await custom.patch_namespaced_custom_object_scale(
        *CAPI,
        "default",
        "machinedeployments",
        "md-dcsv3",
        {"spec": {"replicas": 4}},
        _content_type=MERGE,
    )
    assert scaled["spec"]["replicas"] == 4
    md = await custom.get_namespaced_custom_object(
        *CAPI, "default", "machinedeployments", "md-dcsv3"
    )
    assert md["spec"] == {"replicas": 4, "clusterName": "c"}
    with pytest.raises(ApiException) as exc:
        await custom.patch_namespaced_custom_object_scale(
            *CAPI,
            "default",
            "machinedeployments",
            "md-dcsv3",
            {"spec": {"replicas": -1}},
            _content_type=MERGE,
        )
    assert exc.value.status == 422

    await custom.create_namespaced_custom_object(
        *CAPI,
        "default",
        "machines",
        {"kind": "Machine", "apiVersion": "cluster.x-k8s.io/v1beta1", "metadata": {"name": "m1"}},
    )
    marked = await custom.patch_namespaced_custom_object(
        *CAPI,
        "default",
        "machines",
        "m1",
        {"metadata": {"annotations": {"cluster.x-k8s.io/delete-machine": "yes"}}},
        _content_type=MERGE,
    )
    assert marked["metadata"]["annotations"] == {"cluster.x-k8s.io/delete-machine": "yes"}
    listed = await custom.list_namespaced_custom_object(*CAPI, "default", "machines")
    assert [m["metadata"]["name"] for m in listed["items"]] == ["m1"]


async def test_strategic_merge_and_json_patch(cluster: Cluster) -> None:
    core = cluster.core
    base = node("n1")
    base["spec"] = {"taints": [{"key": "sgx", "value": "true", "effect": "NoSchedule"}]}
    await core.create_node(base)
    # Taints have no patch strategy in the Node type (a list replaced whole, as `kubectl
    # taint` expects); a JSON patch (list body) edits by path.
    merged = await core.patch_node(
        "n1",
        {"spec": {"unschedulable": True, "taints": [{"key": "drain", "effect": "NoSchedule"}]}},
    )
    assert [t.key for t in merged.spec.taints] == ["drain"]
    assert merged.spec.unschedulable is True
    replaced = await core.patch_node(
        "n1", [{"op": "replace", "path": "/spec/unschedulable", "value": False}]
    )
    assert replaced.spec.unschedulable is False
    with pytest.raises(ApiException) as exc:
        await core.patch_node("n1", [{"op": "remove", "path": "/spec/nothing"}])
    assert exc.value.status == 422
    # Conditions merge by type: one added beside the others, one removed by its key.
    ready = {"type": "Ready", "status": "True"}
    pressure = {"type": "MemoryPressure", "status": "False"}
    await core.patch_node_status("n1", {"status": {"conditions": [ready]}})
    both = await core.patch_node_status("n1", {"status": {"conditions": [pressure]}})
    assert [c.type for c in both.status.conditions] == ["Ready", "MemoryPressure"]
    removed = await core.patch_node_status(
        "n1", {"status": {"conditions": [{"type": "Ready", "$patch": "delete"}]}}
    )
    assert [c.type for c in removed.status.conditions] == ["MemoryPressure"]


async def test_injected_faults(cluster: Cluster) -> None:
    core = cluster.core
    faults = cluster.api.faults
    faults.fail_next(500, 2, path="/nodes")
    for _ in range(2):
        with pytest.raises(ApiException) as exc:
            await core.list_node()
        assert exc.value.status == 500 and status_of(exc.value)["reason"] == "InternalError"
    await core.list_node()
    faults.fail_next(429, 1)
    with pytest.raises(ApiException) as exc:
        await core.list_node()
    assert exc.value.status == 429 and exc.value.headers["Retry-After"] == "1"
    faults.fail_next(410, 1, watch=True)
    await core.list_node()  # not a watch: unaffected
    with pytest.raises(ApiException) as exc:
        await core.list_node(watch=True, timeout_seconds=1)
    assert exc.value.status == 410

    faults.delay_next(0.3, count=1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await core.list_node()
    assert loop.time() - started >= 0.3

    # A watch cut after N events ends mid-stream, as a broken connection does.
    for i in range(5):
        cluster.api.store.load(BY_KIND["Node"], node(f"n{i}"))
    faults.drop_watch_after = 3
    response = await core.list_node(watch=True, resource_version="0", _preload_content=False)
    lines = []
    with pytest.raises(aiohttp.ClientPayloadError):
        while line := await response.content.readline():
            lines.append(line)
    assert len(lines) == 3
    faults.clear()
    assert faults.injected == 4


async def test_fault_endpoints_and_bad_input(cluster: Cluster) -> None:
    api = cluster.api
    headers = {"Authorization": f"Bearer {api.token}"}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{api.url}/_fake/fail", json={"code": 503, "count": 1}) as resp:
            assert resp.status == 200
        async with session.get(f"{api.url}/api/v1/nodes", headers=headers) as resp:
            assert resp.status == 503
        async with session.post(f"{api.url}/_fake/fail", json={"code": 200}) as resp:
            assert resp.status == 400 and "code" in (await resp.json())["message"]
        async with session.post(f"{api.url}/_fake/compact") as resp:
            assert resp.status == 200
        async with session.get(f"{api.url}/_fake/stats") as resp:
            stats = await resp.json()
            assert stats["compacted"] == stats["resourceVersion"]
        cases: list[tuple[str, str, Any, int]] = [
            ("POST", "/api/v1/namespaces/default/pods", b"{not json", 400),
            ("POST", "/api/v1/namespaces/default/pods", {"kind": "Node"}, 400),
            ("POST", "/api/v1/namespaces/default/pods", {"metadata": {}}, 422),
            ("POST", "/api/v1/namespaces/default/pods", [1, 2], 400),
            ("GET", "/api/v1/nodes?limit=abc", None, 400),
            ("GET", "/api/v1/nodes?watch=1&resourceVersion=x", None, 400),
            ("GET", "/api/v1/widgets", None, 404),
            ("GET", "/apis/cluster.x-k8s.io/v1beta1/namespaces/d/machines/m/scale", None, 404),
            ("PATCH", "/api/v1/nodes/x", {"a": 1}, 404),
            ("PUT", "/api/v1/namespaces/default/pods", {}, 405),
        ]
        for method, path, body, code in cases:
            kwargs: dict[str, Any] = {"headers": headers}
            if isinstance(body, bytes):
                kwargs["data"] = body
            elif body is not None:
                kwargs["json"] = body
            async with session.request(method, f"{api.url}{path}", **kwargs) as resp:
                assert resp.status == code, (method, path, await resp.text())
                reply = await resp.json()
                assert reply["kind"] == "Status" and reply["code"] == code
        async with session.get(f"{api.url}/api/v1/nodes") as resp:
            assert resp.status == 401
        await cluster.core.create_node(node("n1"))
        async with session.patch(
            f"{api.url}/api/v1/nodes/n1",
            data=b"{}",
            headers={**headers, "Content-Type": "text/plain"},
        ) as resp:
            assert resp.status == 415


async def test_discovery_for_clients(cluster: Cluster) -> None:
    version = await client.VersionApi(cluster.k8s).get_code()
    assert version.major == "1"
    groups = await client.ApisApi(cluster.k8s).get_api_versions()
    names = {g.name for g in groups.groups}
    assert {"coordination.k8s.io", "policy", "cluster.x-k8s.io"} <= names
    core = await cluster.core.get_api_resources()
    kinds = {r.name: r.kind for r in core.resources}
    assert kinds["pods"] == "Pod" and kinds["pods/binding"] == "Binding"


@pytest.mark.timeout(30)
async def test_standalone_server_loads_a_cluster_and_writes_a_kubeconfig(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "epcsched.testing.apiserver",
        "--port",
        "0",
        "--load",
        str(ROOT / "examples" / "cluster.json"),
        "--kubeconfig-out",
        str(kubeconfig),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 15)
        assert line.startswith(b"fake API server on http://127.0.0.1:")
        configuration = await load_configuration(kubeconfig)
        async with client.ApiClient(configuration) as k8s:
            nodes = await client.CoreV1Api(k8s).list_node()
            pods = await client.CoreV1Api(k8s).list_pod_for_all_namespaces()
        expected = json.loads((ROOT / "examples" / "cluster.json").read_text())["items"]
        assert len(nodes.items) == sum(1 for o in expected if o["kind"] == "Node")
        assert len(pods.items) == sum(1 for o in expected if o["kind"] == "Pod")
    finally:
        proc.terminate()
        await proc.wait()
