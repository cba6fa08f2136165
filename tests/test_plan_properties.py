"""The planner obeys kube-scheduler's placement rules everywhere it places a pod.

Properties over random small clusters (nodes with labels, taints and cordons; pools with
templates, min/max and in-flight nodes; pending pods with selectors, affinity and tolerations;
EPC sizes including exact halves and exact full nodes; measured use and pressure):
(a) every what-if placement in `Plan.placements` is one that `core.rules` AND an independent
reference written here admit, on the live node or the pool template, within every resource;
(b) targets stay within [minSize, maxSize], and a blocked pool does not change;
(c) the pods of a removed node all end on nodes that remain, within their capacity, and no
removed node held a pod that blocks a drain or was under pressure;
(d) the same cluster, built in another order, gives the identical plan.
Then hand-worked examples: the pod packed onto another pool's new node (the bug this fixes), the
reasons for pods no pool can take (a rule per pool, maxSize, a backed-off pool), taints, cordons
and pod slots on live and template nodes, drains that must not move what may not move, a node
under pressure never removed, and measured use above requests growing a pool."""

from __future__ import annotations

import dataclasses
import json
import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from epcsched.core.plan import Plan, PlanInput, PlanPolicy, PoolState, ScaleDown, ScaleUp, plan
from epcsched.core.rules import Constraints, refusal
from epcsched.core.snapshot import ClusterSnapshot
from epcsched.model import (
    NodeInfo,
    NodeSelectorRequirement,
    PodInfo,
    Taint,
    Toleration,
)
from epcsched.objects import template_node
from epcsched.quantity import DEFAULT_EPC_RESOURCES

EPC = "sgx.intel.com/epc"
GIB = 2**30
MIB = 2**20
MAINTENANCE = Taint("maintenance", "", "NoExecute")
CORDON_TOLERATION = Toleration("node.kubernetes.io/unschedulable", "Exists", "", "NoSchedule")


# ----- an independent reference for kube-scheduler's rules -----------------------------------
def _integer(text: str | None) -> int | None:
    if text is None or not text.isascii():
        return None
    digits = text[1:] if text[:1] in "+-" else text
    return int(text) if digits.isdigit() else None


def _expression_holds(e: NodeSelectorRequirement, node: NodeInfo) -> bool:
    value = node.name if e.field else node.labels.get(e.key)
    if e.operator == "In":
        return value is not None and value in e.values
    if e.operator == "NotIn":
        return value is None or value not in e.values
    if e.operator == "Exists":
        return value is not None
    if e.operator == "DoesNotExist":
        return value is None
    have, bound = _integer(value), _integer(e.values[0] if e.values else None)
    if have is None or bound is None:
        return False
    return have > bound if e.operator == "Gt" else have < bound


def _tolerated(pod: PodInfo, key: str, value: str, effect: str) -> bool:
    for t in pod.tolerations:
        if t.effect not in ("", effect):
            continue
        if t.key == "" and t.operator == "Exists":
            return True
        if t.key == key and (t.operator == "Exists" or t.value == value):
            return True
    return False


def reference_admits(pod: PodInfo, node: NodeInfo) -> bool:
    """kube-scheduler's NodeUnschedulable, TaintToleration and NodeAffinity, written again."""
    if not node.ready:
        return False
    if node.unschedulable and not _tolerated(
        pod, "node.kubernetes.io/unschedulable", "", "NoSchedule"
    ):
        return False
    for taint in node.taints:
        if taint.effect in ("NoSchedule", "NoExecute") and not _tolerated(
            pod, taint.key, taint.value, taint.effect
        ):
            return False
    for key, value in pod.node_selector.items():
        if key not in node.labels or node.labels[key] != value:
            return False
    if pod.node_affinity:
        return any(
            len(term) > 0 and all(_expression_holds(e, node) for e in term)
            for term in pod.node_affinity
        )
    return True


