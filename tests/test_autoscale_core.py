"""The autoscaler's controller state machine (core/autoscale.py), driven by `now` alone.

It protects what makes acting on a plan safe: nodes asked for count as capacity until they are
Ready *and* advertise EPC (no second scale-up while the device plugin registers), a restart with
no memory still counts the provider's target, a node that never gets EPC is given up after
maxNodeProvisionTime and the pool backed off (5 m doubling to 30 m, reset after 3 h), scale-down
removes one node per pool at a time and leaves a node whose drain failed alone, only pods that
kube-scheduler marked Unschedulable trigger anything, and the state survives the status
ConfigMap round trip.
"""

from __future__ import annotations

import dataclasses

import yaml

from epcsched.core.autoscale import (
    NONE,
    SCALE_DOWN,
    SCALE_UP,
    Backoff,
    ControllerPolicy,
    ControllerState,
    PoolMemory,
    PoolView,
    decide,
    provider_failed,
    removal_done,
    removal_failed,
)
from epcsched.core.plan import PlanPolicy
from epcsched.core.snapshot import ClusterSnapshot
from epcsched.model import PodInfo
from epcsched.objects import template_node
from epcsched.quantity import DEFAULT_EPC_RESOURCES

EPC = "sgx.intel.com/epc"
GIB = 2**30
TEMPLATE = template_node(
    "t",
    {EPC: "16Gi", "cpu": "4", "memory": "32Gi", "pods": "110"},
    DEFAULT_EPC_RESOURCES,
    labels={"agentpool": "p"},
)
POLICY = ControllerPolicy(
    plan=PlanPolicy(scale_down_unneeded_time=600, scale_down_delay_after_add=600),
    max_node_provision_time=900,
)
T0 = 1_000_000.0


def snap() -> ClusterSnapshot:
    return ClusterSnapshot(DEFAULT_EPC_RESOURCES)


def node(s: ClusterSnapshot, name: str, *, epc: bool = True, ready: bool = True) -> str:
    info = dataclasses.replace(TEMPLATE, name=name, ready=ready)
    if not epc:
        info = dataclasses.replace(info, epc_allocatable={})
    s.upsert_node(info)
    return name


def pod(
    s: ClusterSnapshot, name: str, epc_gib: float, node_name: str | None = None, **kw: object
) -> None:
    marked = kw.pop("marked", node_name is None)
    s.upsert_pod(
        PodInfo(
            "default",
            name,
            node_name=node_name,
            phase="Running" if node_name else "Pending",
            epc={EPC: int(epc_gib * GIB)},
            cpu_milli=100,
            memory=GIB // 4,
            owner_kind="ReplicaSet",
            marked_unschedulable=bool(marked),
            **kw,  # type: ignore[arg-type]
        )
    )


def view(
    s: ClusterSnapshot,
    *,
    target: int | None = None,
    min_size: int = 0,
    max_size: int = 5,
    **kw: object,
) -> PoolView:
    names = tuple(sorted(n.name for n in s.nodes()))
    usable = tuple(sorted(n.name for n in s.nodes() if n.ready and n.epc_total > 0))
    return PoolView(
        "p",
        TEMPLATE,
        min_size,
        max_size,
        names,
        usable,
        target=len(names) if target is None else target,
        **kw,  # type: ignore[arg-type]
    )


def step(
    state: ControllerState, s: ClusterSnapshot, now: float, **kw: object
) -> tuple[ControllerState, object]:
    new, decision = decide(state, [view(s, **kw)], s, POLICY, now)
    return new, decision.pool("p")


def test_a_pending_pod_asks_for_one_node_and_records_when() -> None:
    s = snap()
    pod(s, "a", 10)
    state, d = step(ControllerState(), s, T0)
    assert (d.action, d.current_size, d.target_size, d.pods) == (SCALE_UP, 0, 1, ("default/a",))
    assert state.pool("p") == PoolMemory(target=1, asked=(T0,), last_scale_up=T0)


