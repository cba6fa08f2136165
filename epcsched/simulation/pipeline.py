"""One scenario, end to end: run its policies, bound it, write the report.

The `simulate` command and the demo differ only in what they print around this.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from epcsched.simulation.bound import LowerBound, lower_bound
from epcsched.simulation.engine import RunResult
from epcsched.simulation.report import comparison_table, write_report
from epcsched.simulation.scenario import Scenario
from epcsched.simulation.sweep import DASK_CONNECT_TIMEOUT, plan_tasks, run_tasks
from epcsched.simulation.workload import Workload


@dataclass(frozen=True, slots=True)
class Outcome:
    results: list[RunResult]
    bound: LowerBound
    written: list[Path]
    """The files of the report, results.json first."""
    table: str
    """The comparison table a person reads."""


def simulate_and_report(
    scenario: Scenario,
    workload: Workload,
    policies: Sequence[str],
    out: Path,
    *,
    workers: int = 1,
    dask_address: str | None = None,
    dask_timeout: float = DASK_CONNECT_TIMEOUT,
    progress: bool | None = None,
) -> Outcome:
    tasks = plan_tasks(scenario, policies, workloads={scenario.seed: workload})
    results = run_tasks(
        tasks,
        workers=workers,
        dask_address=dask_address,
        progress=progress,
        dask_timeout=dask_timeout,
    )
    bound = lower_bound(scenario, workload)
    written = write_report(out, scenario, results, bound)
    return Outcome(results, bound, written, comparison_table(results, bound))
