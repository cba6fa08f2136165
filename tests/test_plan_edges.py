"""The planner at the edges a whole-file mutation run found untested, values worked by hand.

Protects in core/plan.py: `PlanPolicy` (its checks, `from_settings` copying every knob);
`Plan.to_json` field by field; the exact wording of each reason a pool's template refuses a pod
(an EPC name it lacks, too small after headroom, CPU, memory, pod slots, taints, selectors,
several at once) and of the reasons no pool grows (at maxSize, backed off, no pool at all); the
order pending pods are packed in; the expanders on exact ties and near-ties (waste, pods helped,
cost per pod); the waste measure on EPC and on CPU and memory; first-fit-decreasing at the
pool's size limit and with headroom; templates that are not Ready; booting nodes under
cluster-autoscaler emulation; the pressure rule at the tolerance edge, over skipped pools and
added to other scale-ups; scale-down refused onto a pool over target, the drain order, and a
failed drain putting back the node's pressure and a measured use of 0; `node_utilization` at
one unit, with reservations and on nodes without EPC. Nodes are 16 GiB of EPC, 4 CPUs and
32 GiB of memory (`TEMPLATE`) unless a test says otherwise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import pytest

from epcsched.config import AutoscalerSettings
from epcsched.core.plan import (
    Plan,
    PlanInput,
    PlanPolicy,
    PoolState,
    ScaleDown,
    ScaleUp,
    Unschedulable,
    node_utilization,
    plan,
)
from epcsched.core.snapshot import ClusterSnapshot, Headroom
from epcsched.model import NodeInfo, NodeSelectorRequirement, PodInfo
from epcsched.objects import template_node
from epcsched.quantity import DEFAULT_EPC_RESOURCES
from tests.test_plan import TEMPLATE, add_node, add_pod, pool_state, run, snapshot

EPC = "sgx.intel.com/epc"
LEGACY = "kubernetes.azure.com/sgx_epc_mem_in_MiB"
INTEL_MIB = "sgx.intel.com/sgx_epc_mem_in_MiB"
ALIBABA = "alibabacloud.com/sgx_epc_MiB"
GIB = 2**30
MIB = 2**20


def template(resources: Mapping[str, str], **kw: Any) -> NodeInfo:
    return template_node("t", dict(resources), DEFAULT_EPC_RESOURCES, **kw)


PLAIN = template({"cpu": "4", "memory": "32Gi"})


def pending(
    name: str, epc: Mapping[str, int] | None = None, *, cpu: int = 100, memory: int = GIB // 4
) -> PodInfo:
    return PodInfo(
        "default",
        name,
        epc=dict(epc or {}),
        cpu_milli=cpu,
        memory=memory,
        owner_kind="ReplicaSet",
    )


def decide(
    pods: Sequence[PodInfo],
    pools: list[PoolState],
    *,
    headroom: Headroom | None = None,
    **policy: Any,
) -> Plan:
    snap = ClusterSnapshot(DEFAULT_EPC_RESOURCES, headroom=headroom)
    for p in pods:
        snap.upsert_pod(p)
    # Pressure off unless a test asks: these tests are about scale-ups for pending pods.
    return plan(PlanInput(snap, pools, 0.0, PlanPolicy(**{"pressure": False, **policy})))


def reasons(result: Plan) -> list[str]:
    return [u.reason for u in result.unschedulable]


def ups(result: Plan) -> list[tuple[str, int, tuple[str, ...]]]:
    return [(u.pool, u.count, u.pods) for u in result.scale_ups]


# ----- PlanPolicy.from_settings -----------------------------------------------------------
def test_from_settings_copies_every_knob_and_defaults_to_binpack() -> None:
    settings = AutoscalerSettings(
        expander="priority",
        target_utilization=0.7,
        tolerance=0.05,
        scale_down_utilization=0.4,
        scale_down_unneeded_time=300.0,
        scale_down_delay_after_add=120.0,
    )
    # Every value differs from PlanPolicy's default, so a dropped argument shows.
    assert PlanPolicy.from_settings(settings) == PlanPolicy(
        expander="priority",
        target_utilization=0.7,
        tolerance=0.05,
        scale_down_utilization=0.4,
        scale_down_unneeded_time=300.0,
        scale_down_delay_after_add=120.0,
        strategy="binpack",
        epc_aware=True,
        pressure=True,
        epc_pods_only=True,
    )


def test_from_settings_passes_the_strategy_and_the_overrides() -> None:
    policy = PlanPolicy.from_settings(
        AutoscalerSettings(), strategy="spread", epc_aware=False, pressure=False
    )
    assert (policy.strategy, policy.epc_aware, policy.pressure, policy.epc_pods_only) == (
        "spread",
        False,
        False,
        True,
    )


# ----- Plan.to_json -----------------------------------------------------------------------
def test_to_json_lists_each_scale_down_field_by_field() -> None:
    snap = snapshot()
    add_node(snap, "n1")
    add_node(snap, "n2")
    add_pod(snap, "a", 2, node="n1")
    since = {"n1": 0.0, "n2": 0.0}
    result = run(snap, [pool_state(nodes=("n1", "n2"))], 1e4, unneeded_since=since)
    # n2 is empty (0.00) and goes first; n1's 2 GiB then has nowhere to go, so n1 stays.
    assert result.scale_downs == (
        ScaleDown("p", "n2", "utilization 0.00 below 0.5 for 600s; no pod to move"),
    )
    assert result.to_json() == {
        "scaleUps": [],
        "scaleDowns": [
            {
                "pool": "p",
                "node": "n2",
                "reason": "utilization 0.00 below 0.5 for 600s; no pod to move",
            }
        ],
        "targets": {"p": 1},
        "unschedulable": [],
    }


def test_to_json_splits_a_key_at_its_first_slash() -> None:
    # A namespace never holds a slash, so everything after the first one is the name.
    result = Plan((), (), {}, {}, (Unschedulable("team-a/job/0", "why"),))
    assert result.to_json()["unschedulable"] == [
        {"namespace": "team-a", "name": "job/0", "reason": "why"}
    ]


# ----- reasons a template refuses a pod -----------------------------------------------------
def test_a_template_without_the_name_says_which_it_advertises() -> None:
    result = decide([pending("a", {LEGACY: 4 * GIB})], [pool_state()])
    assert reasons(result) == [
        f"pool p: template does not advertise {LEGACY} (it advertises {EPC})"
    ]


def test_a_template_with_two_names_lists_both_sorted() -> None:
    two = template({INTEL_MIB: "16384", EPC: "16Gi", "cpu": "4", "memory": "32Gi"})
    result = decide([pending("a", {ALIBABA: GIB})], [pool_state(template=two)])
    assert reasons(result) == [
        f"pool p: template does not advertise {ALIBABA} (it advertises {EPC}, {INTEL_MIB})"
    ]


def test_a_template_without_epc_says_so() -> None:
    result = decide([pending("a", {EPC: GIB})], [pool_state(template=PLAIN)])
    assert reasons(result) == [f"pool p: template does not advertise {EPC} (it has no EPC)"]


def test_a_missing_name_does_not_hide_the_next_names_shortfall() -> None:
    # Names are read sorted: alibabacloud.com/... (missing) before sgx.intel.com/epc (too small).
    result = decide([pending("a", {EPC: 20 * GIB, ALIBABA: GIB})], [pool_state()])
    assert reasons(result) == [
        f"pool p: template does not advertise {ALIBABA} (it advertises {EPC}); "
        f"insufficient {EPC}: requested 20Gi, template has 16Gi"
    ]


def test_too_small_after_headroom_names_the_headroom() -> None:
    # 16 GiB less 1 GiB kept free is 15 GiB usable: 15.5 GiB does not fit.
    result = decide(
        [pending("a", {EPC: 15 * GIB + GIB // 2})],
        [pool_state()],
        headroom=Headroom(bytes=GIB),
    )
    assert result.scale_ups == ()
    assert reasons(result) == [
        f"pool p: insufficient {EPC}: requested 15.5Gi, template has 15Gi after 1Gi headroom"
    ]


def test_a_pod_filling_a_template_exactly_after_headroom_fits_and_one_byte_more_does_not() -> None:
    # A 1/16 share of 16 GiB is 1 GiB kept: exactly 15 GiB fits on one new node.
    headroom = Headroom(fraction=Fraction(1, 16))
    exact = decide([pending("a", {EPC: 15 * GIB})], [pool_state()], headroom=headroom)
    assert ups(exact) == [("p", 1, ("default/a",))]
    assert exact.unschedulable == ()
    over = decide([pending("a", {EPC: 15 * GIB + 1})], [pool_state()], headroom=headroom)
    assert over.scale_ups == ()
    # 15Gi + 1 would print as "15.0Gi", alike to 15Gi: the exact byte count is printed instead.
    assert reasons(over) == [
        f"pool p: insufficient {EPC}: requested 16106127361, template has 15Gi after 1Gi headroom"
    ]


def test_headroom_keeps_two_pods_off_one_new_node() -> None:
    # 2 GiB kept of 16 leaves 14: two 7.5 GiB pods (15) need two nodes, not one.
    result = decide(
        [pending("a", {EPC: 15 * GIB // 2}), pending("b", {EPC: 15 * GIB // 2})],
        [pool_state()],
        headroom=Headroom(bytes=2 * GIB),
    )
    assert ups(result) == [("p", 2, ("default/a", "default/b"))]
    assert [(p.pod, p.node) for p in result.placements] == [
        ("default/a", "~new1-p-000000"),
        ("default/b", "~new1-p-000001"),
    ]


def test_epc_exactly_filling_the_template_is_no_shortfall_beside_cpu() -> None:
    # EPC exactly 16 GiB fills the template and is no shortfall; 5 CPUs against 4 is.
    result = decide([pending("a", {EPC: 16 * GIB}, cpu=5000)], [pool_state()])
    assert reasons(result) == ["pool p: insufficient cpu: requested 5, template has 4"]


def test_cpu_in_millicores_when_not_whole() -> None:
    result = decide([pending("a", {EPC: GIB}, cpu=4500)], [pool_state()])
    assert reasons(result) == ["pool p: insufficient cpu: requested 4500m, template has 4"]
    odd = template({EPC: "16Gi", "cpu": "3500m", "memory": "32Gi"})
    result = decide([pending("a", {EPC: GIB}, cpu=4000)], [pool_state(template=odd)])
    assert reasons(result) == ["pool p: insufficient cpu: requested 4, template has 3500m"]


def test_memory_short_is_reported() -> None:
    result = decide([pending("a", {EPC: GIB}, memory=33 * GIB)], [pool_state()])
    assert reasons(result) == ["pool p: insufficient memory: requested 33Gi, template has 32Gi"]


def test_several_shortfalls_are_joined_in_filter_order() -> None:
    result = decide([pending("a", {EPC: 20 * GIB}, cpu=5000, memory=33 * GIB)], [pool_state()])
    assert reasons(result) == [
        f"pool p: insufficient {EPC}: requested 20Gi, template has 16Gi; "
        "insufficient cpu: requested 5, template has 4; "
        "insufficient memory: requested 33Gi, template has 32Gi"
    ]


def test_cpu_memory_and_one_pod_slot_exactly_used_are_no_shortfall() -> None:
    # 4 CPUs, 32 GiB and the template's single pod slot all fit exactly; only EPC is short.
    one_slot = template({EPC: "16Gi", "cpu": "4", "memory": "32Gi", "pods": "1"})
    result = decide(
        [pending("a", {EPC: 20 * GIB}, cpu=4000, memory=32 * GIB)],
        [pool_state(template=one_slot)],
    )
    assert reasons(result) == [f"pool p: insufficient {EPC}: requested 20Gi, template has 16Gi"]


def test_a_template_without_pod_slots_says_so() -> None:
    no_slots = template({EPC: "16Gi", "cpu": "4", "memory": "32Gi", "pods": "0"})
    result = decide([pending("a", {EPC: GIB})], [pool_state(template=no_slots)])
    assert reasons(result) == ["pool p: Too many pods: the template has no pod slots"]


def test_a_refusal_no_figure_explains_has_a_reason_still() -> None:
    # The template advertises alibabacloud.com/sgx_epc_MiB, but the cluster's EPC names (only
    # sgx.intel.com/epc here) do not include it: the fit refuses, and no amount is short.
    snap = ClusterSnapshot({EPC: 1})
    snap.upsert_pod(pending("a", {ALIBABA: GIB}))
    other = template({ALIBABA: "16384", "cpu": "4", "memory": "32Gi"})
    result = plan(PlanInput(snap, [pool_state(template=other)], 0.0))
    assert reasons(result) == ["pool p: the template cannot hold it"]


def test_taints_and_selectors_are_named() -> None:
    tainted = template(
        {EPC: "16Gi", "cpu": "4", "memory": "32Gi"},
        taints=[{"key": "dedicated", "value": "sgx", "effect": "NoSchedule"}],
    )
    labelled = template({EPC: "16Gi", "cpu": "4", "memory": "32Gi"}, labels={"zone": "b"})
    pod = dataclasses.replace(pending("a", {EPC: GIB}), node_selector={"zone": "a"})
    result = decide([pod], [pool_state("t", template=tainted), pool_state("z", template=labelled)])
    assert reasons(result) == [
        "pool t: node(s) had untolerated taint {dedicated: sgx}; "
        "pool z: node(s) didn't match Pod's node affinity/selector"
    ]


def test_the_reason_is_judged_on_the_same_what_if_node_as_the_verdict() -> None:
    # The verdict is taken on a what-if node named "~probe" (what-if names start with "~"); a
    # pod that refuses that name (matchFields) must get the rule's reason, not "cannot hold it".
    # This pins the probe's name, an internal detail: rename both together.
    term = (NodeSelectorRequirement("metadata.name", "NotIn", ("~probe",), field=True),)
    pod = dataclasses.replace(pending("a", {EPC: GIB}), node_affinity=(term,))
    result = decide([pod], [pool_state()])
    assert reasons(result) == ["pool p: node(s) didn't match Pod's node affinity/selector"]


def test_a_template_taken_from_a_node_not_ready_still_gives_ready_nodes() -> None:
    not_ready = dataclasses.replace(TEMPLATE, ready=False)
    result = decide([pending("a", {EPC: GIB})], [pool_state(template=not_ready)])
    assert ups(result) == [("p", 1, ("default/a",))]
    assert result.unschedulable == ()


# ----- reasons no pool grows --------------------------------------------------------------
def test_no_pool_configured() -> None:
    result = decide([pending("a", {EPC: GIB})], [])
    assert result.unschedulable == (Unschedulable("default/a", "no node pool is configured"),)
    assert result.targets == {}


def test_pools_at_max_size_are_listed_together() -> None:
    result = decide([pending("a", {EPC: GIB})], [pool_state("a", max_size=0), pool_state("b")])
    # b can grow, so nothing is unschedulable; with b full too, both are named in one clause.
    assert ups(result) == [("b", 1, ("default/a",))]
    result = decide(
        [pending("a", {EPC: GIB})],
        [pool_state("a", max_size=0), pool_state("b", max_size=2, in_flight=0, nodes=("x", "y"))],
    )
    assert reasons(result) == ["pools a at maxSize 0, b at maxSize 2"]


def test_blocked_pools_come_first_each_in_its_own_clause() -> None:
    too_small = template({EPC: "8Gi", "cpu": "4", "memory": "32Gi"})
    result = decide(
        [pending("a", {EPC: 12 * GIB})],
        [
            pool_state("a", blocked="backing off after a failed scale-up"),
            pool_state("b", blocked="a change is in progress"),
            pool_state("c", max_size=0),
            # A pool whose template is too small is left out when another could hold the pod.
            pool_state("d", template=too_small),
        ],
    )
    assert reasons(result) == [
        "pool a: backing off after a failed scale-up; pool b: a change is in progress; "
        "pools c at maxSize 0"
    ]
    assert result.scale_ups == ()


# ----- expanders --------------------------------------------------------------------------
def _sized(name: str, gib: int, **kw: Any) -> PoolState:
    return pool_state(
        name, template=template({EPC: f"{gib}Gi", "cpu": "8", "memory": "64Gi"}), **kw
    )


def test_cheapest_picks_the_lower_cost_where_least_waste_would_not() -> None:
    pods = [pending("a", {EPC: 7 * GIB})]
    pools = [_sized("big", 32, cost_per_hour=0.1), _sized("small", 8, cost_per_hour=1.0)]
    # least-waste: small idles 1 of 8 GiB (0.125), big 25 of 32 (0.78): small.
    assert ups(decide(pods, pools)) == [("small", 1, ("default/a",))]
    # cheapest: big costs 0.1/h for the pod, small 1.0/h: big.
    assert ups(decide(pods, pools, expander="cheapest")) == [("big", 1, ("default/a",))]


def test_cheapest_is_cost_per_pod_helped() -> None:
    pods = [pending("a", {EPC: 7 * GIB}), pending("b", {EPC: 7 * GIB})]
    # one: one 16 GiB node at 1.0/h holds both: 0.5/h a pod. two: room for one 8 GiB node at
    # 0.6/h holding one pod: 0.6/h a pod. The lower total (0.6 < 1.0) is not what counts.
    pools = [_sized("one", 16, cost_per_hour=1.0), _sized("two", 8, cost_per_hour=0.6, max_size=1)]
    assert ups(decide(pods, pools, expander="cheapest")) == [("one", 1, ("default/a", "default/b"))]


def test_cheapest_tie_on_cost_per_pod_goes_to_the_name() -> None:
    pods = [pending("a", {EPC: 7 * GIB}), pending("b", {EPC: 7 * GIB})]
    # x: two 8 GiB nodes at 0.5 = 1.0/h for 2 pods; w: one 16 GiB node at 1.0/h for 2: 0.5 each.
    pools = [_sized("x", 8, cost_per_hour=0.5), _sized("w", 16, cost_per_hour=1.0)]
    assert ups(decide(pods, pools, expander="cheapest")) == [("w", 1, ("default/a", "default/b"))]


def test_least_waste_tie_goes_to_the_pool_that_helps_more_pods() -> None:
    pods = [pending("a", {EPC: 6 * GIB}), pending("b", {EPC: 6 * GIB})]
    # a: room for one 8 GiB node, one pod: 2 of 8 idle (0.25). b: one 16 GiB node, both pods:
    # 4 of 16 idle (0.25). Equal waste; b helps two pods, so b wins although a sorts first.
    pools = [_sized("a", 8, max_size=1), _sized("b", 16)]
    assert ups(decide(pods, pools)) == [("b", 1, ("default/a", "default/b"))]


def test_least_waste_tie_on_waste_and_pods_goes_to_fewer_nodes() -> None:
    pods = [pending("a", {EPC: 4 * GIB}), pending("b", {EPC: 4 * GIB})]
    # a: two 4 GiB nodes, b: one 8 GiB node; both full (waste 0) and both hold the two pods.
    pools = [_sized("a", 4), _sized("b", 8)]
    assert ups(decide(pods, pools)) == [("b", 1, ("default/a", "default/b"))]


def test_priority_ties_fall_back_to_least_waste() -> None:
    pods = [pending("a", {EPC: 7 * GIB})]
    pools = [
        _sized("low", 8, priority=1),
        _sized("top-big", 32, priority=5),
        _sized("top-small", 8, priority=5),
    ]
    # top-big and top-small share the highest priority; top-small idles less (1/8 vs 25/32).
    assert ups(decide(pods, pools, expander="priority")) == [("top-small", 1, ("default/a",))]


# ----- waste ------------------------------------------------------------------------------
def _plain(name: str, cpu: str, memory: str) -> PoolState:
    return pool_state(name, template=template({"cpu": cpu, "memory": memory}))


def test_waste_without_epc_averages_the_idle_cpu_and_memory() -> None:
    pod = pending("q", cpu=100, memory=GIB // 4)
    # a: CPU 1 - 0.1/8 = 0.9875, memory 1 - 0.25/32; b: CPU 1 - 0.1/4 = 0.975, same memory.
    # b idles less, although a sorts first.
    pools = [_plain("a", "8", "32Gi"), _plain("b", "4", "32Gi")]
    assert ups(decide([pod], pools, epc_pods_only=False)) == [("b", 1, ("default/q",))]


def test_emulation_measures_waste_on_cpu_and_memory_even_for_epc_templates() -> None:
    pod = pending("a", {EPC: 4 * GIB}, cpu=100)
    big_cpu = template({EPC: "16Gi", "cpu": "8", "memory": "32Gi"})
    # cluster-autoscaler ignores EPC: a idles more CPU (0.9875) than b (0.975).
    pools = [pool_state("a", template=big_cpu), pool_state("b")]
    assert ups(decide([pod], pools, epc_aware=False)) == [("b", 1, ("default/a",))]


def test_a_snug_plain_pool_beats_an_idle_epc_pool_for_a_plain_pod() -> None:
    pod = pending("q", cpu=100, memory=GIB // 4)
    # a (EPC template): no EPC used, waste 1.0. b: CPU 1 - 100/250 = 0.6, memory
    # 1 - 256Mi/640Mi = 0.6: waste 0.6 < 1.0.
    pools = [pool_state("a"), _plain("b", "250m", "640Mi")]
    assert ups(decide([pod], pools, epc_pods_only=False)) == [("b", 1, ("default/q",))]


def test_a_full_epc_node_beats_a_snug_plain_one() -> None:
    pods = [pending("e", {EPC: 16 * GIB}), pending("q", cpu=100, memory=GIB // 4)]
    # a: one node holds both, its EPC full: waste 0. b (no EPC) holds only q: waste 0.6.
    pools = [pool_state("a"), _plain("b", "250m", "640Mi")]
    assert ups(decide(pods, pools, epc_pods_only=False)) == [("a", 1, ("default/e", "default/q"))]


def test_a_template_advertising_zero_epc_counts_as_all_idle() -> None:
    pod = pending("q", cpu=100, memory=GIB // 4)
    zero = template({EPC: "0", "cpu": "4", "memory": "32Gi"})
    # Both idle all their EPC (0 of 0 counts as 1.0, 0 of 16 GiB is 1.0): a tie, to the name.
    pools = [pool_state("a", template=zero), pool_state("b")]
    assert ups(decide([pod], pools, epc_pods_only=False)) == [("a", 1, ("default/q",))]


def test_a_template_with_no_cpu_or_memory_counts_as_all_idle() -> None:
    pod = pending("q", cpu=0, memory=0)
    bare = template({"pods": "110"})
    # a has nothing to measure (waste 1.0), b idles all its EPC (1.0): a tie, to the name.
    pools = [pool_state("a", template=bare), pool_state("b")]
    assert ups(decide([pod], pools, epc_pods_only=False)) == [("a", 1, ("default/q",))]


# ----- first-fit-decreasing at the limit --------------------------------------------------
def test_a_full_pool_still_packs_smaller_pods_into_its_last_node() -> None:
    pods = [pending("a", {EPC: 10 * GIB}), pending("b", {EPC: 10 * GIB})]
    pods.append(pending("c", {EPC: 4 * GIB}))
    # Room for one node: a opens it (10), b (10) fits neither it nor a new one, c (4) joins a.
    result = decide(pods, [pool_state(max_size=1)])
    assert ups(result) == [("p", 1, ("default/a", "default/c"))]
    assert result.unschedulable == (Unschedulable("default/b", "pools p at maxSize 1"),)
    assert result.targets == {"p": 1}


def test_pods_exactly_filling_a_template_need_one_node_and_a_byte_more_two() -> None:
    exact = [pending("a", {EPC: 10 * GIB}), pending("b", {EPC: 6 * GIB})]
    assert ups(decide(exact, [pool_state()])) == [("p", 1, ("default/a", "default/b"))]
    over = [pending("a", {EPC: 10 * GIB}), pending("b", {EPC: 6 * GIB + 1})]
    assert ups(decide(over, [pool_state()])) == [("p", 2, ("default/a", "default/b"))]


# ----- node_utilization -------------------------------------------------------------------
def test_node_utilization_reads_epc_by_default() -> None:
    snap = snapshot()
    add_node(snap, "n1")
    add_pod(snap, "a", 8, node="n1", cpu=100)
    # 8 of 16 GiB; its CPU share (0.1 of 4) would read 0.025.
    assert node_utilization(snap, "n1") == 0.5
    # Without EPC: the larger of CPU 100m/4 = 0.025 and memory 0.25/32 GiB = 0.0078.
    assert node_utilization(snap, "n1", epc_aware=False) == 0.025


def test_node_utilization_counts_reservations() -> None:
    snap = snapshot()
    add_node(snap, "n1")
    add_pod(snap, "a", 4, node="n1")
    snap.reserve("default/b", "n1", {EPC: 4 * GIB}, expires_at=60.0)
    # 4 GiB requested plus 4 GiB reserved of 16.
    assert node_utilization(snap, "n1") == 0.5


def test_node_utilization_of_a_node_without_epc_is_its_busier_resource() -> None:
    snap = snapshot()
    add_node(snap, "plain", PLAIN)
    snap.upsert_pod(dataclasses.replace(pending("a", cpu=1000), node_name="plain"))
    # CPU 1 of 4 = 0.25, memory 0.25 of 32 GiB: the larger.
    assert node_utilization(snap, "plain") == 0.25


def test_node_utilization_at_one_byte() -> None:
    snap = snapshot()
    add_node(snap, "tiny", template({EPC: "1", "cpu": "4", "memory": "32Gi"}))
    snap.upsert_pod(dataclasses.replace(pending("a", {EPC: 1}), node_name="tiny"))
    # One byte of one: full, whatever its CPU (0.1 of 4) says.
    assert node_utilization(snap, "tiny") == 1.0
    add_node(snap, "mem", template({"cpu": "4", "memory": "1"}))
    snap.upsert_pod(dataclasses.replace(pending("b", cpu=0, memory=1), node_name="mem"))
    assert node_utilization(snap, "mem") == 1.0


def test_node_utilization_of_nodes_with_one_unit_of_cpu_or_memory_only() -> None:
    snap = snapshot()
    add_node(snap, "cpu", template({"cpu": "1m"}))
    snap.upsert_pod(dataclasses.replace(pending("a", cpu=1, memory=0), node_name="cpu"))
    # One millicore of one; the node has no memory to divide by.
    assert node_utilization(snap, "cpu") == 1.0
    add_node(snap, "mem", template({"memory": "1"}))
    snap.upsert_pod(dataclasses.replace(pending("b", cpu=0, memory=1), node_name="mem"))
    # One byte of one; the node has no CPU to divide by.
    assert node_utilization(snap, "mem") == 1.0


# ----- PlanPolicy checks ------------------------------------------------------------------
def test_an_unknown_expander_is_named_with_the_choices() -> None:
    with pytest.raises(ValueError) as caught:
        PlanPolicy(expander="random")
    assert str(caught.value) == "expander must be one of least-waste, cheapest, priority"


def test_target_utilization_is_in_the_half_open_unit_interval() -> None:
    assert PlanPolicy(target_utilization=1.0).target_utilization == 1.0
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError) as caught:
            PlanPolicy(target_utilization=bad)
        assert str(caught.value) == "target_utilization must be in (0, 1]"


# ----- pending order ----------------------------------------------------------------------
def test_pending_pods_are_taken_by_epc_then_cpu_then_memory_then_key() -> None:
    pods = [
        pending("a", {EPC: GIB}, cpu=100, memory=GIB),
        pending("b", {EPC: GIB}, cpu=200, memory=GIB // 4),
        pending("c", {EPC: GIB}, cpu=100, memory=2 * GIB),
        pending("d", {EPC: 2 * GIB}, cpu=100, memory=GIB // 4),
        pending("e", {EPC: GIB}, cpu=100, memory=GIB),
    ]
    # d has the most EPC; of the 1 GiB ones b asks most CPU, then c most memory, then a, e.
    result = decide(pods, [pool_state()])
    keys = ("default/d", "default/b", "default/c", "default/a", "default/e")
    assert ups(result) == [("p", 1, keys)]
    assert [p.pod for p in result.placements] == list(keys)


# ----- cluster-autoscaler emulation and booting nodes ------------------------------------
def test_emulation_puts_a_pending_pod_on_a_booting_node() -> None:
    result = decide([pending("a", {EPC: 4 * GIB})], [pool_state(in_flight=1)], epc_aware=False)
    assert result.scale_ups == ()
    assert [(p.pod, p.node, p.pool) for p in result.placements] == [
        ("default/a", "~inflight-p-000000", "p")
    ]
    assert result.targets == {"p": 1}


# ----- the pressure rule ------------------------------------------------------------------
def _loaded(pools: dict[str, dict[str, float]], *pods: PodInfo) -> ClusterSnapshot:
    """Nodes by pool, each with the GiB of EPC one Running pod uses on it (0: none)."""
    snap = snapshot()
    for nodes in pools.values():
        for node, gib in nodes.items():
            add_node(snap, node)
            if gib:
                add_pod(snap, f"on-{node}", gib, node=node)
    for p in pods:
        snap.upsert_pod(p)
    return snap


def test_a_single_full_node_with_room_for_one_more_grows_by_one() -> None:
    snap = _loaded({"p": {"n1": 16}})
    # 16 of 16 GiB against a 0.8 target: ratio 1.25 > 1.1; ceil(1 x 1.25) - 1 = 1.
    result = run(snap, [pool_state(nodes=("n1",), max_size=2)])
    assert result.scale_ups == (ScaleUp("p", 1, "pressure"),)
    assert result.targets == {"p": 2}


def test_pools_the_pressure_rule_skips_do_not_stop_the_later_ones() -> None:
    plain = template({"cpu": "4", "memory": "32Gi"})
    snap = _loaded({"d": {"d1": 4}, "e": {"e1": 16}})
    add_node(snap, "b1", plain)
    add_node(snap, "a1")
    add_pod(snap, "on-a1", 16, node="a1")
    pools = [
        pool_state("a", nodes=("a1",), blocked="backing off"),  # blocked
        pool_state("b", nodes=("b1",), template=plain),  # no EPC
        pool_state("c", nodes=("gone",)),  # its node is not in the cluster: no EPC to measure
        pool_state("d", nodes=("d1",)),  # 4 of 16 GiB: under target
        pool_state("e", nodes=("e1",)),  # 16 of 16 GiB: grows
    ]
    result = run(snap, pools)
    assert result.scale_ups == (ScaleUp("e", 1, "pressure"),)


def test_pressure_exactly_at_the_tolerance_edge_changes_nothing_and_one_byte_more_grows() -> None:
    big = template({EPC: "25Gi", "cpu": "4", "memory": "32Gi"})
    snap = snapshot()
    add_node(snap, "n1", big)
    add_pod(snap, "a", 22, node="n1")
    # 22 of 25 GiB is 0.88, and 0.88 / 0.8 = 1.1: exactly 1 + tolerance, inside the dead band.
    assert run(snap, [pool_state(nodes=("n1",), template=big)]).scale_ups == ()
    add_pod(snap, "b", 1 / GIB, node="n1")
    # One byte more: ratio just above 1.1; ceil(1 x ratio) - 1 = 1.
    grown = run(snap, [pool_state(nodes=("n1",), template=big)])
    assert grown.scale_ups == (ScaleUp("p", 1, "pressure"),)


def test_booting_nodes_add_their_template_to_the_pressure_rule() -> None:
    snap = _loaded({"p": {"n1": 16, "n2": 16}})
    # 32 GiB used of 32 + 16 booting = 48: 0.667 / 0.8 = 0.83, under target.
    result = run(snap, [pool_state(nodes=("n1", "n2"), in_flight=1)])
    assert result.scale_ups == ()
    assert result.targets == {"p": 3}


def test_pressure_counts_the_live_nodes_with_the_new_ones() -> None:
    snap = _loaded({"p": {"n1": 12}}, pending("a", {EPC: 16 * GIB}))
    # The 16 GiB pod needs a new node; then 12 + 16 of 32 GiB is 0.875 / 0.8 = 1.09: no growth
    # (the new node alone, 16 of 16, would read 1.25).
    result = run(snap, [pool_state(nodes=("n1",))])
    assert ups(result) == [("p", 1, ("default/a",))]
    assert result.targets == {"p": 2}


def test_pressure_adds_to_a_pending_scale_up_and_min_size_to_both() -> None:
    snap = _loaded({}, pending("a", {EPC: 16 * GIB}))
    # One node for the pod, full: 1.25 > 1.1, one more for pressure; min-size 4 adds the rest.
    result = run(snap, [pool_state(min_size=4)])
    assert result.scale_ups == (
        ScaleUp("p", 1, "pending", ("default/a",)),
        ScaleUp("p", 1, "pressure"),
        ScaleUp("p", 2, "min-size"),
    )
    assert result.targets == {"p": 4}


def test_a_pressure_step_of_zero_nodes_is_not_listed() -> None:
    big = template({EPC: "25Gi", "cpu": "4", "memory": "32Gi"})
    snap = snapshot()
    add_node(snap, "n1", big)
    add_pod(snap, "a", 20, node="n1")
    # 20 of 25 GiB is exactly the 0.8 target: ratio 1. With a tolerance of -0.5 that is
    # outside the band, but ceil(1 x 1) - 1 = 0 nodes: nothing to list.
    result = run(snap, [pool_state(nodes=("n1",), template=big)], tolerance=-0.5)
    assert result.scale_ups == ()


# ----- scale-down: what a failed drain must put back ------------------------------------
def _pinned(name: str, node: str, gib: float, **kw: Any) -> PodInfo:
    """A Running pod that only its own node's label admits, so its drain always fails."""
    return dataclasses.replace(
        pending(name, {EPC: int(gib * GIB)}, **kw), node_name=node, node_selector={"only": node}
    )


