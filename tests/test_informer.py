"""The informer cache equals the API server's state, through churn, dropped watches and errors.

Protects issue 3 point 2: nodes and pods are listed then watched with real kubernetes-asyncio
clients over HTTP; 410 Gone leads to a relist, other errors and disconnects to a resumed watch
after backoff; the cache is not ready before both first lists; and after thousands of pod events
with injected faults every pod, every node and every per-node EPC sum matches the server.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import numpy as np
import pytest

from epcsched.config import Config
from epcsched.core.snapshot import ClusterSnapshot
from epcsched.kube.informer import Backoff, InformerSettings, InformerState
from epcsched.model import PodInfo
from epcsched.testing.apiserver import FakeApiServer
from epcsched.testing.store import BY_KIND
from tests.kube_helpers import MI, configuration, node, pod, server_snapshot

PODS = BY_KIND["Pod"]
NODES = BY_KIND["Node"]
FAST = InformerSettings(backoff_initial=0.01, backoff_max=0.1, watch_timeout=(1, 2), page_size=50)


def assert_same(cache: ClusterSnapshot, truth: ClusterSnapshot) -> None:
    """Every node, every pod and every per-node sum agree (slots may differ, names may not)."""
    assert sorted(cache.slots) == sorted(truth.slots)
    for name in truth.slots:
        assert cache.node(name) == truth.node(name), name
    assert cache.pods == truth.pods
    names = sorted(truth.slots)
    mine = cache.slots_of(names)
    theirs = truth.slots_of(names)
    for resource in truth.epc:
        np.testing.assert_array_equal(
            cache.epc[resource].requested[mine], truth.epc[resource].requested[theirs]
        )
        np.testing.assert_array_equal(
            cache.epc[resource].allocatable[mine], truth.epc[resource].allocatable[theirs]
        )
    for attr in ("cpu_requested", "memory_requested", "pod_count"):
        np.testing.assert_array_equal(getattr(cache, attr)[mine], getattr(truth, attr)[theirs])


def epc_sums(pods: dict[str, PodInfo]) -> dict[tuple[str, str], int]:
    """Per-node, per-resource EPC requested, summed from scratch."""
    sums: dict[tuple[str, str], int] = {}
    for info in pods.values():
        if info.node_name is None:
            continue
        for resource, amount in info.epc.items():
            key = (info.node_name, resource)
            sums[key] = sums.get(key, 0) + amount
    return sums


async def caught_up(api: FakeApiServer, state: InformerState, timeout: float = 10.0) -> None:
    """Until both informers have seen (events or bookmarks) the server's newest version."""
    assert state.nodes is not None and state.pods is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        target = str(api.store.rv)
        if all(
            r.status.resource_version == target and r.status.phase == "watching"
            for r in (state.nodes, state.pods)
        ):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(
        f"informers did not catch up with version {api.store.rv}: {state.detail()['informers']}"
    )


async def test_not_ready_until_both_lists_are_in(tmp_path: Path) -> None:
    async with FakeApiServer(bookmark_interval=0.05) as api:
        api.store.load(NODES, node("n1"))
        api.store.load(PODS, pod("p1", "8Mi", node_name="n1", phase="Running"))
        api.faults.delay_next(0.3, count=1)
        config = Config()
        state = InformerState(await configuration(api, tmp_path), config, settings=FAST)
        assert not state.ready()
        await state.start()
        try:
            await asyncio.sleep(0.1)
            assert not state.ready()  # the nodes list is still held back by the delay
            await state.wait_synced(timeout=5)
            assert state.ready()
            assert state.snapshot.pods["default/p1"].epc == {"sgx.intel.com/epc": 8 * MI}
            detail = state.detail()
            assert detail["nodes"] == 1 and detail["pods"] == 1
        finally:
            await state.stop()


