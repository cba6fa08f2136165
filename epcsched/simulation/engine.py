"""The discrete-event simulation of one policy on one scenario.

Events are pod arrivals, pod completions, autoscaler ticks and nodes becoming Ready, on a
simulated clock; nothing reads the wall clock, and a run is a function of the scenario, the
workload and the policy. At equal times completions come first, then nodes turning Ready, then
arrivals, then ticks. Placements go through the core (`choose_node`) or the kube-scheduler
baseline over the same `ClusterSnapshot` the extender serves from; ties go to the node name.

Pods that fit nowhere wait, and are retried in submission order whenever a node gains room (a pod
finishes, a node turns Ready). Only that node gained room, so a waiting pod is retried only when
it would fit there; it is then placed by the full policy, which picks that node.

A Deployment workload (`deployment.py`) adds replica pods during the run: its scaler's HPA syncs
are events too (last at equal times, after the autoscaler's tick), each creating or deleting
replicas as the HPA rule asks; the replicas' EPC use between events follows the load curve, and
the time each running enclave spends over its EPC limit is integrated exactly.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from epcsched.core.autoscale import (
    SCALE_UP,
    Backoff,
    ControllerPolicy,
    ControllerState,
    PoolView,
    decide,
    removal_done,
)
from epcsched.core.fit import PodRequest
from epcsched.core.snapshot import ClusterSnapshot, IntArray
from epcsched.metricsapi.hpa import replicas_for_pods_metric, replicas_for_utilization
from epcsched.metricsapi.values import USAGE_RATIO, Measurements, PodEntry, pod_value
from epcsched.model import NodeInfo, PodInfo
from epcsched.quantity import parse_quantity
from epcsched.simulation.baselines import PolicySpec, policy_spec
from epcsched.simulation.deployment import CPU, FIXED, DeploymentSpec, ScalerSpec
from epcsched.simulation.placer import Placer
from epcsched.simulation.scenario import Scenario
from epcsched.simulation.workload import Workload

NAMESPACE = "sim"
SERIES_POINTS = 400
WAIT_QUANTILES = 101

# Event kinds, in the order they are handled at equal times.
_COMPLETE, _READY, _ARRIVE, _TICK, _HPA = 0, 1, 2, 3, 4
GIB = 2**30

#: Called before each binding with (snapshot, pod, request, chosen node or None).
DecisionObserver = Callable[[ClusterSnapshot, PodInfo, PodRequest, str | None], None]


@dataclass(slots=True)
class RunResult:
    """What one run measured; picklable so it can come back from a process or a Dask worker."""

    policy: str
    seed: int
    variant: str
    metrics: dict[str, float | int]
    """The per-policy keys of results.json (see `report.METRIC_KEYS`) plus a few extras."""
    times: list[float] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)
    nodes: list[int] = field(default_factory=list)
    wait_quantiles: list[float] = field(default_factory=list)
    """Waits at 0%, 1%, ..., 100% (pods never scheduled count up to the horizon)."""
    placements: list[tuple[str, str]] = field(default_factory=list)
    """(pod id, node) in decision order, when recorded."""
    max_epc_overcommit: int = 0
    """Most bytes by which any node's running enclaves exceeded its EPC."""
    replicas: list[int] = field(default_factory=list)
    """A Deployment's replica count (the scale's spec) at each of `times`."""
    pool_nodes: dict[str, list[int]] = field(default_factory=dict)
    """Each pool's nodes (Ready and booting, as billed) at each of `times`."""
    spent: list[float] = field(default_factory=list)
    """Dollars billed for nodes from the start to each of `times` (the pools' costPerHour)."""


@dataclass(slots=True)
class _Pool:
    name: str
    template: NodeInfo
    min_size: int
    max_size: int
    cost_per_hour: float
    priority: int
    ready: list[str] = field(default_factory=list)
    booting: list[str] = field(default_factory=list)
    created: int = 0