# ----- random clusters ----------------------------------------------------------------------
@dataclasses.dataclass
class Cluster:
    nodes: list[NodeInfo]
    pods: list[PodInfo]
    pools: list[PoolState]
    usage: dict[str, int]
    pressure: dict[str, str]
    accounting: str
    since: dict[str, float]

    def snapshot(self, order: random.Random | None = None) -> ClusterSnapshot:
        """The cluster as a snapshot, its records inserted in `order` (as listed if None)."""
        nodes, pods = list(self.nodes), list(self.pods)
        if order is not None:
            order.shuffle(nodes)
            order.shuffle(pods)
            # The same labels, in another insertion order.
            nodes = [dataclasses.replace(n, labels=dict(reversed(n.labels.items()))) for n in nodes]
        snap = ClusterSnapshot(DEFAULT_EPC_RESOURCES, accounting=self.accounting, capacity=2)
        for n in nodes:
            snap.upsert_node(n)
        for p in pods:
            snap.upsert_pod(p)
        for name, used in sorted(self.usage.items(), reverse=order is not None):
            snap.set_usage(name, used)
        for name, why in sorted(self.pressure.items(), reverse=order is not None):
            snap.set_pressure(name, why)
        return snap

    def node(self, name: str) -> NodeInfo:
        return next(n for n in self.nodes if n.name == name)


POOLS = ("dcsv2", "dcsv3", "edge")
OWNERS: list[dict[str, Any]] = [
    {"owner_kind": "ReplicaSet"},
    {"owner_kind": "ReplicaSet"},
    {"owner_kind": "Job"},
    {"owner_kind": "DaemonSet"},
    {"owner_kind": None},
    {"owner_kind": None, "safe_to_evict": True},
    {"owner_kind": "ReplicaSet", "safe_to_evict": False},
    {"owner_kind": None, "mirror": True},
]


def _affinities(pools: Sequence[str]) -> list[tuple[tuple[NodeSelectorRequirement, ...], ...]]:
    return [
        (),
        ((NodeSelectorRequirement("pool", "In", tuple(pools[:2])),),),
        ((NodeSelectorRequirement("pool", "NotIn", (pools[0],)),),),
        ((NodeSelectorRequirement("epc-gib", "Gt", ("7",)),),),
        (
            (NodeSelectorRequirement("epc-gib", "Lt", ("8",)),),
            (NodeSelectorRequirement("zone", "Exists"),),
        ),
        (
            (
                NodeSelectorRequirement("zone", "DoesNotExist"),
                NodeSelectorRequirement("pool", "Exists"),
            ),
        ),
        ((),),
    ]


TOLERATIONS: list[tuple[Toleration, ...]] = [
    (),
    (),
    (Toleration("dedicated", "Exists"),),
    (Toleration("dedicated", "Equal", "sgx", "NoSchedule"),),
    (Toleration("", "Exists"),),
    (CORDON_TOLERATION,),
]