async def test_watch_events_update_sums_and_terminal_pods_leave(tmp_path: Path) -> None:
    async with FakeApiServer(bookmark_interval=0.05) as api:
        api.store.load(NODES, node("n1", "100Mi"))
        config = Config()
        state = InformerState(await configuration(api, tmp_path), config, settings=FAST)
        await state.start()
        try:
            await state.wait_synced(timeout=5)
            api.store.load(PODS, pod("a", "30Mi", node_name="n1", phase="Running"))
            api.store.load(PODS, pod("b", "20Mi", node_name="n1", phase="Running"))
            await caught_up(api, state)
            snap = state.snapshot
            slot = snap.slots["n1"]
            assert int(snap.epc["sgx.intel.com/epc"].requested[slot]) == 50 * MI
            api.store.patch(
                PODS,
                "default",
                "a",
                "application/merge-patch+json",
                {"status": {"phase": "Succeeded"}},
                subresource="status",
            )
            await caught_up(api, state)
            assert "default/a" not in snap.pods
            assert int(snap.epc["sgx.intel.com/epc"].requested[slot]) == 20 * MI
            api.store.delete(NODES, None, "n1")
            await caught_up(api, state)
            assert "n1" not in snap.slots
            api.store.load(NODES, node("n1", "100Mi"))
            await caught_up(api, state)
            slot = snap.slots["n1"]
            # The bound pod counts again once its node is back.
            assert int(snap.epc["sgx.intel.com/epc"].requested[slot]) == 20 * MI
        finally:
            await state.stop()


async def test_relists_after_410_on_resume(tmp_path: Path) -> None:
    async with FakeApiServer(bookmark_interval=60) as api:
        api.store.load(NODES, node("n1"))
        config = Config()
        state = InformerState(await configuration(api, tmp_path), config, settings=FAST)
        await state.start()
        try:
            await state.wait_synced(timeout=5)
            assert state.pods is not None
            lists_before = state.pods.status.lists
            # Writes while the watches are down, then history compaction: a resume must fail
            # with 410 (an ERROR event) and only a new list can bring the cache back.
            api.faults.fail_next(503, 2, watch=True)
            api.faults.drop_watches()
            for i in range(5):
                api.store.load(PODS, pod(f"p{i}", "1Mi", node_name="n1", phase="Running"))
            api.store.compact()
            await caught_up(api, state)
            assert state.pods.status.relists_after_gone >= 1
            assert state.pods.status.lists > lists_before
            assert_same(state.snapshot, server_snapshot(api, config))
        finally:
            await state.stop()


