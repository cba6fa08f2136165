"""Scale-up and scale-down plans for node pools, decided on a copy of the cluster.

The live autoscaler and the simulator both call `plan`; it reads no clock (time is `now`), does no
I/O and never mutates the snapshot it is given. It follows the three rules of DESIGN.md section 5:

1. Pending pods that no existing (or already requested) node can hold are packed
   first-fit-decreasing onto new nodes of each pool's template, and an expander picks the pool
   (`least-waste` counts EPC, `cheapest`, `priority`). Scale-from-zero uses the template only.
2. EPC pressure: a pool whose EPC in use is above `target_utilization` of its allocatable grows
   by the HPA rule `ceil(size * utilization / target)`, outside a `tolerance` dead band. A node's
   EPC in use is the larger of requested and measured (when the snapshot counts measured use),
   and a node under measured pressure counts as full.
3. Scale-down: a node below `scale_down_utilization` for `scale_down_unneeded_time`, whose pods
   all fit on the remaining nodes, is removed; never in a pool that is growing or grew less than
   `scale_down_delay_after_add` ago, never a node under pressure or holding a pod that blocks a
   drain, and never when the removal would itself create pressure.

Every what-if placement, on live nodes and on template nodes alike, obeys kube-scheduler's rules
(`core.rules`: nodeSelector, required node affinity, taints, cordons, pod slots, every resource),
and `Plan.placements` lists them so that they can be checked. A pending pod that no pool can take
is reported with the reason per pool. Sizes are clamped to each pool's `[min_size, max_size]`;
a pool that is `blocked` (backed off) is neither grown nor shrunk. Nodes asked for but not yet
Ready (`in_flight`) count as capacity, so a pending pod does not trigger a second scale-up while
its node boots. With `epc_aware=False` the same code emulates cluster-autoscaler, which packs and
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
from epcsched.core.rules import refusal
from epcsched.core.snapshot import ClusterSnapshot, Headroom
from epcsched.model import NodeInfo, PodInfo
from epcsched.quantity import format_apart, format_bytes

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
    blocked: str | None = None
    """Why this pool may not change now (the live loop's backoff, a change in progress), or None.
    A blocked pool is neither grown nor shrunk; reports read it after `pool NAME: `."""

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
class Unschedulable:
    """A pending pod that no scale-up in this plan will make room for, and why."""

    key: str
    """`namespace/name`."""
    reason: str


@dataclass(frozen=True, slots=True)
class Placement:
    """Where the plan expects one pod to run once it is carried out."""

    pod: str
    """`namespace/name`."""
    node: str
    """A node of the snapshot, or a what-if node (a name starting with `~`) of `pool`."""
    pool: str | None = None
    """The pool whose template the what-if `node` is; None for a node of the snapshot."""
    moved_from: str | None = None
    """For a pod moved off a node that the plan removes: that node."""


@dataclass(frozen=True, slots=True)
class Plan:
    """What to change. Applying it is the caller's job (and it may refuse, e.g. not leader)."""

    scale_ups: tuple[ScaleUp, ...]
    scale_downs: tuple[ScaleDown, ...]
    targets: dict[str, int]
    """Each pool's size (Ready plus in flight) once the plan is carried out."""
    unneeded_since: dict[str, float]
    """State to pass to the next plan."""
    unschedulable: tuple[Unschedulable, ...] = ()
    """Pending pods this plan finds no node for, each with the reason per pool."""
    placements: tuple[Placement, ...] = ()
    """Every what-if placement: pending pods (on live, in-flight and new nodes) in decision
    order, then the pods of removed nodes in the order they were moved (a pod moved twice
    appears twice; the last entry is where it ends)."""

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
            "unschedulable": [
                {
                    "namespace": u.key.partition("/")[0],
                    "name": u.key.partition("/")[2],
                    "reason": u.reason,
                }
                for u in self.unschedulable
            ],
        }


def _view(pod: PodInfo, policy: PlanPolicy) -> PodRequest:
    request = PodRequest.of(pod)
    if policy.epc_aware:
        return request
    return dataclasses.replace(request, epc={})


