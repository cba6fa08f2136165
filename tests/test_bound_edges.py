"""The lower bound at the boundaries a mutation audit found untested, worked out by hand.

Protects: an item of exactly half a node is not "big" (two share a node), an item of exactly a
node fits it (and is big); a pod that ends at t is not running at t, so jobs that end exactly
when others start never share a moment; the node-hour figure over such boundaries. A property
test generates workloads made of those boundary values (exact halves, whole nodes, ends equal
to starts) and compares the bound with a brute-force optimum computed independently at every
moment, and the node-hours with an independent sweep.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from epcsched.simulation.bound import exact_bins, first_fit_decreasing, l2_bound, lower_bound
from epcsched.simulation.workload import Workload
from tests.simulation_helpers import pool, synthetic, trace_scenario

CAP = 8192  # an 8 GiB node, in MiB
MIB = 2**20


def arr(*sizes: int) -> np.typing.NDArray[np.int64]:
    return np.asarray(sizes, dtype=np.int64)


def test_two_items_of_exactly_half_a_node_share_it() -> None:
    assert l2_bound(arr(4096, 4096), CAP) == 1
    assert l2_bound(arr(4096, 4096, 4096), CAP) == 2
    assert first_fit_decreasing(arr(4096, 4096), CAP) == 1
    assert exact_bins(arr(4096, 4096), CAP, upper=2, time_limit=10) == 1
    # One byte over half: no two share, so each needs its own node.
    assert l2_bound(arr(4097, 4097, 4097), CAP) == 3


def test_an_item_of_exactly_a_node_fills_it() -> None:
    assert l2_bound(arr(8192), CAP) == 1
    assert l2_bound(arr(8192, 8192, 1), CAP) == 3
    assert first_fit_decreasing(arr(8192, 8192), CAP) == 2
    assert first_fit_decreasing(arr(8192, 1), CAP) == 2
    assert exact_bins(arr(8192, 1), CAP, upper=2, time_limit=10) == 2
    # Items that fill a node exactly between them: 3/4 + 1/4 twice.
    assert first_fit_decreasing(arr(6144, 6144, 2048, 2048), CAP) == 2
    assert l2_bound(arr(6144, 6144, 2048, 2048), CAP) == 2


def test_l2_counts_what_cannot_sit_beside_the_big_items() -> None:
    # Big 6000 and 5000 leave 2192 and 3192; smalls 3000, 3000, 3000. Only one small fits
    # beside the 5000, none beside the 6000: L2 (and the optimum) is 2 + ceil(6000 / 8192) = 3.
    items = arr(6000, 5000, 3000, 3000, 3000)
    assert l2_bound(items, CAP) == 3
    assert exact_bins(items, CAP, upper=first_fit_decreasing(items, CAP), time_limit=10) == 3
    assert l2_bound(arr(), CAP) == 0 and l2_bound(arr(0, 0), CAP) == 0
    assert first_fit_decreasing(arr(0), CAP) == 0
    assert exact_bins(arr(0), CAP, upper=1, time_limit=10) == 0


def test_half_node_pods_at_once_need_one_node(tmp_path: Path) -> None:
    jobs = [(0, 100, 4096, 100, 256), (0, 100, 4096, 100, 256)]
    scenario, workload = trace_scenario(tmp_path, jobs, pools=[pool(size=2)])
    bound = lower_bound(scenario, workload)
    assert (bound.peak_nodes, bound.method) == (1, "milp")
    # 100 s at ceil(8192 / 8192) = 1 node, no pod over half a node.
    assert bound.node_hours == pytest.approx(100 / 3600)


def test_a_pod_of_exactly_a_node_fits_it(tmp_path: Path) -> None:
    jobs = [(0, 100, 8192, 100, 256), (0, 100, 8192, 100, 256), (0, 50, 8193, 100, 256)]
    scenario, workload = trace_scenario(tmp_path, jobs, pools=[pool(size=2)])
    bound = lower_bound(scenario, workload)
    assert (bound.peak_nodes, bound.method) == (2, "milp")
    assert bound.per_pool["p"].pods_excluded == 1
    # The excluded pod counts for no node-hours; the others 2 nodes for 100 s.
    assert bound.node_hours == pytest.approx(200 / 3600)


def test_a_pod_ending_when_another_starts_never_runs_beside_it(tmp_path: Path) -> None:
    # Each pod is 3/4 of a node; each starts the second the previous one ends.
    jobs = [(0, 100, 6144, 100, 256), (100, 100, 6144, 100, 256), (200, 50, 6144, 100, 256)]
    scenario, workload = trace_scenario(tmp_path, jobs, pools=[pool(size=2)])
    bound = lower_bound(scenario, workload)
    assert (bound.peak_nodes, bound.method) == (1, "milp")
    assert bound.node_hours == pytest.approx(250 / 3600)
    # Overlap them by one second and two nodes are needed, from t=99 to t=100.
    jobs[1] = (99, 101, 6144, 100, 256)
    scenario, workload = trace_scenario(tmp_path, jobs, pools=[pool(size=2)])
    bound = lower_bound(scenario, workload)
    assert (bound.peak_nodes, bound.per_pool["p"].at_s) == (2, 99)
    assert bound.node_hours == pytest.approx(251 / 3600)


def test_the_peak_is_found_at_a_moment_between_boundaries(tmp_path: Path) -> None:
    # Half-node pods: a [0, 10), b [10, 30), c [20, 40), d [30, 40). At 10 only b runs; at 20 b
    # and c (one node); at 30 c and d. Three half pods never run at once: 1 node throughout.
    jobs = [
        (0, 10, 4096, 1, 1),
        (10, 20, 4096, 1, 1),
        (20, 20, 4096, 1, 1),
        (30, 10, 4096, 1, 1),
    ]
    scenario, workload = trace_scenario(tmp_path, jobs, pools=[pool(size=2)])
    bound = lower_bound(scenario, workload)
    assert (bound.peak_nodes, bound.method) == (1, "milp")
    assert bound.node_hours == pytest.approx(40 / 3600)


def test_node_hours_stop_at_the_horizon(tmp_path: Path) -> None:
    # Horizon 1h: a pod from 3000 s for 1200 s counts until 3600 s; one submitted at 3600 s
    # (the horizon itself) runs for no time inside it, but is in the workload: at 3600 s both
    # run, two 3/4-node pods, so the peak is 2.
    jobs = [(3000, 1200, 6144, 1, 1), (3600, 100, 6144, 1, 1)]
    scenario, workload = trace_scenario(tmp_path, jobs, pools=[pool(size=2)], horizon="1h")
    bound = lower_bound(scenario, workload)
    assert bound.node_hours == pytest.approx(600 / 3600)
    assert bound.peak_nodes == 2


# ----- property: boundary workloads against a brute force -------------------------------------

BASE, _ = synthetic(seed=1, count=1, pools=[pool(size=1)])
SCENARIO = replace(BASE, horizon=1000.0)
SIZES = [1024, 2048, 4095, 4096, 4097, 6144, 8192, 8193]
TIMES = [0, 10, 20, 30]
DURATIONS = [10, 20]


def brute_force_bins(items: list[int]) -> int:
    """The fewest 8192-MiB bins that hold `items`, by trying every assignment."""
    for bins in range(len(items) + 1):
        for assignment in itertools.product(range(bins), repeat=len(items)):
            loads = [0] * bins
            for item, b in zip(items, assignment, strict=True):
                loads[b] += item
            if all(load <= CAP for load in loads):
                return bins
    raise AssertionError("unreachable: one bin per item always works")


def brute_force(jobs: list[tuple[int, int, int]]) -> tuple[int, float]:
    """Peak nodes over all moments, and node-seconds of max(ceil(sum / cap), pods over half)."""
    fitting = [(s, s + d, e) for s, d, e in jobs if e <= CAP]
    peak = 0
    for t in {s for s, _, _ in fitting}:
        running = [e for s, end, e in fitting if s <= t < end]
        peak = max(peak, brute_force_bins(running))
    edges = sorted({s for s, _, _ in fitting} | {end for _, end, _ in fitting})
    seconds = 0.0
    for left, right in itertools.pairwise(edges):
        running = [e for s, end, e in fitting if s <= left < end]
        nodes = max(math.ceil(sum(running) / CAP), sum(1 for e in running if 2 * e > CAP))
        seconds += nodes * (right - left)
    return peak, seconds


@settings(max_examples=120, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(TIMES), st.sampled_from(DURATIONS), st.sampled_from(SIZES)),
        min_size=1,
        max_size=6,
    )
)
def test_the_bound_is_the_brute_force_peak_on_boundary_workloads(
    jobs: list[tuple[int, int, int]],
) -> None:
    jobs.sort()
    workload = Workload(
        ids=tuple(f"j{i}" for i in range(len(jobs))),
        submit=np.asarray([s for s, _, _ in jobs], dtype=np.float64),
        duration=np.asarray([d for _, d, _ in jobs], dtype=np.float64),
        epc=np.asarray([e * MIB for _, _, e in jobs], dtype=np.int64),
        cpu_milli=np.ones(len(jobs), dtype=np.int64),
        memory=np.ones(len(jobs), dtype=np.int64),
    )
    bound = lower_bound(SCENARIO, workload)
    peak, seconds = brute_force(jobs)
    assert (bound.peak_nodes, bound.method) == (peak, "milp")
    assert bound.node_hours == pytest.approx(seconds / 3600)
    assert bound.per_pool["p"].pods_excluded == sum(1 for _, _, e in jobs if e > CAP)


def test_a_moment_proven_cheaply_does_not_end_the_proof(tmp_path: Path) -> None:
    # At t=0, 24 pods of 1 GiB fill 3 nodes exactly (L2 = first-fit = 3); at t=200, 7 pods of
    # 34 % need 4 nodes (no node holds three) though L2 says 3. The proof visits t=0 first (its
    # ceiling, min(24, 2 * 3 + 1) = 7, is higher than t=200's min(7, 2 * 2.38 + 1) = 5), finds
    # nothing above 3 there, and must go on to t=200.
    jobs = [(0, 100, 1024, 1, 1)] * 24 + [(200, 100, 2785, 1, 1)] * 7
    scenario, workload = trace_scenario(tmp_path, jobs, pools=[pool(size=4)])
    bound = lower_bound(scenario, workload)
    assert (bound.peak_nodes, bound.method, bound.per_pool["p"].at_s) == (4, "milp", 200)


def test_pods_after_the_horizon_and_pools_without_epc(tmp_path: Path) -> None:
    # Horizon 1h; a 3/4-node pod at 0 s, another at 4000 s (after the horizon: not counted).
    plain = {
        "name": "plain",
        "template": {"resources": {"cpu": "4", "memory": "16Gi", "pods": "110"}},
        "initialSize": 0,
        "minSize": 0,
        "maxSize": 3,
    }
    jobs = [(0, 100, 6144, 1, 1), (30, 100, 6144, 1, 1), (4000, 100, 6144, 1, 1)]
    scenario, workload = trace_scenario(tmp_path, jobs, pools=[pool(size=2), plain], horizon="1h")
    bound = lower_bound(scenario, workload)
    assert (bound.peak_nodes, bound.method) == (2, "milp")
    # A template without EPC holds no enclave: no nodes, every pod excluded, nothing to prove.
    assert (bound.per_pool["plain"].pool, bound.per_pool["plain"].capacity) == ("plain", 0)
    assert bound.per_pool["plain"].to_json() == {
        "peakNodes": 0,
        "method": "milp",
        "atS": 0.0,
        "podsExcluded": 2,
    }
    assert bound.per_pool["p"].to_json() == {
        "peakNodes": 2,
        "method": "milp",
        "atS": 30.0,
        "podsExcluded": 0,
    }
    # 200 node-seconds: one node over [0, 30) and [100, 130), two over [30, 100); at $1/h a
    # node (the helper's price), $2/h at the peak; the plain pool has no EPC and no price.
    assert bound.to_json() == {
        "peakNodes": 2,
        "method": "milp",
        "nodeHours": 0.0556,
        "costPerHourAtPeak": 2.0,
        "cost": 0.0556,
        "perPool": {
            "p": bound.per_pool["p"].to_json(),
            "plain": bound.per_pool["plain"].to_json(),
        },
    }
    # One pool: no per-pool breakdown. A moment is reported to the millisecond.
    jobs = [(0.1234, 100, 6144, 1, 1), (30.0006, 100, 6144, 1, 1)]
    scenario, workload = trace_scenario(tmp_path, jobs, pools=[pool(size=2)])
    bound = lower_bound(scenario, workload)
    assert bound.to_json() == {
        "peakNodes": 2,
        "method": "milp",
        "nodeHours": 0.0556,
        "costPerHourAtPeak": 2.0,
        "cost": 0.0556,
    }
    assert bound.per_pool["p"].to_json()["atS"] == 30.001


def test_exact_bins_with_room_to_spare() -> None:
    # Three 1 MiB items in one bin, whatever upper bound the caller offers.
    for upper in (1, 2, 3, 4):
        assert exact_bins(arr(1, 1, 1), CAP, upper=upper, time_limit=10) == 1
    assert exact_bins(arr(4096, 4096, 4096), CAP, upper=3, time_limit=10) == 2


def test_a_single_pod_needs_one_node(tmp_path: Path) -> None:
    scenario, workload = trace_scenario(tmp_path, [(0, 100, 1024, 1, 1)], pools=[pool(size=1)])
    bound = lower_bound(scenario, workload)
    assert (bound.peak_nodes, bound.method) == (1, "milp")
    assert (bound.per_pool["p"].pool, bound.per_pool["p"].capacity) == ("p", 8 * 2**30)


def test_the_l2_fallback_still_finds_the_peak_moment(tmp_path: Path) -> None:
    # t=0: 10 pods of 34 % (L2 4); t=200: 90 such pods (L2 31, first-fit 45, beyond the MILP).
    jobs = [(0, 100, 2785, 1, 1)] * 10 + [(200, 100, 2785, 1, 1)] * 90
    scenario, workload = trace_scenario(tmp_path, jobs, pools=[pool(size=4)])
    bound = lower_bound(scenario, workload)
    assert (bound.peak_nodes, bound.method, bound.per_pool["p"].at_s) == (31, "l2", 200)


def test_the_moment_of_a_one_node_peak_is_reported(tmp_path: Path) -> None:
    # One pod, from t=5: the bound is 1 node, reached at 5 s.
    scenario, workload = trace_scenario(tmp_path, [(5, 100, 1024, 1, 1)], pools=[pool(size=1)])
    bound = lower_bound(scenario, workload)
    assert (bound.peak_nodes, bound.per_pool["p"].at_s) == (1, 5)


def test_l2_where_dropping_small_items_raises_the_bound() -> None:
    # Bins of 100. Big items 90 and 90 leave 10 each, too little for any 40: counting only the
    # items of at least 40 (alpha = 40), 2 + ceil(120 / 100) = 4 bins, above the volume (3).
    assert l2_bound(np.asarray([90, 90, 40, 40, 40], dtype=np.int64), 100) == 4
    # 80 and 70 leave 20 and 30; the items of at least 40 (40, 40, 45) need ceil(125 / 100) = 2
    # more bins: 4 (first-fit-decreasing needs 4 too: 80+20, 70, 45+40, 40).
    items = np.asarray([20, 40, 40, 45, 70, 80], dtype=np.int64)
    assert l2_bound(items, 100) == 4 == first_fit_decreasing(items, 100)


def test_headroom_shrinks_the_bins(tmp_path: Path) -> None:
    # 8 GiB nodes with 1 GiB kept free: two 4 GiB pods no longer share a node.
    jobs = [(0, 100, 4096, 1, 1), (0, 100, 4096, 1, 1)]
    scenario, workload = trace_scenario(tmp_path, jobs, pools=[pool(size=2)], headroom="1Gi")
    bound = lower_bound(scenario, workload)
    assert (bound.peak_nodes, bound.per_pool["p"].capacity) == (2, 7 * 2**30)


def test_the_cost_figures_are_rounded_to_four_places(tmp_path: Path) -> None:
    # One pod filling one node of a pool that costs 0.123456 an hour, for one hour: at least one
    # node's price at the peak (0.123456 an hour, shown as 0.1235) and over the run.
    jobs = [(0, 3600, 8192, 1, 1)]
    scenario, workload = trace_scenario(tmp_path, jobs, pools=[pool(size=1, cost=0.123456)])
    data = lower_bound(scenario, workload).to_json()
    assert (data["costPerHourAtPeak"], data["cost"], data["nodeHours"]) == (0.1235, 0.1235, 1.0)


@pytest.mark.parametrize(
    ("jobs", "pools", "peak_rate", "cost"),
    [
        # Three exact halves for an hour: 2 nodes (two share), EPC worth 1.5 an hour: 2.0, 2.0.
        ([(0, 3600, 4096, 1, 1)] * 3, [pool(size=3)], 2.0, 2.0),
        # Three pods just over half: no two share, 3 nodes: 3.0 an hour for the hour.
        ([(0, 3600, 4178, 1, 1)] * 3, [pool(size=3)], 3.0, 3.0),
        # Three pods of 0.4 node: 2 nodes hold them (0.4 + 0.4, 0.4).
        ([(0, 3600, 3277, 1, 1)] * 3, [pool(size=3)], 2.0, 2.0),
        # Half a node for an hour still takes a whole node: 1.0, not 0.5.
        ([(0, 3600, 4096, 1, 1)], [pool(size=1)], 1.0, 1.0),
        # Two half-node pods overlapping for half an hour: one node for 1.5 hours.
        ([(0, 3600, 4096, 1, 1), (1800, 3600, 4096, 1, 1)], [pool(size=1)], 1.0, 1.5),
        # One pod, then another after it has left: one node for 100 s twice.
        ([(0, 100, 4096, 1, 1), (200, 100, 4096, 1, 1)], [pool(size=1)], 1.0, 200 / 3600),
        # An 8 GiB pod where an 8 GiB node costs 0.5 and a 16 GiB node 2.0: its EPC is worth the
        # small node's 0.5 an hour (it fits it exactly), and the cheapest node is 0.5.
        (
            [(0, 3600, 8192, 1, 1)],
            [pool("small", epc="8Gi", cost=0.5), pool("big", epc="16Gi", cost=2.0)],
            0.5,
            0.5,
        ),
        # A pod no template holds costs nothing in the bound.
        ([(0, 3600, 16384, 1, 1)], [pool(size=1)], 0.0, 0.0),
    ],
)
def test_the_bound_in_dollars_by_hand(
    tmp_path: Path,
    jobs: list[tuple[float, float, float, int, int]],
    pools: list[dict[str, object]],
    peak_rate: float,
    cost: float,
) -> None:
    scenario, workload = trace_scenario(tmp_path, jobs, pools=pools)
    bound = lower_bound(scenario, workload)
    assert bound.cost_per_hour == pytest.approx(peak_rate)
    assert bound.cost == pytest.approx(cost)


def test_no_time_to_prove_leaves_the_l2_bound(tmp_path: Path) -> None:
    # Seven pods of 34 % at once: L2 says 3, the optimum is 4; with no time to prove it the bound
    # stays 3 and says so.
    jobs = [(0, 100, 2785, 10, 64)] * 7
    scenario, workload = trace_scenario(tmp_path, jobs, pools=[pool(size=4)])
    bound = lower_bound(scenario, workload, budget=0)
    assert (bound.peak_nodes, bound.method) == (3, "l2")


def test_one_byte_pods_on_one_and_two_byte_templates(tmp_path: Path) -> None:
    # The smallest sizes there are: 1-byte pods, [0, 100) and [50, 150), on a 1-byte template
    # (each pod fills a node) and on a 2-byte one (both share a node).
    jobs = [(0, 100, 1, 1, 1), (50, 100, 1, 1, 1)]
    for capacity, peak, node_seconds in (("1", 2, 50 + 2 * 50 + 50), ("2", 1, 150)):
        scenario, workload = trace_scenario(tmp_path, jobs, pools=[pool(epc=capacity, size=1)])
        workload = replace(workload, epc=np.array([1, 1], dtype=np.int64))
        bound = lower_bound(scenario, workload)
        assert (bound.peak_nodes, bound.method) == (peak, "milp"), capacity
        assert bound.per_pool["p"].pods_excluded == 0
        # At $1 an hour a node: the cost is the node-hours, the peak rate the peak count.
        assert bound.node_hours == pytest.approx(node_seconds / 3600)
        assert bound.cost == pytest.approx(node_seconds / 3600)
        assert bound.cost_per_hour == pytest.approx(peak)
