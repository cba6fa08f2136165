"""Pictures and tables people can read (issue 9 point 9, in part).

The terminal table sizes every column to its widest cell, so a column never runs into the next
at any magnitude, carries a one-line legend, and its done, never and unfinished columns add up to
the pods submitted. A plot in which every policy draws the same flat line is replaced by a
sentence in summary.md; a policy whose counts are over ten times everyone else's is drawn on a
symlog axis so the others stay visible. Counts (nodes, pods) get integer ticks.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from epcsched.cli import main
from epcsched.simulation.bound import LowerBound
from epcsched.simulation.engine import RunResult
from epcsched.simulation.report import (
    TABLE_LEGEND,
    _dwarfing,
    _flat,
    comparison_table,
    count_figure,
    flat_notes,
)
from epcsched.simulation.scenario import load_scenario

TINY = Path(__file__).resolve().parent.parent / "simulations" / "tiny" / "scenario.yaml"


def run(policy: str, **metrics: float | int) -> RunResult:
    base: dict[str, float | int] = {
        "podsSubmitted": 10,
        "podsCompleted": 7,
        "podsNeverScheduled": 1,
        "waitP50S": 0.0,
        "waitP95S": 12.5,
        "waitMaxS": 30.0,
        "nodeHours": 3.5,
        "cost": 1.25,
        "peakNodes": 3,
        "epcOvercommitPodSeconds": 0.0,
        "meanEpcUtilization": 0.5,
        "peakCostPerHour": 1.5,
    }
    base.update(metrics)
    return RunResult(policy=policy, seed=1, variant="base", metrics=base)


def cells(line: str) -> list[str]:
    return re.split(r" {2,}", line.strip())


def test_table_columns_stay_apart_at_any_magnitude() -> None:
    huge = run(
        "cluster-autoscaler",
        podsSubmitted=1_000_000,
        podsCompleted=990_000,
        podsNeverScheduled=4_000,
        peakNodes=107,
        nodeHours=102_000.0,
        cost=48_960.0,
        waitP95S=123_456.7,
        epcOvercommitPodSeconds=9_876_543.2,
    )
    table = comparison_table([run("binpack"), huge], LowerBound(107, "l2", {}))
    lines = table.splitlines()
    assert lines[-1] == TABLE_LEGEND and "\n" not in TABLE_LEGEND
    header, _, small, big = lines[:4]
    assert len(cells(header)) == len(cells(small)) == len(cells(big)) == 14
    assert cells(big)[1:5] == ["107", "107", "102,000.00", "48,960.00"]
    # Every column ends where its header ends.
    for name in ("node-h", "cost", "unfinished", "overcommit pod-s"):
        end = header.index(name) + len(name)
        assert big[end - 1] != " " and big[end : end + 2] == "  ", name


def test_done_never_and_unfinished_add_up_to_the_pods_submitted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    assert main(["simulate", str(TINY), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    policies = json.loads((tmp_path / "results.json").read_text())["policies"]
    lines = out.splitlines()
    header = cells(lines[0])
    rows = {cells(line)[0]: cells(line) for line in lines[2:] if cells(line)[0] in policies}
    assert set(rows) == set(policies)
    for name, row in rows.items():
        done, never, unfinished = (
            int(row[header.index(c)].replace(",", "")) for c in ("done", "never", "unfinished")
        )
        assert done + never + unfinished == policies[name]["podsSubmitted"], name
    # epc-unaware's enclaves page, so some are still running when the horizon comes.
    assert int(rows["epc-unaware"][header.index("unfinished")]) > 0


def test_flat_plots_become_sentences() -> None:
    flat = [
        RunResult("binpack", 1, "base", {}, times=[0, 60], nodes=[4, 4], pending=[0, 0]),
        RunResult("spread", 1, "base", {}, times=[0, 60], nodes=[4, 4], pending=[0, 2]),
    ]
    assert flat_notes(flat) == [
        "Every policy kept 4 nodes throughout, so there is no plot of nodes over time."
    ]
    flat[1].pending = [0, 0]
    assert flat_notes(flat)[1] == (
        "No pod was ever pending under any policy, so there is no plot of pending pods."
    )
    assert _flat({"a": [3, 3], "b": [3]}) and not _flat({"a": [3, 3], "b": [3, 4]})


def test_a_dwarfing_policy_is_found() -> None:
    assert _dwarfing({"epc-unaware": [0, 250], "binpack": [0, 12], "spread": [3, 20]}) == (
        "epc-unaware"
    )
    # Ten times, not more: no special axis; others all zero: nothing to keep visible.
    assert _dwarfing({"epc-unaware": [200], "binpack": [20]}) is None
    assert _dwarfing({"epc-unaware": [200], "binpack": [0]}) is None
    assert _dwarfing({"epc-unaware": [200]}) is None


def test_count_plots_have_integer_ticks_and_symlog_for_a_dwarfing_policy() -> None:
    scenario = load_scenario(TINY)
    base = [
        RunResult(
            "binpack", 1, "base", {}, times=[0, 600, 1200], nodes=[1, 2, 3], pending=[0, 1, 3]
        ),
        RunResult(
            "epc-unaware",
            1,
            "base",
            {},
            times=[0, 600, 1200],
            nodes=[1, 2, 2],
            pending=[0, 90, 200],
        ),
    ]
    bound = LowerBound(2, "milp", {})
    nodes = count_figure(scenario, base, "nodes", "nodes", bound)
    pending = count_figure(scenario, base, "pending", "pending pods", bound)
    assert nodes is not None and pending is not None
    try:
        ax = nodes.axes[0]
        assert ax.get_yscale() == "linear"
        assert all(float(t).is_integer() for t in ax.get_yticks())
        # 200 pending against 3: the symlog axis keeps binpack's line off the floor.
        ax = pending.axes[0]
        assert ax.get_yscale() == "symlog"
        assert "epc-unaware dwarfs the others" in ax.get_ylabel()
    finally:
        plt.close(nodes)
        plt.close(pending)
    flat = [RunResult("binpack", 1, "base", {}, times=[0, 60], nodes=[4, 4], pending=[0, 0])]
    assert count_figure(scenario, flat, "pending", "pending pods", bound) is None