class _Pending:
    """Waiting pods in submission order, with a vector test of which fit some free amounts."""

    def __init__(self, epc: IntArray, cpu: IntArray, memory: IntArray) -> None:
        self.index: IntArray = np.zeros(0, dtype=np.int64)
        self._epc, self._cpu, self._memory = epc, cpu, memory

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def extend(self, epc: int, cpu: int, memory: int) -> None:
        """Room for one more pod, created during the run (a Deployment's replica)."""
        self._epc = np.append(self._epc, epc)
        self._cpu = np.append(self._cpu, cpu)
        self._memory = np.append(self._memory, memory)

    def add(self, pod: int) -> None:
        at = int(np.searchsorted(self.index, pod))
        self.index = np.insert(self.index, at, pod)

    def remove(self, pod: int) -> None:
        at = int(np.searchsorted(self.index, pod))
        self.index = np.delete(self.index, at)

    def fitting(self, epc: int, cpu: int, memory: int, after: int) -> int | None:
        """First waiting pod after position `after` that fits these free amounts, if any."""
        tail = self.index[self.index > after]
        if tail.shape[0] == 0:
            return None
        ok = (self._epc[tail] <= epc) & (self._cpu[tail] <= cpu) & (self._memory[tail] <= memory)
        hits = np.flatnonzero(ok)
        return int(tail[int(hits[0])]) if hits.shape[0] else None