@pytest.mark.timeout(90)
async def test_churn_with_faults_ends_equal_to_server(tmp_path: Path) -> None:
    rng = random.Random(20261128)
    resources = ["sgx.intel.com/epc", "kubernetes.azure.com/sgx_epc_mem_in_MiB"]
    async with FakeApiServer(history=1500, bookmark_interval=0.05) as api:
        store = api.store
        node_names = [f"node-{i}" for i in range(24)]
        for i, name in enumerate(node_names):
            resource = resources[i % 2]
            size = "128Mi" if resource == "sgx.intel.com/epc" else "128"
            store.load(NODES, node(name, size, resource=resource))
        live: list[tuple[str, str]] = []
        serial = 0

        def new_pod() -> None:
            nonlocal serial
            serial += 1
            namespace = rng.choice(["default", "team-a", "team-b"])
            resource = rng.choice(resources)
            amount = rng.choice([1, 2, 4, 8, 16])
            epc = f"{amount}Mi" if resource == "sgx.intel.com/epc" else str(amount)
            bound = rng.random() < 0.7
            store.load(
                PODS,
                pod(
                    f"p{serial}",
                    epc if rng.random() < 0.9 else None,
                    namespace=namespace,
                    resource=resource,
                    node_name=rng.choice(node_names) if bound else None,
                    phase="Running" if bound else "Pending",
                ),
            )
            live.append((namespace, f"p{serial}"))

        for _ in range(300):
            new_pod()
        config = Config()
        state = InformerState(
            await configuration(api, tmp_path), config, settings=FAST, rng=random.Random(7)
        )
        await state.start()
        try:
            await state.wait_synced(timeout=10)
            api.faults.drop_watch_after = 700
            events_before = store.rv
            for step in range(4000):
                roll = rng.random()
                if roll < 0.35 or not live:
                    new_pod()
                elif roll < 0.55:
                    namespace, name = live.pop(rng.randrange(len(live)))
                    store.delete(PODS, namespace, name)
                elif roll < 0.7:
                    namespace, name = rng.choice(live)
                    current = store.get(PODS, namespace, name)
                    if not current["spec"].get("nodeName"):
                        store.bind(namespace, name, {"target": {"name": rng.choice(node_names)}})
                elif roll < 0.8:
                    namespace, name = rng.choice(live)
                    phase = rng.choice(["Running", "Succeeded", "Failed"])
                    store.patch(
                        PODS,
                        namespace,
                        name,
                        "application/merge-patch+json",
                        {"status": {"phase": phase}},
                        subresource="status",
                    )
                elif roll < 0.9:
                    namespace, name = rng.choice(live)
                    store.patch(
                        PODS,
                        namespace,
                        name,
                        "application/strategic-merge-patch+json",
                        {"metadata": {"labels": {"step": str(step)}}},
                    )
                elif roll < 0.95:
                    name = rng.choice(node_names)
                    current = store.get(NODES, None, name)
                    resource = next(r for r in resources if r in current["status"]["allocatable"])
                    size = rng.choice([64, 96, 128, 256])
                    store.patch(
                        NODES,
                        None,
                        name,
                        "application/merge-patch+json",
                        {
                            "status": {
                                "allocatable": {
                                    resource: f"{size}Mi" if resource == resources[0] else str(size)
                                }
                            }
                        },
                        subresource="status",
                    )
                else:
                    name = rng.choice(node_names)
                    store.delete(NODES, None, name)
                    store.load(NODES, node(name, "128Mi", resource=resources[0]))
                if step % 400 == 137:
                    api.faults.drop_watches(abort=step % 800 == 137)
                if step % 1000 == 500:
                    api.faults.fail_next(500, 3)
                    api.faults.fail_next(429, 1, watch=True)
                if step % 1300 == 900:
                    api.faults.fail_next(410, 1, watch=True)
                if step == 2600:
                    store.compact()
                if step % 10 == 0:
                    # Let the informer read: a real API server is not written 4000 times at once.
                    await asyncio.sleep(0.01)
            api.faults.clear()
            assert store.rv - events_before >= 3500
            await caught_up(api, state, timeout=20)
            truth = server_snapshot(api, config)
            assert_same(state.snapshot, truth)
            assert epc_sums(state.snapshot.pods) == epc_sums(truth.pods)
            for (node_name, resource), total in epc_sums(truth.pods).items():
                slot = state.snapshot.slots.get(node_name)
                if slot is not None:
                    assert int(state.snapshot.epc[resource].requested[slot]) == total
            assert state.pods is not None and state.nodes is not None
            status = state.pods.status
            # The faults really happened: otherwise this test would prove nothing.
            assert status.errors >= 3, status
            assert status.relists_after_gone >= 1, status
            assert status.watches >= 5, status
            assert status.events >= 500, status
            assert api.faults.injected >= 4
            assert len(state.snapshot.pods) > 100
        finally:
            await state.stop()


def test_backoff_grows_with_jitter_and_caps() -> None:
    backoff = Backoff(0.5, 8.0, random.Random(1))
    delays = [backoff.next() for _ in range(10)]
    for attempt, delay in enumerate(delays):
        ceiling = min(8.0, 0.5 * 2**attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert len({round(d, 6) for d in delays[5:]}) > 1  # jitter: capped delays still differ
    backoff.reset()
    assert backoff.next() <= 0.5
