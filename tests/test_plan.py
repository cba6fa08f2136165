"""The planner (core/plan.py): scale-ups for pending pods packed first-fit-decreasing onto pool
templates with each expander, the HPA-style pressure rule and its dead band, scale-down only after
the unneeded time and only when the pods fit elsewhere, in-flight nodes counted as capacity,
min/max always respected, and the input snapshot never changed."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from epcsched.core.plan import (
    Plan,
    PlanInput,
    PlanPolicy,
    PoolState,
    ScaleUp,
    Unschedulable,
    plan,
)
from epcsched.core.snapshot import ClusterSnapshot
from epcsched.model import NodeInfo, PodInfo
from epcsched.objects import template_node
from epcsched.quantity import DEFAULT_EPC_RESOURCES
from tests.simulation_helpers import EPC, GIB

TEMPLATE = template_node(
    "t", {EPC: "16Gi", "cpu": "4", "memory": "32Gi", "pods": "110"}, DEFAULT_EPC_RESOURCES
)


def snapshot() -> ClusterSnapshot:
    return ClusterSnapshot(DEFAULT_EPC_RESOURCES)


def add_node(snap: ClusterSnapshot, name: str, template: NodeInfo = TEMPLATE) -> str:
    snap.upsert_node(dataclasses.replace(template, name=name))
    return name


def add_pod(
    snap: ClusterSnapshot, name: str, epc_gib: float, node: str | None = None, cpu: int = 100
) -> None:
    epc = {EPC: int(epc_gib * GIB)} if epc_gib else {}
    snap.upsert_pod(
        PodInfo(
            "default",
            name,
            node_name=node,
            phase="Running" if node else "Pending",
            epc=epc,
            cpu_milli=cpu,
            memory=GIB // 4,
            owner_kind="ReplicaSet",
        )
    )


def pool_state(
    name: str = "p", *, nodes: tuple[str, ...] = (), template: NodeInfo = TEMPLATE, **kw: Any
) -> PoolState:
    settings: dict[str, Any] = {"min_size": 0, "max_size": 10, **kw}
    return PoolState(name=name, template=template, nodes=nodes, **settings)


def run(
    snap: ClusterSnapshot,
    pools: list[PoolState],
    now: float = 0.0,
    *,
    unneeded_since: dict[str, float] | None = None,
    **policy: Any,
) -> Plan:
    return plan(PlanInput(snap, pools, now, PlanPolicy(**policy), unneeded_since or {}))


def test_scale_from_zero_uses_the_template() -> None:
    snap = snapshot()
    add_pod(snap, "a", 4)
    result = run(snap, [pool_state()])
    assert result.scale_ups == (ScaleUp("p", 1, "pending", ("default/a",)),)
    assert result.targets == {"p": 1}
    # What `epcsched autoscaler --once --dry-run` prints.
    assert result.to_json() == {
        "scaleUps": [{"pool": "p", "count": 1, "reason": "pending", "pods": ["default/a"]}],
        "scaleDowns": [],
        "targets": {"p": 1},
        "unschedulable": [],
    }


def test_first_fit_decreasing_counts_nodes() -> None:
    snap = snapshot()
    # 10 + 6 + 6 + 6 + 4 GiB on 16 GiB nodes: FFD packs {10,6}, {6,6,4}: two nodes.
    for i, size in enumerate([6, 10, 6, 4, 6]):
        add_pod(snap, f"p{i}", size)
    result = run(snap, [pool_state()], pressure=False)
    assert [u.count for u in result.scale_ups] == [2]
    assert len(result.scale_ups[0].pods) == 5
    # Both new nodes would be full (100% > 80% target): the pressure rule adds a third.
    pressured = run(snap, [pool_state()])
    assert [(u.count, u.reason) for u in pressured.scale_ups] == [(2, "pending"), (1, "pressure")]


def test_pods_that_fit_existing_nodes_trigger_nothing() -> None:
    snap = snapshot()
    add_node(snap, "n1")
    add_pod(snap, "a", 4)
    result = run(snap, [pool_state(nodes=("n1",))], pressure=False)
    assert result.scale_ups == ()


def test_in_flight_nodes_count_as_capacity() -> None:
    snap = snapshot()
    add_pod(snap, "a", 4)
    result = run(snap, [pool_state(in_flight=1)])
    assert result.scale_ups == ()
    assert result.targets == {"p": 1}


def test_max_size_caps_the_scale_up_and_reports_the_rest() -> None:
    snap = snapshot()
    for i in range(5):
        add_pod(snap, f"p{i}", 12)
    result = run(snap, [pool_state(max_size=3)])
    assert result.targets == {"p": 3}
    # The template could hold them: the pool's size, not the pods, is the limit.
    assert result.unschedulable == (
        Unschedulable("default/p3", "pools p at maxSize 3"),
        Unschedulable("default/p4", "pools p at maxSize 3"),
    )


def test_pods_no_template_can_hold_are_unschedulable() -> None:
    snap = snapshot()
    add_pod(snap, "huge", 20)
    result = run(snap, [pool_state()])
    assert result.scale_ups == ()
    assert result.unschedulable == (
        Unschedulable(
            "default/huge",
            "pool p: insufficient sgx.intel.com/epc: requested 20Gi, template has 16Gi",
        ),
    )
    assert result.to_json()["unschedulable"] == [
        {
            "namespace": "default",
            "name": "huge",
            "reason": "pool p: insufficient sgx.intel.com/epc: requested 20Gi, template has 16Gi",
        }
    ]


def test_a_pod_one_byte_over_the_template_is_not_reported_as_equal_to_it() -> None:
    snap = snapshot()
    add_pod(snap, "edge", 16 + 1 / GIB)  # 16Gi and one byte
    result = run(snap, [pool_state()])
    assert result.scale_ups == ()
    assert result.unschedulable == (
        Unschedulable(
            "default/edge",
            "pool p: insufficient sgx.intel.com/epc: requested 17179869185, template has 16Gi",
        ),
    )


def _two_pools() -> list[PoolState]:
    small = template_node("s", {EPC: "8Gi", "cpu": "2", "memory": "16Gi"}, DEFAULT_EPC_RESOURCES)
    big = template_node("b", {EPC: "32Gi", "cpu": "8", "memory": "64Gi"}, DEFAULT_EPC_RESOURCES)
    return [
        pool_state("big", template=big, cost_per_hour=0.8, priority=1),
        pool_state("small", template=small, cost_per_hour=0.2, priority=5),
    ]


def test_least_waste_counts_epc() -> None:
    snap = snapshot()
    add_pod(snap, "a", 7)
    add_pod(snap, "b", 7)
    # small: two 8 GiB nodes, 2 GiB idle; big: one 32 GiB node, 18 GiB idle.
    result = run(snap, _two_pools(), expander="least-waste")
    assert [(u.pool, u.count) for u in result.scale_ups] == [("small", 2)]


def test_cheapest_and_priority_expanders() -> None:
    snap = snapshot()
    for i in range(4):
        add_pod(snap, f"p{i}", 7)
    # small: 4 nodes at 0.2 = 0.8/h; big: 1 node at 0.8/h (4 x 7 = 28 GiB fits 32): a tie on
    # cost per pod broken by name.
    cheapest = run(snap, _two_pools(), expander="cheapest")
    assert [(u.pool, u.count) for u in cheapest.scale_ups] == [("big", 1)]
    prioritised = run(snap, _two_pools(), expander="priority")
    assert [(u.pool, u.count) for u in prioritised.scale_ups] == [("small", 4)]


def test_pods_go_only_to_pools_their_node_selector_matches() -> None:
    snap = snapshot()
    snap.upsert_pod(
        PodInfo("default", "picky", epc={EPC: 7 * GIB}, node_selector={"agentpool": "big"})
    )
    pools = [
        dataclasses.replace(
            p, template=dataclasses.replace(p.template, labels={"agentpool": p.name})
        )
        for p in _two_pools()
    ]
    # least-waste alone would choose the small pool (see above); the selector rules it out.
    result = run(snap, pools, pressure=False)
    assert [(u.pool, u.count) for u in result.scale_ups] == [("big", 1)]
    snap.upsert_pod(PodInfo("default", "lost", epc={EPC: GIB}, node_selector={"zone": "x"}))
    assert run(snap, pools, pressure=False).unschedulable == (
        Unschedulable(
            "default/lost",
            "pool big: node(s) didn't match Pod's node affinity/selector; "
            "pool small: node(s) didn't match Pod's node affinity/selector",
        ),
    )


def test_pressure_grows_by_the_hpa_rule() -> None:
    snap = snapshot()
    for n in ("n1", "n2"):
        add_node(snap, n)
        add_pod(snap, f"{n}-a", 15.2, node=n)
    # 95% requested against a target of 80%: ceil(2 * 0.95 / 0.8) = 3 nodes.
    result = run(snap, [pool_state(nodes=("n1", "n2"))])
    assert result.scale_ups == (ScaleUp("p", 1, "pressure"),)


def test_pressure_inside_the_tolerance_changes_nothing() -> None:
    snap = snapshot()
    for n in ("n1", "n2"):
        add_node(snap, n)
        add_pod(snap, f"{n}-a", 13.6, node=n)
    # 85% against 80% is a ratio of 1.0625, inside the 10% dead band.
    result = run(snap, [pool_state(nodes=("n1", "n2"))])
    assert result.scale_ups == ()


def _idle_pair() -> ClusterSnapshot:
    snap = snapshot()
    add_node(snap, "n1")
    add_node(snap, "n2")
    add_pod(snap, "busy", 6, node="n1")
    add_pod(snap, "idle", 1, node="n2")
    return snap


def test_scale_down_waits_for_the_unneeded_time() -> None:
    snap = _idle_pair()
    pools = [pool_state(nodes=("n1", "n2"))]
    first = run(snap, pools, now=100.0)
    assert first.scale_downs == ()
    assert first.unneeded_since == {"n1": 100.0, "n2": 100.0}
    later = run(snap, pools, now=700.0, unneeded_since=first.unneeded_since)
    # n2 (least used) goes and its pod moves to n1; n1's pods then have nowhere to go.
    assert [d.node for d in later.scale_downs] == ["n2"]
    assert later.targets == {"p": 1}


def test_scale_down_needs_the_pods_to_fit_elsewhere() -> None:
    snap = snapshot()
    add_node(snap, "n1")
    add_node(snap, "n2")
    add_pod(snap, "a", 7, node="n1")
    add_pod(snap, "b", 7, node="n2")
    add_pod(snap, "c", 5, node="n1")
    add_pod(snap, "d", 5, node="n2")
    # Both at 75%: above 0.5, nothing is unneeded.
    assert run(snap, [pool_state(nodes=("n1", "n2"))], now=1e6).scale_downs == ()
    snap2 = snapshot()
    add_node(snap2, "n1")
    add_node(snap2, "n2")
    add_pod(snap2, "a", 7, node="n1")
    add_pod(snap2, "b", 7, node="n2")
    since = {"n1": 0.0, "n2": 0.0}
    # Both at 44%: n1 (first by name) goes, its pod joins n2 (14 of 16 GiB); n2 must stay.
    result = run(
        snap2, [pool_state(nodes=("n1", "n2"))], now=1e4, unneeded_since=since, pressure=False
    )
    assert [d.node for d in result.scale_downs] == ["n1"]
    snap3 = snapshot()
    add_node(snap3, "n1")
    add_node(snap3, "n2")
    add_pod(snap3, "a", 7, node="n1")
    add_pod(snap3, "b", 7, node="n2")
    add_pod(snap3, "c", 6, node="n2", cpu=100)
    # n1 at 44% is unneeded, but its 7 GiB pod does not fit n2 (13 of 16 used).
    result3 = run(snap3, [pool_state(nodes=("n1", "n2"))], now=1e4, unneeded_since=since)
    assert result3.scale_downs == ()


def test_scale_down_respects_min_size_and_the_delay_after_add() -> None:
    snap = _idle_pair()
    since = {"n1": 0.0, "n2": 0.0}
    at_min = run(snap, [pool_state(nodes=("n1", "n2"), min_size=2)], now=1e4, unneeded_since=since)
    assert at_min.scale_downs == ()
    recent = run(
        snap, [pool_state(nodes=("n1", "n2"), last_scale_up=9900.0)], now=1e4, unneeded_since=since
    )
    assert recent.scale_downs == ()


def test_cluster_autoscaler_emulation_ignores_epc() -> None:
    snap = snapshot()
    for i in range(4):
        add_pod(snap, f"p{i}", 12, cpu=500)
    # By EPC these need 4 nodes; by CPU (4 x 0.5 of 4 cores) one node holds them all.
    epc = run(snap, [pool_state()])
    blind = run(snap, [pool_state()], epc_aware=False, pressure=False)
    assert epc.targets == {"p": 4}
    assert blind.targets == {"p": 1}


def test_min_size_is_restored() -> None:
    result = run(snapshot(), [pool_state(min_size=2)])
    assert result.scale_ups == (ScaleUp("p", 2, "min-size"),)


@st.composite
def cluster(draw: st.DrawFn) -> tuple[ClusterSnapshot, list[PoolState], dict[str, float]]:
    snap = snapshot()
    pools = []
    since: dict[str, float] = {}
    for p in range(draw(st.integers(1, 3))):
        epc = draw(st.sampled_from(["4Gi", "8Gi", "16Gi"]))
        template = template_node(
            f"t{p}", {EPC: epc, "cpu": "4", "memory": "16Gi"}, DEFAULT_EPC_RESOURCES
        )
        lo = draw(st.integers(0, 3))
        hi = draw(st.integers(lo, 6))
        ready = draw(st.integers(lo, hi))
        in_flight = draw(st.integers(0, hi - ready))
        names = tuple(add_node(snap, f"pool{p}-{i}", template) for i in range(ready))
        for n in names:
            for j in range(draw(st.integers(0, 3))):
                size = draw(st.sampled_from([0.5, 1, 2, 3]))
                if snap.free(EPC, snap.slots_of([n]))[0] >= size * GIB:
                    add_pod(snap, f"{n}-{j}", size, node=n)
            if draw(st.booleans()):
                since[n] = draw(st.sampled_from([0.0, 500.0]))
        pools.append(
            pool_state(
                f"pool{p}",
                nodes=names,
                template=template,
                min_size=lo,
                max_size=hi,
                in_flight=in_flight,
                cost_per_hour=draw(st.sampled_from([0.1, 0.5, 1.0])),
                priority=draw(st.integers(0, 3)),
            )
        )
    for i in range(draw(st.integers(0, 8))):
        add_pod(snap, f"pending-{i}", draw(st.sampled_from([0, 1, 3, 6, 12, 20])))
    return snap, pools, since


@settings(max_examples=60, deadline=None)
@given(
    cluster(),
    st.sampled_from(["least-waste", "cheapest", "priority"]),
    st.booleans(),
)
def test_plans_stay_within_min_and_max_and_leave_the_snapshot_alone(
    state: tuple[ClusterSnapshot, list[PoolState], dict[str, float]], expander: str, aware: bool
) -> None:
    snap, pools, since = state
    before = (
        dict(snap.pods),
        snap.epc[EPC].requested.copy(),
        snap.cpu_requested.copy(),
        sorted(snap.slots),
    )
    result = run(snap, pools, now=1000.0, expander=expander, epc_aware=aware, unneeded_since=since)
    assert (dict(snap.pods), sorted(snap.slots)) == (before[0], before[3])
    assert np.array_equal(snap.epc[EPC].requested, before[1])
    assert np.array_equal(snap.cpu_requested, before[2])
    by_name = {p.name: p for p in pools}
    for name, target in result.targets.items():
        p = by_name[name]
        assert p.min_size <= target <= p.max_size
    for up in result.scale_ups:
        assert up.count > 0
    for down in result.scale_downs:
        assert down.node in by_name[down.pool].nodes
    assert len({d.node for d in result.scale_downs}) == len(result.scale_downs)
    if result.scale_ups:
        assert result.scale_downs == ()
