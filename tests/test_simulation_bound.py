"""The lower bound on nodes: L2 <= exact MILP optimum <= first-fit-decreasing on any instance; the
bound is solved exactly on small workloads and falls back to L2 (saying so) on large ones; with
several pools it is reported per pool and the overall figure uses the biggest template; and no
EPC-respecting run in which no pod waited ever has fewer nodes at its peak than the bound."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from epcsched.simulation.bound import (
    exact_bins,
    first_fit_decreasing,
    l2_bound,
    lower_bound,
)
from epcsched.simulation.engine import simulate
from tests.simulation_helpers import pool, synthetic, trace_scenario


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 100), min_size=1, max_size=14))
def test_l2_never_exceeds_the_optimum(sizes: list[int]) -> None:
    items = np.asarray(sizes, dtype=np.int64)
    upper = first_fit_decreasing(items, 100)
    best = exact_bins(items, 100, upper=upper, time_limit=10)
    assert best is not None
    assert max(-(-sum(sizes) // 100), 0) <= l2_bound(items, 100) <= best <= upper


def test_l2_beats_the_volume_bound() -> None:
    # Three items just over half a bin: volume says 2 bins, but no two share a bin.
    items = np.asarray([51, 51, 51], dtype=np.int64)
    assert -(-int(items.sum()) // 100) == 2
    assert l2_bound(items, 100) == 3
    # Big items (over half) leave room only for what fits beside them: 60+45 does not fit.
    mixed = np.asarray([60, 60, 45, 45], dtype=np.int64)
    assert l2_bound(mixed, 100) == 3
    assert exact_bins(mixed, 100, upper=first_fit_decreasing(mixed, 100), time_limit=10) == 3


def test_bound_is_the_peak_over_time(tmp_path: Path) -> None:
    # 8 GiB nodes. At t=10 three 5 GiB pods run together (three nodes); later only two.
    jobs = [
        (0, 100, 5120, 100, 256),
        (5, 100, 5120, 100, 256),
        (10, 100, 5120, 100, 256),
        (200, 100, 5120, 100, 256),
        (210, 100, 5120, 100, 256),
    ]
    scenario, workload = trace_scenario(tmp_path, jobs, pools=[pool(size=3)])
    bound = lower_bound(scenario, workload)
    assert (bound.peak_nodes, bound.method) == (3, "milp")
    assert bound.per_pool["p"].at_s == 10
    # Node-seconds: ceil(5/8)=1 on [0,5), 2 on [5,10) (two 5 GiB pods are over half a node),
    # 3 on [10,100), 2 on [100,105), 1 on [105,110); 1 on [200,210), 2 on [210,300), 1 on
    # [300,310).
    seconds = 5 + 2 * 5 + 3 * 90 + 2 * 5 + 5 + 10 + 2 * 90 + 10
    assert bound.node_hours == pytest.approx(seconds / 3600)


def test_the_milp_settles_moments_where_the_bounds_disagree(tmp_path: Path) -> None:
    # Seven pods of 34% of a node at once: L2 (volume) says 3, but no node holds three: 4.
    jobs = [(0, 100, 2785, 10, 64)] * 7
    scenario, workload = trace_scenario(tmp_path, jobs, pools=[pool(size=4)])
    assert l2_bound(workload.epc, 8 * 2**30) == 3
    bound = lower_bound(scenario, workload)
    assert (bound.peak_nodes, bound.method) == (4, "milp")


def test_too_many_pods_for_the_milp_leave_the_l2_bound(tmp_path: Path) -> None:
    # Ninety such pods: L2 says 31, first-fit-decreasing 45, and the MILP is out of reach.
    jobs = [(0, 100, 2785, 10, 64)] * 90
    scenario, workload = trace_scenario(tmp_path, jobs, pools=[pool(size=4)])
    bound = lower_bound(scenario, workload)
    assert (bound.peak_nodes, bound.method) == (31, "l2")


def test_large_workloads_are_proven_when_the_bounds_meet() -> None:
    scenario, workload = synthetic(seed=2, count=3000, rate=120, pools=[pool(size=10)])
    # A budget a loaded CI machine cannot run out of: the proof takes well under a second alone.
    bound = lower_bound(scenario, workload, budget=120.0)
    assert bound.method == "milp"
    assert bound.peak_nodes > 10


def test_several_pools_are_reported_per_pool(tmp_path: Path) -> None:
    jobs = [(0, 100, 3072, 100, 256) for _ in range(4)]
    scenario, workload = trace_scenario(
        tmp_path, jobs, pools=[pool("small", epc="4Gi"), pool("big", epc="16Gi")]
    )
    bound = lower_bound(scenario, workload)
    assert bound.per_pool["small"].peak_nodes == 4
    assert bound.per_pool["big"].peak_nodes == 1
    assert bound.peak_nodes == 1
    per_pool = bound.to_json()["perPool"]
    assert isinstance(per_pool, dict) and set(per_pool) == {"small", "big"}


def test_pods_too_big_for_a_template_are_left_out_of_its_bound(tmp_path: Path) -> None:
    jobs = [(0, 100, 6144, 100, 256), (0, 100, 1024, 100, 256)]
    scenario, workload = trace_scenario(
        tmp_path, jobs, pools=[pool("small", epc="4Gi"), pool("big", epc="8Gi")]
    )
    bound = lower_bound(scenario, workload)
    assert bound.per_pool["small"].pods_excluded == 1
    assert bound.per_pool["big"].peak_nodes == 1


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 1000), policy=st.sampled_from(["binpack", "spread", "kube-default"]))
def test_the_bound_never_exceeds_a_run_in_which_no_pod_waited(seed: int, policy: str) -> None:
    base, workload = synthetic(seed=seed, count=60, rate=6, epc_mib=[1024, 2048, 3072, 5120])
    bound = lower_bound(base, workload)
    no_wait_sizes = []
    for size in range(1, 2 * bound.peak_nodes + 3):
        scenario = replace(base, pools=(replace(base.pools[0], initial_size=size),))
        run = simulate(scenario, workload, policy)
        if run.metrics["podsWaited"] == 0:
            no_wait_sizes.append(size)
            assert run.metrics["peakNodes"] >= bound.peak_nodes
            assert run.metrics["nodeHours"] >= bound.node_hours - 1e-4
    # With enough nodes nobody waits, so the check above is not vacuous.
    assert no_wait_sizes
    assert min(no_wait_sizes) >= bound.peak_nodes
