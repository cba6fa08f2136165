"""`POST /bind` with EPC reservations never oversubscribes a node, and every refusal says why.

Protects issue 3 point 5: many concurrent binds against nodes that hold only some of the pods;
a Binding the API refuses gives its reservation back; a reservation covers the gap until the
watch shows the pod bound, and expires after the TTL when it never does; a pod the watch has not
delivered yet is read from the API. The extender app runs on loopback with its informer state
fed by the fake API server through kubernetes-asyncio.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from epcsched.config import Config
from epcsched.extender.app import create_app
from epcsched.extender.bind import Binder, install
from epcsched.kube.informer import InformerSettings, InformerState
from epcsched.objects import Pod, pod_info
from epcsched.testing.apiserver import FakeApiServer
from epcsched.testing.store import BY_KIND
from tests.kube_helpers import MI, configuration, node, pod

PODS = BY_KIND["Pod"]
NODES = BY_KIND["Node"]
FAST = InformerSettings(backoff_initial=0.01, backoff_max=0.05, watch_timeout=(5, 10))


class FakeClock:
    """The Binder's clock: reservations expire when the test says time has passed."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    api: FakeApiServer
    state: InformerState
    binder: Binder
    url: str
    session: aiohttp.ClientSession
    clock: FakeClock

    async def bind(self, name: str, node_name: str, *, uid: str | None = None) -> str:
        if uid is None:
            uid = self.api.store.get(PODS, "default", name)["metadata"]["uid"]
        body = {"PodName": name, "PodNamespace": "default", "PodUID": uid, "Node": node_name}
        async with self.session.post(f"{self.url}/bind", json=body) as resp:
            assert resp.status == 200, await resp.text()
            reply = await resp.json()
        assert set(reply) == {"Error"}
        error: str = reply["Error"]
        return error

    async def caught_up(self) -> None:
        assert self.state.pods is not None
        for _ in range(500):
            if self.state.pods.status.resource_version == str(self.api.store.rv):
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the pod informer did not catch up")


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with FakeApiServer(bookmark_interval=0.05) as api:
        config = Config()
        config.extender.bind = True
        config.extender.reservation_ttl = 0.4
        conf = await configuration(api, tmp_path)
        state = InformerState(conf, config, settings=FAST)
        clock = FakeClock()
        binder = Binder(conf, state, ttl=config.extender.reservation_ttl, clock=clock)
        app = create_app(config, state)
        install(app, binder)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with aiohttp.ClientSession() as session:
                yield Rig(api, state, binder, f"http://127.0.0.1:{port}", session, clock)
        finally:
            await runner.cleanup()


def bound_epc(api: FakeApiServer) -> dict[str, int]:
    """EPC requested by the pods the API shows bound, per node."""
    totals: dict[str, int] = {}
    for obj in api.store.items(PODS, None):
        info = pod_info(msgspec.convert(obj, Pod), Config().epc.resources)
        if info.node_name:
            totals[info.node_name] = totals.get(info.node_name, 0) + info.epc_total
    return totals


@pytest.mark.timeout(60)
async def test_concurrent_binds_never_oversubscribe(rig: Rig) -> None:
    api = rig.api
    sizes = {"n1": 64, "n2": 64, "n3": 100, "n4": 40}
    for name, size in sizes.items():
        api.store.load(NODES, node(name, f"{size}Mi"))
    api.store.load(PODS, pod("already", "10Mi", node_name="n3", phase="Running"))
    rng = random.Random(3)
    names = []
    for i in range(60):
        names.append(f"p{i}")
        api.store.load(PODS, pod(f"p{i}", f"{rng.choice([8, 16, 24])}Mi"))
    await rig.state.wait_synced(timeout=10)
    await rig.caught_up()

    targets = [rng.choice(sorted(sizes)) for _ in names]
    errors = await asyncio.gather(*(rig.bind(n, t) for n, t in zip(names, targets, strict=True)))

    accepted = [n for n, e in zip(names, errors, strict=True) if not e]
    refused = [e for e in errors if e]
    assert accepted and refused, "the test must exercise both outcomes"
    for error in refused:
        assert "no longer fits node" in error and "insufficient sgx.intel.com/epc" in error, error
        assert "requested" in error and "free" in error
    totals = bound_epc(api)
    for name, size in sizes.items():
        assert totals.get(name, 0) <= size * MI, (name, totals)
    # Every accepted bind is a Binding the API holds, on the node asked for.
    for name, target in zip(names, targets, strict=True):
        node_name = api.store.get(PODS, "default", name)["spec"].get("nodeName")
        assert (node_name == target) == (name in accepted)
    # Once the watch shows the pods bound, their reservations are gone and the sums are real.
    await rig.caught_up()
    snapshot = rig.state.snapshot
    assert snapshot.reservations == {}
    for name in sizes:
        slot = snapshot.slots[name]
        assert int(snapshot.epc["sgx.intel.com/epc"].requested[slot]) == totals.get(name, 0)
    assert rig.binder.bound == len(accepted)
    assert rig.binder.refused == len(refused)


