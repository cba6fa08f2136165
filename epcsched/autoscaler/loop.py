"""The autoscaler loop: observe, decide (the pure core), act — only while leader.

Every `interval`, and soon after new unschedulable EPC pods appear (batched: `batchIdle` after
the last new one, at most `batchMax` after the first, so a burst is one decision), the loop:

1. observes: the informers' snapshot (with measured EPC use and paging when telemetry is on),
   each pool's nodes (by its nodeSelector) and each provider's target size;
2. decides with `epcsched.core.autoscale.decide`, which holds every rule and timer;
3. acts, if it holds the Lease: absolute target sizes for scale-ups, and for a scale-down a
   background drain (cordon, evictions through the Eviction API) followed by the provider
   removing exactly that node; Events on the pods and nodes concerned; the status ConfigMap
   before and after acting, so a restarted replica continues where this one stopped.

A provider or API error backs the pool off or skips the loop; nothing in a loop ends the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from epcsched.autoscaler.drain import DrainResult
from epcsched.autoscaler.events import EventType, ObjectRef
from epcsched.autoscaler.metrics import AutoscalerMetrics
from epcsched.autoscaler.providers.base import NodePoolProvider, ProviderError
from epcsched.config import Config, NodePoolSettings
from epcsched.core.autoscale import (
    SCALE_DOWN,
    SCALE_UP,
    ControllerPolicy,
    ControllerState,
    Decision,
    PoolDecision,
    PoolView,
    decide,
    provider_failed,
    removal_done,
    removal_failed,
    rfc3339,
)
from epcsched.core.snapshot import ClusterSnapshot
from epcsched.model import NodeInfo, PodInfo
from epcsched.objects import template_node
from epcsched.state import ClusterState

log = logging.getLogger("epcsched.autoscaler")

NOT_TRIGGERED_EVERY = 300.0
"""Seconds between two NotTriggerScaleUp Events for one pod with the same reason."""


# ----- what the loop needs from the Kubernetes side (epcsched.autoscaler.drain etc.) -------
class Recorder(Protocol):
    async def record(
        self, involved: ObjectRef, type: EventType, reason: str, message: str
    ) -> None: ...


class Remover(Protocol):
    async def drain(self, node: str) -> DrainResult:
        """Cordon and evict; ok once every movable pod left, else the node is uncordoned."""
        ...

    async def uncordon(self, node: str) -> None: ...

    async def uncordon_all(self) -> list[str]:
        """Remove every scale-down taint: a drain of a previous leader may have died midway."""
        ...


class StatusStore(Protocol):
    async def load(self) -> dict[str, Any] | None: ...

    async def save(self, status: dict[str, Any]) -> None: ...


class Leader(Protocol):
    @property
    def is_leader(self) -> bool: ...


class Batcher:
    """When to decide after new unschedulable pods: `idle` after the last new one, and at the
    latest `most` after the first of the burst."""

    def __init__(self, idle: float, most: float) -> None:
        self.idle = idle
        self.most = most
        self.first: float | None = None
        self.last: float | None = None

    def note(self, now: float) -> None:
        if self.first is None:
            self.first = now
        self.last = now

    def deadline(self) -> float | None:
        if self.first is None or self.last is None:
            return None
        return min(self.last + self.idle, self.first + self.most)

    def clear(self) -> None:
        self.first = self.last = None


def pool_template(pool: NodePoolSettings, config: Config) -> NodeInfo:
    """One new node of `pool` as the planner sees it: its template, with the pool's labels."""
    template = pool.template
    labels = {**pool.node_selector, **(template.labels if template else {})}
    return template_node(
        f"template-{pool.name}",
        template.resources if template else {},
        config.epc.resources,
        labels=labels,
        taints=template.taints if template else (),
    )