def _place(snapshot: ClusterSnapshot, pod: PodInfo, request: PodRequest, node: str) -> None:
    epc = dict(request.epc)
    snapshot.upsert_pod(dataclasses.replace(pod, node_name=node, phase="Running", epc=epc))


def _fits_first(snapshot: ClusterSnapshot, request: PodRequest) -> str | None:
    """First fit: the first node by name that holds `request` (bin-packing estimator order)."""
    names, slots = snapshot.sorted_slots()
    if not names:
        return None
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


class _Templates:
    """Whether one new node of a pool could hold a request, with the reason when it cannot.

    The verdict is kube-scheduler's filters plus the EPC fit on an empty node of the template,
    cached per pool and request shape for the length of one plan: pending pods come in a few
    shapes, and every round of the scale-up loop asks again about the same ones.
    """

    def __init__(self, headroom: Headroom, epc_resources: Mapping[str, int]) -> None:
        self._headroom = headroom
        self._epc_resources = epc_resources
        self._probes: dict[str, ClusterSnapshot] = {}
        self._verdicts: dict[tuple[object, ...], str | None] = {}

    def refusal(self, pool: PoolState, request: PodRequest) -> str | None:
        key = (
            pool.name,
            tuple(sorted(request.epc.items())),
            request.cpu_milli,
            request.memory,
            request.constraints,
        )
        if key in self._verdicts:
            return self._verdicts[key]
        probe = self._probes.get(pool.name)
        if probe is None:
            probe = ClusterSnapshot(self._epc_resources, headroom=self._headroom, capacity=1)
            probe.upsert_node(_new_node(pool, "~probe"))
            self._probes[pool.name] = probe
        slots = probe.slots_of(["~probe"])
        fits = bool((resources_fit(probe, request, slots) & fit_masks(probe, request, slots).ok)[0])
        verdict = None if fits else self._reason(_new_node(pool, "~probe"), request)
        self._verdicts[key] = verdict
        return verdict

    def _reason(self, template: NodeInfo, request: PodRequest) -> str:
        """Why an empty node of `template` refuses `request`, first failing filter first."""
        rule = refusal(request.constraints, template)
        if rule is not None:
            return rule
        parts = []
        for name, need in sorted(request.epc.items()):
            have = template.epc_allocatable.get(name)
            if have is None:
                others = ", ".join(sorted(template.epc_allocatable))
                parts.append(
                    f"template does not advertise {name}"
                    + (f" (it advertises {others})" if others else " (it has no EPC)")
                )
                continue
            kept = self._headroom.of(have)
            if have - kept < need:
                asked, usable = format_apart(need, have - kept)
                parts.append(
                    f"insufficient {name}: requested {asked}, template has {usable}"
                    + (f" after {format_bytes(kept)} headroom" if kept else "")
                )
        if request.cpu_milli > template.cpu_milli:
            parts.append(
                f"insufficient cpu: requested {_cpu(request.cpu_milli)}, "
                f"template has {_cpu(template.cpu_milli)}"
            )
        if request.memory > template.memory:
            parts.append(
                f"insufficient memory: requested {format_bytes(request.memory)}, "
                f"template has {format_bytes(template.memory)}"
            )
        if template.pods < 1:
            parts.append("Too many pods: the template has no pod slots")
        return "; ".join(parts) or "the template cannot hold it"


def _cpu(milli: int) -> str:
    return f"{milli // 1000}" if milli % 1000 == 0 else f"{milli}m"


def _new_node(pool: PoolState, name: str) -> NodeInfo:
    """One node of `pool` as it will be once Ready."""
    return dataclasses.replace(pool.template, name=name, ready=True)


def _estimate(
    base: ClusterSnapshot,
    pool: PoolState,
    pods: Sequence[PodInfo],
    requests: Sequence[PodRequest],
    room: int,
    policy: PlanPolicy,
    templates: _Templates,
) -> _Option | None:
    """First-fit-decreasing of `pods` (already in that order) onto at most `room` new nodes.

    Only pods that a node of the template admits (every rule, every resource) are packed.
    """
    bins = ClusterSnapshot(base.epc_resources, headroom=base.headroom, capacity=8)
    helped: list[int] = []
    opened = 0
    for i, (pod, request) in enumerate(zip(pods, requests, strict=True)):
        if templates.refusal(pool, request) is not None:
            continue
        node = _fits_first(bins, request)
        if node is None:
            if opened >= room:
                continue
            node = f"new-{opened:06d}"
            bins.upsert_node(_new_node(pool, node))
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
        snapshot.upsert_node(_new_node(pool, name))
        names.append(name)
    return names


