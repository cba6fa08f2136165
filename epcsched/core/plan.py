"""Scale-up and scale-down plans for node pools, decided on a copy of the cluster.

The live autoscaler and the simulator both call `plan`; it reads no clock (time is `now`), does no
I/O and never mutates the snapshot it is given. It follows the three rules of DESIGN.md section 5:

1. Pending pods that no existing (or already requested) node can hold are packed
   first-fit-decreasing onto new nodes of each pool's template, and an expander picks the pool
   (`least-waste` counts EPC, `cheapest`, `priority`). Scale-from-zero uses the template only.
2. EPC pressure: a pool whose requested EPC is above `target_utilization` of its allocatable
   grows by the HPA rule `ceil(size * utilization / target)`, outside a `tolerance` dead band.
3. Scale-down: a node below `scale_down_utilization` for `scale_down_unneeded_time`, whose pods
   all fit on the remaining nodes, is removed; never in a pool that is growing or grew less than
   `scale_down_delay_after_add` ago, and never when the removal would itself create pressure.

Sizes are clamped to each pool's `[min_size, max_size]`. Nodes asked for but not yet Ready
(`in_flight`) count as capacity, so a pending pod does not trigger a second scale-up while its
node boots. With `epc_aware=False` the same code emulates cluster-autoscaler, which packs and
measures utilization on CPU and memory only and ignores EPC in its choices.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

from epcsched.core.fit import PodRequest, fit_masks
from epcsched.core.placement import choose_node, resources_fit
from epcsched.core.snapshot import ClusterSnapshot
from epcsched.model import NodeInfo, PodInfo

if TYPE_CHECKING:
    from epcsched.config import AutoscalerSettings

EXPANDERS = ("least-waste", "cheapest", "priority")


@dataclass(frozen=True, slots=True)
class PlanPolicy:
    """The knobs of the planner (the `autoscaler` keys of the configuration)."""

    expander: str = "least-waste"
    """How to choose among pools that could hold pending pods."""
    target_utilization: float = 0.8
    """Pool EPC requested/allocatable to stay under."""
    tolerance: float = 0.1
    """HPA-style dead band around the target: no change while within it."""
    scale_down_utilization: float = 0.5
    """Nodes below this share of their EPC (CPU/memory when they have none) are unneeded."""
    scale_down_unneeded_time: float = 600.0
    """Seconds a node must stay unneeded before it is removed."""
    scale_down_delay_after_add: float = 600.0
    """Seconds after a pool's last scale-up during which it is not scaled down."""
    strategy: str = "binpack"
    """Scoring strategy for what-if placements on the copy (the extender's strategy)."""
    epc_aware: bool = True
    """False: pack and measure on CPU and memory only (cluster-autoscaler emulation)."""
    pressure: bool = True
    """Apply the EPC pressure rule."""
    epc_pods_only: bool = True
    """Plan scale-ups for pending EPC pods only (another autoscaler handles plain pods)."""

    def __post_init__(self) -> None:
        if self.expander not in EXPANDERS:
            raise ValueError(f"expander must be one of {', '.join(EXPANDERS)}")
        if not 0 < self.target_utilization <= 1:
            raise ValueError("target_utilization must be in (0, 1]")

    @classmethod
    def from_settings(
        cls, settings: AutoscalerSettings, *, strategy: str = "binpack", **overrides: bool
    ) -> PlanPolicy:
        """The policy that the `autoscaler` section of the configuration describes."""
        return cls(
            expander=settings.expander,
            target_utilization=settings.target_utilization,
            tolerance=settings.tolerance,
            scale_down_utilization=settings.scale_down_utilization,
            scale_down_unneeded_time=settings.scale_down_unneeded_time,
            scale_down_delay_after_add=settings.scale_down_delay_after_add,
            strategy=strategy,
            **overrides,
        )


