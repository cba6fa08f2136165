"""The simulation part of `make demo`: the tiny scenario under every policy, side by side.

`epcsched.demo` (the project-wide demo) calls `run_demo`; it prints the comparison table and the
bound, and says where the report and plots were written.
"""

from __future__ import annotations

from pathlib import Path

from epcsched.simulation.pipeline import simulate_and_report
from epcsched.simulation.scenario import load_scenario
from epcsched.simulation.workload import load_workload

#: The demo scenario, in the source tree beside the package.
TINY_SCENARIO = Path(__file__).resolve().parents[2] / "simulations" / "tiny" / "scenario.yaml"


def run_demo(out_dir: Path, *, scenario_path: Path = TINY_SCENARIO) -> None:
    """Run the tiny scenario for every policy, print the table, write the report to `out_dir`."""
    scenario = load_scenario(scenario_path)
    workload = load_workload(scenario.workload, scenario.seed)
    print(
        f"Simulating scenario {scenario.name!r}: {len(workload)} pods, "
        f"policies {', '.join(scenario.policies)}"
    )
    if scenario.description:
        print(scenario.description.strip())
    outcome = simulate_and_report(scenario, workload, scenario.policies, out_dir, progress=False)
    bound = outcome.bound
    print(outcome.table)
    print(
        f"Lower bound on peak nodes if no pod waited: {bound.peak_nodes} "
        f"({'exact, MILP' if bound.method == 'milp' else 'Martello-Toth L2'}), "
        f"at least {bound.node_hours:.2f} node-hours"
    )
    plots = ", ".join(p.name for p in outcome.written if p.suffix == ".png")
    print(f"Report: {out_dir / 'summary.md'}; plots in {out_dir}: {plots}")