def _scale_down_at(snap: ClusterSnapshot, pools: list[PoolState], *nodes: str, **kw: Any) -> Plan:
    # Every node in `nodes` has been unneeded since t=0; the plan is at t=10,000 s.
    policy = PlanPolicy(**kw)
    return plan(PlanInput(snap, pools, 1e4, policy, dict.fromkeys(nodes, 0.0)))


def test_no_removal_that_moves_pods_onto_a_pool_over_target_that_cannot_grow() -> None:
    snap = snapshot()
    add_node(snap, "a1", PLAIN)
    add_node(snap, "b1")
    snap.upsert_pod(dataclasses.replace(pending("q"), node_name="a1"))
    add_pod(snap, "full", 16, node="b1")
    # Plain pool a sorts before b; b1 is full (1.25 of target) and b is at maxSize, so it
    # cannot grow. Moving q onto b1 is refused: b is over target, even though a has no EPC.
    pools = [pool_state("a", nodes=("a1",), template=PLAIN), pool_state("b", nodes=("b1",))]
    pools[1] = dataclasses.replace(pools[1], max_size=1)
    result = _scale_down_at(snap, pools, "a1")
    assert result.scale_downs == ()
    assert result.targets == {"a": 1, "b": 1}


def test_a_drain_moves_the_pod_asking_more_cpu_first_among_equal_epc() -> None:
    snap = snapshot()
    for name in ("d", "r1", "r2"):
        add_node(snap, name)
    # r1: 8 GiB and 1 CPU used (3 free); r2: 1 GiB and 3 CPUs used (1 free).
    snap.upsert_pod(dataclasses.replace(pending("on-r1", {EPC: 8 * GIB}, cpu=1000), node_name="r1"))
    snap.upsert_pod(dataclasses.replace(pending("on-r2", {EPC: GIB}, cpu=3000), node_name="r2"))
    # d holds x (1 GiB, 3 CPUs) and y (1 GiB, 1 CPU): x first can only go to r1, then y to r2.
    # y first would go to the fuller r1 (binpack) and leave x nowhere.
    snap.upsert_pod(dataclasses.replace(pending("x", {EPC: GIB}, cpu=3000), node_name="d"))
    snap.upsert_pod(dataclasses.replace(pending("y", {EPC: GIB}, cpu=1000), node_name="d"))
    result = _scale_down_at(snap, [pool_state(nodes=("d", "r1", "r2"))], "d")
    assert [d.node for d in result.scale_downs] == ["d"]
    assert [(p.pod, p.node) for p in result.placements] == [
        ("default/x", "r1"),
        ("default/y", "r2"),
    ]