@dataclass(frozen=True, slots=True)
class PoolState:
    """One node pool as the planner sees it at `now`."""

    name: str
    template: NodeInfo
    """One new node of this pool (its name is not used)."""
    min_size: int
    max_size: int
    nodes: tuple[str, ...] = ()
    """Ready nodes of this pool that are in the snapshot."""
    in_flight: int = 0
    """Nodes asked for that are not Ready yet."""
    cost_per_hour: float = 0.0
    priority: int = 0
    """Higher wins under the `priority` expander."""
    last_scale_up: float | None = None
    """When this pool last grew, for `scale_down_delay_after_add`."""

    @property
    def size(self) -> int:
        return len(self.nodes) + self.in_flight


@dataclass(frozen=True, slots=True)
class PlanInput:
    """Everything `plan` reads; the snapshot is forked, never changed."""

    snapshot: ClusterSnapshot
    pools: Sequence[PoolState]
    now: float
    policy: PlanPolicy = field(default_factory=PlanPolicy)
    unneeded_since: Mapping[str, float] = field(default_factory=dict)
    """Since when each node has been unneeded, as returned by the previous plan."""


@dataclass(frozen=True, slots=True)
class ScaleUp:
    pool: str
    count: int
    reason: str
    """`pending`, `pressure` or `min-size`."""
    pods: tuple[str, ...] = ()
    """Keys of the pending pods these nodes are for."""


@dataclass(frozen=True, slots=True)
class ScaleDown:
    pool: str
    node: str
    reason: str


@dataclass(frozen=True, slots=True)
class Plan:
    """What to change. Applying it is the caller's job (and it may refuse, e.g. not leader)."""

    scale_ups: tuple[ScaleUp, ...]
    scale_downs: tuple[ScaleDown, ...]
    targets: dict[str, int]
    """Each pool's size (Ready plus in flight) once the plan is carried out."""
    unneeded_since: dict[str, float]
    """State to pass to the next plan."""
    unschedulable: tuple[str, ...] = ()
    """Pending pods that no pool's template can hold, whatever the sizes."""

    def to_json(self) -> dict[str, object]:
        """The plan as `epcsched autoscaler --once --dry-run` prints it."""
        return {
            "scaleUps": [
                {"pool": u.pool, "count": u.count, "reason": u.reason, "pods": list(u.pods)}
                for u in self.scale_ups
            ],
            "scaleDowns": [
                {"pool": d.pool, "node": d.node, "reason": d.reason} for d in self.scale_downs
            ],
            "targets": dict(self.targets),
            "unschedulable": list(self.unschedulable),
        }


def _view(pod: PodInfo, policy: PlanPolicy) -> PodRequest:
    if policy.epc_aware:
        return PodRequest.of(pod)
    return PodRequest(cpu_milli=pod.cpu_milli, memory=pod.memory)


def _place(snapshot: ClusterSnapshot, pod: PodInfo, request: PodRequest, node: str) -> None:
    epc = dict(request.epc)
    snapshot.upsert_pod(dataclasses.replace(pod, node_name=node, phase="Running", epc=epc))


def _fits_first(snapshot: ClusterSnapshot, request: PodRequest) -> str | None:
    """First fit: the first node by name that holds `request` (bin-packing estimator order)."""
    names = snapshot.node_names()
    if not names:
        return None
    slots = snapshot.slots_of(names)
    ok = resources_fit(snapshot, request, slots) & fit_masks(snapshot, request, slots).ok
    hits = np.flatnonzero(ok)
    return names[int(hits[0])] if hits.size else None


@dataclass(slots=True)
class _Option:
    pool: PoolState
    nodes: int
    helped: list[int]
    waste: float

    def key(self, expander: str) -> tuple[float | int | str, ...]:
        if expander == "cheapest":
            return (self.nodes * self.pool.cost_per_hour / len(self.helped), self.pool.name)
        least_waste = (self.waste, -len(self.helped), self.nodes, self.pool.name)
        if expander == "priority":
            return (-self.pool.priority, *least_waste)
        return least_waste