def _pool_epc(snapshot: ClusterSnapshot, nodes: Sequence[str]) -> tuple[int, int]:
    """EPC bytes in use and allocatable over `nodes`, all names together.

    In use per node is the larger of requested (plus reserved) and measured, when the snapshot
    counts measured use (accounting `usage` or `max`; a node without fresh telemetry has none
    and falls back to requests); a node under measured pressure counts as full.
    """
    slots = snapshot.slots_of(nodes)
    slots = slots[slots >= 0]
    used = np.zeros(slots.shape[0], dtype=np.int64)
    allocatable = np.zeros(slots.shape[0], dtype=np.int64)
    for column in snapshot.epc.values():
        used += column.requested[slots] + column.reserved[slots]
        allocatable += column.allocatable[slots]
    if snapshot.accounting != "requests":
        used = np.maximum(used, snapshot.usage[slots])
    if snapshot.pressure:
        names = snapshot.slot_names
        hot = np.fromiter(
            (names[s] in snapshot.pressure for s in slots.tolist()),
            dtype=np.bool_,
            count=slots.shape[0],
        )
        used = np.where(hot, allocatable, used)
    return int(used.sum()), int(allocatable.sum())


def node_utilization(snapshot: ClusterSnapshot, node: str, *, epc_aware: bool = True) -> float:
    """Share of a node in use: EPC in use/allocatable (see `_pool_epc`: the larger of requested
    and measured, 1.0 under pressure), or the max of CPU and memory shares."""
    slot = snapshot.slots[node]
    if epc_aware:
        used, allocatable = _pool_epc(snapshot, [node])
        if allocatable > 0:
            return used / allocatable
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
    placements: list[Placement] = []
    templates = _Templates(inp.snapshot.headroom, inp.snapshot.epc_resources)

    pending = sorted(
        (
            p
            for p in inp.snapshot.pending_pods()
            if p.epc or not (policy.epc_aware and policy.epc_pods_only)
        ),
        key=lambda p: (-p.epc_total, -p.cpu_milli, -p.memory, p.key),
    )
    unschedulable: list[Unschedulable] = []
    # Pending pods the plan expects on nodes of the snapshot: a drain must leave them room.
    settled: list[tuple[PodInfo, PodRequest, str]] = []
    # Without pending pods nothing is placed, and the pressure rule reads the snapshot itself.
    view = inp.snapshot
    pool_nodes: dict[str, list[str]] = {p.name: list(p.nodes) for p in pools}
    # The pool of each what-if node (in flight or new) on the fork.
    whatif: dict[str, str] = {}
    if pending:
        fork = view = _fork(inp.snapshot)
        for pool in pools:
            names = _add_nodes(fork, pool, pool.in_flight, "inflight")
            pool_nodes[pool.name] += names
            whatif.update(dict.fromkeys(names, pool.name))
        needs: list[PodInfo] = []
        inflight = sorted(whatif)
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
                continue
            _place(fork, pod, request, node)
            placements.append(Placement(pod.key, node, whatif.get(node)))
            if node not in whatif:
                settled.append((pod, request, node))
        while needs:
            requests = [_view(p, policy) for p in needs]
            options = []
            for pool in pools:
                room = pool.max_size - pool.size - added[pool.name]
                if room <= 0 or pool.blocked is not None:
                    continue
                option = _estimate(fork, pool, needs, requests, room, policy, templates)
                if option is not None:
                    options.append(option)
            if not options:
                unschedulable = [
                    Unschedulable(p.key, _why_unschedulable(r, pools, added, templates))
                    for p, r in zip(needs, requests, strict=True)
                ]
                break
            best = min(options, key=lambda o: o.key(policy.expander))
            count = best.nodes
            added[best.pool.name] += count
            helped = [needs[i] for i in best.helped]
            ups.append(ScaleUp(best.pool.name, count, "pending", tuple(p.key for p in helped)))
            new = _add_nodes(fork, best.pool, count, f"new{len(ups)}")
            pool_nodes[best.pool.name] += new
            whatif.update(dict.fromkeys(new, best.pool.name))
            for i, pod in zip(best.helped, helped, strict=True):
                request = requests[i]
                node = _first_of(fork, request, new)
                if node is not None:
                    _place(fork, pod, request, node)
                    placements.append(Placement(pod.key, node, best.pool.name))
            chosen = set(best.helped)
            needs = [p for i, p in enumerate(needs) if i not in chosen]

    if policy.pressure and policy.epc_aware:
        for pool in pools:
            size = pool.size + added[pool.name]
            room = pool.max_size - size
            if size == 0 or room <= 0 or pool.blocked is not None:
                continue
            if not pool.template.epc_allocatable:
                continue
            used, allocatable = _pool_epc(view, pool_nodes[pool.name])
            if view is inp.snapshot:
                # Nodes still booting add their template's EPC and hold nothing yet.
                allocatable += pool.in_flight * pool.template.epc_total
            if allocatable == 0:
                continue
            ratio = _ratio(used, allocatable, policy.target_utilization)
            if ratio <= 1 + Fraction(repr(policy.tolerance)):
                continue
            extra = min(math.ceil(size * ratio) - size, room)
            if extra > 0:
                added[pool.name] += extra
                ups.append(ScaleUp(pool.name, extra, "pressure"))

    for pool in pools:
        short = pool.min_size - pool.size - added[pool.name]
        if short > 0 and pool.blocked is None:
            added[pool.name] += short
            ups.append(ScaleUp(pool.name, short, "min-size"))

    downs, unneeded, moves = _scale_down(inp, pools, added, settled)
    placements += moves
    targets = {
        p.name: p.size + added[p.name] - sum(1 for d in downs if d.pool == p.name) for p in pools
    }
    return Plan(
        tuple(ups), tuple(downs), targets, unneeded, tuple(unschedulable), tuple(placements)
    )