def test_a_failed_drain_puts_back_the_nodes_pressure() -> None:
    snap = snapshot()
    add_node(snap, "h", dataclasses.replace(TEMPLATE, labels={"only": "h"}))
    add_node(snap, "k")
    snap.upsert_pod(_pinned("p1", "h", 4, cpu=100))
    snap.upsert_pod(dataclasses.replace(pending("p2", {EPC: 4 * GIB}, cpu=200), node_name="k"))
    snap.set_pressure("h", "EPC paging")
    # Emulating cluster-autoscaler, h (CPU 0.025) comes before k (0.05) although it pages. Its
    # pinned pod keeps it; once put back it still pages, so p2 may not move there: k stays.
    result = _scale_down_at(snap, [pool_state(nodes=("h", "k"))], "h", "k", epc_aware=False)
    assert result.scale_downs == ()


def test_a_failed_drain_puts_back_a_measured_use_of_zero() -> None:
    snap = ClusterSnapshot(DEFAULT_EPC_RESOURCES, accounting="usage")
    add_node(snap, "h", dataclasses.replace(TEMPLATE, labels={"only": "h"}))
    add_node(snap, "k", template({EPC: "32Gi", "cpu": "4", "memory": "32Gi"}))
    snap.upsert_pod(_pinned("p1", "h", 5))
    snap.upsert_pod(dataclasses.replace(pending("p2", {EPC: 12 * GIB}), node_name="k"))
    snap.set_usage("h", 0)
    snap.set_usage("k", 0)
    # h (5/16 = 0.31) comes before k (12/32 = 0.375); its pinned pod keeps it. Put back with
    # its measured 0 bytes, h has all 16 GiB free by measured use, so p2 (12 GiB) moves there
    # and k goes. Were the 0 forgotten (unknown), h would fall back to requests: 11 GiB free.
    result = _scale_down_at(snap, [pool_state(nodes=("h", "k"))], "h", "k", pressure=False)
    assert [d.node for d in result.scale_downs] == ["k"]
    assert [(p.pod, p.node) for p in result.placements] == [("default/p2", "h")]