def _estimate(
    base: ClusterSnapshot,
    pool: PoolState,
    pods: Sequence[PodInfo],
    requests: Sequence[PodRequest],
    room: int,
    policy: PlanPolicy,
) -> _Option | None:
    """First-fit-decreasing of `pods` (already in that order) onto at most `room` new nodes.

    Only pods whose nodeSelector the template's labels satisfy are packed.
    """
    bins = ClusterSnapshot(base.epc_resources, headroom=base.headroom, capacity=8)
    probe = ClusterSnapshot(base.epc_resources, headroom=base.headroom, capacity=1)
    probe.upsert_node(dataclasses.replace(pool.template, name="probe", ready=True))
    helped: list[int] = []
    opened = 0
    labels = pool.template.labels
    for i, (pod, request) in enumerate(zip(pods, requests, strict=True)):
        if any(labels.get(key) != value for key, value in pod.node_selector.items()):
            # A pod that selects other labels would never be scheduled on this pool's nodes.
            continue
        node = _fits_first(bins, request)
        if node is None:
            if opened >= room or _fits_first(probe, request) is None:
                continue
            node = f"new-{opened:06d}"
            bins.upsert_node(dataclasses.replace(pool.template, name=node, ready=True))
            opened += 1
        _place(bins, pod, request, node)
        helped.append(i)
    if not helped:
        return None
    return _Option(pool, opened, helped, _waste(bins, pool.template, policy))


def _waste(bins: ClusterSnapshot, template: NodeInfo, policy: PlanPolicy) -> float:
    """Share of the new nodes' capacity left idle: EPC when counted, else CPU and memory."""
    if policy.epc_aware and template.epc_allocatable:
        total = used = 0
        for column in bins.epc.values():
            total += int(column.allocatable.sum())
            used += int(column.requested.sum())
        return 1.0 - used / total if total else 1.0
    shares = []
    for requested, allocatable in (
        (bins.cpu_requested, bins.cpu_allocatable),
        (bins.memory_requested, bins.memory_allocatable),
    ):
        total = int(allocatable.sum())
        if total:
            shares.append(1.0 - int(requested.sum()) / total)
    return sum(shares) / len(shares) if shares else 1.0


def _add_nodes(snapshot: ClusterSnapshot, pool: PoolState, count: int, tag: str) -> list[str]:
    names = []
    for i in range(count):
        # "~" sorts after every real node name, so what-if nodes are chosen last on ties.
        name = f"~{tag}-{pool.name}-{i:06d}"
        snapshot.upsert_node(dataclasses.replace(pool.template, name=name, ready=True))
        names.append(name)
    return names


def _pool_epc(snapshot: ClusterSnapshot, nodes: Sequence[str]) -> tuple[int, int]:
    """Requested and allocatable EPC bytes over `nodes`, all names together."""
    slots = snapshot.slots_of(nodes)
    slots = slots[slots >= 0]
    requested = allocatable = 0
    for column in snapshot.epc.values():
        requested += int(column.requested[slots].sum() + column.reserved[slots].sum())
        allocatable += int(column.allocatable[slots].sum())
    return requested, allocatable


def node_utilization(snapshot: ClusterSnapshot, node: str, *, epc_aware: bool = True) -> float:
    """Share of a node in use: EPC requested/allocatable, or max of CPU and memory shares."""
    slot = snapshot.slots[node]
    if epc_aware:
        requested, allocatable = _pool_epc(snapshot, [node])
        if allocatable > 0:
            return requested / allocatable
    shares = [0.0]
    if snapshot.cpu_allocatable[slot] > 0:
        shares.append(int(snapshot.cpu_requested[slot]) / int(snapshot.cpu_allocatable[slot]))
    if snapshot.memory_allocatable[slot] > 0:
        shares.append(int(snapshot.memory_requested[slot]) / int(snapshot.memory_allocatable[slot]))
    return max(shares)


def _ratio(requested: int, allocatable: int, target: float) -> Fraction:
    return Fraction(requested) / (Fraction(allocatable) * Fraction(repr(target)))


