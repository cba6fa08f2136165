"""Leader election on a coordination.k8s.io/v1 Lease, so that only one autoscaler replica acts.

Two replicas that both scaled pools would fight (one adds a node, the other removes it), so the
loop acts only while `LeaderElector.is_leader`. The algorithm is client-go's: a candidate takes
the Lease when it has no holder, or when its record has not changed for `leaseDurationSeconds`
as measured on the candidate's own clock (so clock skew between machines does not matter); the
leader renews every `retry_period`; every write carries the resourceVersion read, so of two
candidates racing for the same Lease exactly one wins and the other gets a 409.

kubernetes-asyncio ships a `leaderelection` package (36.1 here), but it cannot serve: it reads
`time.time()` and `asyncio.sleep` directly (no injectable clock), stamps local time as UTC, lets a
refused connection escape as an exception, never counts `leaseTransitions`, and returns for good
after the first lost lease. This is a small faithful rewrite with the properties the loop needs:
leadership ends on the local clock `renew_deadline` after the last successful renewal even while
a request hangs, before any other candidate may take over (`renew_deadline < lease_duration`);
losing the Lease to another holder ends it at once; API outages are logged and survived.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, cast

from kubernetes_asyncio import client

from epcsched.autoscaler.kubeapi import KubeApiError, Obj, request

log = logging.getLogger("epcsched.autoscaler.leader")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


def _micro_time(seconds: float) -> str:
    """A Lease MicroTime (RFC 3339 with microseconds, UTC)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Campaigns for Lease `namespace/lease_name` as `identity` while `run()` runs.

    `api` is an open kubernetes-asyncio ApiClient. Durations are seconds; `clock` is Unix time
    (it stamps acquireTime/renewTime and measures expiry) and `sleep` waits between attempts:
    tests pass a faster pair. Requires lease_duration > renew_deadline > retry_period.
    """

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        identity: str,
        lease_name: str = "epcsched-autoscaler",
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        *,
        release_on_cancel: bool = True,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        request_timeout: float = 5.0,
    ) -> None:
        if not identity:
            raise ValueError("identity: must not be empty")
        if not lease_duration > renew_deadline:
            raise ValueError("lease_duration: must be greater than renew_deadline")
        if not renew_deadline > retry_period > 0:
            raise ValueError("renew_deadline: must be greater than retry_period, which is > 0")
        self.leases = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.identity = identity
        self.lease_name = lease_name
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.release_on_cancel = release_on_cancel
        """On cancellation, hand the Lease back so another candidate takes over at once."""
        self.clock = clock
        self.sleep = sleep
        self.request_timeout = request_timeout
        self._observed: Obj | None = None
        """The Lease spec last read or written."""
        self._observed_at = 0.0
        """Local time `_observed` last changed: expiry is measured from here."""
        self._renewed_at: float | None = None
        """Local time of our last successful acquire or renew, while we lead."""
        self._leading = asyncio.Event()
        self._last_problem = ""

    # -- what the loop reads ----------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        """True while this candidate holds the Lease and renewed it within `renew_deadline`."""
        return (
            self._renewed_at is not None and self.clock() - self._renewed_at < self.renew_deadline
        )

    @property
    def holder(self) -> str | None:
        """The holder as last seen (None before the first read or when the Lease is free)."""
        holder = (self._observed or {}).get("holderIdentity")
        return str(holder) if holder else None

    async def wait_leader(self) -> None:
        """Return once this candidate leads (`run()` must be running)."""
        while not self.is_leader:
            if self._leading.is_set():
                # Leadership lapsed on the clock and run() has not noticed yet.
                await self.sleep(self.retry_period)
            else:
                await self._leading.wait()

    # -- the campaign -------------------------------------------------------------------------
    async def run(self) -> None:
        """Campaign and renew until cancelled; never returns otherwise and never raises for API
        failures. Run it as a task; cancel it to stop (the Lease is released if we lead)."""
        log.info(
            "leader election for Lease %s/%s as %s", self.namespace, self.lease_name, self.identity
        )
        try:
            while True:
                try:
                    await self._attempt()
                except Exception:  # a malformed Lease must not end the campaign
                    log.exception("leader election attempt failed unexpectedly")
                self._check_deadline()
                await self.sleep(self.retry_period)
        except asyncio.CancelledError:
            if self.release_on_cancel and self.is_leader:
                await self._release()
            self._step_down("stopped")
            raise

    async def _attempt(self) -> None:
        now = self.clock()
        try:
            lease = await self._read()
        except KubeApiError as exc:
            self._problem(f"reading Lease failed: {exc}")
            return
        if lease is None:
            await self._create(now)
            return
        spec: Obj = lease.get("spec") or {}
        if spec != self._observed:
            self._observed = spec
            self._observed_at = now
        holder = spec.get("holderIdentity") or ""
        duration = spec.get("leaseDurationSeconds") or 0
        if holder and holder != self.identity:
            if self._renewed_at is not None:
                self._step_down(f"the Lease is now held by {holder}")
            if self._observed_at + float(duration) > now:
                log.debug("Lease held by %s and not expired", holder)
                return
            log.info("Lease held by %s expired; taking it over", holder)
        transitions = int(spec.get("leaseTransitions") or 0)
        new_spec: Obj = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": math.ceil(self.lease_duration),
            "acquireTime": spec.get("acquireTime") if holder == self.identity else None,
            "renewTime": _micro_time(now),
            "leaseTransitions": transitions if holder == self.identity else transitions + 1,
        }
        new_spec["acquireTime"] = new_spec["acquireTime"] or _micro_time(now)
        body = {**lease, "spec": {**spec, **new_spec}}
        try:
            written = await request(
                self.leases.replace_namespaced_lease(
                    self.lease_name,
                    self.namespace,
                    cast(Any, body),
                    _preload_content=False,
                    _request_timeout=self.request_timeout,
                )
            )
        except KubeApiError as exc:
            if exc.status == 409:
                log.info("Lease changed while %s wrote it (409); re-reading", self.identity)
            else:
                self._problem(f"writing Lease failed: {exc}")
            return
        self._succeeded(written.get("spec") or new_spec, now)

    async def _read(self) -> Obj | None:
        try:
            return await request(
                self.leases.read_namespaced_lease(
                    self.lease_name,
                    self.namespace,
                    _preload_content=False,
                    _request_timeout=self.request_timeout,
                )
            )
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def _create(self, now: float) -> None:
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": math.ceil(self.lease_duration),
            "acquireTime": _micro_time(now),
            "renewTime": _micro_time(now),
            "leaseTransitions": 0,
        }
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.lease_name, "namespace": self.namespace},
            "spec": spec,
        }
        try:
            created = await request(
                self.leases.create_namespaced_lease(
                    self.namespace,
                    cast(Any, body),
                    _preload_content=False,
                    _request_timeout=self.request_timeout,
                )
            )
        except KubeApiError as exc:
            if exc.status == 409:
                log.info("another candidate created Lease %s first", self.lease_name)
            else:
                self._problem(f"creating Lease failed: {exc}")
            return
        self._succeeded(created.get("spec") or spec, now)

    def _succeeded(self, spec: Obj, now: float) -> None:
        self._observed = spec
        self._observed_at = now
        if self._renewed_at is None:
            log.info(
                "%s is now the leader (Lease %s/%s, transitions %s)",
                self.identity,
                self.namespace,
                self.lease_name,
                spec.get("leaseTransitions"),
            )
        self._renewed_at = now
        self._last_problem = ""
        self._leading.set()

    def _check_deadline(self) -> None:
        if self._renewed_at is not None and not self.is_leader:
            self._step_down(f"no successful renewal for {self.renew_deadline:g}s")

    def _step_down(self, why: str) -> None:
        if self._renewed_at is not None:
            log.warning("%s is no longer the leader: %s", self.identity, why)
        self._renewed_at = None
        self._leading.clear()

    def _problem(self, message: str) -> None:
        # An outage repeats the same failure every retry period: log it once, not every time.
        if message != self._last_problem:
            log.warning("leader election (%s): %s", self.identity, message)
            self._last_problem = message
        else:
            log.debug("leader election (%s): %s", self.identity, message)

    async def _release(self) -> None:
        """Hand the Lease back as client-go's ReleaseOnCancel does: no holder, 1 s duration."""
        now = self.clock()
        try:
            lease = await self._read()
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            spec: dict[str, Any] = dict(lease.get("spec") or {})
            spec.update(
                holderIdentity="",
                leaseDurationSeconds=1,
                acquireTime=_micro_time(now),
                renewTime=_micro_time(now),
            )
            await request(
                self.leases.replace_namespaced_lease(
                    self.lease_name,
                    self.namespace,
                    cast(Any, {**lease, "spec": spec}),
                    _preload_content=False,
                    _request_timeout=self.request_timeout,
                )
            )
        except KubeApiError as exc:
            log.warning("%s could not release Lease %s: %s", self.identity, self.lease_name, exc)
            return
        log.info("%s released Lease %s/%s", self.identity, self.namespace, self.lease_name)


__all__ = ["LeaderElector"]