class Simulation:
    """One run. Call `run()` once."""

    def __init__(
        self,
        scenario: Scenario,
        workload: Workload,
        policy: str | PolicySpec,
        *,
        record_placements: bool = False,
        observer: DecisionObserver | None = None,
        snapshot: ClusterSnapshot | None = None,
    ) -> None:
        self.scenario = scenario
        self.workload = workload
        self.deployment: DeploymentSpec | None = scenario.deployment
        self.scaler: ScalerSpec | None = None
        if self.deployment is not None:
            # The run is named after its scaler; pods are placed by the scenario's one policy.
            name = policy if isinstance(policy, str) else policy.name
            try:
                self.scaler = self.deployment.scaler(name)
            except KeyError:
                raise ValueError(f"unknown scaler {name!r}") from None
            placement = policy_spec(scenario.policies[0], scenario.autoscaler)
            self.spec = dataclasses.replace(placement, name=name)
        else:
            self.spec = (
                policy
                if isinstance(policy, PolicySpec)
                else policy_spec(policy, scenario.autoscaler)
            )
        self.record = record_placements
        self.observer = observer
        self.resource = scenario.epc_resource
        if snapshot is None:
            snapshot = ClusterSnapshot(
                scenario.epc_resources, headroom=scenario.headroom, capacity=128
            )
        self.snapshot = snapshot
        """The cluster the run places pods on; a caller may pass one to watch it live."""
        self.placer = Placer(self.snapshot)
        n = len(workload)
        self.jobs = n
        """Pods 0..jobs-1 are the workload's jobs; a Deployment's replicas come after them."""
        self.ids: list[str] = list(workload.ids)
        self.horizon = scenario.horizon
        self.now = 0.0
        self.seq = 0
        self.events: list[tuple[float, int, int, int, int]] = []
        declared = workload.epc if self.spec.declares_epc else np.zeros(n, dtype=np.int64)
        self.declared: list[int] = declared.tolist()
        self.true_epc: list[int] = workload.epc.tolist()
        self.cpu: list[int] = workload.cpu_milli.tolist()
        self.memory: list[int] = workload.memory.tolist()
        self.duration: list[float] = workload.duration.tolist()
        self.submit: list[float] = workload.submit.tolist()
        self.pending = _Pending(declared, workload.cpu_milli, workload.memory)
        self.pod_node: list[str | None] = [None] * n
        self.first_start: list[float] = [math.nan] * n
        self.work_left: list[float] = [0.0] * n
        self.mark: list[float] = [0.0] * n
        self.version: list[int] = [0] * n
        self.done = 0
        self.evictions = 0
        self.node_pods: dict[str, set[int]] = {}
        self.node_pool: dict[str, _Pool] = {}
        self.demand: dict[str, int] = {}
        self.capacity: dict[str, int] = {}
        self.slow: dict[str, float] = {}
        self.enclaves: dict[str, int] = {}
        self.control = ControllerState()
        """The autoscaler controller's memory (core/autoscale.py), as the live loop keeps it."""
        self.controller: ControllerPolicy | None = None
        settings = scenario.autoscaler
        if self.spec.autoscaler is not None and settings is not None:
            self.controller = ControllerPolicy(
                plan=self.spec.autoscaler,
                max_node_provision_time=settings.max_node_provision_time,
                backoff=Backoff(
                    settings.backoff.initial, settings.backoff.max, settings.backoff.reset
                ),
            )
        self.pools = [
            _Pool(
                p.settings.name,
                p.template,
                p.settings.min_size,
                p.settings.max_size,
                p.settings.cost_per_hour,
                p.settings.priority,
            )
            for p in scenario.pools
        ]
        # Running integrals and counters for the metrics.
        self.provisioned = 0
        self.peak = 0
        self.node_seconds: dict[str, float] = {p.name: 0.0 for p in self.pools}
        self.overcommitted_pods = 0
        self.overcommit_pod_seconds = 0.0
        self.max_overcommit = 0
        self.epc_used = 0
        self.epc_capacity = 0
        self.utilization_seconds = 0.0
        self.series_t = np.linspace(0.0, self.horizon, SERIES_POINTS).tolist()
        self.series_at = 0
        self.series_pending: list[int] = []
        self.series_nodes: list[int] = []
        self.series_pool_nodes: dict[str, list[int]] = {p.name: [] for p in self.pools}
        self.series_spent: list[float] = []
        self.peak_cost_rate = 0.0
        self.placements: list[tuple[str, str]] = []
        # The Deployment: its live replicas in creation order, the HPA's memory, and integrals.
        self.replicas: list[int] = []
        self.running_replicas = 0
        self.hpa_history: tuple[tuple[float, int], ...] = ()
        self.replicas_created = 0
        self.peak_replicas = 0
        self.scale_seconds = 0.0
        self.replica_seconds = 0.0
        self.over_limit_seconds = 0.0
        self.no_replica_seconds = 0.0
        self.peak_ratio = 0.0
        self.series_replicas: list[int] = []

    # ----- clock -------------------------------------------------------------------------
    def _advance(self, t: float) -> None:
        dt = t - self.now
        if dt > 0:
            rate = 0.0
            for pool in self.pools:
                count = len(pool.ready) + len(pool.booting)
                self.node_seconds[pool.name] += dt * count
                rate += count * pool.cost_per_hour
            # Only states that last: a node asked for and given up at the same instant is
            # never billed.
            self.peak_cost_rate = max(self.peak_cost_rate, rate)
            self.overcommit_pod_seconds += dt * self.overcommitted_pods
            if self.epc_capacity > 0:
                self.utilization_seconds += dt * self.epc_used / self.epc_capacity
            if self.deployment is not None:
                self._integrate_load(self.deployment, self.now, t)
        while self.series_at < SERIES_POINTS and self.series_t[self.series_at] <= t:
            self.series_pending.append(len(self.pending))
            self.series_nodes.append(self.provisioned)
            self.series_replicas.append(len(self.replicas))
            # node_seconds runs to max(now, t); the counts have held since the sample time.
            back = max(self.now, t) - self.series_t[self.series_at]
            spent = 0.0
            for pool in self.pools:
                count = len(pool.ready) + len(pool.booting)
                self.series_pool_nodes[pool.name].append(count)
                spent += (self.node_seconds[pool.name] - back * count) * pool.cost_per_hour
            self.series_spent.append(spent / 3600.0)
            self.series_at += 1
        self.now = max(self.now, t)

    def _integrate_load(self, spec: DeploymentSpec, start: float, end: float) -> None:
        """The replicas' EPC use over [start, end], during which the running count is fixed:
        each holds `base + L(t) / n`, over its limit while `L(t) > n * (limit - base)`."""
        n = self.running_replicas
        self.scale_seconds += (end - start) * len(self.replicas)
        if n == 0:
            self.no_replica_seconds += end - start
            return
        self.replica_seconds += (end - start) * n
        self.over_limit_seconds += n * spec.load.seconds_above(start, end, n * spec.headroom)
        highest = spec.epc_base + spec.load.peak(start, end) / n
        self.peak_ratio = max(self.peak_ratio, highest / spec.epc_limit)

    def _push(self, t: float, kind: int, payload: int, version: int = 0) -> None:
        if t == math.inf:
            # A replica runs until it is deleted: it has no completion to wait for.
            return
        self.seq += 1
        heapq.heappush(self.events, (t, kind, self.seq, payload, version))

    # ----- nodes -------------------------------------------------------------------------
    def _new_node(self, pool: _Pool) -> str:
        name = f"{pool.name}-{pool.created:05d}"
        pool.created += 1
        self.provisioned += 1
        self.peak = max(self.peak, self.provisioned)
        return name

    def _node_ready(self, pool: _Pool, name: str) -> None:
        if name in pool.booting:
            pool.booting.remove(name)
        pool.ready.append(name)
        info = NodeInfo(
            name=name,
            epc_allocatable=dict(pool.template.epc_allocatable),
            cpu_milli=pool.template.cpu_milli,
            memory=pool.template.memory,
            pods=pool.template.pods,
            labels=dict(pool.template.labels),
            taints=pool.template.taints,
        )
        self.snapshot.upsert_node(info)
        self.node_pool[name] = pool
        self.node_pods[name] = set()
        self.demand[name] = 0
        self.capacity[name] = info.epc_allocatable.get(self.resource, 0)
        self.slow[name] = 1.0
        self.enclaves[name] = 0
        self.epc_capacity += self.capacity[name]
        self._retry(name)

    def _remove_node(self, name: str) -> None:
        pool = self.node_pool.pop(name)
        evicted = sorted(self.node_pods[name])
        for pod in evicted:
            self._unbind(pod)
            self.evictions += 1
        pool.ready.remove(name)
        self.snapshot.remove_node(name)
        self.epc_capacity -= self.capacity.pop(name)
        for table in (self.node_pods, self.demand, self.slow, self.enclaves):
            del table[name]
        self.provisioned -= 1
        # Evicted pods are recreated by their controllers and start over.
        for pod in evicted:
            self._schedule(pod)

    # ----- pods --------------------------------------------------------------------------
    def _pod(self, pod: int, node: str | None) -> PodInfo:
        epc = self.declared[pod]
        return PodInfo(
            namespace=NAMESPACE,
            name=self.ids[pod],
            uid=str(pod),
            node_name=node,
            phase="Running" if node else "Pending",
            # A waiting pod has met the scheduler and found no node, as the autoscaler expects.
            marked_unschedulable=node is None,
            epc={self.resource: epc} if epc else {},
            cpu_milli=self.cpu[pod],
            memory=self.memory[pod],
            # A workload's pods are recreated by their controller when evicted (see
            # `_remove_node`), so they never keep a node from being drained.
            owner_kind="Job" if pod < self.jobs else "ReplicaSet",
        )

    def _request(self, pod: int) -> PodRequest:
        epc = self.declared[pod]
        return PodRequest(
            epc={self.resource: epc} if epc else {},
            cpu_milli=self.cpu[pod],
            memory=self.memory[pod],
        )

    def _decide(self, pod: int) -> str | None:
        request = self._request(pod)
        node = self.placer.choose(request, self.spec)
        if self.observer is not None:
            self.observer(self.snapshot, self._pod(pod, None), request, node)
        return node

    def _schedule(self, pod: int) -> None:
        """A new (or recreated) pod meets the scheduler: bind it or let it wait."""
        node = self._decide(pod)
        if node is None:
            self.pending.add(pod)
            self.snapshot.upsert_pod(self._pod(pod, None))
        else:
            self._bind(pod, node)

    def _bind(self, pod: int, node: str) -> None:
        if self.record:
            self.placements.append((self.ids[pod], node))
        self.snapshot.upsert_pod(self._pod(pod, node))
        self.pod_node[pod] = node
        if math.isnan(self.first_start[pod]):
            self.first_start[pod] = self.now
        self.node_pods[node].add(pod)
        self.work_left[pod] = self.duration[pod]
        self.mark[pod] = self.now
        self.version[pod] += 1
        if pod >= self.jobs:
            self.running_replicas += 1
        epc = self.true_epc[pod]
        if epc:
            count = self.enclaves[node]
            self.enclaves[node] = count + 1
            if not self._set_demand(node, self.demand[node] + epc, count, count + 1):
                self._push(
                    self.now + self.duration[pod] * self.slow[node],
                    _COMPLETE,
                    pod,
                    self.version[pod],
                )
        else:
            self._push(self.now + self.duration[pod], _COMPLETE, pod, self.version[pod])

    def _unbind(self, pod: int) -> str:
        node = self.pod_node[pod]
        assert node is not None
        self.pod_node[pod] = None
        self.version[pod] += 1
        self.node_pods[node].discard(pod)
        self.snapshot.remove_pod(f"{NAMESPACE}/{self.ids[pod]}")
        if pod >= self.jobs:
            self.running_replicas -= 1
        epc = self.true_epc[pod]
        if epc:
            count = self.enclaves[node]
            self.enclaves[node] = count - 1
            self._set_demand(node, self.demand[node] - epc, count, count - 1)
        return node

    def _set_demand(self, node: str, demand: int, before: int, after: int) -> bool:
        """Record the node's true EPC demand and enclave count (`before` -> `after`).

        Returns True if the change of speed rescheduled the completions of its enclaves.
        """
        capacity = self.capacity[node]
        old = self.demand[node]
        self.demand[node] = demand
        self.epc_used += min(demand, capacity) - min(old, capacity)
        self.max_overcommit = max(self.max_overcommit, demand - capacity)
        if old > capacity:
            self.overcommitted_pods -= before
        if demand > capacity:
            self.overcommitted_pods += after
        old_slow = self.slow[node]
        new_slow = self.scenario.paging.slowdown(demand, capacity)
        if new_slow == old_slow:
            return False
        self.slow[node] = new_slow
        for other in self.node_pods[node]:
            if not self.true_epc[other]:
                continue
            # Progress so far was at the old speed; the rest runs at the new one.
            elapsed = self.now - self.mark[other]
            if elapsed > 0:
                self.work_left[other] -= elapsed / old_slow
            self.mark[other] = self.now
            self.version[other] += 1
            self._push(
                self.now + self.work_left[other] * new_slow, _COMPLETE, other, self.version[other]
            )
        return True

    def _complete(self, pod: int) -> None:
        node = self._unbind(pod)
        self.done += 1
        self._retry(node)

    def _retry(self, node: str) -> None:
        """Offer `node`'s new room to waiting pods, oldest first."""
        if not len(self.pending):
            return
        snap = self.snapshot
        slot = snap.slots[node]
        info = snap.infos[slot]
        if info is None or int(snap.pod_count[slot]) >= info.pods:
            return
        after = -1
        while True:
            column = snap.epc.get(self.resource)
            epc_free = 0
            if column is not None and column.has[slot]:
                epc_free = int(
                    column.allocatable[slot] - column.requested[slot] - column.reserved[slot]
                )
            pod = self.pending.fitting(
                epc_free,
                int(snap.cpu_allocatable[slot] - snap.cpu_requested[slot]),
                int(snap.memory_allocatable[slot] - snap.memory_requested[slot]),
                after,
            )
            if pod is None:
                return
            after = pod
            chosen = self._decide(pod)
            if chosen is not None:
                self.pending.remove(pod)
                self._bind(pod, chosen)
                if int(snap.pod_count[slot]) >= info.pods:
                    return

    # ----- autoscaling -------------------------------------------------------------------
    def _tick(self) -> None:
        """One loop of the live autoscaler's controller, with this engine as its provider:
        nodes asked for join after the scenario's provisioning delay, and a drained node's
        pods are evicted at once and meet the scheduler again."""
        assert self.controller is not None
        views = [
            PoolView(
                name=p.name,
                template=p.template,
                min_size=p.min_size,
                max_size=p.max_size,
                nodes=tuple(p.ready),
                usable=tuple(p.ready),
                target=len(p.ready) + len(p.booting),
                cost_per_hour=p.cost_per_hour,
                priority=p.priority,
            )
            for p in self.pools
        ]
        self.control, decision = decide(
            self.control, views, self.snapshot, self.controller, self.now
        )
        by_name = {p.name: p for p in self.pools}
        delay = self.scenario.provision_delay
        for change in decision.pools:
            pool = by_name[change.name]
            if change.action == SCALE_UP:
                for _ in range(change.target_size - change.current_size):
                    name = self._new_node(pool)
                    pool.booting.append(name)
                    self._push(self.now + delay, _READY, self.pools.index(pool), pool.created - 1)
            elif change.drain is not None:
                if change.drain in self.node_pool:
                    self._remove_node(change.drain)
                self.control = removal_done(self.control, change.name, change.drain, self.now)
            elif change.given_up:
                # The oldest requests are the ones given up; their nodes never join.
                for _ in range(min(change.given_up, len(pool.booting))):
                    pool.booting.pop(0)
                    self.provisioned -= 1

    # ----- a Deployment and its scaler ----------------------------------------------------
    def _create_replicas(self, spec: DeploymentSpec, count: int) -> None:
        """The ReplicaSet creates `count` pods; each meets the scheduler at once."""
        for _ in range(count):
            pod = len(self.ids)
            self.ids.append(f"{spec.name}-{self.replicas_created:05d}")
            self.replicas_created += 1
            declared = spec.epc_limit if self.spec.declares_epc else 0
            self.declared.append(declared)
            self.true_epc.append(spec.epc_limit)
            self.cpu.append(spec.cpu_request)
            self.memory.append(spec.memory)
            self.duration.append(math.inf)
            self.submit.append(self.now)
            self.pod_node.append(None)
            self.first_start.append(math.nan)
            self.work_left.append(0.0)
            self.mark.append(0.0)
            self.version.append(0)
            self.pending.extend(declared, spec.cpu_request, spec.memory)
            self.replicas.append(pod)
            self._schedule(pod)
        self.peak_replicas = max(self.peak_replicas, len(self.replicas))

    def _delete_replicas(self, count: int) -> None:
        """The ReplicaSet deletes `count` pods, in its order: unscheduled pods first, then pods
        on the nodes that run the most of its replicas, newest first."""
        on_node: dict[str, int] = {}
        for pod in self.replicas:
            node = self.pod_node[pod]
            if node is not None:
                on_node[node] = on_node.get(node, 0) + 1

        def rank(pod: int) -> tuple[bool, int, int]:
            node = self.pod_node[pod]
            return (node is not None, -on_node[node] if node is not None else 0, -pod)

        for pod in sorted(self.replicas, key=rank)[:count]:
            self.replicas.remove(pod)
            if self.pod_node[pod] is None:
                self.pending.remove(pod)
                self.snapshot.remove_pod(f"{NAMESPACE}/{self.ids[pod]}")
                self.version[pod] += 1
            else:
                self._retry(self._unbind(pod))

    def _usage_ratio(self, spec: DeploymentSpec, share: float) -> int:
        """`sgx_epc_usage_ratio` of a running replica holding `share` bytes of load, in
        thousandths, exactly as the metrics API serves it and the HPA reads it back."""
        held = spec.epc_base + round(share)
        replica = PodEntry(NAMESPACE, spec.name, "replica", epc_limit=spec.epc_limit)
        value = pod_value(USAGE_RATIO, replica, Measurements(self.now, pod_usage={"replica": held}))
        assert value is not None
        return math.ceil(parse_quantity(value) * 1000)

    def _hpa_sync(self, spec: DeploymentSpec, scaler: ScalerSpec) -> None:
        """One reconciliation of the HPA: read the metric of the running replicas, apply the
        replica rule and the behavior, and scale the Deployment."""
        current = len(self.replicas)
        running = self.running_replicas
        if running == 0:
            # No ready pod has a value: the controller keeps the scale.
            return
        share = spec.load.at(self.now) / running
        pending = current - running
        if scaler.metric == CPU:
            use = spec.cpu_base + round(spec.cpu_per_gib * share / GIB)
            desired = replicas_for_utilization(
                current,
                [use] * running,
                [spec.cpu_request] * running,
                scaler.target,
                unready_requests=[spec.cpu_request] * pending,
                tolerance=spec.tolerance,
            )
        else:
            desired = replicas_for_pods_metric(
                current,
                [self._usage_ratio(spec, share)] * running,
                scaler.target,
                unready=pending,
                tolerance=spec.tolerance,
            )
        target, self.hpa_history = scaler.behavior.next_replicas(
            current, desired, self.now, self.hpa_history
        )
        if target > current:
            self._create_replicas(spec, target - current)
        elif target < current:
            self._delete_replicas(current - target)

    # ----- the run -----------------------------------------------------------------------
    def run(self) -> RunResult:
        for pool, spec in zip(self.pools, self.scenario.pools, strict=True):
            for _ in range(spec.initial_size):
                self._node_ready(pool, self._new_node(pool))
        interval = self.scenario.autoscaler.interval if self.scenario.autoscaler else 0.0
        if self.spec.autoscaler is not None and interval > 0:
            self._push(interval, _TICK, 0)
        deployment, scaler = self.deployment, self.scaler
        if deployment is not None and scaler is not None:
            self._create_replicas(deployment, scaler.replicas)
            if scaler.metric != FIXED:
                self._push(deployment.sync_period, _HPA, 0)
        submit = self.submit
        # Only the jobs arrive on their own; replicas are appended to `submit` as they are made.
        n = self.jobs
        nxt = 0
        while True:
            arrival = submit[nxt] if nxt < n else math.inf
            head = self.events[0] if self.events else None
            if head is not None and (
                head[0] < arrival or (head[0] == arrival and head[1] < _ARRIVE)
            ):
                t = head[0]
                if t > self.horizon:
                    break
                heapq.heappop(self.events)
                self._advance(t)
                _, kind, _, payload, version = head
                if kind == _COMPLETE:
                    if version == self.version[payload]:
                        self._complete(payload)
                elif kind == _READY:
                    pool = self.pools[payload]
                    name = f"{pool.name}-{version:05d}"
                    if name in pool.booting:
                        self._node_ready(pool, name)
                elif kind == _TICK:
                    self._tick()
                    self._push(self.now + interval, _TICK, 0)
                elif deployment is not None and scaler is not None:
                    self._hpa_sync(deployment, scaler)
                    self._push(self.now + deployment.sync_period, _HPA, 0)
            else:
                if arrival > self.horizon:
                    break
                self._advance(arrival)
                self._schedule(nxt)
                nxt += 1
        self._advance(self.horizon)
        return self._result(nxt)

    def _result(self, submitted: int) -> RunResult:
        # The jobs submitted before the horizon, and every replica created.
        pods = np.r_[0:submitted, self.jobs : len(self.submit)]
        starts = np.asarray(self.first_start, dtype=np.float64)[pods]
        submits = np.asarray(self.submit, dtype=np.float64)[pods]
        submitted = int(pods.shape[0])
        never = np.isnan(starts)
        waits = np.where(never, self.horizon - submits, starts - submits)
        if submitted:
            # Observed waits, not interpolations between them: the plot is an empirical CDF.
            shares = np.linspace(0, 1, WAIT_QUANTILES)
            quantiles = np.quantile(waits, shares, method="inverted_cdf").tolist()
            p50, p95 = (float(x) for x in np.quantile(waits, [0.5, 0.95]))
            wait_max = float(waits.max())
        else:
            quantiles, p50, p95, wait_max = [0.0] * WAIT_QUANTILES, 0.0, 0.0, 0.0
        hours = {name: seconds / 3600.0 for name, seconds in self.node_seconds.items()}
        cost = sum(hours[p.name] * p.cost_per_hour for p in self.pools)
        metrics: dict[str, float | int] = {
            "podsSubmitted": submitted,
            "podsCompleted": self.done,
            "podsNeverScheduled": int(never.sum()),
            "waitP50S": round(p50, 3),
            "waitP95S": round(p95, 3),
            "waitMaxS": round(wait_max, 3),
            "nodeHours": round(sum(hours.values()), 4),
            "cost": round(cost, 4),
            "peakCostPerHour": round(self.peak_cost_rate, 4),
            "peakNodes": self.peak,
            "epcOvercommitPodSeconds": round(self.overcommit_pod_seconds, 3),
            "meanEpcUtilization": round(self.utilization_seconds / self.horizon, 4),
            "podsWaited": int(((waits > 0) | never).sum()),
            "evictions": self.evictions,
        }
        if self.deployment is not None:
            share = self.over_limit_seconds / self.replica_seconds if self.replica_seconds else 0.0
            metrics.update(
                {
                    "replicaPodsCreated": self.replicas_created,
                    "peakReplicas": self.peak_replicas,
                    "meanReplicas": round(self.scale_seconds / self.horizon, 3),
                    "enclaveSecondsOverLimit": round(self.over_limit_seconds, 1),
                    "overLimitShare": round(share, 4),
                    "peakUsageRatio": round(self.peak_ratio, 3),
                    "secondsNoReplicaRunning": round(self.no_replica_seconds, 1),
                }
            )
        return RunResult(
            policy=self.spec.name,
            seed=self.scenario.seed,
            variant="",
            metrics=metrics,
            times=self.series_t[: len(self.series_nodes)],
            pending=self.series_pending,
            nodes=self.series_nodes,
            wait_quantiles=[round(float(q), 3) for q in quantiles],
            placements=self.placements,
            max_epc_overcommit=self.max_overcommit,
            replicas=self.series_replicas,
            pool_nodes=self.series_pool_nodes,
            spent=self.series_spent,
        )


def simulate(
    scenario: Scenario,
    workload: Workload,
    policy: str,
    *,
    record_placements: bool = False,
    observer: DecisionObserver | None = None,
) -> RunResult:
    """Run `policy` on `scenario` with `workload` and return what it measured."""
    return Simulation(
        scenario, workload, policy, record_placements=record_placements, observer=observer
    ).run()