def plan(inp: PlanInput) -> Plan:
    """Decide scale-ups and scale-downs for `inp.pools` at `inp.now` (see the module docstring)."""
    policy = inp.policy
    pools = sorted(inp.pools, key=lambda p: p.name)
    added: dict[str, int] = dict.fromkeys((p.name for p in pools), 0)
    ups: list[ScaleUp] = []

    pending = sorted(
        (
            p
            for p in inp.snapshot.pending_pods()
            if p.epc or not (policy.epc_aware and policy.epc_pods_only)
        ),
        key=lambda p: (-p.epc_total, -p.cpu_milli, -p.memory, p.key),
    )
    unschedulable: list[str] = []
    # Without pending pods nothing is placed, and the pressure rule reads the snapshot itself.
    view = inp.snapshot
    pool_nodes: dict[str, list[str]] = {p.name: list(p.nodes) for p in pools}
    if pending:
        fork = view = _fork(inp.snapshot)
        for pool in pools:
            pool_nodes[pool.name] += _add_nodes(fork, pool, pool.in_flight, "inflight")
        needs: list[PodInfo] = []
        inflight = [n for names in pool_nodes.values() for n in names if n[:1] == "~"]
        for pod in pending:
            request = _view(pod, policy)
            if policy.epc_aware:
                node = choose_node(fork, request, policy.strategy)
            else:
                # cluster-autoscaler trusts the scheduler: a pending pod did not fit the Ready
                # nodes. Only nodes still booting may hold it (judged on CPU and memory).
                node = _first_of(fork, request, inflight)
            if node is None:
                needs.append(pod)
            else:
                _place(fork, pod, request, node)
        while needs:
            requests = [_view(p, policy) for p in needs]
            options = []
            for pool in pools:
                room = pool.max_size - pool.size - added[pool.name]
                if room <= 0:
                    continue
                option = _estimate(fork, pool, needs, requests, room, policy)
                if option is not None:
                    options.append(option)
            if not options:
                unschedulable = [p.key for p in needs]
                break
            best = min(options, key=lambda o: o.key(policy.expander))
            count = best.nodes
            added[best.pool.name] += count
            helped = [needs[i] for i in best.helped]
            ups.append(ScaleUp(best.pool.name, count, "pending", tuple(p.key for p in helped)))
            new = _add_nodes(fork, best.pool, count, f"new{len(ups)}")
            pool_nodes[best.pool.name] += new
            for i, pod in zip(best.helped, helped, strict=True):
                request = requests[i]
                node = _first_of(fork, request, new)
                if node is not None:
                    _place(fork, pod, request, node)
            chosen = set(best.helped)
            needs = [p for i, p in enumerate(needs) if i not in chosen]

    if policy.pressure and policy.epc_aware:
        for pool in pools:
            size = pool.size + added[pool.name]
            room = pool.max_size - size
            if size == 0 or room <= 0 or not pool.template.epc_allocatable:
                continue
            requested, allocatable = _pool_epc(view, pool_nodes[pool.name])
            if view is inp.snapshot:
                # Nodes still booting add their template's EPC and hold nothing yet.
                allocatable += pool.in_flight * pool.template.epc_total
            if allocatable == 0:
                continue
            ratio = _ratio(requested, allocatable, policy.target_utilization)
            if ratio <= 1 + Fraction(repr(policy.tolerance)):
                continue
            extra = min(math.ceil(size * ratio) - size, room)
            if extra > 0:
                added[pool.name] += extra
                ups.append(ScaleUp(pool.name, extra, "pressure"))

    for pool in pools:
        short = pool.min_size - pool.size - added[pool.name]
        if short > 0:
            added[pool.name] += short
            ups.append(ScaleUp(pool.name, short, "min-size"))

    downs, unneeded = _scale_down(inp, pools, added)
    targets = {
        p.name: p.size + added[p.name] - sum(1 for d in downs if d.pool == p.name) for p in pools
    }
    return Plan(tuple(ups), tuple(downs), targets, unneeded, tuple(unschedulable))


