"""The planner's refusals, each on a cluster small enough to work out by hand.

Protects the "don't" rules of core/plan.py that a mutation audit removed without a test
noticing: no scale-down that would push the node's own pool or a pool receiving its pods over the
EPC target; the what-if copy put back after a drain that fails half-way and after a removal
refused for pressure, so the next candidate is judged on the real cluster; nodes still booting
counted in the pressure rule (with and without pending pods); min-size counted after the earlier
removals of the same plan. Nodes are 16 GiB of EPC (`TEMPLATE`); amounts are in GiB.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from epcsched.core.plan import Placement, Plan, PlanInput, PlanPolicy, PoolState, ScaleUp, plan
from epcsched.core.snapshot import ClusterSnapshot
from epcsched.model import NodeInfo, PodInfo
from epcsched.objects import template_node
from epcsched.quantity import DEFAULT_EPC_RESOURCES
from tests.helpers import LEGACY
from tests.simulation_helpers import EPC, GIB

TEMPLATE = template_node(
    "t", {EPC: "16Gi", "cpu": "4", "memory": "32Gi", "pods": "110"}, DEFAULT_EPC_RESOURCES
)
# A node with 16 GiB under each of two EPC names.
TWO_NAMES = template_node(
    "t2",
    {EPC: "16Gi", LEGACY: "16384", "cpu": "4", "memory": "32Gi", "pods": "110"},
    DEFAULT_EPC_RESOURCES,
)


def cluster(
    nodes: dict[str, NodeInfo], pods: dict[str, tuple[str | None, dict[str, float]]]
) -> Any:
    snap = ClusterSnapshot(DEFAULT_EPC_RESOURCES)
    for name, template in nodes.items():
        snap.upsert_node(dataclasses.replace(template, name=name))
    for name, (node, epc) in pods.items():
        snap.upsert_pod(
            PodInfo(
                "default",
                name,
                node_name=node,
                phase="Running" if node else "Pending",
                epc={k: int(v * GIB) for k, v in epc.items()},
                cpu_milli=100,
                memory=GIB // 4,
                owner_kind="ReplicaSet",
            )
        )
    return snap


def pool(name: str, *nodes: str, **kw: Any) -> PoolState:
    return PoolState(
        name=name, template=TEMPLATE, nodes=nodes, **{"min_size": 0, "max_size": 10, **kw}
    )


def run(snap: Any, pools: list[PoolState], *, unneeded: tuple[str, ...], **policy: Any) -> Plan:
    # Every node in `unneeded` has been unneeded since t=0; the plan is at t=10,000 s.
    since = dict.fromkeys(unneeded, 0.0)
    return plan(PlanInput(snap, pools, 1e4, PlanPolicy(**policy), since))


def test_no_scale_down_that_would_push_its_own_pool_over_target() -> None:
    # n1 7 GiB, n2 7 GiB: removing either puts 14 of 16 GiB (87.5 %) on the other, over 80 %.
    snap = cluster({"n1": TEMPLATE, "n2": TEMPLATE}, {"a": ("n1", {EPC: 7}), "b": ("n2", {EPC: 7})})
    result = run(snap, [pool("p", "n1", "n2")], unneeded=("n1", "n2"))
    assert result.scale_downs == ()
    assert result.targets == {"p": 2}
    # Both stay unneeded, so the next plan considers them again.
    assert result.unneeded_since == {"n1": 0.0, "n2": 0.0}
    # 7 and 5 GiB: n2 (31 %) goes first, leaving 12 of 16 (75 %) on n1; then n1 has nowhere.
    snap = cluster({"n1": TEMPLATE, "n2": TEMPLATE}, {"a": ("n1", {EPC: 7}), "b": ("n2", {EPC: 5})})
    result = run(snap, [pool("p", "n1", "n2")], unneeded=("n1", "n2"))
    assert [d.node for d in result.scale_downs] == ["n2"]
    assert result.placements == (Placement("default/b", "n1", None, "n2"),)


def test_no_scale_down_that_would_push_the_receiving_pool_over_target() -> None:
    # Pool "a" has one node holding 4 GiB; pool "b" one node holding 10 GiB. Removing a1 moves
    # its pod to b1: 14 of 16 GiB in pool b, over 80 %. Pool a itself would be empty.
    snap = cluster(
        {"a1": TEMPLATE, "b1": TEMPLATE}, {"x": ("a1", {EPC: 4}), "y": ("b1", {EPC: 10})}
    )
    result = run(snap, [pool("a", "a1"), pool("b", "b1")], unneeded=("a1",))
    assert result.scale_downs == ()
    # Without the pressure rule the same removal is fine.
    relaxed = run(snap, [pool("a", "a1"), pool("b", "b1")], unneeded=("a1",), pressure=False)
    assert [d.node for d in relaxed.scale_downs] == ["a1"]


def test_the_copy_is_put_back_after_a_drain_that_fails_half_way() -> None:
    # x holds q (6 GiB of EPC) and p (1 GiB of the legacy name, which only x advertises);
    # y holds 10 GiB (free 6, not unneeded); z holds r (6 GiB). Candidates by use: x (7 of 32
    # GiB over both names) then z (6 of 16). Draining x moves q to y (the fullest that fits,
    # exactly), then finds no node for p: the drain fails and q must go back to x. Then r
    # moves to y (full after it, preferred by binpack over x at 12 of 16) and z goes.
    snap = cluster(
        {"x": TWO_NAMES, "y": TEMPLATE, "z": TEMPLATE},
        {
            "q": ("x", {EPC: 6}),
            "p": ("x", {LEGACY: 1}),
            "w": ("y", {EPC: 10}),
            "r": ("z", {EPC: 6}),
        },
    )
    pools = [pool("p", "x", "y", "z")]
    result = run(snap, pools, unneeded=("x", "z"), pressure=False)
    assert [d.node for d in result.scale_downs] == ["z"]
    assert result.placements == (Placement("default/r", "y", None, "z"),)
    assert result.targets == {"p": 2}


def test_the_copy_is_put_back_after_a_removal_refused_for_pressure() -> None:
    # Pool a: a1 holds 4 GiB. Pool b: b1 holds 3 GiB, b2 12 GiB. Candidates by use: b1 (19 %)
    # then a1 (25 %). Draining b1 moves its pod to b2 (15 of 16), and pool b would be 94 % on
    # b2 alone: refused, so b1 and its pod must come back. Then a1's pod goes to b2 (16 of 16,
    # fuller than b1), pool b stands at 19 of 32 GiB (59 %), and a1 goes.
    snap = cluster(
        {"a1": TEMPLATE, "b1": TEMPLATE, "b2": TEMPLATE},
        {"x": ("a1", {EPC: 4}), "y": ("b1", {EPC: 3}), "z": ("b2", {EPC: 12})},
    )
    result = run(snap, [pool("a", "a1"), pool("b", "b1", "b2")], unneeded=("a1", "b1"))
    assert [d.node for d in result.scale_downs] == ["a1"]
    assert result.placements == (Placement("default/x", "b2", None, "a1"),)
    assert result.targets == {"a": 0, "b": 2}


def test_booting_nodes_count_in_the_pressure_rule() -> None:
    # Two Ready nodes at 15.2 of 16 GiB (95 %) and two nodes booting: 30.4 of 64 GiB (47.5 %),
    # under the 80 % target. Counting only the Ready ones would grow the pool by
    # ceil(4 * 0.95 / 0.8) - 4 = 1.
    snap = cluster(
        {"n1": TEMPLATE, "n2": TEMPLATE}, {"a": ("n1", {EPC: 15.2}), "b": ("n2", {EPC: 15.2})}
    )
    result = run(snap, [pool("p", "n1", "n2", in_flight=2)], unneeded=())
    assert result.scale_ups == ()
    assert result.targets == {"p": 4}
    booting_none = run(snap, [pool("p", "n1", "n2")], unneeded=())
    assert booting_none.scale_ups == (ScaleUp("p", 1, "pressure"),)


def test_booting_nodes_holding_pending_pods_count_once() -> None:
    # As above with one node booting and a 14 GiB pod pending: the pod goes on the booting node,
    # and the pool holds 44.4 of 48 GiB (92.5 %, a ratio of 1.156 to the target, beyond the
    # 10 % dead band): ceil(3 * 1.156) - 3 = 1 more node. Counting the booting node's EPC a
    # second time (44.4 of 64 GiB) would see no pressure.
    snap = cluster(
        {"n1": TEMPLATE, "n2": TEMPLATE},
        {"a": ("n1", {EPC: 15.2}), "b": ("n2", {EPC: 15.2}), "c": (None, {EPC: 14})},
    )
    result = run(snap, [pool("p", "n1", "n2", in_flight=1)], unneeded=())
    assert result.scale_ups == (ScaleUp("p", 1, "pressure"),)
    assert [(pl.pod, pl.pool) for pl in result.placements] == [("default/c", "p")]
    assert result.targets == {"p": 4}


def test_min_size_counts_the_nodes_already_removed_in_the_same_plan() -> None:
    # Three idle nodes (1 GiB each); every one is unneeded and could go.
    nodes = {"n1": TEMPLATE, "n2": TEMPLATE, "n3": TEMPLATE}
    pods = {f"x{i}": (f"n{i}", {EPC: 1.0}) for i in (1, 2, 3)}
    for min_size, removed in ((2, 1), (1, 2), (3, 0)):
        snap = cluster(nodes, pods)
        result = run(snap, [pool("p", "n1", "n2", "n3", min_size=min_size)], unneeded=tuple(nodes))
        assert len(result.scale_downs) == removed, min_size
        assert result.targets == {"p": 3 - removed}


# ----- the scale-down scan goes on past each node it skips -------------------------------------


def idle(*names: str, epc: float = 1.0) -> dict[str, tuple[str | None, dict[str, float]]]:
    return {f"on-{n}": (n, {EPC: epc}) for n in names}


def test_each_skipped_node_does_not_end_the_scan() -> None:
    # "ghost" is not in the snapshot, "hot" pages, "busy" is over half full, "pinned" holds a pod
    # that blocks a drain; each comes before "n1" (idle) in the pool's list, and n1 still goes
    # (its pod moves to busy, the fullest node that fits).
    pods = idle("n1") | {"full": ("busy", {EPC: 12}), "hot-pod": ("hot", {EPC: 1})}
    snap = cluster({n: TEMPLATE for n in ("hot", "busy", "pinned", "n1")}, pods)
    bare = PodInfo("default", "bare", node_name="pinned", phase="Running", epc={EPC: GIB})
    snap.upsert_pod(bare)
    snap.set_pressure("hot", "EPC paging 500 pages/s above 100")
    pools = [pool("p", "ghost", "hot", "busy", "pinned", "n1")]
    result = run(snap, pools, unneeded=("hot", "busy", "pinned", "n1"), pressure=False)
    assert [d.node for d in result.scale_downs] == ["n1"]
    assert result.placements == (Placement("default/on-n1", "busy", None, "n1"),)
    # No node that may not go is remembered as unneeded.
    assert result.unneeded_since == {}


def test_a_pool_that_may_not_shrink_does_not_stop_the_others() -> None:
    # Pool "a" grew recently (or sits at its minimum); its node is the least used, so it is
    # considered first, skipped, and pool "b"'s node still goes.
    snap = cluster(
        {"a1": TEMPLATE, "a2": TEMPLATE, "b1": TEMPLATE, "b2": TEMPLATE},
        idle("a1", epc=0.5) | idle("b1") | {"x": ("a2", {EPC: 9}), "y": ("b2", {EPC: 9})},
    )
    for blocked in ({"last_scale_up": 1e4 - 60}, {"min_size": 2}):
        pools = [pool("a", "a1", "a2", **blocked), pool("b", "b1", "b2")]
        result = run(snap, pools, unneeded=("a1", "b1"), pressure=False)
        assert [d.node for d in result.scale_downs] == ["b1"], blocked


def test_the_delay_after_a_scale_up_ends_exactly_on_time() -> None:
    snap = cluster({"n1": TEMPLATE, "n2": TEMPLATE}, idle("n1", "n2"))
    for last, removed in ((1e4 - 600, 1), (1e4 - 599, 0)):
        pools = [pool("p", "n1", "n2", last_scale_up=last, min_size=1)]
        result = run(snap, pools, unneeded=("n1", "n2"))
        assert len(result.scale_downs) == removed, last


def test_a_node_at_exactly_the_utilization_threshold_is_needed() -> None:
    # 8 of 16 GiB is 0.5, not below scale_down_utilization 0.5.
    snap = cluster({"n1": TEMPLATE, "n2": TEMPLATE}, idle("n1", epc=8) | idle("n2", epc=7.5))
    result = run(snap, [pool("p", "n1", "n2")], unneeded=("n1", "n2"), pressure=False)
    assert [d.node for d in result.scale_downs] == ["n2"]
    assert "n1" not in result.unneeded_since


def test_a_removal_that_lands_exactly_on_target_is_allowed() -> None:
    # Target 75 %: removing n2 puts 12 of 16 GiB (exactly 75 %) on n1, not over it.
    snap = cluster({"n1": TEMPLATE, "n2": TEMPLATE}, idle("n1", epc=8) | idle("n2", epc=4))
    result = run(
        snap,
        [pool("p", "n1", "n2")],
        unneeded=("n1", "n2"),
        target_utilization=0.75,
        scale_down_utilization=0.6,
    )
    assert [d.node for d in result.scale_downs] == ["n2"]


def test_cluster_autoscaler_emulation_measures_nodes_by_cpu_and_memory() -> None:
    # n1 holds 12 GiB of EPC but 100m of 4 cores: by EPC it is needed (75 %), by CPU and memory
    # (as cluster-autoscaler measures) it is not, and its pod fits n2 by CPU and memory.
    snap = cluster({"n1": TEMPLATE, "n2": TEMPLATE}, idle("n1", epc=12) | idle("n2", epc=1))
    pools = [pool("p", "n1", "n2", min_size=1)]
    aware = run(snap, pools, unneeded=("n1", "n2"), pressure=False)
    assert [d.node for d in aware.scale_downs] == ["n2"]
    emulated = run(snap, pools, unneeded=("n1", "n2"), epc_aware=False)
    assert [d.node for d in emulated.scale_downs] == ["n1"]


def test_pending_pods_the_plan_settles_take_their_room_before_a_drain() -> None:
    # n1 holds 8 GiB; a 6 GiB pod is pending and settles on n1 (the fuller node that fits):
    # 14 of 16. n2 holds 3 GiB and is unneeded, but its pod no longer fits n1, so n2 stays.
    snap = cluster(
        {"n1": TEMPLATE, "n2": TEMPLATE},
        {"a": ("n1", {EPC: 8}), "b": ("n2", {EPC: 3}), "c": (None, {EPC: 6})},
    )
    result = run(snap, [pool("p", "n1", "n2")], unneeded=("n2",), pressure=False)
    assert result.placements == (Placement("default/c", "n1"),)
    assert result.scale_downs == ()


def test_the_node_unneeded_longest_goes_first_among_equals() -> None:
    snap = cluster({"n1": TEMPLATE, "n2": TEMPLATE}, idle("n1", "n2"))
    since = {"n1": 100.0, "n2": 0.0}
    result = plan(PlanInput(snap, [pool("p", "n1", "n2", min_size=1)], 1e4, PlanPolicy(), since))
    assert [d.node for d in result.scale_downs] == ["n2"]


def test_a_drain_moves_the_biggest_pods_first() -> None:
    # x holds 5 and 2 GiB; r1 has 5 GiB free, r2 2. Under spread, moving the 2 GiB pod first
    # would put it on the emptier r1 and leave the 5 GiB pod nowhere; biggest first, both fit.
    snap = cluster(
        {"x": TEMPLATE, "r1": TEMPLATE, "r2": TEMPLATE},
        {
            "big": ("x", {EPC: 5}),
            "small": ("x", {EPC: 2}),
            "u1": ("r1", {EPC: 11}),
            "u2": ("r2", {EPC: 14}),
        },
    )
    result = run(
        snap, [pool("p", "x", "r1", "r2")], unneeded=("x",), pressure=False, strategy="spread"
    )
    assert [d.node for d in result.scale_downs] == ["x"]
    assert result.placements == (
        Placement("default/big", "r1", None, "x"),
        Placement("default/small", "r2", None, "x"),
    )


def test_a_failed_drain_puts_back_the_nodes_measured_use() -> None:
    # Accounting max. x advertises both names: q (2 GiB of EPC, movable) and p (1 GiB of the
    # legacy name, which no other node has); telemetry says 7 GiB in use, so x has 9 GiB of EPC
    # free, not 14. y holds 12 GiB (4 free); z holds r, 10 GiB. x's drain moves q to y, finds no
    # node for p and is undone; then r (10 GiB) fits neither y (4) nor x (9): z stays. Had x
    # come back without its measured use, r would fit x (14 free) and z would go.
    snap = cluster(
        {"x": TWO_NAMES, "y": TEMPLATE, "z": TEMPLATE},
        {
            "q": ("x", {EPC: 2}),
            "p": ("x", {LEGACY: 1}),
            "w": ("y", {EPC: 12}),
            "r": ("z", {EPC: 10}),
        },
    )
    snap.accounting = "max"
    snap.set_usage("x", 7 * GIB)
    pools = [pool("p", "x", "y", "z")]
    result = run(snap, pools, unneeded=("x", "z"), pressure=False, scale_down_utilization=0.7)
    assert result.scale_downs == ()
    assert set(result.unneeded_since) == {"x", "z"}


def test_the_scale_down_reason_says_what_moves() -> None:
    # n1 holds nothing, n2 one 1 GiB pod, n3 8 GiB: n1 goes first (use 0), then n2 (its pod to n3).
    snap = cluster(
        {"n1": TEMPLATE, "n2": TEMPLATE, "n3": TEMPLATE}, idle("n2") | idle("n3", epc=8.5)
    )
    result = run(snap, [pool("p", "n1", "n2", "n3")], unneeded=("n1", "n2"), pressure=False)
    assert [(d.node, d.reason) for d in result.scale_downs] == [
        ("n1", "utilization 0.00 below 0.5 for 600s; no pod to move"),
        ("n2", "utilization 0.06 below 0.5 for 600s; its 1 pod(s) fit elsewhere"),
    ]