def test_a_pod_kube_scheduler_has_not_tried_triggers_nothing() -> None:
    s = snap()
    pod(s, "a", 10, marked=False)
    _, d = step(ControllerState(), s, T0)
    assert (d.action, d.target_size) == (NONE, 0)


def test_no_second_scale_up_while_the_node_boots_or_registers_epc() -> None:
    s = snap()
    pod(s, "a", 10)
    state, _ = step(ControllerState(), s, T0)
    # 60 s later: the provider says 1, no node has joined yet.
    state, d = step(state, s, T0 + 60, target=1)
    assert (d.action, d.target_size, d.in_flight) == (NONE, 1, 1)
    # The node joined and is Ready, but the device plugin has not advertised EPC yet.
    node(s, "p-0", epc=False)
    state, d = step(state, s, T0 + 120, target=1)
    assert (d.action, d.target_size, d.in_flight) == (NONE, 1, 1)
    assert state.pool("p").asked == (T0,)


def test_a_restart_without_memory_still_counts_the_providers_target() -> None:
    s = snap()
    pod(s, "a", 10)
    # The process died after the provider call and before the status was written.
    state, d = step(ControllerState(), s, T0 + 30, target=1)
    assert (d.action, d.target_size) == (NONE, 1)
    assert state.pool("p").asked == (T0 + 30,)


def test_a_node_without_epc_is_given_up_after_max_provision_time_and_the_pool_backs_off() -> None:
    s = snap()
    pod(s, "a", 10)
    state, _ = step(ControllerState(), s, T0)
    node(s, "p-0", epc=False)
    state, d = step(state, s, T0 + 899.999, target=1)
    assert d.action == NONE
    state, d = step(state, s, T0 + 900, target=1)
    assert (d.action, d.target_size, d.nodes_to_remove, d.given_up) == (
        SCALE_DOWN,
        0,
        ("p-0",),
        1,
    )
    memory = state.pool("p")
    assert (memory.backoff_until, memory.backoff_step, memory.asked) == (T0 + 1200, 300, ())
    assert "maxNodeProvisionTime" in (memory.failure or "")
    # While backed off the pod is reported with the reason instead of growing the pool again.
    s.remove_node("p-0")
    state, dec = decide(state, [view(s, target=0)], s, POLICY, T0 + 960)
    assert dec.pool("p").action == NONE
    assert [key for key, _ in dec.unschedulable] == ["default/a"]
    assert "backed off" in dec.unschedulable[0][1]
    # Once the backoff ends the pool may grow again.
    state, d = step(state, s, T0 + 1200, target=0)
    assert (d.action, d.target_size) == (SCALE_UP, 1)


def test_backoff_doubles_to_the_max_and_resets_after_quiet_hours() -> None:
    b = Backoff(initial=300, max=1800, reset=10800)
    steps = []
    step_, last = 0.0, None
    for t in (0, 10, 20, 30, 40):
        step_ = b.next_step(step_, last, t)
        last = t
        steps.append(step_)
    assert steps == [300, 600, 1200, 1800, 1800]
    assert b.next_step(1800, 40, 40 + 10799.9) == 1800
    assert b.next_step(1800, 40, 40 + 10800) == 300


def test_provider_failure_backs_off_and_blocks_the_pool() -> None:
    s = snap()
    pod(s, "a", 10)
    state = provider_failed(ControllerState(), "p", T0, "quota exceeded", POLICY)
    state, d = step(state, s, T0 + 299, target=0)
    assert d.action == NONE and "quota exceeded" in d.reason
    state = provider_failed(state, "p", T0 + 300, "quota exceeded", POLICY)
    assert state.pool("p").backoff_until == T0 + 300 + 600


def test_a_provider_that_cannot_be_read_is_left_alone() -> None:
    s = snap()
    pod(s, "a", 10)
    _, d = step(ControllerState(), s, T0, error="connection refused")
    assert (d.action, d.target_size) == (NONE, 0)
    assert "connection refused" in d.reason