def _fork(snapshot: ClusterSnapshot) -> ClusterSnapshot:
    """`snapshot.fork()`, sharing the frozen node and pod records instead of copying them.

    They are immutable and the snapshot only ever replaces them, so the copy stays independent;
    not copying them is most of the cost of a fork on a cluster with many pods.
    """
    memo: dict[int, object] = {}
    for pod in snapshot.pods.values():
        memo[id(pod)] = pod
    for info in snapshot.infos:
        if info is not None:
            memo[id(info)] = info
    return copy.deepcopy(snapshot, memo)


def _first_of(snapshot: ClusterSnapshot, request: PodRequest, nodes: Sequence[str]) -> str | None:
    if not nodes:
        return None
    names = sorted(nodes)
    slots = snapshot.slots_of(names)
    ok = resources_fit(snapshot, request, slots) & fit_masks(snapshot, request, slots).ok
    hits = np.flatnonzero(ok)
    return names[int(hits[0])] if hits.size else None


def _scale_down(
    inp: PlanInput, pools: Sequence[PoolState], added: Mapping[str, int]
) -> tuple[list[ScaleDown], dict[str, float]]:
    policy = inp.policy
    snapshot = inp.snapshot
    unneeded: dict[str, float] = {}
    candidates: list[tuple[float, float, str, PoolState]] = []
    for pool in pools:
        for node in pool.nodes:
            if node not in snapshot.slots:
                continue
            use = node_utilization(snapshot, node, epc_aware=policy.epc_aware)
            if use >= policy.scale_down_utilization:
                continue
            since = inp.unneeded_since.get(node, inp.now)
            unneeded[node] = since
            if inp.now - since >= policy.scale_down_unneeded_time:
                candidates.append((use, since, node, pool))
    if not candidates or any(added.values()):
        # A plan that grows the cluster removes nothing (cluster-autoscaler does the same).
        return [], unneeded
    downs: list[ScaleDown] = []
    removed: dict[str, int] = {}
    fork = _fork(snapshot)
    for use, _since, node, pool in sorted(candidates, key=lambda c: (c[0], c[1], c[2])):
        last = pool.last_scale_up
        if last is not None and inp.now - last < policy.scale_down_delay_after_add:
            continue
        if pool.size - removed.get(pool.name, 0) <= pool.min_size:
            continue
        if not _drain(fork, node, policy):
            continue
        if policy.epc_aware and policy.pressure and pool.template.epc_allocatable:
            rest = [n for n in pool.nodes if n in fork.slots]
            requested, allocatable = _pool_epc(fork, rest)
            if allocatable and _ratio(requested, allocatable, policy.target_utilization) > 1:
                # Removing it would push the pool over target and the next plan would grow it.
                fork = _fork(snapshot)
                for d in downs:
                    _drain(fork, d.node, policy)
                continue
        removed[pool.name] = removed.get(pool.name, 0) + 1
        unneeded.pop(node, None)
        downs.append(
            ScaleDown(
                pool.name,
                node,
                f"utilization {use:.2f} below {policy.scale_down_utilization} "
                f"for {policy.scale_down_unneeded_time:.0f}s; its pods fit elsewhere",
            )
        )
    return downs, unneeded


def _drain(fork: ClusterSnapshot, node: str, policy: PlanPolicy) -> bool:
    """Remove `node` from `fork` and re-place its pods; on failure leave `fork` unchanged."""
    pods = [p for p in fork.pods_on(node) if p.owner_kind != "DaemonSet"]
    info = fork.node(node)
    if info is None:
        return False
    fork.remove_node(node)
    moved: list[PodInfo] = []
    for pod in sorted(pods, key=lambda p: (-p.epc_total, -p.cpu_milli, p.key)):
        # Whether a pod can move is the scheduler's verdict on its full request, even for
        # cluster-autoscaler, which runs the scheduler's filters in its drain simulation.
        request = PodRequest.of(pod)
        target = choose_node(fork, request, policy.strategy)
        if target is None:
            for back in moved:
                fork.upsert_pod(back)
            fork.upsert_node(info)
            return False
        moved.append(pod)
        _place(fork, pod, request, target)
    return True
