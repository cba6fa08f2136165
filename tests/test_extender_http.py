"""The extender over real HTTP speaks kube-scheduler's extender v1 exactly, in both modes.

Bodies are the ones a real kube-scheduler 1.35 sent (tests/fixtures) and objects serialised by
kubernetes-asyncio the way the API server writes them. Every class of bad input gets a 400 with a
one-line message and the server keeps serving.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from kubernetes_asyncio.client import (
    ApiClient,
    V1Container,
    V1Node,
    V1NodeList,
    V1NodeStatus,
    V1ObjectMeta,
    V1Pod,
    V1PodSpec,
    V1ResourceRequirements,
)
from prometheus_client.parser import text_string_to_metric_families

from epcsched.config import Config, config_from_mapping
from epcsched.extender.app import create_app
from epcsched.state import SnapshotState
from tests.helpers import LEGACY, node, pod, snapshot_of

FIXTURES = Path(__file__).parent / "fixtures" / "kube-scheduler-1.35"
MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def fixture_cluster() -> Any:
    # The cluster the fixtures were captured on: sgx-a has 22Mi free, sgx-c another name.
    return snapshot_of(
        node("sgx-a", "94Mi"),
        node("sgx-b", "32Gi"),
        node("sgx-c", "16384", resource=LEGACY),
        node("plain-d"),
        node("sgx-e", "16Gi"),
        node("sgx-f", "8Gi"),
        pod("a1", "72Mi", node_name="sgx-a"),
        pod("e1", "4Gi", node_name="sgx-e"),
        pod("f1", "6Gi", node_name="sgx-f"),
        pod("f-done", "2Gi", node_name="sgx-f", phase="Succeeded"),
    )


@pytest.fixture
async def client(extender_client: MakeClient) -> TestClient[Any, Any]:
    app = create_app(Config(), SnapshotState(fixture_cluster()))
    return await extender_client(app)


async def post(client: TestClient[Any, Any], path: str, body: Any) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with client.post(path, data=data, headers={"Content-Type": "application/json"}) as r:
        text = await r.text()
        return r.status, (json.loads(text) if r.content_type == "application/json" else text)


async def test_cache_mode_filter_passes_fitting_nodes(client: TestClient[Any, Any]) -> None:
    status, reply = await post(client, "/filter", fixture("filter-nodecache.json"))
    assert status == 200
    assert reply == {
        "NodeNames": ["sgx-e", "sgx-f", "sgx-b"],
        "FailedNodes": {},
        "FailedAndUnresolvableNodes": {},
        "Error": "",
    }


async def test_cache_mode_prioritize_binpacks(client: TestClient[Any, Any]) -> None:
    status, reply = await post(client, "/prioritize", fixture("prioritize-nodecache.json"))
    assert status == 200
    # Binpack, a 64Mi pod: EPC in use after placement is 4160Mi of 16Gi on sgx-e (260/1024),
    # 6208Mi of 8Gi on sgx-f (776/1024), 64Mi of 32Gi on sgx-b (2/1024). Spread over 0..10:
    # sgx-e is (260 - 2) / (776 - 2) = 1/3 of the way, 3.33 levels, so 3; sgx-f 10; sgx-b 0,
    # and kube-scheduler counts a host it is not given as 0, so sgx-b is left out.
    assert reply == [{"Host": "sgx-e", "Score": 3}, {"Host": "sgx-f", "Score": 10}]


async def test_full_mode_filter_returns_node_objects_unchanged(
    client: TestClient[Any, Any],
) -> None:
    body = fixture("filter-fullnodes.json")
    status, reply = await post(client, "/filter", body)
    assert status == 200
    assert reply["Nodes"]["items"] == body["Nodes"]["items"]
    assert reply["FailedNodes"] == {} and reply["FailedAndUnresolvableNodes"] == {}
    assert reply["Error"] == ""


async def test_full_mode_prioritize_scores_nodes_not_names(client: TestClient[Any, Any]) -> None:
    body = fixture("prioritize-fullnodes.json")
    assert body["NodeNames"] is None
    status, reply = await post(client, "/prioritize", body)
    assert status == 200
    # The same nodes as in cache mode, so the same scores (worked out there).
    assert reply == [{"Host": "sgx-e", "Score": 3}, {"Host": "sgx-f", "Score": 10}]


async def test_failures_split_by_whether_eviction_helps(client: TestClient[Any, Any]) -> None:
    body = fixture("filter-nodecache.json")
    body["NodeNames"] = ["sgx-a", "sgx-b", "sgx-c", "plain-d", "ghost"]
    status, reply = await post(client, "/filter", body)
    assert status == 200
    assert reply["NodeNames"] == ["sgx-b"]
    assert reply["FailedNodes"] == {
        "sgx-a": "insufficient sgx.intel.com/epc: requested 64Mi, free 22Mi of 94Mi",
        "ghost": "node is not in epcsched's cluster cache",
    }
    assert set(reply["FailedAndUnresolvableNodes"]) == {"sgx-c", "plain-d"}
    assert "does not advertise sgx.intel.com/epc" in reply["FailedAndUnresolvableNodes"]["sgx-c"]
    assert reply["Error"] == ""


async def test_full_mode_failures_drop_nodes_from_the_list(client: TestClient[Any, Any]) -> None:
    body = fixture("filter-fullnodes.json")
    body["Nodes"]["items"].append(node("sgx-a", "94Mi"))
    body["Nodes"]["items"].append(node("sgx-c", "16384", resource=LEGACY))
    status, reply = await post(client, "/filter", body)
    assert status == 200
    assert [n["metadata"]["name"] for n in reply["Nodes"]["items"]] == ["sgx-e", "sgx-f", "sgx-b"]
    assert list(reply["FailedNodes"]) == ["sgx-a"]
    assert list(reply["FailedAndUnresolvableNodes"]) == ["sgx-c"]


async def test_request_keys_are_read_case_insensitively(client: TestClient[Any, Any]) -> None:
    body = fixture("filter-nodecache.json")
    lower = {"pod": body["Pod"], "nodes": None, "nodenames": ["sgx-a", "sgx-b"]}
    status, reply = await post(client, "/filter", lower)
    assert status == 200
    assert reply["NodeNames"] == ["sgx-b"] and list(reply["FailedNodes"]) == ["sgx-a"]


async def test_objects_serialised_by_kubernetes_asyncio(client: TestClient[Any, Any]) -> None:
    api = ApiClient()
    enclave = V1Pod(
        api_version="v1",
        kind="Pod",
        metadata=V1ObjectMeta(name="enclave", namespace="default", uid="u-1"),
        spec=V1PodSpec(
            containers=[
                V1Container(
                    name="app",
                    image="sgx:1",
                    resources=V1ResourceRequirements(limits={"sgx.intel.com/epc": "3Gi"}),
                )
            ]
        ),
    )
    nodes = V1NodeList(
        items=[
            V1Node(
                metadata=V1ObjectMeta(name=name),
                status=V1NodeStatus(allocatable={"sgx.intel.com/epc": size, "cpu": "8"}),
            )
            for name, size in (("sgx-e", "16Gi"), ("sgx-f", "8Gi"), ("sgx-b", "32Gi"))
        ]
    )
    pod_json = api.sanitize_for_serialization(enclave)
    status, reply = await post(
        client, "/filter", {"Pod": pod_json, "Nodes": None, "NodeNames": ["sgx-e", "sgx-f"]}
    )
    assert status == 200
    assert reply["NodeNames"] == ["sgx-e"]
    assert reply["FailedNodes"]["sgx-f"].startswith("insufficient sgx.intel.com/epc: requested 3Gi")
    full = {"Pod": pod_json, "Nodes": api.sanitize_for_serialization(nodes), "NodeNames": None}
    status, reply = await post(client, "/prioritize", full)
    assert status == 200
    # sgx-f cannot hold 3Gi more and sgx-b ends least full (3 of 32Gi against 7 of 16Gi):
    # both score 0 and are left out.
    assert {e["Host"]: e["Score"] for e in reply} == {"sgx-e": 10}
    await api.close()


async def test_pod_without_epc_passes_every_node(client: TestClient[Any, Any]) -> None:
    body = {"Pod": pod("web", cpu="1"), "Nodes": None, "NodeNames": ["sgx-a", "plain-d"]}
    status, reply = await post(client, "/filter", body)
    assert status == 200 and reply["NodeNames"] == ["sgx-a", "plain-d"]
    status, scores = await post(client, "/prioritize", body)
    assert {e["Host"]: e["Score"] for e in scores} == {"plain-d": 10}


BAD_BODIES: list[tuple[str, bytes, str]] = [
    ("malformed JSON", b'{"Pod": {', "malformed JSON"),
    ("empty body", b"", "malformed JSON"),
    ("not an object", b"[1, 2]", "must be a JSON object"),
    ("a string", b'"hello"', "must be a JSON object"),
    ("missing Pod", b'{"NodeNames": ["sgx-b"]}', "missing Pod"),
    ("null Pod", b'{"Pod": null, "NodeNames": ["sgx-b"]}', "missing Pod"),
    ("Pod not an object", b'{"Pod": 7, "NodeNames": ["sgx-b"]}', "Pod: Expected `object`"),
    ("NodeNames wrong type", b'{"Pod": {}, "NodeNames": "sgx-b"}', "NodeNames: Expected"),
    ("NodeNames item wrong type", b'{"Pod": {}, "NodeNames": [1]}', "NodeNames"),
    ("Nodes wrong type", b'{"Pod": {}, "Nodes": [1]}', "Nodes"),
    ("Nodes item without name", b'{"Pod": {}, "Nodes": {"items": [{}]}}', "metadata.name"),
    ("no node list", b'{"Pod": {}}', "neither NodeNames nor Nodes"),
    (
        "containers wrong type",
        b'{"Pod": {"spec": {"containers": {}}}, "NodeNames": []}',
        "Pod: Expected `array",
    ),
    (
        "invalid quantity",
        b'{"Pod": {"spec": {"containers": [{"resources": {"requests": '
        b'{"sgx.intel.com/epc": "12x"}}}]}}, "NodeNames": ["sgx-b"]}',
        "invalid quantity '12x'",
    ),
    ("nested too deeply", b'{"Pod": ' + b"[" * 100000, "malformed JSON"),
    (
        "pod nested too deeply",
        b'{"Pod": {"metadata": ' + b'{"a": ' * 20000 + b"1" + b"}" * 20001 + b', "NodeNames": []}',
        "nested too deeply",
    ),
    (
        "quantity of wrong type",
        b'{"Pod": {"spec": {"containers": [{"resources": {"limits": '
        b'{"sgx.intel.com/epc": [1]}}}]}}, "NodeNames": ["sgx-b"]}',
        "Pod: Expected",
    ),
]


@pytest.mark.parametrize("verb", ["filter", "prioritize"])
@pytest.mark.parametrize(("case", "body", "message"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
async def test_bad_input_gets_400_with_one_line_message(
    client: TestClient[Any, Any], verb: str, case: str, body: bytes, message: str
) -> None:
    status, reply = await post(client, f"/{verb}", body)
    assert status == 400, case
    assert message in reply["Error"]
    assert "\n" not in reply["Error"] and "Traceback" not in reply["Error"]
    status, _ = await post(client, f"/{verb}", fixture("filter-nodecache.json"))
    assert status == 200


async def test_wrong_method_is_405(client: TestClient[Any, Any]) -> None:
    for path in ("/filter", "/prioritize"):
        async with client.get(path) as response:
            assert response.status == 405
    async with client.post("/healthz") as response:
        assert response.status == 405


async def test_body_over_limit_is_413(extender_client: MakeClient) -> None:
    config = config_from_mapping({"extender": {"maxBodyBytes": "1Ki"}})
    small = await extender_client(create_app(config, SnapshotState(fixture_cluster())))
    body = fixture("filter-nodecache.json")
    body["NodeNames"] = [f"node-{i:04d}" for i in range(200)]
    status, _ = await post(small, "/filter", body)
    assert status == 413
    status, _ = await post(small, "/filter", fixture("filter-nodecache.json"))
    assert status == 200


async def test_prefix_is_honoured(extender_client: MakeClient) -> None:
    config = config_from_mapping({"extender": {"prefix": "/epc/"}})
    prefixed = await extender_client(create_app(config, SnapshotState(fixture_cluster())))
    status, reply = await post(prefixed, "/epc/filter", fixture("filter-nodecache.json"))
    assert status == 200 and reply["NodeNames"] == ["sgx-e", "sgx-f", "sgx-b"]


async def test_health_readiness_and_metrics(client: TestClient[Any, Any]) -> None:
    async with client.get("/healthz") as response:
        assert response.status == 200
    async with client.get("/readyz") as response:
        assert response.status == 200
        assert (await response.json())["ready"] is True
    await post(client, "/filter", fixture("filter-nodecache.json"))
    await post(client, "/filter", b"{")
    async with client.get("/metrics") as response:
        assert response.status == 200
        text = await response.text()
    assert 'epcsched_extender_requests_total{code="200",verb="filter"} 1.0' in text
    assert 'epcsched_extender_requests_total{code="400",verb="filter"} 1.0' in text
    assert 'epcsched_extender_request_seconds_count{verb="filter"} 2.0' in text
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    epc = ("resource", "sgx.intel.com/epc")
    allocatable = ("epcsched_node_epc_allocatable_bytes", (("node", "sgx-a"), epc))
    requested = ("epcsched_node_epc_requested_bytes", (("node", "sgx-f"), epc))
    assert samples[allocatable] == 94 * 2**20
    assert samples[requested] == 6 * 2**30


async def test_full_mode_reads_nodes_the_cache_has_not_seen(
    extender_client: MakeClient,
) -> None:
    # The cache knows pods bound to new-1 but not the node itself (its watch event is late).
    snap = snapshot_of(node("sgx-b", "32Gi"), pod("big", "15Gi", node_name="new-1"))
    client = await extender_client(create_app(Config(), SnapshotState(snap)))
    items = [node("new-1", "16Gi"), node("new-2", "16Gi"), node("sgx-b", "32Gi")]
    body = {"Pod": pod("p", "2Gi"), "Nodes": {"metadata": {}, "items": items}, "NodeNames": None}
    status, reply = await post(client, "/filter", body)
    assert status == 200
    assert reply["Nodes"]["items"] == items[1:]
    assert reply["FailedNodes"] == {
        "new-1": "insufficient sgx.intel.com/epc: requested 2Gi, free 1Gi of 16Gi"
    }
    status, scores = await post(client, "/prioritize", body)
    assert {e["Host"]: e["Score"] for e in scores} == {"new-2": 10}
    body["Nodes"]["items"][1] = node("new-2", "lots")
    status, reply = await post(client, "/filter", body)
    assert status == 400 and "Nodes: items[1]" in reply["Error"]