def test_scale_down_removes_one_node_per_pool_at_a_time() -> None:
    s = snap()
    for name in ("p-0", "p-1", "p-2"):
        node(s, name)
    pod(s, "keep", 10, "p-0")
    state, d = step(ControllerState(), s, T0)
    assert d.action == NONE
    assert set(state.unneeded_since) == {"p-1", "p-2"}
    state, d = step(state, s, T0 + 600)
    assert (d.action, d.target_size, d.nodes_to_remove, d.drain) == (
        SCALE_DOWN,
        2,
        ("p-1",),
        "p-1",
    )
    assert state.pool("p").removing == "p-1"
    # While p-1 is drained nothing else in the pool changes.
    state, d = step(state, s, T0 + 630)
    assert (d.action, d.reason) == (NONE, "removing node p-1")
    state = removal_done(state, "p", "p-1", T0 + 640)
    # The API still shows p-1 for a moment: it is never chosen twice.
    state, d = step(state, s, T0 + 650, target=2)
    assert d.nodes_to_remove == ("p-2",)


def test_a_node_whose_drain_failed_is_left_alone_for_a_while() -> None:
    s = snap()
    for name in ("p-0", "p-1"):
        node(s, name)
    state, _ = step(ControllerState(), s, T0)
    state, d = step(state, s, T0 + 600)
    assert d.drain == "p-0"
    state = removal_failed(state, "p", "p-0", T0 + 700, POLICY)
    state, d = step(state, s, T0 + 701)
    assert d.drain == "p-1"
    state = removal_failed(state, "p", "p-1", T0 + 702, POLICY)
    state, d = step(state, s, T0 + 999)
    assert d.action == NONE
    # drainRetryAfter (300 s) later p-0 may be chosen again, once unneeded for 600 s anew.
    state, d = step(state, s, T0 + 1000)
    assert d.action == NONE and "p-0" in state.unneeded_since
    state, d = step(state, s, T0 + 1600)
    assert d.drain == "p-0"


def test_min_size_is_reached_and_max_size_never_passed() -> None:
    s = snap()
    _, d = step(ControllerState(), s, T0, min_size=2)
    assert (d.action, d.target_size) == (SCALE_UP, 2)
    s = snap()
    for i in range(3):
        pod(s, f"big-{i}", 12)
    _, d = step(ControllerState(), s, T0, max_size=2)
    assert (d.action, d.target_size) == (SCALE_UP, 2)


def test_the_state_survives_the_status_configmap() -> None:
    state = ControllerState(
        pools={
            "p": PoolMemory(
                target=3,
                asked=(T0, T0 + 1.5),
                last_scale_up=T0 + 1.5,
                backoff_until=T0 + 300,
                backoff_step=300,
                last_failure=T0,
                failure="quota",
                removing="p-1",
                removing_since=T0 + 2,
            )
        },
        unneeded_since={"p-1": T0 - 600},
        drain_failed={"p-2": T0 + 300},
        removed={"p-3": T0},
    )
    text = yaml.safe_dump(state.to_dict(), sort_keys=False)
    assert "2286-" not in text and "Z" in text
    assert ControllerState.from_dict(yaml.safe_load(text)) == state


def test_a_damaged_status_is_a_clear_error() -> None:
    for bad, key in (
        ({"pools": {"p": {"target": "x"}}}, "status.pools.p.target"),
        ({"pools": {"p": {"askedAt": ["yesterday"]}}}, "status.pools.p.askedAt"),
        ({"unneededNodes": []}, "status.unneededNodes"),
        ([], "status"),
    ):
        try:
            ControllerState.from_dict(bad)
        except ValueError as exc:
            assert str(exc).startswith(key)
        else:  # pragma: no cover - the check above must raise
            raise AssertionError(f"{bad!r} was accepted")


def test_views_are_decided_in_name_order_and_deterministically() -> None:
    s = snap()
    pod(s, "a", 10)
    other = dataclasses.replace(view(s), name="q")
    first = decide(ControllerState(), [view(s), other], s, POLICY, T0)
    second = decide(ControllerState(), [other, view(s)], s, POLICY, T0)
    assert first == second
    assert [p.name for p in first[1].pools] == ["p", "q"]