async def test_refused_binding_releases_its_reservation(rig: Rig) -> None:
    api = rig.api
    api.store.load(NODES, node("n1", "64Mi"))
    api.store.load(PODS, pod("a", "48Mi"))
    await rig.state.wait_synced(timeout=10)
    await rig.caught_up()
    api.faults.fail_next(500, 1, path="/binding")
    error = await rig.bind("a", "n1")
    assert "the API server refused binding pod default/a to node n1: 500" in error
    assert rig.state.snapshot.reservations == {}
    # The EPC is free again: the same bind succeeds now.
    assert await rig.bind("a", "n1") == ""
    assert api.store.get(PODS, "default", "a")["spec"]["nodeName"] == "n1"
    # A second bind of the bound pod is refused by the cache or by the API's 409.
    await rig.caught_up()
    again = await rig.bind("a", "n1")
    assert "already bound to node n1" in again


async def test_reservation_covers_the_gap_then_expires(rig: Rig) -> None:
    api = rig.api
    api.store.load(NODES, node("n1", "64Mi"))
    api.store.load(PODS, pod("a", "40Mi"))
    api.store.load(PODS, pod("b", "40Mi"))
    await rig.state.wait_synced(timeout=10)
    await rig.caught_up()
    # Blind the pod watch: the binding happens in the API but the cache cannot see it.
    api.faults.fail_next(503, 10_000, path="/pods", watch=True)
    api.faults.drop_watches()
    assert await rig.bind("a", "n1") == ""
    assert "default/a" in rig.state.snapshot.reservations
    assert rig.state.snapshot.pods["default/a"].node_name is None
    # The reservation stands in for the unseen binding: b cannot take the same EPC.
    error = await rig.bind("b", "n1")
    assert "no longer fits node n1" in error and "free 24Mi of 64Mi" in error
    # reservationTtl is 0.4 s: just before it the reservation still holds b off...
    rig.clock.now += 0.39
    assert "no longer fits node n1" in await rig.bind("b", "n1")
    assert rig.binder.expired == 0
    # ...and at it the sweeper lets it go (it runs every 0.1 s of real time).
    rig.clock.now += 0.01
    for _ in range(200):
        if not rig.state.snapshot.reservations:
            break
        await asyncio.sleep(0.01)
    assert rig.state.snapshot.reservations == {}
    assert rig.binder.expired == 1
    # When the watch comes back, the binding itself holds the EPC.
    api.faults.clear()
    await rig.caught_up()
    assert rig.state.snapshot.pods["default/a"].node_name == "n1"
    assert "free 24Mi of 64Mi" in await rig.bind("b", "n1")


async def test_pod_not_yet_in_cache_is_read_from_the_api(rig: Rig) -> None:
    api = rig.api
    api.store.load(NODES, node("n1", "64Mi"))
    await rig.state.wait_synced(timeout=10)
    api.faults.fail_next(503, 10_000, path="/pods", watch=True)
    api.faults.drop_watches()
    await asyncio.sleep(0.05)
    api.store.load(PODS, pod("late", "100Mi"))
    api.store.load(PODS, pod("small", "10Mi"))
    assert "default/late" not in rig.state.snapshot.pods
    error = await rig.bind("late", "n1")
    assert "requested 100Mi, but the node has only 64Mi allocatable" in error
    assert await rig.bind("small", "n1") == ""


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "malformed JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"PodName": "a"}', "missing Node"),
        (b'{"PodName": 3, "Node": "n1"}', "PodName: must be a string"),
    ],
)
async def test_bad_bind_requests_are_400(rig: Rig, body: bytes, message: str) -> None:
    async with rig.session.post(f"{rig.url}/bind", data=body) as resp:
        assert resp.status == 400
        reply: dict[str, Any] = await resp.json()
    assert message in reply["Error"]


async def test_refusals_name_the_problem(rig: Rig) -> None:
    api = rig.api
    api.store.load(NODES, node("n1", "64Mi"))
    api.store.load(PODS, pod("a", "8Mi"))
    await rig.state.wait_synced(timeout=10)
    await rig.caught_up()
    assert "node ghost is not in epcsched's cluster cache" in await rig.bind("a", "ghost")
    assert "was deleted and created again" in await rig.bind("a", "n1", uid="stale-uid")
    assert "cannot read pod default/nobody" in await rig.bind("nobody", "n1", uid="")
    assert rig.binder.refused == 3