def pool_nodes(
    snapshot: ClusterSnapshot, pool: NodePoolSettings, template: NodeInfo
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The pool's registered nodes and, of those, the usable ones (Ready, EPC registered)."""
    selector = pool.node_selector or {
        k: v
        for k, v in template.labels.items()
        if k in (pool.template.labels if pool.template else {})
    }
    nodes: list[str] = []
    usable: list[str] = []
    for info in snapshot.nodes():
        if not selector or any(info.labels.get(k) != v for k, v in selector.items()):
            continue
        nodes.append(info.name)
        if info.ready and (template.epc_total == 0 or info.epc_total > 0):
            usable.append(info.name)
    return tuple(sorted(nodes)), tuple(sorted(usable))


def pending_for_autoscaler(pod: PodInfo) -> bool:
    """A pod kube-scheduler has tried and found no node for: cluster-autoscaler's trigger."""
    return pod.node_name is None and pod.marked_unschedulable and bool(pod.epc)


class Autoscaler:
    """One autoscaler process's loop. `run_once` is one loop; `run` loops until cancelled."""

    def __init__(
        self,
        config: Config,
        state: ClusterState,
        providers: Mapping[str, NodePoolProvider],
        metrics: AutoscalerMetrics,
        *,
        strategy: str = "binpack",
        recorder: Recorder | None = None,
        remover: Remover | None = None,
        status: StatusStore | None = None,
        leader: Leader | None = None,
        telemetry: Any = None,
        dry_run: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.settings = config.autoscaler
        self.cluster = state
        self.providers = providers
        self.metrics = metrics
        self.policy = ControllerPolicy.from_settings(self.settings, strategy=strategy)
        self.recorder = recorder
        self.remover = remover
        self.status = status
        self.leader = leader
        self.telemetry = telemetry
        self.dry_run = dry_run
        self.clock = clock
        self.pools = {p.name: p for p in self.settings.node_pools}
        self.templates = {p.name: pool_template(p, config) for p in self.settings.node_pools}
        self.state = ControllerState()
        self.last_decision: Decision | None = None
        self.last_loop: float | None = None
        self.loops = 0
        self.http_port: int | None = None
        """The port `/healthz`, `/readyz` and `/metrics` are served on, once serving."""
        self.batch = Batcher(self.settings.batch_idle, self.settings.batch_max)
        self._seen: set[str] = set()
        self._told: dict[str, tuple[str, float]] = {}
        self._removals: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._was_leader = False
        metrics.pools(sorted(self.pools))

    # ----- waking -------------------------------------------------------------------------
    def pod_changed(self, pod: PodInfo) -> None:
        """Informer hook: a new unschedulable EPC pod starts (or extends) a batch."""
        if pending_for_autoscaler(pod) and pod.key not in self._seen:
            self._seen.add(pod.key)
            self.batch.note(self.clock())
            self._wake.set()

    async def run(self) -> None:
        """Loop until cancelled: every `interval`, or when a batch of new pods is due."""
        next_tick = self.clock()
        while True:
            now = self.clock()
            deadline = self.batch.deadline()
            due = next_tick if deadline is None else min(next_tick, deadline)
            if now >= due:
                if deadline is not None and now >= deadline:
                    log.info("deciding for a batch of new unschedulable EPC pods")
                self.batch.clear()
                await self.run_once()
                if now >= next_tick:
                    next_tick = now + self.settings.interval
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, due - now))

    # ----- one loop -----------------------------------------------------------------------
    async def run_once(self) -> Decision | None:
        started = time.perf_counter()
        try:
            return await self._loop()
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug or an unexpected API answer must not end the controller: log it, try later.
            log.exception("autoscaler loop failed; trying again next interval")
            self.metrics.errors.labels("kubernetes").inc()
            return None
        finally:
            self.metrics.loop_seconds.observe(time.perf_counter() - started)
            self.last_loop = self.clock()
            self.loops += 1

    def acting(self) -> bool:
        return not self.dry_run and (self.leader is None or self.leader.is_leader)

    async def _loop(self) -> Decision | None:
        if not self.cluster.ready():
            log.info("waiting for the cluster state to sync before deciding")
            return None
        leader = self.acting()
        self.metrics.leader.set(1 if leader else 0)
        if leader and not self._was_leader:
            await self._load()
            if self.remover is not None:
                # A removal the status records is resumed below and cordons its node again.
                left = await self.remover.uncordon_all()
                if left:
                    log.info("removed leftover scale-down taints from %s", ", ".join(left))
        self._was_leader = leader
        now = self.clock()
        # Pods that left the pending set may come back (a node removed): wake for them again.
        self._seen &= {p.key for p in self.cluster.snapshot.pending_pods()}
        views = await self._observe(now)
        snapshot = self.cluster.snapshot
        state, decision = decide(self.state, views, snapshot, self.policy, now)
        if leader:
            # A replica that only observes keeps no memory of its own: on becoming leader it
            # takes the leader's from the status ConfigMap.
            self.state = state
        self.last_decision = decision
        usable = {v.name: len(v.usable) for v in views}
        backed_off = {n for n, m in self.state.pools.items() if m.backed_off(now)}
        self.metrics.observe(decision, usable, backed_off)
        self._log(decision)
        if not leader:
            return decision
        await self._save(decision)
        await self._act(decision, now)
        await self._save(decision)
        return decision

    async def _observe(self, now: float) -> list[PoolView]:
        views = []
        snapshot = self.cluster.snapshot
        for name in sorted(self.pools):
            pool = self.pools[name]
            template = self.templates[name]
            nodes, usable = pool_nodes(snapshot, pool, template)
            target: int | None = None
            busy = False
            error: str | None = None
            provider = self.providers.get(pool.provider)
            if provider is not None:
                try:
                    size = await provider.size(pool)
                    target, busy = size.target, size.busy
                except ProviderError as exc:
                    error = str(exc)
                    self.metrics.errors.labels("provider").inc()
                    log.warning("pool %s: reading its size failed: %s", name, exc)
                    if not exc.retryable and self.acting():
                        self.state = provider_failed(self.state, name, now, error, self.policy)
            views.append(
                PoolView(
                    name=name,
                    template=template,
                    min_size=pool.min_size,
                    max_size=pool.max_size,
                    nodes=nodes,
                    usable=usable,
                    target=target,
                    busy=busy,
                    error=error,
                    cost_per_hour=pool.cost_per_hour,
                    priority=pool.priority,
                )
            )
        return views

    def _log(self, decision: Decision) -> None:
        for pool in decision.pools:
            if pool.action != "none":
                log.info(
                    "pool %s: %s %d -> %d: %s",
                    pool.name,
                    pool.action,
                    pool.current_size,
                    pool.target_size,
                    pool.reason,
                )
        for key, reason in decision.unschedulable:
            if self._told.get(key, ("", 0.0))[0] != reason:
                log.info("pod %s: no scale-up helps: %s", key, reason)

    # ----- acting ----------------------------------------------------------------------------
    async def _act(self, decision: Decision, now: float) -> None:
        for pool_decision in decision.pools:
            pool = self.pools[pool_decision.name]
            provider = self.providers.get(pool.provider)
            if provider is None:
                continue
            if pool_decision.action == SCALE_UP:
                await self._scale_up(pool, provider, pool_decision, now)
            elif pool_decision.action == SCALE_DOWN and pool_decision.drain is not None:
                self._start_removal(pool, provider, pool_decision.drain, pool_decision.reason)
            elif pool_decision.action == SCALE_DOWN:
                await self._give_up(pool, provider, pool_decision, now)
        # A removal recorded before a restart (or a failover) is carried on.
        for name, memory in self.state.pools.items():
            resumed = self.pools.get(name)
            if resumed is None or memory.removing is None or name in self._removals:
                continue
            provider = self.providers.get(resumed.provider)
            if provider is not None:
                self._start_removal(resumed, provider, memory.removing, "resumed after a restart")
        await self._tell_pods(decision, now)

    async def _scale_up(
        self, pool: NodePoolSettings, provider: NodePoolProvider, d: PoolDecision, now: float
    ) -> None:
        try:
            await provider.set_target(pool, d.target_size)
        except ProviderError as exc:
            self._failed(pool.name, exc, now, "scale-up")
            return
        self.metrics.scaled(pool.name, SCALE_UP, d.target_size - d.current_size)
        message = (
            f"pod triggered scale-up: [{{{pool.name} {d.current_size}->{d.target_size} "
            f"(max: {pool.max_size})}}]"
        )
        await self._each(
            self._pod_event(key, "Normal", "TriggeredScaleUp", message) for key in d.pods
        )

    async def _give_up(
        self, pool: NodePoolSettings, provider: NodePoolProvider, d: PoolDecision, now: float
    ) -> None:
        try:
            target = d.current_size
            for node in d.nodes_to_remove:
                target -= 1
                await provider.remove_node(pool, node, max(target, d.target_size))
            await provider.set_target(pool, d.target_size)
        except ProviderError as exc:
            self._failed(pool.name, exc, now, "giving up nodes")
            return
        self.metrics.scaled(pool.name, SCALE_DOWN, d.current_size - d.target_size)
        for node in d.nodes_to_remove:
            await self._event(ObjectRef("Node", "", node), "Warning", "ScaleDown", d.reason)

    def _failed(self, pool: str, exc: ProviderError, now: float, what: str) -> None:
        self.metrics.errors.labels("provider").inc()
        if exc.retryable:
            log.info("pool %s: %s refused for now, retrying next loop: %s", pool, what, exc)
            return
        log.warning("pool %s: %s failed, backing off: %s", pool, what, exc)
        self.state = provider_failed(self.state, pool, now, f"{what} failed: {exc}", self.policy)

    def _start_removal(
        self, pool: NodePoolSettings, provider: NodePoolProvider, node: str, reason: str
    ) -> None:
        if pool.name in self._removals:
            return
        task = asyncio.create_task(
            self._remove(pool, provider, node, reason), name=f"remove-{node}"
        )
        self._removals[pool.name] = task
        task.add_done_callback(lambda _t: self._removals.pop(pool.name, None))

    async def _remove(
        self, pool: NodePoolSettings, provider: NodePoolProvider, node: str, reason: str
    ) -> None:
        log.info("pool %s: removing node %s: %s", pool.name, node, reason)
        ok, why = True, ""
        if self.remover is not None:
            result = await self.remover.drain(node)
            ok, why = result.ok, result.reason
        now = self.clock()
        if not ok:
            self.metrics.errors.labels("drain").inc()
            log.warning("pool %s: node %s stays: %s", pool.name, node, why)
            # The drainer has recorded ScaleDownFailed on the node with the same reason.
            self.state = removal_failed(self.state, pool.name, node, now, self.policy)
            await self._save(self.last_decision)
            return
        try:
            current = (await provider.size(pool)).target
            await provider.remove_node(pool, node, max(pool.min_size, current - 1))
        except ProviderError as exc:
            if self.remover is not None:
                with contextlib.suppress(Exception):
                    await self.remover.uncordon(node)
            self.state = removal_failed(self.state, pool.name, node, now, self.policy)
            self._failed(pool.name, exc, now, f"removing node {node}")
            await self._event(
                ObjectRef("Node", "", node), "Warning", "ScaleDownFailed", f"the provider: {exc}"
            )
            await self._save(self.last_decision)
            return
        self.state = removal_done(self.state, pool.name, node, now)
        self.metrics.scaled(pool.name, SCALE_DOWN, 1)
        log.info("pool %s: node %s removed", pool.name, node)
        await self._event(
            ObjectRef("Node", "", node),
            "Normal",
            "ScaleDown",
            f"node removed by epcsched: {reason}",
        )
        await self._save(self.last_decision)

    async def _tell_pods(self, decision: Decision, now: float) -> None:
        tell = []
        for key, reason in decision.unschedulable:
            last = self._told.get(key)
            if last is not None and last[0] == reason and now - last[1] < NOT_TRIGGERED_EVERY:
                continue
            self._told[key] = (reason, now)
            tell.append(
                self._pod_event(
                    key, "Normal", "NotTriggerScaleUp", f"pod didn't trigger scale-up: {reason}"
                )
            )
        await self._each(tell)
        pending = {p.key for p in self.cluster.snapshot.pending_pods()}
        for key in [k for k in self._told if k not in pending]:
            del self._told[key]

    async def _each(self, calls: Iterable[Awaitable[None]], width: int = 32) -> None:
        """Await `calls` (Events, which never raise) `width` at a time."""
        batch: list[Awaitable[None]] = []
        for call in calls:
            batch.append(call)
            if len(batch) == width:
                await asyncio.gather(*batch)
                batch = []
        if batch:
            await asyncio.gather(*batch)

    async def _pod_event(self, key: str, type_: EventType, reason: str, message: str) -> None:
        pod = self.cluster.snapshot.pods.get(key)
        namespace, _, name = key.partition("/")
        await self._event(
            ObjectRef("Pod", namespace, name, pod.uid if pod else ""), type_, reason, message
        )

    async def _event(self, ref: ObjectRef, type_: EventType, reason: str, message: str) -> None:
        if self.recorder is not None:
            await self.recorder.record(ref, type_, reason, message)

    # ----- status ----------------------------------------------------------------------------
    def status_body(self, decision: Decision | None) -> dict[str, Any]:
        body: dict[str, Any] = {"updated": rfc3339(self.clock())}
        telemetry = self.telemetry
        if telemetry is None:
            body["telemetry"] = "off: utilization from requests"
        elif telemetry.stale:
            body["telemetry"] = f"stale, using requests: {telemetry.detail().get('error')}"
        else:
            body["telemetry"] = "measured EPC use and paging from Prometheus"
        state = self.state.to_dict()
        if decision is not None:
            for pool in decision.pools:
                entry = state["pools"].setdefault(pool.name, {})
                entry["current"] = pool.current_size
                entry["target"] = pool.target_size
        body.update(state)
        if decision is not None:
            body["lastPlan"] = decision.to_json()
        return body

    async def _save(self, decision: Decision | None) -> None:
        if self.status is None or not self.acting():
            return
        try:
            await self.status.save(self.status_body(decision))
        except Exception as exc:  # the next loop writes again
            self.metrics.errors.labels("status").inc()
            log.warning("writing the status ConfigMap failed: %s", exc)

    async def _load(self) -> None:
        if self.status is None:
            return
        try:
            data = await self.status.load()
        except Exception as exc:
            self.metrics.errors.labels("status").inc()
            log.warning("reading the status ConfigMap failed, starting afresh: %s", exc)
            return
        if data is None:
            return
        try:
            self.state = ControllerState.from_dict(data)
        except ValueError as exc:
            log.warning("the status ConfigMap is unreadable (%s); starting afresh", exc)
            return
        log.info(
            "continuing from the status ConfigMap: %s",
            ", ".join(f"{n} target {m.target}" for n, m in sorted(self.state.pools.items()))
            or "no pools yet",
        )

    async def stop(self) -> None:
        tasks = list(self._removals.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
