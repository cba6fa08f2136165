"""Scale-down drains a node as cluster-autoscaler does, and undoes itself when it cannot.

Protects issue 7 point 4: which pods block a drain (bare pods, safe-to-evict "false") and which
neither move nor block (DaemonSet, mirror, terminal pods); the scale-down taint added and removed
read-modify-write so other taints survive, with a retry on 409; evictions through the Eviction
API, retried on a PodDisruptionBudget's 429 every retry interval until the deadline, after which
the node is uncordoned and the result names the pod and the budget; evicted pods waited for until
they are gone; a cancelled drain removes its taint. Everything runs over HTTP against the fake
API server with real kubernetes-asyncio clients; time is a fake clock whose sleep advances it, so
a two-minute deadline takes no time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from epcsched.autoscaler.drain import SCALE_DOWN_TAINT, Drainer, drain_blocker
from epcsched.autoscaler.events import EventRecorder
from epcsched.testing.apiserver import FakeApiServer
from epcsched.testing.store import BY_KIND
from tests.kube_helpers import configuration, node, pod

START = 1_700_000_000.0
OTHER_TAINT = {"key": "dedicated", "value": "sgx", "effect": "NoSchedule"}


class FakeTime:
    """A clock that only moves when the code under test sleeps; `on_sleep` runs per sleep."""

    def __init__(self) -> None:
        self.now = START
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[int], Awaitable[None]] | None = None

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep is not None:
            await self.on_sleep(len(self.sleeps))


class Cluster:
    def __init__(self, api: FakeApiServer, k8s: client.ApiClient) -> None:
        self.api = api
        self.k8s = k8s
        self.time = FakeTime()
        self.core = client.CoreV1Api(k8s)
        self.policy = client.PolicyV1Api(k8s)

    def drainer(self, **kwargs: Any) -> Drainer:
        return Drainer(
            self.k8s,
            max_pod_eviction_time=120.0,
            retry_interval=10.0,
            clock=self.time.clock,
            sleep=self.time.sleep,
            **kwargs,
        )

    def taints(self, name: str) -> list[dict[str, Any]]:
        spec = self.api.store.get(BY_KIND["Node"], None, name).get("spec") or {}
        return list(spec.get("taints") or [])

    def pods(self) -> list[str]:
        return [p["metadata"]["name"] for p in self.api.store.items(BY_KIND["Pod"], None)]

    def evictions(self) -> int:
        return self.api.faults.by_verb.get("eviction", 0)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with FakeApiServer() as api:
        k8s = client.ApiClient(await configuration(api, tmp_path))
        try:
            sgx = node("sgx-1")
            sgx["spec"] = {"taints": [dict(OTHER_TAINT)]}
            api.store.load(BY_KIND["Node"], sgx)
            api.store.load(BY_KIND["Node"], node("sgx-2"))
            yield Cluster(api, k8s)
        finally:
            await k8s.close()


def owned(
    name: str,
    kind: str = "ReplicaSet",
    *,
    node_name: str = "sgx-1",
    phase: str = "Running",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    obj = pod(name, "8Mi", node_name=node_name, phase=phase, labels=labels)
    if kind:
        obj["metadata"]["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": kind,
                "name": f"{name}-owner",
                "uid": f"uid-{name}-owner",
                "controller": True,
            }
        ]
    if annotations:
        obj["metadata"]["annotations"] = annotations
    return obj


def budget(allowed: int) -> dict[str, Any]:
    """A budget over app=web whose status the disruption controller has written."""
    return {
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "web-budget", "namespace": "default", "generation": 1},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}},
        "status": {
            "observedGeneration": 1,
            "disruptionsAllowed": allowed,
            "currentHealthy": 1,
            "desiredHealthy": 1,
            "expectedPods": 1,
        },
    }


OURS = {"key": SCALE_DOWN_TAINT, "value": "1700000000", "effect": "NoSchedule"}


# ----- which pods block --------------------------------------------------------------------
def test_drain_blocker_reads_api_objects_and_models() -> None:
    assert drain_blocker(owned("rs")) is None
    assert drain_blocker(owned("ds", "DaemonSet")) is None
    bare = owned("bare", "")
    assert drain_blocker(bare) == (
        "not managed by a controller (nothing would recreate it elsewhere)"
    )
    # A non-controller owner does not recreate the pod either.
    bare["metadata"]["ownerReferences"] = [{"kind": "ReplicaSet", "name": "x", "controller": False}]
    assert drain_blocker(bare) is not None
    safe = "cluster-autoscaler.kubernetes.io/safe-to-evict"
    assert drain_blocker(owned("bare-ok", "", annotations={safe: "true"})) is None
    assert drain_blocker(owned("pinned", annotations={safe: "false"})) == (
        'annotated cluster-autoscaler.kubernetes.io/safe-to-evict: "false"'
    )
    mirror = owned("kube-proxy", "", annotations={"kubernetes.io/config.mirror": "abc"})
    assert drain_blocker(mirror) is None
    assert drain_blocker(owned("done", "", phase="Succeeded")) is None
    assert drain_blocker(owned("crashed", "", phase="Failed")) is None

    model = client.V1Pod(
        metadata=client.V1ObjectMeta(name="m", namespace="default", annotations={safe: "false"}),
        status=client.V1PodStatus(phase="Running"),
    )
    assert (
        drain_blocker(model) == 'annotated cluster-autoscaler.kubernetes.io/safe-to-evict: "false"'
    )
    model.metadata.annotations = None
    model.metadata.owner_references = [
        client.V1OwnerReference(
            api_version="apps/v1", kind="DaemonSet", name="d", uid="u", controller=True
        )
    ]
    assert drain_blocker(model) is None
    model.metadata.owner_references = None
    assert drain_blocker(model) is not None


# ----- drains that succeed -----------------------------------------------------------------
async def test_drain_evicts_replicaset_pod_and_keeps_the_taint(cluster: Cluster) -> None:
    store = cluster.api.store
    store.load(BY_KIND["Pod"], owned("web-1"))
    store.load(BY_KIND["Pod"], owned("agent", "DaemonSet"))
    store.load(
        BY_KIND["Pod"], owned("static", "", annotations={"kubernetes.io/config.mirror": "x"})
    )
    store.load(BY_KIND["Pod"], owned("job-done", "", phase="Succeeded"))
    store.load(BY_KIND["Pod"], owned("elsewhere", node_name="sgx-2"))
    events = EventRecorder(cluster.k8s, clock=cluster.time.clock)

    result = await cluster.drainer(events=events).drain("sgx-1")

    assert result.ok, result.reason
    assert result.evicted == ("default/web-1",)
    assert result.reason == "drained: 1 pod(s) evicted"
    # Only the ReplicaSet pod was evicted; the DaemonSet, mirror and finished pods stay.
    assert cluster.evictions() == 1
    assert cluster.pods() == ["agent", "elsewhere", "job-done", "static"]
    # The node keeps its own taint and ours, which stays until the node is removed.
    assert cluster.taints("sgx-1") == [OTHER_TAINT, OURS]
    assert cluster.taints("sgx-2") == []
    assert cluster.time.sleeps == []
    recorded = sorted(
        (e["involvedObject"]["kind"], e["involvedObject"]["name"], e["reason"], e["type"])
        for e in store.items(BY_KIND["Event"], "default")
    )
    assert recorded == [
        ("Node", "sgx-1", "ScaleDown", "Normal"),
        ("Pod", "web-1", "ScaleDown", "Normal"),
    ]


async def test_bare_pod_annotated_safe_to_evict_is_evicted(cluster: Cluster) -> None:
    safe = {"cluster-autoscaler.kubernetes.io/safe-to-evict": "true"}
    cluster.api.store.load(BY_KIND["Pod"], owned("scratch", "", annotations=safe))
    result = await cluster.drainer().drain("sgx-1")
    assert result.ok and result.evicted == ("default/scratch",)
    assert cluster.pods() == []


async def test_budget_that_allows_after_two_refusals_lets_the_drain_finish(
    cluster: Cluster,
) -> None:
    store = cluster.api.store
    store.load(BY_KIND["Pod"], owned("web-1", labels={"app": "web"}))
    store.load(BY_KIND["PodDisruptionBudget"], budget(0))

    async def controller(sleeps: int) -> None:
        # Playing the disruption controller: a replacement became healthy elsewhere.
        if sleeps == 2:
            await cluster.policy.patch_namespaced_pod_disruption_budget_status(
                "web-budget",
                "default",
                {"status": {"disruptionsAllowed": 1, "currentHealthy": 2}},
                _content_type="application/merge-patch+json",
            )

    cluster.time.on_sleep = controller
    result = await cluster.drainer().drain("sgx-1")

    assert result.ok, result.reason
    assert result.evicted == ("default/web-1",)
    # Refused at t=0 and t=10, allowed at t=20.
    assert cluster.evictions() == 3
    assert cluster.time.sleeps == [10.0, 10.0]
    assert cluster.pods() == []
    status = store.get(BY_KIND["PodDisruptionBudget"], "default", "web-budget")["status"]
    assert status["disruptionsAllowed"] == 0 and list(status["disruptedPods"]) == ["web-1"]
    assert cluster.taints("sgx-1") == [OTHER_TAINT, {**OURS}]


async def test_waits_until_evicted_pods_have_left(cluster: Cluster) -> None:
    store = cluster.api.store
    slow = owned("slow")
    slow["metadata"]["finalizers"] = ["example.com/flush"]
    store.load(BY_KIND["Pod"], slow)

    async def finish(sleeps: int) -> None:
        if sleeps == 3:
            store.patch(
                BY_KIND["Pod"],
                "default",
                "slow",
                "application/merge-patch+json",
                {"metadata": {"finalizers": None}},
            )

    cluster.time.on_sleep = finish
    result = await cluster.drainer().drain("sgx-1")
    assert result.ok, result.reason
    assert result.evicted == ("default/slow",)
    assert cluster.time.sleeps == [10.0, 10.0, 10.0]
    assert cluster.pods() == []


# ----- drains that fail and undo themselves ------------------------------------------------
async def test_budget_at_zero_until_the_deadline_uncordons_and_names_pod_and_budget(
    cluster: Cluster,
) -> None:
    store = cluster.api.store
    store.load(BY_KIND["Pod"], owned("web-1", labels={"app": "web"}))
    store.load(BY_KIND["PodDisruptionBudget"], budget(0))

    result = await cluster.drainer().drain("sgx-1")

    assert not result.ok
    # Attempts at t=0, 10, ..., 120: the one at the deadline is the last.
    assert cluster.evictions() == 13
    assert cluster.time.sleeps == [10.0] * 12
    assert result.reason == (
        "pod default/web-1 was not evicted: 429 TooManyRequests: The disruption budget "
        "web-budget needs 1 healthy pods and has 1 currently (after 13 attempts)"
    )
    assert list(result.stuck) == ["default/web-1"]
    assert result.evicted == ()
    assert cluster.pods() == ["web-1"]
    assert cluster.taints("sgx-1") == [OTHER_TAINT]


@pytest.mark.parametrize(
    ("blocker", "why"),
    [
        (owned("bare", ""), "not managed by a controller (nothing would recreate it elsewhere)"),
        (
            owned(
                "pinned", annotations={"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}
            ),
            'annotated cluster-autoscaler.kubernetes.io/safe-to-evict: "false"',
        ),
    ],
)
async def test_blocking_pod_uncordons_without_evicting_anything(
    cluster: Cluster, blocker: dict[str, Any], why: str
) -> None:
    store = cluster.api.store
    store.load(BY_KIND["Pod"], owned("web-1"))
    store.load(BY_KIND["Pod"], blocker)
    events = EventRecorder(cluster.k8s, clock=cluster.time.clock)

    result = await cluster.drainer(events=events).drain("sgx-1")

    name = blocker["metadata"]["name"]
    assert not result.ok
    assert result.reason == f"pod default/{name} blocks: {why}"
    assert dict(result.stuck) == {f"default/{name}": why}
    assert cluster.evictions() == 0
    assert sorted(cluster.pods()) == sorted([name, "web-1"])
    assert cluster.taints("sgx-1") == [OTHER_TAINT]
    warnings = [e for e in store.items(BY_KIND["Event"], "default") if e["type"] == "Warning"]
    assert [(w["reason"], w["message"]) for w in warnings] == [("ScaleDownFailed", result.reason)]


async def test_pod_that_never_leaves_fails_the_drain_at_the_deadline(cluster: Cluster) -> None:
    stuck = owned("stuck")
    stuck["metadata"]["finalizers"] = ["example.com/never"]
    cluster.api.store.load(BY_KIND["Pod"], stuck)

    result = await cluster.drainer().drain("sgx-1")

    assert not result.ok
    assert result.evicted == ("default/stuck",)
    assert result.reason == (
        "pod default/stuck did not leave: still on the node when the deadline passed"
    )
    # Checked at t=0, 10, ..., 120.
    assert cluster.time.sleeps == [10.0] * 12
    assert cluster.taints("sgx-1") == [OTHER_TAINT]


async def test_cancelled_drain_removes_the_taint(cluster: Cluster) -> None:
    store = cluster.api.store
    store.load(BY_KIND["Pod"], owned("web-1", labels={"app": "web"}))
    store.load(BY_KIND["PodDisruptionBudget"], budget(0))
    waiting = asyncio.Event()

    async def hang(sleeps: int) -> None:
        waiting.set()
        await asyncio.Event().wait()

    cluster.time.on_sleep = hang
    task = asyncio.create_task(cluster.drainer().drain("sgx-1"))
    await asyncio.wait_for(waiting.wait(), 5)
    assert cluster.taints("sgx-1") == [OTHER_TAINT, OURS]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cluster.taints("sgx-1") == [OTHER_TAINT]


async def test_missing_node_is_a_failed_result_not_an_exception(cluster: Cluster) -> None:
    result = await cluster.drainer().drain("ghost")
    assert not result.ok and result.reason.startswith("cordon failed:")
    assert "not found" in result.reason


# ----- the taint ---------------------------------------------------------------------------
async def test_cordon_retries_a_conflict_and_uncordon_keeps_other_taints(
    cluster: Cluster,
) -> None:
    faults = cluster.api.faults
    faults.fail_next(409, 1, path="/nodes/sgx-1", method="PATCH")
    drainer = cluster.drainer()
    await drainer.cordon("sgx-1")
    assert cluster.taints("sgx-1") == [OTHER_TAINT, OURS]
    assert faults.by_verb["patch"] == 2
    # Cordoning twice keeps one taint and its first time.
    cluster.time.now += 60
    await drainer.cordon("sgx-1")
    assert cluster.taints("sgx-1") == [OTHER_TAINT, OURS]
    await drainer.uncordon("sgx-1")
    assert cluster.taints("sgx-1") == [OTHER_TAINT]
    await drainer.uncordon("sgx-1")
    await drainer.uncordon("ghost")
    assert faults.by_verb["patch"] == 3


async def test_stale_version_is_refused_so_a_concurrent_taint_is_never_lost(
    cluster: Cluster,
) -> None:
    # What the drainer relies on: a patch carrying an old resourceVersion is a 409.
    read = await cluster.core.read_node("sgx-1")
    cluster.api.store.patch(
        BY_KIND["Node"],
        None,
        "sgx-1",
        "application/merge-patch+json",
        {"spec": {"taints": [OTHER_TAINT, {"key": "late", "effect": "NoExecute"}]}},
    )
    with pytest.raises(client.ApiException) as exc:
        await cluster.core.patch_node(
            "sgx-1",
            {
                "metadata": {"resourceVersion": read.metadata.resource_version},
                "spec": {"taints": []},
            },
            _content_type="application/merge-patch+json",
        )
    assert exc.value.status == 409
    await cluster.drainer().cordon("sgx-1")
    assert cluster.taints("sgx-1") == [OTHER_TAINT, {"key": "late", "effect": "NoExecute"}, OURS]


async def test_uncordon_all_clears_taints_left_by_an_interrupted_drain(cluster: Cluster) -> None:
    drainer = cluster.drainer()
    await drainer.cordon("sgx-1")
    await drainer.cordon("sgx-2")
    assert await drainer.uncordon_all() == ["sgx-1", "sgx-2"]
    assert cluster.taints("sgx-1") == [OTHER_TAINT]
    assert cluster.taints("sgx-2") == []
    assert await drainer.uncordon_all() == []
