"""Money in the simulation report (issue 9 point 9): a lower bound in dollars beside the bound in
nodes, and, with several pools, each pool's nodes and the cost over time.

The bound in dollars must hold for any mix of pools: each running pod pays at least its EPC at
the cheapest price per byte among the pools that can hold it, and never less than the cheapest
node times the nodes the biggest template needs; the figures here are worked out by hand from
a four-job trace on two pools priced so that the small pool is cheaper per byte and one job
fits only the big pool. The run reports what it paid (the running total ends at its cost, its
busiest hour is what its pools cost then), summary.md and the terminal table show both bounds
and check a run against them, and `pools.png`/`cost.png` are drawn only when there are several
pools whose sizes moved, against the bounds.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pytest
import yaml

from epcsched.cli import main
from epcsched.simulation.bound import LowerBound, lower_bound
from epcsched.simulation.engine import RunResult, simulate
from epcsched.simulation.report import (
    comparison_table,
    cost_figure,
    pools_figure,
    summary_markdown,
)
from epcsched.simulation.scenario import load_scenario
from tests.simulation_helpers import pool, trace_scenario, write_trace

TINY = Path(__file__).resolve().parent.parent / "simulations" / "tiny" / "scenario.yaml"

# small: 4 GiB for $0.40/h ($0.10 per GiB-hour); big: 16 GiB for $2.40/h ($0.15 per GiB-hour).
POOLS = [
    pool("small", epc="4Gi", cost=0.40, size=2),
    pool("big", epc="16Gi", cost=2.40, size=1),
]
# (submit s, duration s, EPC MiB, CPU m, memory MiB); horizon 1 h.
JOBS = [
    (0, 600, 2048, 100, 256),  # A, 2 GiB: small's price, $0.20/h
    (0, 1200, 6144, 100, 256),  # B, 6 GiB: fits only big, $0.90/h
    (300, 600, 3072, 100, 256),  # C, 3 GiB: $0.30/h
    (3000, 1200, 1024, 100, 256),  # D, 1 GiB: $0.10/h, cut at the horizon
]


def two_pools(tmp_path: Path, **extra: Any) -> Any:
    return trace_scenario(tmp_path, JOBS, pools=POOLS, horizon="1h", **extra)


def test_cost_bound_worked_out_by_hand(tmp_path: Path) -> None:
    scenario, workload = two_pools(tmp_path)
    bound = lower_bound(scenario, workload)
    # Per pod: A+B $1.10/h over [0, 300), A+B+C $1.40 over [300, 600), B+C $1.20 over
    # [600, 900), B $0.90 over [900, 1200), nothing until D from 3000 s: $0.10, but a node is
    # needed and the cheapest costs $0.40. 330 + 420 + 360 + 270 + 240 = 1620 dollar-seconds/h.
    assert bound.cost == pytest.approx(1620 / 3600)
    # The worst moment: A+B+C at $1.40/h; one big node ($0.40 at the cheapest) is less.
    assert bound.cost_per_hour == pytest.approx(1.40)
    assert (bound.peak_nodes, bound.node_hours) == (1, pytest.approx(0.5))
    assert bound.to_json() == {
        "peakNodes": 1,
        "method": "milp",
        "nodeHours": 0.5,
        "costPerHourAtPeak": 1.4,
        "cost": 0.45,
        "perPool": {name: b.to_json() for name, b in bound.per_pool.items()},
    }


def test_the_node_floor_when_pods_leave_nodes_half_empty(tmp_path: Path) -> None:
    # Two 5 GiB pods on 8 GiB nodes at $1/h: by bytes $1.25/h, but no two share a node: $2/h.
    jobs = [(0, 3600, 5120, 100, 256), (0, 1800, 5120, 100, 256)]
    scenario, workload = trace_scenario(tmp_path, jobs, pools=[pool(cost=1.0)], horizon="1h")
    bound = lower_bound(scenario, workload)
    assert bound.cost_per_hour == pytest.approx(2.0)
    # Two nodes for half an hour, one for the other half.
    assert bound.cost == pytest.approx(1.5)
    # Nothing priced: nothing to pay.
    free = replace(
        scenario,
        pools=tuple(
            replace(p, settings=replace(p.settings, cost_per_hour=0.0)) for p in scenario.pools
        ),
    )
    bound = lower_bound(free, workload)
    assert (bound.cost_per_hour, bound.cost) == (0.0, 0.0)


def test_a_run_reports_what_it_paid_per_pool_and_over_time(tmp_path: Path) -> None:
    scenario, workload = two_pools(tmp_path)
    run = simulate(scenario, workload, "binpack")
    # Two small nodes and a big one all hour, no autoscaling: 0.80 + 2.40 = $3.20/h.
    assert run.metrics["podsWaited"] == 0
    assert run.metrics["cost"] == pytest.approx(3.20)
    assert run.metrics["peakCostPerHour"] == pytest.approx(3.20)
    assert set(run.pool_nodes) == {"small", "big"}
    assert set(run.pool_nodes["small"]) == {2} and set(run.pool_nodes["big"]) == {1}
    assert len(run.spent) == len(run.times) == len(run.pool_nodes["big"])
    assert run.spent[0] == 0.0
    assert run.spent[-1] == pytest.approx(run.metrics["cost"])
    middle = len(run.times) // 2
    assert run.spent[middle] == pytest.approx(3.20 * run.times[middle] / 3600)
    bound = lower_bound(scenario, workload)
    assert run.metrics["cost"] >= bound.cost
    assert run.metrics["peakCostPerHour"] >= bound.cost_per_hour


def test_autoscaled_spend_is_the_billed_node_seconds(tmp_path: Path) -> None:
    # Autoscaling from zero: the busiest hour and the total come from the nodes billed.
    pools = [replace_size(p, 0) for p in POOLS]
    scenario, workload = trace_scenario(
        tmp_path, JOBS, pools=pools, horizon="1h", autoscaler={"interval": "30s"}
    )
    run = simulate(scenario, workload, "binpack")
    prices = {"small": 0.40, "big": 2.40}
    sampled = max(
        sum(prices[p] * run.pool_nodes[p][i] for p in prices) for i in range(len(run.times))
    )
    assert run.metrics["peakCostPerHour"] >= sampled > 0
    # The metric is rounded to 4 decimals.
    assert run.spent[-1] == pytest.approx(run.metrics["cost"], abs=5e-5)
    hours = run.metrics["nodeHours"]
    assert 0.40 * hours <= run.metrics["cost"] <= 2.40 * hours


def replace_size(spec: dict[str, Any], size: int) -> dict[str, Any]:
    return {**spec, "initialSize": size}


def result(policy: str, **metrics: float | int) -> RunResult:
    values: dict[str, float | int] = {
        "podsSubmitted": 4,
        "podsCompleted": 4,
        "podsNeverScheduled": 0,
        "waitP50S": 0.0,
        "waitP95S": 0.0,
        "waitMaxS": 0.0,
        "nodeHours": 3.0,
        "cost": 3.2,
        "peakNodes": 3,
        "epcOvercommitPodSeconds": 0.0,
        "meanEpcUtilization": 0.2,
        "podsWaited": 0,
        "evictions": 0,
        "peakCostPerHour": 3.2,
    }
    values.update(metrics)
    return RunResult(
        policy,
        1,
        "base",
        values,
        times=[0.0, 1800.0, 3600.0],
        nodes=[1, 3, 2],
        pending=[0, 0, 0],
        pool_nodes={"small": [0, 2, 2], "big": [1, 1, 0]},
        spent=[0.0, 1.4, 3.2],
    )


def test_summary_and_table_show_both_bounds_and_check_runs_against_them(tmp_path: Path) -> None:
    scenario, _ = two_pools(tmp_path)
    bound = LowerBound(1, "milp", {}, node_hours=0.5, cost_per_hour=1.4, cost=0.45)
    runs = [result("binpack"), result("spread", cost=0.40), result("balanced", peakCostPerHour=1.3)]
    summary = summary_markdown(scenario, runs, bound, [])
    assert (
        "Cost with no pod waiting (small $0.4/h, big $2.4/h): at least **$1.40** an hour at the "
        "busiest moment and **$0.45** over the horizon" in summary
    )
    assert "| cost | cost bound | peak $/h | $/h bound |" in summary
    assert "| binpack | 3 | 1 | holds | 3.00 | 0.50 | 3.20 | 0.45 | 3.20 | 1.40 |" in summary
    # Below the bound in total, or at the busiest moment: the bound check says so.
    assert "| spread | 3 | 1 | VIOLATED |" in summary
    assert "| balanced | 3 | 1 | VIOLATED |" in summary
    table = comparison_table(runs[:1], bound).splitlines()
    header = table[0].split()
    row = table[2].split()
    assert header[:8] == ["policy", "peak", "bound", "node-h", "cost", "cost", "bound", "$/h"]
    assert row[:8] == ["binpack", "3", "1", "3.00", "3.20", "0.45", "3.20", "1.40"]
    assert "$/h" in table[-1] and "costPerHour" in table[-1]


def test_pool_and_cost_plots_against_the_bounds(tmp_path: Path) -> None:
    scenario, _ = two_pools(tmp_path)
    bound = LowerBound(1, "milp", {}, node_hours=0.5, cost_per_hour=1.4, cost=0.45)
    runs = [result("binpack"), result("spread")]
    pools = pools_figure(scenario, runs)
    cost = cost_figure(scenario, runs, bound)
    assert pools is not None and cost is not None
    try:
        small, big = pools.axes
        assert (small.get_ylabel(), big.get_ylabel()) == ("small nodes", "big nodes")
        assert list(small.lines[0].get_ydata()) == [0, 2, 2]
        assert all(float(t).is_integer() for t in big.get_yticks())
        rate, total = cost.axes
        # $/h at each sample: 2.40 big; 2 x 0.40 + 2.40; 2 x 0.40.
        assert list(rate.lines[0].get_ydata()) == pytest.approx([2.40, 3.20, 0.80])
        assert list(total.lines[0].get_ydata()) == [0.0, 1.4, 3.2]
        bound_lines = [line for ax in (rate, total) for line in ax.lines if line.get_ls() == ":"]
        assert [line.get_ydata()[0] for line in bound_lines] == [1.4, 0.45]
        assert "lower bound at the busiest moment" in [
            t.get_text() for t in rate.get_legend().get_texts()
        ]
    finally:
        plt.close(pools)
        plt.close(cost)
    # One pool (the nodes plot says it all), no prices, or sizes that never moved: no plot.
    tiny = load_scenario(TINY)
    assert pools_figure(tiny, runs) is None and cost_figure(tiny, runs, bound) is None
    free = replace(
        scenario,
        pools=tuple(
            replace(p, settings=replace(p.settings, cost_per_hour=0.0)) for p in scenario.pools
        ),
    )
    assert cost_figure(free, runs, bound) is None
    still = [replace(r, pool_nodes={"small": [2, 2, 2], "big": [1, 1, 1]}) for r in runs]
    assert pools_figure(scenario, still) is None and cost_figure(scenario, still, bound) is None


def test_simulate_writes_the_cost_bound_and_the_pool_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_trace(tmp_path / "jobs.csv", JOBS)
    (tmp_path / "scenario.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "two-pools",
                "seed": 1,
                "horizon": "1h",
                "nodePools": [replace_size(p, 0) for p in POOLS],
                "workload": {"trace": "jobs.csv"},
                "autoscaler": {"interval": "30s"},
                "policies": ["binpack", "cluster-autoscaler"],
            }
        )
    )
    out = tmp_path / "out"
    assert main(["simulate", str(tmp_path / "scenario.yaml"), "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["lowerBound"]["cost"] == 0.45
    assert results["lowerBound"]["costPerHourAtPeak"] == 1.4
    summary = (out / "summary.md").read_text()
    for plot in ("pools.png", "cost.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({plot})" in summary
    printed = capsys.readouterr().out
    assert "$1.40/h at peak, $0.45 in total" in printed