@st.composite
def clusters(draw: st.DrawFn, *, drains: bool = False) -> Cluster:
    """A random cluster; with `drains`, one where scale-down is the only thing to decide: no
    pending pods, every node unneeded for long, no pool at its minimum, blocked or just grown."""
    nodes: list[NodeInfo] = []
    pods: list[PodInfo] = []
    pools: list[PoolState] = []
    names = list(POOLS[: draw(st.integers(1, 3))])
    sizes: list[int] = []
    for name in names:
        gib = draw(st.sampled_from([4, 8, 16]))
        sizes.append(gib)
        labels = {"pool": name, "epc-gib": str(gib)}
        if draw(st.booleans()):
            labels["zone"] = draw(st.sampled_from(["a", "b"]))
        template = template_node(
            f"{name}-template",
            {
                EPC: f"{gib}Gi",
                "cpu": "4",
                "memory": "16Gi",
                "pods": draw(st.sampled_from(["3", "110"])),
            },
            DEFAULT_EPC_RESOURCES,
            labels=labels,
            taints=[{"key": "dedicated", "value": "sgx", "effect": "NoSchedule"}]
            if draw(st.integers(0, 3)) == 0
            else [],
        )
        hi = draw(st.sampled_from([0, 1, 2, 2, 3, 3, 4]))
        ready = 0 if hi == 0 or draw(st.integers(0, 4)) == 0 else draw(st.integers(1, hi))
        in_flight = draw(st.integers(0, hi - ready))
        # Mostly a pool within its bounds; sometimes one below its minimum.
        lo = (
            0
            if drains
            else draw(st.integers(0, hi if draw(st.integers(0, 4)) == 0 else ready + in_flight))
        )
        members = []
        for i in range(ready):
            extra = (MAINTENANCE,) if draw(st.integers(0, 5)) == 0 else ()
            info = dataclasses.replace(
                template,
                name=f"{name}-{i}",
                unschedulable=draw(st.integers(0, 5)) == 0,
                taints=template.taints + extra,
            )
            nodes.append(info)
            members.append(info.name)
        blocked = (
            None
            if drains
            else (
                "backed off until 10:00:00: quota exceeded"
                if draw(st.integers(0, 4)) == 0
                else None
            )
        )
        pools.append(
            PoolState(
                name,
                template,
                lo,
                hi,
                nodes=tuple(members),
                in_flight=in_flight,
                cost_per_hour=draw(st.sampled_from([0.1, 0.5])),
                priority=draw(st.integers(0, 2)),
                last_scale_up=None if drains else draw(st.sampled_from([None, None, None, 900.0])),
                blocked=blocked,
            )
        )
    if draw(st.booleans()):
        # A node of no pool: drains may move pods onto it, it is never resized.
        nodes.append(
            NodeInfo("unmanaged", {EPC: 8 * GIB}, 4000, 16 * GIB, 110, labels={"epc-gib": "8"})
        )
    for info in nodes:
        free = info.epc_allocatable.get(EPC, 0)
        for j in range(draw(st.integers(0, 3))):
            size = draw(st.sampled_from([GIB // 2, GIB, 2 * GIB, 4 * GIB, free]))
            if size > free or j >= info.pods:
                continue
            free -= size
            pods.append(
                PodInfo(
                    "run",
                    f"{info.name}-{j}",
                    node_name=info.name,
                    phase="Running",
                    epc={EPC: size} if size else {},
                    cpu_milli=100,
                    memory=GIB // 4,
                    **draw(
                        st.sampled_from(
                            OWNERS + [{"owner_kind": "ReplicaSet"}] * (4 if drains else 0)
                        )
                    ),
                )
            )
    affinities = _affinities(names)
    for i in range(0 if drains else draw(st.sampled_from([0, 0, 0, 1, 2, 4, 6]))):
        gib = draw(st.sampled_from(sizes))
        size = draw(st.sampled_from([0, gib * GIB // 2, gib * GIB, 20 * GIB, 512 * MIB]))
        selector = draw(
            st.sampled_from([{}, {}, {"pool": draw(st.sampled_from(names))}, {"zone": "a"}])
        )
        pods.append(
            PodInfo(
                "wait",
                f"pending-{i}",
                epc={EPC: size} if size else {},
                cpu_milli=draw(st.sampled_from([100, 2500])),
                memory=GIB // 2,
                node_selector=selector,
                node_affinity=draw(st.sampled_from(affinities)),
                tolerations=draw(st.sampled_from(TOLERATIONS)),
                owner_kind="ReplicaSet",
            )
        )
    real = [n.name for n in nodes]
    usage = {
        n: draw(st.sampled_from([GIB, 6 * GIB, 15 * GIB])) for n in real if draw(st.booleans())
    }
    pressure = {n: "EPC paging 900 pages/s" for n in real if draw(st.integers(0, 4)) == 0}
    since = {
        n: 0.0 if drains else draw(st.sampled_from([0.0, 0.0, 500.0]))
        for n in real
        if drains or draw(st.integers(0, 3))
    }
    accounting = draw(st.sampled_from(["requests", "max"]))
    return Cluster(nodes, pods, pools, usage, pressure, accounting, since)


POLICIES = st.builds(
    PlanPolicy,
    expander=st.sampled_from(["least-waste", "cheapest", "priority"]),
    epc_aware=st.booleans(),
    pressure=st.booleans(),
)


def run_plan(cluster: Cluster, policy: PlanPolicy, order: random.Random | None = None) -> Plan:
    pools = list(cluster.pools)
    since = dict(cluster.since)
    if order is not None:
        order.shuffle(pools)
        since = dict(reversed(since.items()))
    return plan(PlanInput(cluster.snapshot(order), pools, 1000.0, policy, since))


# ----- (a), (b), (c) ------------------------------------------------------------------------
def _check_placements(cluster: Cluster, policy: PlanPolicy, result: Plan) -> None:
    pods = {p.key: p for p in cluster.pods}
    pools = {p.name: p for p in cluster.pools}
    removed = {d.node for d in result.scale_downs}
    # Where every pod ends: where it runs now, unless the plan places it.
    final: dict[str, str] = {p.key: p.node_name for p in cluster.pods if p.node_name is not None}
    whatif: dict[str, NodeInfo] = {}
    for placement in result.placements:
        pod = pods[placement.pod]
        if placement.pool is not None:
            assert placement.node.startswith("~")
            node = dataclasses.replace(pools[placement.pool].template, name=placement.node)
            whatif[placement.node] = node
        else:
            # A pod may pass through a node removed later in the plan; where it ends is below.
            node = cluster.node(placement.node)
        # (a) the rules, twice: the module and the reference here.
        assert refusal(Constraints.of(pod), node) is None, (placement, node)
        assert reference_admits(pod, node), (placement, node)
        if pod.epc and policy.epc_aware:
            assert placement.node not in cluster.pressure
        final[placement.pod] = placement.node
    # (c) nothing stays on a removed node but what goes with it.
    for key, node_name in final.items():
        if node_name in removed:
            assert pods[key].node_bound, (key, node_name)
    # Every resource, on every node that takes a placed pod.
    load: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for key, node_name in final.items():
        pod = pods[key]
        if node_name in removed:
            continue
        total = load[node_name]
        total[0] += pod.epc.get(EPC, 0)
        total[1] += pod.cpu_milli
        total[2] += pod.memory
        total[3] += 1
    for node_name in {p.node for p in result.placements}:
        node = whatif.get(node_name) or cluster.node(node_name)
        epc, cpu, memory, count = load[node_name]
        # cluster-autoscaler's packing onto new nodes ignores EPC by design.
        if policy.epc_aware or node_name not in whatif:
            assert epc <= node.epc_allocatable.get(EPC, 0) or epc == 0, (node_name, load)
        assert cpu <= node.cpu_milli and memory <= node.memory and count <= node.pods


def _check_removals(cluster: Cluster, policy: PlanPolicy, result: Plan) -> None:
    pools = {p.name: p for p in cluster.pools}
    for down in result.scale_downs:
        assert down.node in pools[down.pool].nodes
        assert pools[down.pool].blocked is None
        on_node = [p for p in cluster.pods if p.node_name == down.node]
        assert not any(p.blocks_drain for p in on_node)
        if policy.epc_aware:
            assert down.node not in cluster.pressure
    assert len({d.node for d in result.scale_downs}) == len(result.scale_downs)


def _check_sizes(cluster: Cluster, result: Plan) -> None:
    for pool in cluster.pools:
        target = result.targets[pool.name]
        if pool.blocked is not None:
            assert target == pool.size
        elif pool.min_size <= pool.size <= pool.max_size:
            assert pool.min_size <= target <= pool.max_size
        else:
            assert target == max(pool.size, pool.min_size)
    for up in result.scale_ups:
        assert up.count > 0 and pools_by_name(cluster)[up.pool].blocked is None
    if result.scale_ups:
        assert result.scale_downs == ()


def pools_by_name(cluster: Cluster) -> dict[str, PoolState]:
    return {p.name: p for p in cluster.pools}


@settings(max_examples=500, deadline=None)
@given(clusters(), POLICIES)
def test_plans_obey_the_rules_sizes_and_drains(cluster: Cluster, policy: PlanPolicy) -> None:
    result = run_plan(cluster, policy)
    event(f"placements on new nodes: {any(p.pool for p in result.placements)}")
    event(f"pods moved by a drain: {any(p.moved_from for p in result.placements)}")
    event(f"scale-downs: {len(result.scale_downs)}")
    event(f"unschedulable: {len(result.unschedulable)}")
    _check_placements(cluster, policy, result)
    _check_removals(cluster, policy, result)
    _check_sizes(cluster, result)
    # Every pending EPC pod is placed or reported, never both and never lost.
    waiting = {
        p.key for p in cluster.pods if p.node_name is None and (p.epc or not policy.epc_aware)
    }
    placed = {p.pod for p in result.placements if p.pod in waiting}
    reported = {u.key for u in result.unschedulable}
    assert placed | reported == waiting and not placed & reported
    assert all(u.reason for u in result.unschedulable)


@settings(max_examples=300, deadline=None)
@given(clusters(drains=True), POLICIES)
def test_removed_nodes_pods_fit_on_the_nodes_that_remain(
    cluster: Cluster, policy: PlanPolicy
) -> None:
    result = run_plan(cluster, policy)
    event(f"scale-downs: {len(result.scale_downs)}")
    event(f"pods moved by a drain: {any(p.moved_from for p in result.placements)}")
    _check_placements(cluster, policy, result)
    _check_removals(cluster, policy, result)
    _check_sizes(cluster, result)


@settings(max_examples=200, deadline=None)
@given(clusters(), POLICIES, st.randoms(use_true_random=False))
def test_the_same_cluster_in_another_order_gives_the_same_plan(
    cluster: Cluster, policy: PlanPolicy, order: random.Random
) -> None:
    first = run_plan(cluster, policy)
    again = run_plan(cluster, policy, order)
    assert again == first
    # Equal dicts may still iterate differently; the printed plan must not.
    assert json.dumps(again.to_json()) == json.dumps(first.to_json())
    assert list(again.unneeded_since.items()) == list(first.unneeded_since.items())
    assert again.placements == first.placements


# ----- hand-worked examples -----------------------------------------------------------------
def template(
    name: str, epc: str = "16Gi", *, pods: str = "110", taints: Sequence[dict[str, str]] = ()
) -> NodeInfo:
    gib = epc.removesuffix("Gi")
    return template_node(
        name,
        {EPC: epc, "cpu": "4", "memory": "32Gi", "pods": pods},
        DEFAULT_EPC_RESOURCES,
        labels={"agentpool": name, "epc-gib": gib},
        taints=taints,
    )


def pool(name: str, tmpl: NodeInfo | None = None, **kw: Any) -> PoolState:
    settings_: dict[str, Any] = {"min_size": 0, "max_size": 10, **kw}
    return PoolState(name, tmpl or template(name), **settings_)


def pending(name: str, gib: float, **kw: Any) -> PodInfo:
    return PodInfo(
        "default", name, epc={EPC: int(gib * GIB)}, cpu_milli=100, owner_kind="ReplicaSet", **kw
    )


def bound(name: str, node: str, gib: float, **kw: Any) -> PodInfo:
    kw.setdefault("owner_kind", "ReplicaSet")
    return PodInfo(
        "default",
        name,
        node_name=node,
        phase="Running",
        epc={EPC: int(gib * GIB)},
        cpu_milli=100,
        **kw,
    )


def cluster_of(
    nodes: Sequence[NodeInfo], pods: Sequence[PodInfo], accounting: str = "requests"
) -> ClusterSnapshot:
    snap = ClusterSnapshot(DEFAULT_EPC_RESOURCES, accounting=accounting)
    for n in nodes:
        snap.upsert_node(n)
    for p in pods:
        snap.upsert_pod(p)
    return snap


def decide(snap: ClusterSnapshot, pools: Sequence[PoolState], **kw: Any) -> Plan:
    now = kw.pop("now", 0.0)
    since = kw.pop("since", {})
    return plan(PlanInput(snap, pools, now, PlanPolicy(**kw), since))


def test_a_pod_is_not_packed_onto_another_pools_node() -> None:
    # dcsv2 has a node booting with 16 GiB free; the pod selects dcsv3. Before the fix it was
    # counted onto dcsv2's node and dcsv3 never grew.
    snap = cluster_of([], [pending("picky", 4, node_selector={"agentpool": "dcsv3"})])
    result = decide(snap, [pool("dcsv2", in_flight=1), pool("dcsv3")], pressure=False)
    assert result.scale_ups == (ScaleUp("dcsv3", 1, "pending", ("default/picky",)),)
    assert [(p.pod, p.pool) for p in result.placements] == [("default/picky", "dcsv3")]
    # Without the selector the booting node takes it.
    snap = cluster_of([], [pending("easy", 4)])
    result = decide(snap, [pool("dcsv2", in_flight=1), pool("dcsv3")], pressure=False)
    assert result.scale_ups == ()
    assert [(p.node, p.pool) for p in result.placements] == [("~inflight-dcsv2-000000", "dcsv2")]


def test_affinity_steers_the_pool_choice() -> None:
    big = NodeSelectorRequirement("epc-gib", "Gt", ("16",))
    pods = [pending("a", 7, node_affinity=((big,),)), pending("b", 7)]
    pools = [pool("small", template("small", "8Gi")), pool("large", template("large", "32Gi"))]
    result = decide(cluster_of([], pods), pools, pressure=False)
    # Round one: small holds only b (1 of 8 GiB idle, waste 0.125); large holds both on one
    # node (18 of 32 idle, 0.5625): least-waste takes small. Round two: a, on large only.
    assert result.scale_ups == (
        ScaleUp("small", 1, "pending", ("default/b",)),
        ScaleUp("large", 1, "pending", ("default/a",)),
    )


def test_reasons_name_the_rule_that_failed_on_each_pool() -> None:
    pods = [
        pending("huge", 32, node_selector={"agentpool": "dcsv3"}),
        pending("tainted", 1, node_selector={"agentpool": "dcsv2"}),
    ]
    pools = [
        pool(
            "dcsv2",
            template(
                "dcsv2", "8Gi", taints=[{"key": "sgx", "value": "only", "effect": "NoSchedule"}]
            ),
        ),
        pool("dcsv3"),
    ]
    result = decide(cluster_of([], pods), pools)
    assert {u.key: u.reason for u in result.unschedulable} == {
        "default/huge": (
            "pool dcsv2: node(s) had untolerated taint {sgx: only}; "
            "pool dcsv3: insufficient sgx.intel.com/epc: requested 32Gi, template has 16Gi"
        ),
        "default/tainted": (
            "pool dcsv2: node(s) had untolerated taint {sgx: only}; "
            "pool dcsv3: node(s) didn't match Pod's node affinity/selector"
        ),
    }
    # The toleration lets it in: one dcsv2 node.
    tolerant = pending(
        "tainted",
        1,
        node_selector={"agentpool": "dcsv2"},
        tolerations=(Toleration("sgx", "Exists"),),
    )
    result = decide(cluster_of([], [tolerant]), pools, pressure=False)
    assert result.scale_ups == (ScaleUp("dcsv2", 1, "pending", ("default/tainted",)),)


def test_a_pod_whose_pools_are_full_is_reported_at_max_size() -> None:
    nodes = [dataclasses.replace(template("dcsv3"), name=f"dcsv3-{i}") for i in range(2)]
    pods = [bound(f"full-{i}", f"dcsv3-{i}", 16) for i in range(2)] + [pending("more", 12)]
    pools = [
        pool("dcsv2", template("dcsv2", "8Gi")),
        pool("dcsv3", nodes=("dcsv3-0", "dcsv3-1"), max_size=2),
    ]
    result = decide(cluster_of(nodes, pods), pools)
    # dcsv2's template is too small; dcsv3's could hold it but the pool is at its maximum.
    assert [(u.key, u.reason) for u in result.unschedulable] == [
        ("default/more", "pools dcsv3 at maxSize 2")
    ]
    assert result.targets == {"dcsv2": 0, "dcsv3": 2}


def test_a_blocked_pool_does_not_grow_and_says_why() -> None:
    why = "backed off until 12:00:00: QuotaExceeded"
    pools = [pool("dcsv3", blocked=why, min_size=1)]
    result = decide(cluster_of([], [pending("a", 4)]), pools)
    assert result.scale_ups == ()
    assert result.targets == {"dcsv3": 0}
    assert [(u.key, u.reason) for u in result.unschedulable] == [
        ("default/a", f"pool dcsv3: {why}")
    ]
    # Another pool that can take the pod grows instead.
    pools.append(pool("dcsv2", template("dcsv2", "8Gi")))
    result = decide(cluster_of([], [pending("a", 4)]), pools, pressure=False)
    assert result.scale_ups == (ScaleUp("dcsv2", 1, "pending", ("default/a",)),)


def test_cordoned_nodes_and_pod_slots_on_live_nodes() -> None:
    node = dataclasses.replace(template("dcsv3"), name="n1", unschedulable=True)
    pools = [pool("dcsv3", nodes=("n1",))]
    result = decide(cluster_of([node], [pending("a", 4)]), pools, pressure=False)
    assert result.scale_ups == (ScaleUp("dcsv3", 1, "pending", ("default/a",)),)
    # A pod that tolerates the cordon may still go there: nothing to add.
    tolerant = pending("a", 4, tolerations=(CORDON_TOLERATION,))
    result = decide(cluster_of([node], [tolerant]), pools, pressure=False)
    assert result.scale_ups == ()
    assert [(p.pod, p.node) for p in result.placements] == [("default/a", "n1")]
    # One pod slot, already taken: 15 GiB free is no use.
    one_slot = dataclasses.replace(template("dcsv3", pods="1"), name="n1")
    snap = cluster_of([one_slot], [bound("x", "n1", 1), pending("a", 1), pending("b", 1)])
    result = decide(
        snap, [pool("dcsv3", template("dcsv3", pods="1"), nodes=("n1",))], pressure=False
    )
    # And each new node holds one pod.
    assert result.scale_ups == (ScaleUp("dcsv3", 2, "pending", ("default/a", "default/b")),)


def _idle_nodes(*pods: PodInfo) -> tuple[ClusterSnapshot, list[PoolState]]:
    nodes = [dataclasses.replace(template("dcsv3"), name=n) for n in ("n1", "n2")]
    snap = cluster_of(nodes, [bound("keep", "n2", 4), *pods])
    return snap, [pool("dcsv3", nodes=("n1", "n2"))]


def test_drains_leave_what_may_not_move() -> None:
    later = {"now": 1e4, "since": {"n1": 0.0, "n2": 0.0}, "pressure": False}
    # n1 (1 GiB, least used) goes first when its pod may move; n2 then holds everything.
    snap, pools = _idle_nodes(bound("web", "n1", 1))
    result = decide(snap, pools, **later)
    assert result.scale_downs == (
        ScaleDown("dcsv3", "n1", "utilization 0.06 below 0.5 for 600s; its 1 pod(s) fit elsewhere"),
    )
    assert [(p.pod, p.node, p.moved_from) for p in result.placements] == [
        ("default/web", "n2", "n1")
    ]
    # A pod nothing would recreate, or one marked not safe to evict, keeps n1; then n2 is
    # tried and its pod moves to n1 instead.
    for blocker in (
        bound("bare", "n1", 1, owner_kind=None),
        bound("precious", "n1", 1, safe_to_evict=False),
    ):
        snap, pools = _idle_nodes(blocker)
        result = decide(snap, pools, **later)
        assert [d.node for d in result.scale_downs] == ["n2"]
        assert [(p.pod, p.node) for p in result.placements] == [("default/keep", "n1")]
    # A bare pod marked safe moves; DaemonSet and mirror pods neither move nor block.
    for easy in (
        bound("ok", "n1", 1, owner_kind=None, safe_to_evict=True),
        bound("ds", "n1", 1, owner_kind="DaemonSet"),
        bound("static", "n1", 1, owner_kind=None, mirror=True),
    ):
        snap, pools = _idle_nodes(easy)
        result = decide(snap, pools, **later)
        assert [d.node for d in result.scale_downs] == ["n1"]
        moved = [p.pod for p in result.placements]
        assert moved == ([] if easy.node_bound else [easy.key])


def test_a_drained_pod_keeps_its_selector() -> None:
    nodes = [
        dataclasses.replace(template("dcsv3"), name="n1", labels={"zone": "a"}),
        dataclasses.replace(template("dcsv3"), name="n2", labels={"zone": "b"}),
    ]
    pods = [bound("zonal", "n1", 1, node_selector={"zone": "a"}), bound("other", "n2", 6)]
    pools = [pool("dcsv3", nodes=("n1", "n2"))]
    result = decide(cluster_of(nodes, pods), pools, now=1e4, since={"n1": 0.0}, pressure=False)
    # n1 is unneeded, but its pod may run only in zone a: n1 stays. n2 (6 of 16) is unneeded
    # too but only since now.
    assert result.scale_downs == ()
    assert result.unneeded_since == {"n1": 0.0, "n2": 1e4}


def test_pods_moved_off_one_removed_node_move_again_when_theirs_goes() -> None:
    # 16 GiB nodes at 2, 4 and 7 GiB, all unneeded for long. binpack sends n1's 2 GiB to n3
    # (9 GiB, fuller than n2's 6); then n2's 4 GiB also to n3 (13 of 16). n3 cannot empty.
    nodes = [dataclasses.replace(template("dcsv3"), name=n) for n in ("n1", "n2", "n3")]
    pods = [bound("a", "n1", 2), bound("b", "n2", 4), bound("c", "n3", 7)]
    pools = [pool("dcsv3", nodes=("n1", "n2", "n3"))]
    since = {"n1": 0.0, "n2": 0.0, "n3": 0.0}
    result = decide(cluster_of(nodes, pods), pools, now=1e4, since=since, pressure=False)
    assert [d.node for d in result.scale_downs] == ["n1", "n2"]
    assert [(p.pod, p.node, p.moved_from) for p in result.placements] == [
        ("default/a", "n3", "n1"),
        ("default/b", "n3", "n2"),
    ]
    assert result.unneeded_since == {"n3": 0.0}
    # Under the pressure rule, n3 at 13/16 = 81% is over the 80% target: only n1 goes.
    result = decide(cluster_of(nodes, pods), pools, now=1e4, since=since)
    assert [d.node for d in result.scale_downs] == ["n1"]


def test_a_node_under_pressure_is_never_removed() -> None:
    nodes = [dataclasses.replace(template("dcsv3"), name=n) for n in ("n1", "n2", "n3")]
    snap = cluster_of(nodes, [bound("x", "n3", 4)])
    snap.set_pressure("n1", "EPC paging 1200 pages/s")
    pools = [pool("dcsv3", nodes=("n1", "n2", "n3"))]
    since = {"n1": 0.0, "n2": 0.0, "n3": 0.0}
    result = decide(snap, pools, now=1e4, since=since, pressure=False)
    # n1 is empty by requests but pages: it counts as full and is not even unneeded. n2 goes;
    # n3's pod may not go to n1 (EPC pods avoid pressure) and n2 is gone: n3 stays.
    assert [d.node for d in result.scale_downs] == ["n2"]
    assert result.unneeded_since == {"n3": 0.0}


def test_measured_use_above_requests_grows_the_pool() -> None:
    nodes = [dataclasses.replace(template("dcsv3"), name=n) for n in ("n1", "n2")]
    pods = [bound("a", "n1", 4), bound("b", "n2", 4)]
    pools = [pool("dcsv3", nodes=("n1", "n2"))]
    # Requested 8 of 32 GiB (25%): nothing to do.
    assert decide(cluster_of(nodes, pods, "max"), pools).scale_ups == ()
    # Measured 15 GiB on each: 30/32 = 93.75% against 80% is a ratio of 1.171875, past the
    # 10% band: ceil(2 * 1.171875) = 3 nodes, one more.
    snap = cluster_of(nodes, pods, "max")
    snap.set_usage("n1", 15 * GIB)
    snap.set_usage("n2", 15 * GIB)
    assert decide(snap, pools).scale_ups == (ScaleUp("dcsv3", 1, "pressure"),)
    # Under requests accounting the measurement is not counted.
    plain = cluster_of(nodes, pods, "requests")
    plain.set_usage("n1", 15 * GIB)
    plain.set_usage("n2", 15 * GIB)
    assert decide(plain, pools).scale_ups == ()


def test_a_node_under_pressure_counts_as_full() -> None:
    nodes = [dataclasses.replace(template("dcsv3"), name=n) for n in ("n1", "n2")]
    pods = [bound("a", "n1", 4), bound("b", "n2", 13)]
    pools = [pool("dcsv3", nodes=("n1", "n2"))]
    # (4 + 13) / 32 = 53%: no pressure.
    assert decide(cluster_of(nodes, pods), pools).scale_ups == ()
    # n1 pages: (16 + 13) / 32 = 90.6%, ratio 1.1328 > 1.1: ceil(2 * 1.1328) = 3.
    snap = cluster_of(nodes, pods)
    snap.set_pressure("n1", "EPC paging 1200 pages/s")
    assert decide(snap, pools).scale_ups == (ScaleUp("dcsv3", 1, "pressure"),)
