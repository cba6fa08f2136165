"""The autoscaler's Events and its status ConfigMap, as a person and a restarted loop read them.

Protects issue 7 points 5 and 7. Events: written as client-go's recorder writes them (name
`<object>.<hex nanoseconds>`, involvedObject, source, first/last timestamps, count, type,
reportingComponent; cluster-scoped objects' Events in "default"), repeats within ten minutes
folded into one Event's count, API failures swallowed. Status: readable YAML under `status` in
ConfigMap `epcsched-autoscaler-status`, read back by a new store (a restart), replaced with the
resourceVersion read (one retry on 409), other keys kept, unreadable content a warning and None,
API failures a StatusError. All over HTTP against the fake API server.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client

from epcsched.autoscaler.events import EventRecorder, ObjectRef
from epcsched.autoscaler.status import StatusError, StatusStore
from epcsched.testing.apiserver import FakeApiServer
from epcsched.testing.store import BY_KIND
from tests.kube_helpers import configuration

START = 1_700_000_000.0  # 2023-11-14T22:13:20Z
CM = "epcsched-autoscaler-status"


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


class Cluster:
    def __init__(self, api: FakeApiServer, k8s: client.ApiClient, tmp_path: Path) -> None:
        self.api = api
        self.k8s = k8s
        self.tmp_path = tmp_path
        self.clock = Clock()

    def events(self, namespace: str) -> list[dict[str, Any]]:
        return self.api.store.items(BY_KIND["Event"], namespace)

    def config_map(self) -> dict[str, Any]:
        return self.api.store.get(BY_KIND["ConfigMap"], "epcsched", CM)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with FakeApiServer() as api:
        k8s = client.ApiClient(await configuration(api, tmp_path))
        try:
            yield Cluster(api, k8s, tmp_path)
        finally:
            await k8s.close()


NODE = ObjectRef("Node", "", "sgx-1", "uid-node")
POD = ObjectRef("Pod", "team", "enclave-0", "uid-pod")


# ----- events ------------------------------------------------------------------------------
async def test_event_is_written_as_client_go_writes_it(cluster: Cluster) -> None:
    recorder = EventRecorder(cluster.k8s, clock=cluster.clock, host="autoscaler-0")
    await recorder.record(NODE, "Normal", "ScaleDown", "node removed: utilization 0.10")
    [event] = cluster.events("default")
    assert event["metadata"]["name"] == "sgx-1." + format(1_700_000_000 * 10**9, "x")
    assert event["metadata"]["name"] == "sgx-1.17979cfe362a0000"
    assert event["involvedObject"] == {
        "kind": "Node",
        "name": "sgx-1",
        "uid": "uid-node",
        "apiVersion": "v1",
    }
    assert event["reason"] == "ScaleDown" and event["type"] == "Normal"
    assert event["message"] == "node removed: utilization 0.10"
    assert event["source"] == {"component": "epcsched-autoscaler", "host": "autoscaler-0"}
    assert event["reportingComponent"] == "epcsched-autoscaler"
    assert event["reportingInstance"] == "autoscaler-0"
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2023-11-14T22:13:20Z"
    assert event["count"] == 1

    await recorder.record(POD, "Warning", "NotTriggerScaleUp", "no pool fits 64Mi EPC")
    [pod_event] = cluster.events("team")
    assert pod_event["involvedObject"]["namespace"] == "team"
    assert pod_event["metadata"]["name"].startswith("enclave-0.")


async def test_repeats_within_ten_minutes_raise_the_count(cluster: Cluster) -> None:
    recorder = EventRecorder(cluster.k8s, clock=cluster.clock)
    message = "pod didn't trigger scale-up: no pool advertises sgx.intel.com/epc"
    await recorder.record(POD, "Normal", "NotTriggerScaleUp", message)
    cluster.clock.now += 30
    await recorder.record(POD, "Normal", "NotTriggerScaleUp", message)
    [event] = cluster.events("team")
    assert event["count"] == 2
    assert event["firstTimestamp"] == "2023-11-14T22:13:20Z"
    assert event["lastTimestamp"] == "2023-11-14T22:13:50Z"

    # Another message is another Event.
    await recorder.record(POD, "Normal", "NotTriggerScaleUp", "max size reached")
    assert len(cluster.events("team")) == 2
    # Ten minutes after the last repeat the same message counts again from a new Event.
    cluster.clock.now += 600
    await recorder.record(POD, "Normal", "NotTriggerScaleUp", message)
    cluster.clock.now += 601
    await recorder.record(POD, "Normal", "NotTriggerScaleUp", message)
    counts = sorted((e["message"], e["count"], e["lastTimestamp"]) for e in cluster.events("team"))
    assert counts == [
        ("max size reached", 1, "2023-11-14T22:13:50Z"),
        (message, 1, "2023-11-14T22:33:51Z"),
        (message, 3, "2023-11-14T22:23:50Z"),
    ]


async def test_api_failures_are_swallowed_and_an_expired_event_is_written_again(
    cluster: Cluster,
) -> None:
    recorder = EventRecorder(cluster.k8s, clock=cluster.clock)
    cluster.api.faults.fail_next(500, 1, path="/events", method="POST")
    await recorder.record(NODE, "Warning", "ScaleDownFailed", "budget web-budget")
    assert cluster.events("default") == []
    await recorder.record(NODE, "Warning", "ScaleDownFailed", "budget web-budget")
    [event] = cluster.events("default")
    assert event["count"] == 1
    # kube-apiserver deletes Events after an hour; a repeat then writes it again.
    cluster.api.store.delete(BY_KIND["Event"], "default", event["metadata"]["name"])
    cluster.clock.now += 60
    await recorder.record(NODE, "Warning", "ScaleDownFailed", "budget web-budget")
    [again] = cluster.events("default")
    assert again["metadata"]["name"] == event["metadata"]["name"]
    assert again["count"] == 2 and again["firstTimestamp"] == event["firstTimestamp"]
    # Nothing listens on this port: the recorder logs and returns.
    cfg = await configuration(cluster.api, cluster.tmp_path)
    cfg.host = "http://127.0.0.1:9"
    async with client.ApiClient(cfg) as dead:
        await EventRecorder(dead, request_timeout=2).record(NODE, "Normal", "ScaleDown", "x")


def test_object_ref_from_api_objects() -> None:
    pod = {"metadata": {"name": "p", "namespace": "ns", "uid": "u1"}}
    assert ObjectRef.of(pod) == ObjectRef("Pod", "ns", "p", "u1", "v1")
    node = {"kind": "Node", "apiVersion": "v1", "metadata": {"name": "n", "uid": "u2"}}
    assert ObjectRef.of(node) == ObjectRef("Node", "", "n", "u2", "v1")


# ----- status ConfigMap -------------------------------------------------------------------
STATUS: dict[str, Any] = {
    "pools": {"dcsv3": {"target": 3, "inFlight": [{"since": "2026-01-01T00:00:00Z", "count": 1}]}},
    "unneededSince": {"sgx-4": 1700000000.5},
    "backoff": {},
}


async def test_status_round_trip_and_restart(cluster: Cluster) -> None:
    store = StatusStore(cluster.k8s, "epcsched")
    assert await store.load() is None
    await store.save(STATUS)
    text = cluster.config_map()["data"]["status"]
    # Readable YAML, keys in the loop's order.
    assert text == (
        "pools:\n"
        "  dcsv3:\n"
        "    target: 3\n"
        "    inFlight:\n"
        "    - since: '2026-01-01T00:00:00Z'\n"
        "      count: 1\n"
        "unneededSince:\n"
        "  sgx-4: 1700000000.5\n"
        "backoff: {}\n"
    )
    assert await store.load() == STATUS

    # A restarted autoscaler: a new client and a new store read what the old one wrote.
    async with client.ApiClient(await configuration(cluster.api, cluster.tmp_path)) as fresh:
        restarted = StatusStore(fresh, "epcsched")
        assert await restarted.load() == STATUS
        changed = {**STATUS, "backoff": {"dcsv2": {"until": 1700000300}}}
        await restarted.save(changed)
    assert await store.load() == changed


async def test_save_replaces_with_the_version_read_and_keeps_other_keys(
    cluster: Cluster,
) -> None:
    store = StatusStore(cluster.k8s, "epcsched")
    await store.save({"round": 1})
    cluster.api.store.patch(
        BY_KIND["ConfigMap"],
        "epcsched",
        CM,
        "application/merge-patch+json",
        {"metadata": {"labels": {"team": "sre"}}, "data": {"note": "kept"}},
    )
    faults = cluster.api.faults
    puts = faults.by_verb.get("update", 0)
    # Someone else writes between our read and our write once: we read again and win.
    faults.fail_next(409, 1, path=f"/configmaps/{CM}", method="PUT")
    await store.save({"round": 2})
    cm = cluster.config_map()
    assert cm["data"] == {"status": "round: 2\n", "note": "kept"}
    assert cm["metadata"]["labels"]["team"] == "sre"
    assert faults.by_verb["update"] == puts + 2
    # An unchanged status is not written again.
    version = cm["metadata"]["resourceVersion"]
    await store.save({"round": 2})
    assert cluster.config_map()["metadata"]["resourceVersion"] == version
    # Twice in a row is someone else's write we must not overwrite blindly: an error.
    faults.fail_next(409, 2, path=f"/configmaps/{CM}", method="PUT")
    with pytest.raises(StatusError, match=r"ConfigMap epcsched/epcsched-autoscaler-status: saving"):
        await store.save({"round": 3})
    assert yaml.safe_load(cluster.config_map()["data"]["status"]) == {"round": 2}


async def test_unreadable_status_is_none_with_a_warning(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    store = StatusStore(cluster.k8s, "epcsched")
    cluster.api.store.load(
        BY_KIND["ConfigMap"],
        {"metadata": {"name": CM, "namespace": "epcsched"}, "data": {"status": "pools: [oops"}},
    )
    with caplog.at_level(logging.WARNING, logger="epcsched.autoscaler.status"):
        assert await store.load() is None
    assert "is not valid YAML" in caplog.text
    cluster.api.store.load(
        BY_KIND["ConfigMap"],
        {"metadata": {"name": CM, "namespace": "epcsched"}, "data": {"status": "- a list"}},
    )
    assert await store.load() is None
    # Saving over unreadable content repairs it.
    await store.save({"ok": True})
    assert await store.load() == {"ok": True}


async def test_api_failures_are_status_errors(cluster: Cluster) -> None:
    store = StatusStore(cluster.k8s, "epcsched")
    cluster.api.faults.fail_next(503, 1, path=f"/configmaps/{CM}")
    with pytest.raises(StatusError, match="reading the status failed: 503"):
        await store.load()
    cluster.api.faults.fail_next(500, 1, path="/configmaps", method="POST")
    with pytest.raises(StatusError, match="saving the status failed: 500"):
        await store.save({"a": 1})
    with pytest.raises(StatusError, match="cannot be written as YAML"):
        await store.save({"when": object()})