def _why_unschedulable(
    request: PodRequest,
    pools: Sequence[PoolState],
    added: Mapping[str, int],
    templates: _Templates,
) -> str:
    """Why no pool grows for a pod: the pools that could hold it but may not grow, or else
    which rule each pool's template fails."""
    refused: list[str] = []
    blocked: list[str] = []
    full: list[str] = []
    for pool in pools:
        why = templates.refusal(pool, request)
        if why is not None:
            refused.append(f"pool {pool.name}: {why}")
        elif pool.blocked is not None:
            blocked.append(f"pool {pool.name}: {pool.blocked}")
        elif pool.size + added[pool.name] >= pool.max_size:
            full.append(f"{pool.name} at maxSize {pool.max_size}")
        else:
            # The loop stops only when no pool can help; kept so a reason is never empty.
            full.append(f"{pool.name} has no room left in this plan")
    if blocked or full:
        return "; ".join(blocked + ([f"pools {', '.join(full)}"] if full else []))
    return "; ".join(refused) or "no node pool is configured"


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
    inp: PlanInput,
    pools: Sequence[PoolState],
    added: Mapping[str, int],
    settled: Sequence[tuple[PodInfo, PodRequest, str]],
) -> tuple[list[ScaleDown], dict[str, float], list[Placement]]:
    policy = inp.policy
    snapshot = inp.snapshot
    unneeded: dict[str, float] = {}
    candidates: list[tuple[float, float, str, PoolState]] = []
    for pool in pools:
        for node in pool.nodes:
            if node not in snapshot.slots:
                continue
            if policy.epc_aware and node in snapshot.pressure:
                # A node that pages counts as full, whatever its requests say.
                continue
            use = node_utilization(snapshot, node, epc_aware=policy.epc_aware)
            if use >= policy.scale_down_utilization:
                continue
            if any(p.blocks_drain for p in snapshot.pods_on(node)):
                continue
            since = inp.unneeded_since.get(node, inp.now)
            unneeded[node] = since
            if inp.now - since >= policy.scale_down_unneeded_time:
                candidates.append((use, since, node, pool))
    if not candidates or any(added.values()):
        # A plan that grows the cluster removes nothing (cluster-autoscaler does the same).
        return [], unneeded, []
    pool_of = {node: pool for pool in pools for node in pool.nodes}
    downs: list[ScaleDown] = []
    moves: list[Placement] = []
    removed: dict[str, int] = {}
    fork = _fork(snapshot)
    for pod, request, node in settled:
        _place(fork, pod, request, node)
    for use, _since, node, pool in sorted(candidates, key=lambda c: (c[0], c[1], c[2])):
        last = pool.last_scale_up
        if last is not None and inp.now - last < policy.scale_down_delay_after_add:
            continue
        if pool.blocked is not None or pool.size - removed.get(pool.name, 0) <= pool.min_size:
            continue
        drained = _drain(fork, node, policy)
        if drained is None:
            continue
        if _overloads(fork, {pool.name: pool} | _receivers(drained.moved, pool_of), policy):
            # Removing it would push a pool over target and the next plan would grow it.
            drained.undo(fork)
            continue
        removed[pool.name] = removed.get(pool.name, 0) + 1
        unneeded.pop(node, None)
        moves += [Placement(p.key, target, None, node) for p, target in drained.moved]
        downs.append(
            ScaleDown(
                pool.name,
                node,
                f"utilization {use:.2f} below {policy.scale_down_utilization} "
                f"for {policy.scale_down_unneeded_time:.0f}s; "
                + (
                    f"its {len(drained.moved)} pod(s) fit elsewhere"
                    if drained.moved
                    else "no pod to move"
                ),
            )
        )
    return downs, unneeded, moves


