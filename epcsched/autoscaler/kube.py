"""The autoscaler's Kubernetes parts, built together for one API client and namespace."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from kubernetes_asyncio import client

from epcsched.autoscaler.drain import Drainer
from epcsched.autoscaler.events import EventRecorder
from epcsched.autoscaler.leader import LeaderElector
from epcsched.autoscaler.status import StatusStore

LEASE = "epcsched-autoscaler"
STATUS = "epcsched-autoscaler-status"


@dataclass(frozen=True, slots=True)
class KubeParts:
    leader: LeaderElector
    recorder: EventRecorder
    remover: Drainer
    status: StatusStore


def kube_parts(
    api: client.ApiClient,
    *,
    namespace: str,
    identity: str,
    lease_duration: float = 15.0,
    max_pod_eviction_time: float = 120.0,
    eviction_retry: float = 5.0,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> KubeParts:
    """The Lease holder, Event recorder, drainer and status store of one autoscaler replica.

    Renewal follows client-go's proportions (15 s lease, 10 s renew deadline, 2 s retry)."""
    recorder = EventRecorder(api, host=identity, clock=clock)
    return KubeParts(
        leader=LeaderElector(
            api,
            namespace,
            identity,
            LEASE,
            lease_duration=lease_duration,
            renew_deadline=lease_duration * 2 / 3,
            retry_period=lease_duration * 2 / 15,
            clock=clock,
            sleep=sleep,
        ),
        recorder=recorder,
        remover=Drainer(
            api,
            max_pod_eviction_time=max_pod_eviction_time,
            retry_interval=eviction_retry,
            events=recorder,
            clock=clock,
            sleep=sleep,
        ),
        status=StatusStore(api, namespace, STATUS),
    )
