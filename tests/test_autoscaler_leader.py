"""Only one autoscaler replica leads, a successor takes over in time, and outages are survived.

Protects issue 7 point 7 (act only as Lease leader). Two electors campaign for one Lease over HTTP
against the fake API server: exactly one leads; when the leader stops, the other leads within
leaseDuration + retryPeriod (at once when the leader hands the Lease back); a leader whose Lease
is taken stops leading at its next renewal and later takes the Lease back when it expires; an API
outage (injected 503s, then the server gone altogether) makes the leader step down within the
renew deadline, the elector never crashes, and it leads again once the API is back. Time runs
ten times faster than the wall clock (an injected clock and sleep), with client-go's default
durations: 15 s lease, 10 s renew deadline, 2 s retry period.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from epcsched.autoscaler.leader import LeaderElector
from epcsched.testing.apiserver import FakeApiServer
from epcsched.testing.store import BY_KIND
from tests.kube_helpers import configuration

SPEED = 10.0
LEASE, RENEW, RETRY = 15.0, 10.0, 2.0
NS = "epcsched"


class FastTime:
    """Unix time running SPEED times faster than the wall clock, shared by every elector."""

    def __init__(self) -> None:
        self.origin = time.monotonic()

    def clock(self) -> float:
        return 1_700_000_000.0 + (time.monotonic() - self.origin) * SPEED

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds / SPEED)


class Campaign:
    def __init__(self, api: FakeApiServer, k8s: client.ApiClient) -> None:
        self.api = api
        self.k8s = k8s
        self.time = FastTime()
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def elector(self, identity: str, **kwargs: Any) -> LeaderElector:
        return LeaderElector(
            self.k8s,
            NS,
            identity,
            clock=self.time.clock,
            sleep=self.time.sleep,
            request_timeout=0.5,
            **kwargs,
        )

    def start(self, elector: LeaderElector) -> None:
        self.tasks[elector.identity] = asyncio.create_task(elector.run())

    async def stop(self, identity: str) -> None:
        task = self.tasks.pop(identity)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def lease(self) -> dict[str, Any]:
        return dict(self.api.store.get(BY_KIND["Lease"], NS, "epcsched-autoscaler")["spec"])

    async def until(self, condition: Any, virtual_seconds: float) -> float:
        """Wait for `condition()`; the virtual seconds it took. Fails after `virtual_seconds`."""
        start = self.time.clock()
        while not condition():
            assert self.time.clock() - start < virtual_seconds, "condition not reached in time"
            await asyncio.sleep(0.005)
        return self.time.clock() - start


@pytest.fixture
async def campaign(tmp_path: Path) -> AsyncIterator[Campaign]:
    async with FakeApiServer() as api:
        k8s = client.ApiClient(await configuration(api, tmp_path))
        state = Campaign(api, k8s)
        try:
            yield state
        finally:
            for identity in list(state.tasks):
                await state.stop(identity)
            await k8s.close()


async def test_exactly_one_of_two_leads(campaign: Campaign) -> None:
    a, b = campaign.elector("a"), campaign.elector("b")
    campaign.start(a)
    campaign.start(b)
    await asyncio.wait_for(
        asyncio.wait(
            [asyncio.ensure_future(a.wait_leader()), asyncio.ensure_future(b.wait_leader())],
            return_when=asyncio.FIRST_COMPLETED,
        ),
        5,
    )
    leader = a if a.is_leader else b
    # Watch for longer than a lease: always exactly one leader, and always the same one.
    end = campaign.time.clock() + LEASE + 2 * RETRY
    while campaign.time.clock() < end:
        assert [e.identity for e in (a, b) if e.is_leader] == [leader.identity]
        await asyncio.sleep(0.01)
    lease = campaign.lease()
    assert lease["holderIdentity"] == leader.identity
    assert lease["leaseDurationSeconds"] == 15 and lease["leaseTransitions"] == 0
    assert a.holder == b.holder == leader.identity


async def test_crashed_leader_is_replaced_within_lease_duration(campaign: Campaign) -> None:
    first = campaign.elector("first", release_on_cancel=False)
    campaign.start(first)
    await asyncio.wait_for(first.wait_leader(), 5)
    second = campaign.elector("second")
    campaign.start(second)
    await campaign.until(lambda: second.holder == "first", 5)
    await campaign.stop("first")
    assert not first.is_leader
    took = await campaign.until(lambda: second.is_leader, LEASE + RETRY + 5)
    # The follower waits out the lease from the last renewal it saw (at most one retry
    # period before the crash) and tries every retry period.
    assert LEASE - RETRY - 1 <= took <= LEASE + RETRY + 2, took
    lease = campaign.lease()
    assert lease["holderIdentity"] == "second" and lease["leaseTransitions"] == 1


async def test_stopped_leader_hands_the_lease_over_at_once(campaign: Campaign) -> None:
    first = campaign.elector("first")
    campaign.start(first)
    await asyncio.wait_for(first.wait_leader(), 5)
    second = campaign.elector("second")
    campaign.start(second)
    await campaign.until(lambda: second.holder == "first", 5)
    await campaign.stop("first")
    assert campaign.lease()["holderIdentity"] == ""
    took = await campaign.until(lambda: second.is_leader, RETRY + 3)
    assert took <= RETRY + 2, took


async def test_lease_taken_by_another_ends_leadership_at_once(campaign: Campaign) -> None:
    me = campaign.elector("me")
    campaign.start(me)
    await asyncio.wait_for(me.wait_leader(), 5)
    # Another replica (or a person) writes itself into the Lease.
    lease = campaign.api.store.get(BY_KIND["Lease"], NS, "epcsched-autoscaler")
    stolen = {**lease, "spec": {**lease["spec"], "holderIdentity": "intruder"}}
    campaign.api.store.update(BY_KIND["Lease"], NS, "epcsched-autoscaler", stolen)
    took = await campaign.until(lambda: not me.is_leader, RETRY + 3)
    assert took <= RETRY + 2, took
    # The intruder never renews: after its lease runs out, the Lease comes back.
    back = await campaign.until(lambda: me.is_leader, LEASE + RETRY + 5)
    assert LEASE - 1 <= back <= LEASE + 2 * RETRY + 2, back
    assert campaign.lease()["holderIdentity"] == "me"
    assert campaign.lease()["leaseTransitions"] == 1


async def test_api_outage_makes_the_leader_step_down_and_never_crashes(
    campaign: Campaign,
) -> None:
    me = campaign.elector("me")
    campaign.start(me)
    await asyncio.wait_for(me.wait_leader(), 5)
    faults = campaign.api.faults
    faults.fail_next(503, 10_000, path="/leases")
    took = await campaign.until(lambda: not me.is_leader, RENEW + RETRY + 1)
    # Last renewal at most one retry period before the outage; the deadline counts from it.
    assert RENEW - RETRY - 1 <= took <= RENEW + 1, took
    assert not campaign.tasks["me"].done()
    faults.clear()
    # The Lease still names us, so the first successful read and write make us leader again.
    await campaign.until(lambda: me.is_leader, RETRY + 2)

    # Now the API server goes away entirely: connections are refused.
    port, store = campaign.api.port, campaign.api.store
    await campaign.api.stop()
    await campaign.until(lambda: not me.is_leader, RENEW + RETRY + 1)
    await asyncio.sleep(3 * RETRY / SPEED)
    assert not campaign.tasks["me"].done()
    async with FakeApiServer(port=port, token=campaign.api.token) as back:
        back.store.load_many(store.items(BY_KIND["Lease"], None))
        await campaign.until(lambda: me.is_leader, 2 * RETRY + 2)
        assert not campaign.tasks["me"].done()
        await campaign.stop("me")


async def test_durations_are_validated(campaign: Campaign) -> None:
    with pytest.raises(ValueError, match="lease_duration"):
        LeaderElector(campaign.k8s, NS, "x", lease_duration=10, renew_deadline=10)
    with pytest.raises(ValueError, match="renew_deadline"):
        LeaderElector(campaign.k8s, NS, "x", renew_deadline=2, retry_period=2)
    with pytest.raises(ValueError, match="identity"):
        LeaderElector(campaign.k8s, NS, "")
