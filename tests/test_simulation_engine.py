"""The event engine: runs are deterministic; hand-computed traces give the waits and completions
worked out on paper (a big enclave fits only if the small ones were bin-packed; waiting pods are
retried in submission order); EPC-aware policies never put a node above its EPC; `epc-unaware`
overcommits and its enclaves slow down by the paging model; the simulator's cached placement
path decides exactly as the core's `choose_node` and the kube-scheduler baseline."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from epcsched.core.fit import PodRequest
from epcsched.core.placement import choose_node
from epcsched.core.snapshot import ClusterSnapshot
from epcsched.model import NodeInfo, PodInfo
from epcsched.quantity import DEFAULT_EPC_RESOURCES
from epcsched.simulation.baselines import kube_default_node, policy_spec
from epcsched.simulation.engine import Simulation, simulate
from epcsched.simulation.placer import Placer
from tests.simulation_helpers import EPC, GIB, pool, synthetic, trace_scenario

AWARE = ["binpack", "spread", "balanced", "kube-default"]


def test_same_seed_same_run() -> None:
    scenario, workload = synthetic(seed=3, count=300, rate=20)
    for policy in ("binpack", "epc-unaware"):
        one = simulate(scenario, workload, policy, record_placements=True)
        two = simulate(
            scenario, synthetic(seed=3, count=300, rate=20)[1], policy, record_placements=True
        )
        assert one.placements == two.placements
        assert one.metrics == two.metrics
        assert one.nodes == two.nodes and one.pending == two.pending
    other = simulate(
        scenario, synthetic(seed=4, count=300, rate=20)[1], "binpack", record_placements=True
    )
    assert other.placements != one.placements


def test_big_enclave_fits_only_if_small_ones_were_packed(tmp_path: Path) -> None:
    # Two 8 GiB nodes; three 2 GiB enclaves, then one that needs a whole node.
    jobs = [
        (0, 1000, 2048, 100, 256),
        (10, 1000, 2048, 100, 256),
        (20, 1000, 2048, 100, 256),
        (30, 100, 8192, 100, 256),
    ]
    scenario, workload = trace_scenario(tmp_path, jobs, pools=[pool(size=2)])
    packed = simulate(scenario, workload, "binpack", record_placements=True)
    assert packed.placements == [
        ("j0", "p-00000"),
        ("j1", "p-00000"),
        ("j2", "p-00000"),
        ("j3", "p-00001"),
    ]
    assert packed.metrics["waitMaxS"] == 0
    spread = simulate(scenario, workload, "spread", record_placements=True)
    # j0 -> p-00000, j1 -> p-00001 (emptier), j2 -> tie, first name p-00000. j3 needs an empty
    # node: p-00001 empties when j1 ends at 1010, a wait of 980 s.
    assert spread.placements[:3] == [("j0", "p-00000"), ("j1", "p-00001"), ("j2", "p-00000")]
    assert spread.placements[3] == ("j3", "p-00001")
    assert spread.metrics["waitMaxS"] == 980
    # LeastAllocated on CPU and memory spreads the same way.
    kube = simulate(scenario, workload, "kube-default")
    assert kube.metrics["waitMaxS"] == 980


def test_waiting_pods_are_retried_in_submission_order(tmp_path: Path) -> None:
    # One 8 GiB node, held whole by j0 until 100; j1 (4), j2 (6), j3 (4) wait. At 100 j1 fits,
    # j2 no longer does, j3 does: placed j1 then j3. j3 ends at 120 (4 GiB free: j2 still
    # waits), j1 at 150: j2 starts then, after 130 s.
    jobs = [
        (0, 100, 8192, 100, 256),
        (10, 50, 4096, 100, 256),
        (20, 50, 6144, 100, 256),
        (30, 20, 4096, 100, 256),
    ]
    scenario, workload = trace_scenario(tmp_path, jobs, pools=[pool(size=1)])
    result = simulate(scenario, workload, "binpack", record_placements=True)
    assert [p for p, _ in result.placements] == ["j0", "j1", "j3", "j2"]
    assert result.metrics["waitMaxS"] == 130
    assert result.metrics["podsWaited"] == 3


def test_epc_unaware_overcommits_and_pays_in_paging(tmp_path: Path) -> None:
    # One 8 GiB node, two 6 GiB enclaves: demand 12/8 = 1.5, slowdown 1 + 8 * 0.5 = 5x.
    # j0 runs 50 s alone (50 s of work left), then at 1/5 speed: done at 50 + 250 = 300.
    # j1 does 250/5 = 50 s of work by 300, then runs alone: done at 350.
    jobs = [(0, 100, 6144, 100, 256), (50, 100, 6144, 100, 256)]
    for horizon, done in (("290s", 0), ("310s", 1), ("340s", 1), ("360s", 2)):
        scenario, workload = trace_scenario(tmp_path, jobs, pools=[pool(size=1)], horizon=horizon)
        unaware = simulate(scenario, workload, "epc-unaware")
        assert unaware.metrics["podsCompleted"] == done, horizon
    assert unaware.metrics["epcOvercommitPodSeconds"] == pytest.approx(500.0)
    assert unaware.max_epc_overcommit == 4 * GIB
    aware = simulate(scenario, workload, "kube-default")
    assert aware.metrics["epcOvercommitPodSeconds"] == 0
    assert aware.metrics["waitMaxS"] == 50
    assert aware.max_epc_overcommit <= 0


def test_paging_model_is_configurable(tmp_path: Path) -> None:
    jobs = [(0, 100, 6144, 100, 256), (0, 100, 6144, 100, 256)]
    scenario, workload = trace_scenario(
        tmp_path,
        jobs,
        pools=[pool(size=1)],
        horizon="250s",
        pagingModel={"slowdownPerOvercommit": 2, "maxSlowdown": 100},
    )
    # 1 + 2 * 0.5 = 2x: both finish at 200.
    assert simulate(scenario, workload, "epc-unaware").metrics["podsCompleted"] == 2


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), policy=st.sampled_from(AWARE))
def test_epc_aware_policies_never_overfill_a_node(seed: int, policy: str) -> None:
    scenario, workload = synthetic(seed=seed, count=150, rate=30, pools=[pool(size=2)])
    seen = []

    def check(snap: ClusterSnapshot, pod: PodInfo, request: PodRequest, node: str | None) -> None:
        column = snap.epc[EPC]
        slots = snap.slots_of(snap.node_names())
        seen.append(node)
        assert (column.requested[slots] <= column.allocatable[slots]).all()

    result = simulate(scenario, workload, policy, observer=check)
    assert result.max_epc_overcommit <= 0
    assert result.metrics["epcOvercommitPodSeconds"] == 0
    assert len(seen) >= result.metrics["podsSubmitted"] - result.metrics["podsNeverScheduled"]


def test_nodes_and_cost_are_integrated_over_time(tmp_path: Path) -> None:
    scenario, workload = trace_scenario(
        tmp_path, [(0, 60, 1024, 100, 256)], pools=[pool(size=3, cost=0.5)], horizon="2h"
    )
    result = simulate(scenario, workload, "binpack")
    assert result.metrics["nodeHours"] == pytest.approx(6.0)
    assert result.metrics["cost"] == pytest.approx(3.0)
    assert result.metrics["peakNodes"] == 3


def test_autoscaling_brings_nodes_for_pending_pods(tmp_path: Path) -> None:
    jobs = [(0, 3000, 6144, 100, 256) for _ in range(4)]
    scenario, workload = trace_scenario(
        tmp_path,
        jobs,
        pools=[pool(size=0, max_size=5)],
        horizon="2h",
        autoscaler={
            "interval": "30s",
            "provisionDelay": "2m",
            "scaleDownUnneededTime": "5m",
            "scaleDownDelayAfterAdd": "1m",
        },
        policies=["binpack", "cluster-autoscaler"],
    )
    result = simulate(scenario, workload, "binpack")
    # 4 x 6 GiB on 8 GiB nodes: 4 nodes asked at the first tick (30 s), Ready at 150 s.
    assert result.metrics["peakNodes"] == 4
    assert result.metrics["waitMaxS"] == 150
    assert result.metrics["podsCompleted"] == 4
    # Idle after 3150 s: removed after 5 minutes unneeded, down to minSize 0.
    assert result.nodes[-1] == 0
    blind = simulate(scenario, workload, "cluster-autoscaler")
    # CPU/memory packing asks for one node, then one more per round as pods stay pending.
    assert blind.metrics["waitMaxS"] > result.metrics["waitMaxS"]
    assert blind.metrics["podsCompleted"] == 4


@st.composite
def snapshots(draw: st.DrawFn) -> tuple[ClusterSnapshot, PodRequest]:
    snap = ClusterSnapshot(DEFAULT_EPC_RESOURCES)
    names = draw(
        st.lists(st.sampled_from([f"n{i}" for i in range(12)]), min_size=1, max_size=8, unique=True)
    )
    for name in names:
        epc = draw(st.sampled_from([4 * GIB, 8 * GIB]))
        cpu = draw(st.sampled_from([1000, 2000]))
        slots = draw(st.integers(1, 4))
        snap.upsert_node(
            NodeInfo(
                name=name, epc_allocatable={EPC: epc}, cpu_milli=cpu, memory=8 * GIB, pods=slots
            )
        )
        for j in range(draw(st.integers(0, 3))):
            used = draw(st.sampled_from([GIB, 2 * GIB]))
            pod_cpu = draw(st.sampled_from([0, 300]))
            snap.upsert_pod(
                PodInfo(
                    "d",
                    f"{name}-{j}",
                    node_name=name,
                    phase="Running",
                    epc={EPC: used},
                    cpu_milli=pod_cpu,
                    memory=GIB,
                )
            )
    if draw(st.booleans()):
        snap.remove_node(names[0])
    request = PodRequest(
        epc={EPC: draw(st.sampled_from([GIB, 3 * GIB]))} if draw(st.booleans()) else {},
        cpu_milli=draw(st.sampled_from([0, 200, 900])),
        memory=draw(st.sampled_from([0, GIB])),
    )
    return snap, request


@settings(max_examples=150, deadline=None)
@given(snapshots(), st.sampled_from(["binpack", "spread", "balanced", "kube-default"]))
def test_cached_placement_decides_as_the_core(
    state: tuple[ClusterSnapshot, PodRequest], policy: str
) -> None:
    snap, request = state
    placer = Placer(snap)
    spec = policy_spec(policy, None)
    expected = (
        kube_default_node(snap, request)
        if policy == "kube-default"
        else choose_node(snap, request, policy)
    )
    assert placer.choose(request, spec) == expected
    # And again after the nodes change (the cache follows the generation).
    snap.upsert_node(
        NodeInfo(name="zz", epc_allocatable={EPC: 8 * GIB}, cpu_milli=4000, memory=8 * GIB)
    )
    expected = (
        kube_default_node(snap, request)
        if policy == "kube-default"
        else choose_node(snap, request, policy)
    )
    assert placer.choose(request, spec) == expected


def test_a_run_places_pods_on_the_snapshot_it_is_given() -> None:
    scenario, workload = synthetic(seed=9, count=100, rate=20, horizon="4m")
    snap = ClusterSnapshot(scenario.epc_resources)
    given_snapshot = Simulation(scenario, workload, "binpack", snapshot=snap).run()
    assert given_snapshot.metrics == simulate(scenario, workload, "binpack").metrics
    assert len(snap) == sum(p.initial_size for p in scenario.pools)
    running = [p for p in snap.pods.values() if p.node_name is not None]
    assert running and all(p.node_name in snap.slots for p in running)