def _receivers(
    moved: Sequence[tuple[PodInfo, str]], pool_of: Mapping[str, PoolState]
) -> dict[str, PoolState]:
    receivers = (pool_of.get(target) for _pod, target in moved)
    return {p.name: p for p in receivers if p is not None}


def _overloads(fork: ClusterSnapshot, pools: Mapping[str, PoolState], policy: PlanPolicy) -> bool:
    """Whether any of `pools` is over its EPC target on `fork` (only under the pressure rule)."""
    if not (policy.epc_aware and policy.pressure):
        return False
    for name in sorted(pools):
        pool = pools[name]
        if not pool.template.epc_allocatable:
            continue
        used, allocatable = _pool_epc(fork, [n for n in pool.nodes if n in fork.slots])
        if allocatable and _ratio(used, allocatable, policy.target_utilization) > 1:
            return True
    return False


@dataclass(slots=True)
class _Drained:
    """A node taken out of a fork, with what is needed to put it back."""

    info: NodeInfo
    usage: int
    pressure: str | None
    moved: list[tuple[PodInfo, str]]
    """Each moved pod as it was on the node, and where it went."""

    def undo(self, fork: ClusterSnapshot) -> None:
        for pod, _target in self.moved:
            fork.upsert_pod(pod)
        fork.upsert_node(self.info)
        fork.set_usage(self.info.name, self.usage if self.usage >= 0 else None)
        fork.set_pressure(self.info.name, self.pressure)


def _drain(fork: ClusterSnapshot, node: str, policy: PlanPolicy) -> _Drained | None:
    """Remove `node` from `fork` and re-place its pods; on failure leave `fork` unchanged.

    DaemonSet and mirror pods stay with the node; a pod that blocks a drain (not safe to evict,
    or nothing would recreate it) keeps the node. The others go where kube-scheduler would put
    them, never on a node already removed (it is gone from the fork).
    """
    info = fork.node(node)
    if info is None:
        return None
    pods = [p for p in fork.pods_on(node) if not p.node_bound]
    if any(p.blocks_drain for p in pods):
        return None
    drained = _Drained(info, int(fork.usage[fork.slots[node]]), fork.pressure.get(node), [])
    fork.remove_node(node)
    for pod in sorted(pods, key=lambda p: (-p.epc_total, -p.cpu_milli, p.key)):
        # Whether a pod can move is the scheduler's verdict on its full request, even for
        # cluster-autoscaler, which runs the scheduler's filters in its drain simulation.
        request = PodRequest.of(pod)
        target = choose_node(fork, request, policy.strategy)
        if target is None:
            drained.undo(fork)
            return None
        drained.moved.append((pod, target))
        _place(fork, pod, request, target)
    return drained
