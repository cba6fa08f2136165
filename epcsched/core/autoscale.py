"""The autoscaler's memory and its decisions over time, as a pure state machine.

`plan` (core/plan.py) says what the cluster needs now; this module adds what a controller must
remember between loops and across restarts, so that acting on a plan is safe:

- nodes asked for but not yet usable (Ready *and* advertising the template's EPC) count as
  capacity, so a pod whose node is booting, or whose node's device plugin has not registered
  EPC yet, does not trigger a second scale-up;
- such a node is given up after `maxNodeProvisionTime`, and its pool is backed off
  (cluster-autoscaler's exponential backoff: `initial`, doubled to `max`, reset after `reset`
  without failures); a provider error backs the pool off the same way;
- scale-down removes one node at a time per pool and changes nothing else in that pool while
  the node is drained; a node whose drain failed is left alone for a while;
- targets are absolute sizes, read back from the provider every loop: a restarted controller,
  or one whose last call was lost, recomputes the same target instead of adding a delta again.

No clock and no I/O: `now` is an argument, and the live loop (epcsched/autoscaler) and the
simulator call the same functions, so a simulation replays the live controller exactly. The
state serialises to the readable mapping that the status ConfigMap holds.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from epcsched.core.plan import Plan, PlanInput, PlanPolicy, PoolState, plan
from epcsched.core.snapshot import ClusterSnapshot
from epcsched.model import NodeInfo

if TYPE_CHECKING:
    from epcsched.config import AutoscalerSettings

SCALE_UP = "scale-up"
SCALE_DOWN = "scale-down"
NONE = "none"


@dataclass(frozen=True, slots=True)
class Backoff:
    """cluster-autoscaler's node-group backoff: `initial`, doubling up to `max`, and back to
    `initial` once `reset` seconds pass without a failure."""

    initial: float = 300.0
    max: float = 1800.0
    reset: float = 10800.0

    def next_step(self, previous: float, last_failure: float | None, now: float) -> float:
        if previous <= 0 or last_failure is None or now - last_failure >= self.reset:
            return self.initial
        return min(previous * 2, self.max)


@dataclass(frozen=True, slots=True)
class ControllerPolicy:
    """The planner's knobs plus the controller's timers (the `autoscaler` configuration)."""

    plan: PlanPolicy = field(default_factory=PlanPolicy)
    max_node_provision_time: float = 900.0
    """Seconds a node asked for may take to become usable before it is given up."""
    backoff: Backoff = field(default_factory=Backoff)
    drain_retry_after: float = 300.0
    """Seconds a node whose drain failed is not chosen for scale-down again."""

    @classmethod
    def from_settings(
        cls, settings: AutoscalerSettings, *, strategy: str = "binpack", **overrides: bool
    ) -> ControllerPolicy:
        return cls(
            plan=PlanPolicy.from_settings(settings, strategy=strategy, **overrides),
            max_node_provision_time=settings.max_node_provision_time,
            backoff=Backoff(
                initial=settings.backoff.initial,
                max=settings.backoff.max,
                reset=settings.backoff.reset,
            ),
        )


@dataclass(frozen=True, slots=True)
class PoolMemory:
    """What the controller remembers of one pool between loops."""

    target: int | None = None
    """The last target size the controller set (or saw)."""
    asked: tuple[float, ...] = ()
    """When each node that is asked for but not yet usable was asked for, oldest first."""
    last_scale_up: float | None = None
    last_scale_down: float | None = None
    backoff_until: float | None = None
    backoff_step: float = 0.0
    """Length of the current backoff; the next failure doubles it."""
    last_failure: float | None = None
    failure: str | None = None
    """Why the pool was last backed off."""
    removing: str | None = None
    """The node being drained and removed, if any: the pool changes nothing else meanwhile."""
    removing_since: float | None = None

    def backed_off(self, now: float) -> bool:
        return self.backoff_until is not None and now < self.backoff_until


@dataclass(frozen=True, slots=True)
class ControllerState:
    """Everything the controller carries from one loop to the next (and across restarts)."""

    pools: Mapping[str, PoolMemory] = field(default_factory=dict)
    unneeded_since: Mapping[str, float] = field(default_factory=dict)
    """Since when each node has been unneeded (the planner's scale-down timer)."""
    drain_failed: Mapping[str, float] = field(default_factory=dict)
    """Nodes whose drain failed, with the time until which they are not chosen again."""
    removed: Mapping[str, float] = field(default_factory=dict)
    """Nodes handed to the provider for removal, with when: never chosen again while the API
    still shows them."""

    def pool(self, name: str) -> PoolMemory:
        return self.pools.get(name) or PoolMemory()

    def with_pool(self, name: str, memory: PoolMemory) -> ControllerState:
        return dataclasses.replace(self, pools={**self.pools, name: memory})

    def to_dict(self) -> dict[str, Any]:
        """A readable mapping for the status ConfigMap (times as UTC RFC 3339)."""
        pools: dict[str, Any] = {}
        for name in sorted(self.pools):
            m = self.pools[name]
            entry: dict[str, Any] = {"target": m.target, "inFlight": len(m.asked)}
            if m.asked:
                entry["askedAt"] = [rfc3339(t) for t in m.asked]
            for key, value in (
                ("lastScaleUp", m.last_scale_up),
                ("lastScaleDown", m.last_scale_down),
                ("backoffUntil", m.backoff_until),
                ("lastFailure", m.last_failure),
                ("removingSince", m.removing_since),
            ):
                if value is not None:
                    entry[key] = rfc3339(value)
            if m.backoff_step:
                entry["backoffSeconds"] = m.backoff_step
            if m.failure:
                entry["failure"] = m.failure
            if m.removing:
                entry["removing"] = m.removing
            pools[name] = entry
        return {
            "pools": pools,
            "unneededNodes": {n: rfc3339(t) for n, t in sorted(self.unneeded_since.items())},
            "drainFailedNodes": {n: rfc3339(t) for n, t in sorted(self.drain_failed.items())},
            "removedNodes": {n: rfc3339(t) for n, t in sorted(self.removed.items())},
        }

    @classmethod
    def from_dict(cls, data: object) -> ControllerState:
        """Read `to_dict`'s mapping back. Raises ValueError naming the first bad key."""
        if not isinstance(data, Mapping):
            raise ValueError("status: must be a map")
        raw_pools = data.get("pools") or {}
        if not isinstance(raw_pools, Mapping):
            raise ValueError("status.pools: must be a map")
        pools: dict[str, PoolMemory] = {}
        for name, entry in raw_pools.items():
            where = f"status.pools.{name}"
            if not isinstance(entry, Mapping):
                raise ValueError(f"{where}: must be a map")
            target = entry.get("target")
            if target is not None and (isinstance(target, bool) or not isinstance(target, int)):
                raise ValueError(f"{where}.target: must be an integer")
            asked = entry.get("askedAt") or []
            if not isinstance(asked, list):
                raise ValueError(f"{where}.askedAt: must be a list")
            step = entry.get("backoffSeconds", 0.0)
            if isinstance(step, bool) or not isinstance(step, int | float):
                raise ValueError(f"{where}.backoffSeconds: must be a number")
            pools[str(name)] = PoolMemory(
                target=target,
                asked=tuple(sorted(_parse_time(t, f"{where}.askedAt") for t in asked)),
                last_scale_up=_opt_time(entry, "lastScaleUp", where),
                last_scale_down=_opt_time(entry, "lastScaleDown", where),
                backoff_until=_opt_time(entry, "backoffUntil", where),
                backoff_step=float(step),
                last_failure=_opt_time(entry, "lastFailure", where),
                failure=_opt_str(entry, "failure", where),
                removing=_opt_str(entry, "removing", where),
                removing_since=_opt_time(entry, "removingSince", where),
            )
        return cls(
            pools=pools,
            unneeded_since=_time_map(data.get("unneededNodes"), "status.unneededNodes"),
            drain_failed=_time_map(data.get("drainFailedNodes"), "status.drainFailedNodes"),
            removed=_time_map(data.get("removedNodes"), "status.removedNodes"),
        )


@dataclass(frozen=True, slots=True)
class PoolView:
    """One pool as the shell observed it at `now`."""

    name: str
    template: NodeInfo
    min_size: int
    max_size: int
    nodes: tuple[str, ...] = ()
    """This pool's nodes in the snapshot (registered with the API, usable or not)."""
    usable: tuple[str, ...] = ()
    """Of `nodes`: Ready and advertising the template's EPC (or any node when it has none)."""
    target: int | None = None
    """The provider's target size; None when unknown (then the node count stands in)."""
    busy: bool = False
    """The provider still runs an operation on this pool: send nothing new."""
    error: str | None = None
    """Why reading the provider failed this loop (the pool is then left alone)."""
    cost_per_hour: float = 0.0
    priority: int = 0


@dataclass(frozen=True, slots=True)
class PoolDecision:
    """What one pool should become, and why: a row of the dry-run output."""

    name: str
    current_size: int
    target_size: int
    action: str
    reason: str
    nodes_to_remove: tuple[str, ...] = ()
    in_flight: int = 0
    pods: tuple[str, ...] = ()
    """Pending pods (`namespace/name`) that this scale-up is for."""
    given_up: int = 0
    """Nodes given up this loop after maxNodeProvisionTime."""
    drain: str | None = None
    """The node to drain and then remove (a scale-down); removed nodes in `nodes_to_remove`
    without `drain` hold no pods to move (given-up nodes)."""

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "currentSize": self.current_size,
            "targetSize": self.target_size,
            "action": self.action,
            "reason": self.reason,
            "nodesToRemove": list(self.nodes_to_remove),
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """One loop's verdict for every configured pool."""

    pools: tuple[PoolDecision, ...]
    unschedulable: tuple[tuple[str, str], ...]
    """Pending pods no pool can help now, with the reason."""
    plan: Plan

    def pool(self, name: str) -> PoolDecision:
        return next(p for p in self.pools if p.name == name)

    def to_json(self) -> dict[str, object]:
        """The object `epcsched autoscaler --once --dry-run` prints."""
        unschedulable = []
        for key, reason in self.unschedulable:
            namespace, _, name = key.partition("/")
            unschedulable.append({"namespace": namespace, "name": name, "reason": reason})
        return {"pools": [p.to_json() for p in self.pools], "unschedulable": unschedulable}


def decide(
    state: ControllerState,
    views: Sequence[PoolView],
    snapshot: ClusterSnapshot,
    policy: ControllerPolicy,
    now: float,
) -> tuple[ControllerState, Decision]:
    """The next state and what to do at `now` (see the module docstring)."""
    memories: dict[str, PoolMemory] = {}
    pool_states: list[PoolState] = []
    blocked: dict[str, str] = {}
    current: dict[str, int] = {}
    given_up: dict[str, tuple[int, tuple[str, ...], str]] = {}
    for view in sorted(views, key=lambda v: v.name):
        memory = state.pool(view.name)
        if memory.removing is not None and memory.removing not in view.nodes:
            # The node is gone from the API: its removal is complete.
            memory = dataclasses.replace(
                memory,
                removing=None,
                removing_since=None,
                last_scale_down=memory.last_scale_down if memory.last_scale_down else now,
            )
        size = view.target if view.target is not None else len(view.nodes)
        upcoming = max(0, size - len(view.usable))
        asked = _keep(memory.asked, upcoming, now)
        expired = sum(1 for t in asked if now - t >= policy.max_node_provision_time)
        reason_blocked: str | None = None
        if view.error is not None:
            reason_blocked = f"provider unavailable: {view.error}"
        elif expired and not view.busy:
            stuck = tuple(sorted(n for n in view.nodes if n not in view.usable))[:expired]
            why = (
                f"{expired} node(s) not Ready with EPC allocatable after "
                f"{policy.max_node_provision_time:.0f}s (maxNodeProvisionTime)"
            )
            given_up[view.name] = (expired, stuck, why)
            asked = asked[expired:]
            size -= expired
            upcoming -= expired
            memory = _back_off(memory, now, why, policy.backoff)
        if reason_blocked is None and memory.backed_off(now):
            reason_blocked = (
                f"backed off until {rfc3339(memory.backoff_until or now)}: {memory.failure}"
            )
        elif reason_blocked is None and memory.removing is not None:
            reason_blocked = f"removing node {memory.removing}"
        elif reason_blocked is None and view.busy:
            reason_blocked = "the provider is still carrying out the last change"
        if reason_blocked is not None:
            blocked[view.name] = reason_blocked
        memory = dataclasses.replace(memory, asked=asked, target=size)
        memories[view.name] = memory
        current[view.name] = size
        usable = tuple(n for n in view.usable if n != memory.removing)
        in_flight = max(0, size - len(usable) - (1 if memory.removing in view.usable else 0))
        pool_states.append(
            PoolState(
                name=view.name,
                template=view.template,
                min_size=view.min_size,
                max_size=view.max_size,
                nodes=usable,
                in_flight=in_flight,
                cost_per_hour=view.cost_per_hour,
                priority=view.priority,
                last_scale_up=memory.last_scale_up,
                blocked=reason_blocked,
            )
        )

    skip = {n: t for n, t in state.drain_failed.items() if t > now}
    known = {n for v in views for n in v.nodes}
    removed = {n: t for n, t in state.removed.items() if n in known}
    planned = plan(
        PlanInput(
            snapshot=_tried_only(snapshot),
            pools=pool_states,
            now=now,
            policy=policy.plan,
            unneeded_since=state.unneeded_since,
        )
    )

    ups: dict[str, int] = {}
    pods: dict[str, list[str]] = {}
    why_up: dict[str, list[str]] = {}
    for up in planned.scale_ups:
        if up.pool in blocked:
            continue
        ups[up.pool] = ups.get(up.pool, 0) + up.count
        pods.setdefault(up.pool, []).extend(up.pods)
        why_up.setdefault(up.pool, []).append(_up_reason(up.reason, up.count, len(up.pods)))
    downs: dict[str, tuple[str, str]] = {}
    unneeded = dict(planned.unneeded_since)
    for down in planned.scale_downs:
        # The plan forgets the timer of every node it removes; one removal per pool goes ahead,
        # and the others keep their timers for the next loop.
        unneeded.setdefault(down.node, state.unneeded_since.get(down.node, now))
    for down in planned.scale_downs:
        if down.pool in blocked or down.pool in downs or down.pool in ups:
            continue
        if down.node in skip or down.node in removed:
            continue
        downs[down.pool] = (down.node, down.reason)
        unneeded.pop(down.node, None)

    decisions: list[PoolDecision] = []
    for view in sorted(views, key=lambda v: v.name):
        memory = memories[view.name]
        size = current[view.name]
        before = view.target if view.target is not None else len(view.nodes)
        gave = given_up.get(view.name)
        in_flight = len(memory.asked)
        if view.name in ups:
            count = ups[view.name]
            target = size + count
            memory = dataclasses.replace(
                memory, asked=memory.asked + (now,) * count, last_scale_up=now, target=target
            )
            decision = PoolDecision(
                view.name,
                before,
                target,
                SCALE_UP,
                "; ".join(why_up[view.name]),
                in_flight=in_flight + count,
                pods=tuple(pods[view.name]),
            )
        elif view.name in downs:
            node, why = downs[view.name]
            memory = dataclasses.replace(memory, removing=node, removing_since=now)
            decision = PoolDecision(
                view.name, before, size - 1, SCALE_DOWN, why, (node,), drain=node
            )
        elif gave is not None:
            count, stuck, why = gave
            decision = PoolDecision(
                view.name, before, size, SCALE_DOWN, f"gave up: {why}", stuck, given_up=count
            )
        else:
            reason = blocked.get(view.name) or (
                f"{in_flight} node(s) asked for, not usable yet" if in_flight else "no change"
            )
            decision = PoolDecision(view.name, before, size, NONE, reason, in_flight=in_flight)
        memories[view.name] = memory
        decisions.append(decision)

    next_state = ControllerState(
        pools=memories,
        unneeded_since=unneeded,
        drain_failed=skip,
        removed=removed,
    )
    return next_state, Decision(tuple(decisions), _unschedulable(planned), planned)


def _tried_only(snapshot: ClusterSnapshot) -> ClusterSnapshot:
    """The cluster with only the pending pods that kube-scheduler has tried and marked
    Unschedulable (cluster-autoscaler's trigger): one not yet tried may still fit a node."""
    untried = [p.key for p in snapshot.pending_pods() if not p.marked_unschedulable]
    if not untried:
        return snapshot
    fork = snapshot.fork()
    for key in untried:
        fork.remove_pod(key)
    return fork


def provider_failed(
    state: ControllerState, pool: str, now: float, reason: str, policy: ControllerPolicy
) -> ControllerState:
    """A provider call for `pool` failed: back the pool off and forget the change it was for."""
    memory = state.pool(pool)
    memory = _back_off(memory, now, reason, policy.backoff)
    return state.with_pool(pool, memory)


def removal_done(state: ControllerState, pool: str, node: str, now: float) -> ControllerState:
    """`node` was drained and the provider asked to remove it."""
    memory = state.pool(pool)
    if memory.removing == node:
        memory = dataclasses.replace(memory, removing=None, removing_since=None)
    memory = dataclasses.replace(memory, last_scale_down=now)
    unneeded = {n: t for n, t in state.unneeded_since.items() if n != node}
    return dataclasses.replace(
        state.with_pool(pool, memory),
        unneeded_since=unneeded,
        removed={**state.removed, node: now},
    )


def removal_failed(
    state: ControllerState, pool: str, node: str, now: float, policy: ControllerPolicy
) -> ControllerState:
    """Draining `node` failed (a PodDisruptionBudget, a pod that must not move): keep it, and
    do not choose it again for `drain_retry_after` seconds."""
    memory = state.pool(pool)
    if memory.removing == node:
        memory = dataclasses.replace(memory, removing=None, removing_since=None)
    unneeded = {n: t for n, t in state.unneeded_since.items() if n != node}
    return dataclasses.replace(
        state.with_pool(pool, memory),
        unneeded_since=unneeded,
        drain_failed={**state.drain_failed, node: now + policy.drain_retry_after},
    )


def _back_off(memory: PoolMemory, now: float, reason: str, backoff: Backoff) -> PoolMemory:
    step = backoff.next_step(memory.backoff_step, memory.last_failure, now)
    return dataclasses.replace(
        memory, backoff_until=now + step, backoff_step=step, last_failure=now, failure=reason
    )


def _keep(asked: tuple[float, ...], upcoming: int, now: float) -> tuple[float, ...]:
    """The ask times of the `upcoming` nodes still expected: the oldest arrive first, so the
    newest stay; nodes that someone else asked for count from `now`."""
    kept = tuple(sorted(asked))[max(0, len(asked) - upcoming) :] if upcoming else ()
    return kept + (now,) * (upcoming - len(kept))


def _up_reason(kind: str, count: int, pods: int) -> str:
    if kind == "pending":
        return f"{pods} pending EPC pod(s) need {count} new node(s)"
    if kind == "pressure":
        return f"EPC pressure: {count} node(s) to bring utilization under target"
    if kind == "min-size":
        return f"{count} node(s) to reach minSize"
    return f"{kind}: {count} node(s)"


def _unschedulable(planned: Plan) -> tuple[tuple[str, str], ...]:
    return tuple((item.key, item.reason) for item in planned.unschedulable)


def rfc3339(t: float) -> str:
    """`t` (seconds since the epoch) as an RFC 3339 UTC time to the millisecond, `Z`-suffixed."""
    return (
        dt.datetime.fromtimestamp(t, dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _parse_time(value: object, where: str) -> float:
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return moment.timestamp()
    if not isinstance(value, str):
        raise ValueError(f"{where}: must be an RFC 3339 time, got {value!r}")
    # RFC 3339 (section 5.6) allows a lower-case `z`, which fromisoformat does not read.
    text = value[:-1] + "+00:00" if value[-1:] in ("Z", "z") else value
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{where}: must be an RFC 3339 time, got {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _opt_time(entry: Mapping[str, object], key: str, where: str) -> float | None:
    value = entry.get(key)
    return None if value is None else _parse_time(value, f"{where}.{key}")


def _opt_str(entry: Mapping[str, object], key: str, where: str) -> str | None:
    value = entry.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{where}.{key}: must be a string")
    return value


def _time_map(value: object, where: str) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: must be a map")
    return {str(k): _parse_time(v, f"{where}.{k}") for k, v in value.items()}
