"""What a simulation writes: results.json for programs, summary.md for people, PNG plots.

`results.json` has exactly the keys the simulation issue fixes, for the scenario's base seed.
Sweep points (other seeds, pool sizes) go to `sweep.json` and a second table in `summary.md`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from epcsched.simulation.bound import LowerBound
from epcsched.simulation.engine import RunResult
from epcsched.simulation.scenario import EPCSCHED_POLICIES, Scenario

#: The per-policy keys of results.json, in order.
METRIC_KEYS = (
    "podsSubmitted",
    "podsCompleted",
    "podsNeverScheduled",
    "waitP50S",
    "waitP95S",
    "waitMaxS",
    "nodeHours",
    "cost",
    "peakNodes",
    "epcOvercommitPodSeconds",
    "meanEpcUtilization",
)
PLOTS = ("nodes.png", "pending.png", "waits.png")


def results_json(
    scenario: Scenario, results: Sequence[RunResult], bound: LowerBound
) -> dict[str, object]:
    """The base runs as results.json: `{scenario, seed, policies, lowerBound}`."""
    return {
        "scenario": scenario.name,
        "seed": scenario.seed,
        "policies": {
            r.policy: {key: r.metrics[key] for key in METRIC_KEYS}
            for r in results
            if r.variant == "base"
        },
        "lowerBound": bound.to_json(),
    }


def sweep_json(results: Sequence[RunResult]) -> list[dict[str, object]]:
    return [
        {"variant": r.variant, "seed": r.seed, "policy": r.policy, **r.metrics}
        for r in results
        if r.variant != "base"
    ]


def _fmt(value: float | int) -> str:
    if isinstance(value, int):
        return str(value)
    return f"{value:,.2f}" if abs(value) < 1e6 else f"{value:,.0f}"


def _bound_note(r: RunResult, bound: LowerBound) -> str:
    """Whether the run is one the bound speaks about, and if so that it holds."""
    peak = int(r.metrics["peakNodes"])
    if r.policy == "epc-unaware":
        return "n/a (overcommits EPC)"
    if r.metrics["podsWaited"]:
        return "n/a (pods waited)"
    # nodeHours is rounded to 4 decimals in the metrics; allow that much.
    hours_ok = float(r.metrics["nodeHours"]) >= bound.node_hours - 1e-4
    return "holds" if peak >= bound.peak_nodes and hours_ok else "VIOLATED"


def summary_markdown(
    scenario: Scenario, results: Sequence[RunResult], bound: LowerBound, plots: Sequence[str]
) -> str:
    base = [r for r in results if r.variant == "base"]
    lines = [f"# Simulation: {scenario.name}", ""]
    if scenario.description:
        lines += [scenario.description.strip(), ""]
    pools = ", ".join(
        f"{p.settings.name} ({p.sku or 'template'}, {p.initial_size} at start, "
        f"{p.settings.min_size}..{p.settings.max_size})"
        for p in scenario.pools
    )
    autoscaling = "on" if scenario.autoscaler else "off"
    lines += [
        f"Seed {scenario.seed}, horizon {scenario.horizon / 3600:g} h, pools: {pools}; "
        f"autoscaling {autoscaling}.",
        "",
        f"Lower bound on peak nodes with no pod waiting: **{bound.peak_nodes}** "
        f"({'exact, MILP' if bound.method == 'milp' else 'Martello-Toth L2 bin-packing bound'}); "
        f"node-hours with no pod waiting: at least **{bound.node_hours:,.2f}** (EPC volume and "
        f"pods over half a node, integrated over time).",
    ]
    if len(bound.per_pool) > 1:
        per = ", ".join(
            f"{b.pool}: {b.peak_nodes} ({b.method}, {b.pods_excluded} pods too big)"
            for b in bound.per_pool.values()
        )
        lines += [f"Per pool, in nodes of that pool's template: {per}."]
    lines += [
        "",
        "| policy | peak nodes | bound | bound check | node-hours | node-hours bound | cost | "
        "completed | "
        "never scheduled | wait p50 s | wait p95 s | wait max s | pods waited | "
        "EPC overcommit pod-s | mean EPC util | evictions |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in base:
        m = r.metrics
        lines.append(
            f"| {r.policy} | {m['peakNodes']} | {bound.peak_nodes} | {_bound_note(r, bound)} | "
            f"{_fmt(m['nodeHours'])} | {bound.node_hours:,.2f} | {_fmt(m['cost'])} | "
            f"{m['podsCompleted']} | "
            f"{m['podsNeverScheduled']} | {_fmt(m['waitP50S'])} | {_fmt(m['waitP95S'])} | "
            f"{_fmt(m['waitMaxS'])} | {m['podsWaited']} | {_fmt(m['epcOvercommitPodSeconds'])} | "
            f"{m['meanEpcUtilization']:.1%} | {m['evictions']} |"
        )
    lines += [
        "",
        "Waits run from submission to first start; pods never scheduled count up to the "
        "horizon. Evicted pods (scale-down) restart from the beginning. Nodes are counted from the "
        "moment "
        "they are asked for (booting nodes are billed). The bound applies to runs that respect "
        "EPC and in which no pod waited; `epc-unaware` packs nodes past their EPC and pays in "
        "paging instead.",
    ]
    sweep = [r for r in results if r.variant != "base"]
    if sweep:
        lines += [
            "",
            "## Sweep",
            "",
            "| point | policy | peak nodes | node-hours | cost | never scheduled | pods waited | "
            "wait p95 s | EPC overcommit pod-s |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in sweep:
            m = r.metrics
            lines.append(
                f"| {r.variant} | {r.policy} | {m['peakNodes']} | {_fmt(m['nodeHours'])} | "
                f"{_fmt(m['cost'])} | {m['podsNeverScheduled']} | {m['podsWaited']} | "
                f"{_fmt(m['waitP95S'])} | "
                f"{_fmt(m['epcOvercommitPodSeconds'])} |"
            )
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def comparison_table(results: Sequence[RunResult], bound: LowerBound) -> str:
    """A plain-text table of the base runs, for terminals."""
    header = (
        f"{'policy':<20}{'peak':>6}{'bound':>7}{'node-h':>9}{'cost':>9}{'done':>7}"
        f"{'never':>7}{'p95 wait s':>12}{'overcommit pod-s':>18}{'EPC util':>10}"
    )
    rows = [header, "-" * len(header)]
    for r in results:
        if r.variant != "base":
            continue
        m = r.metrics
        rows.append(
            f"{r.policy:<20}{m['peakNodes']:>6}{bound.peak_nodes:>7}{m['nodeHours']:>9.2f}"
            f"{m['cost']:>9.2f}{m['podsCompleted']:>7}{m['podsNeverScheduled']:>7}"
            f"{m['waitP95S']:>12.1f}{m['epcOvercommitPodSeconds']:>18.1f}"
            f"{m['meanEpcUtilization']:>10.1%}"
        )
    return "\n".join(rows)


def _bound_label(scenario: Scenario, bound: LowerBound) -> str:
    if len(scenario.pools) == 1:
        return f"lower bound ({bound.method})"
    biggest = max(bound.per_pool.values(), key=lambda b: (b.capacity, b.pool))
    return f"lower bound ({bound.method}, in {biggest.pool} nodes)"


def _style(policy: str) -> str:
    return "-" if policy in EPCSCHED_POLICIES else "--"


def write_plots(
    out: Path, scenario: Scenario, results: Sequence[RunResult], bound: LowerBound
) -> list[str]:
    base = [r for r in results if r.variant == "base"]
    written = []
    for name, field, ylabel in (
        ("nodes.png", "nodes", "nodes (Ready and booting)"),
        ("pending.png", "pending", "pending pods"),
    ):
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for r in base:
            values = r.nodes if field == "nodes" else r.pending
            hours = [t / 3600 for t in r.times]
            ax.step(hours, values, where="post", linestyle=_style(r.policy), label=r.policy)
        if field == "nodes":
            ax.axhline(
                bound.peak_nodes,
                color="black",
                linewidth=0.8,
                linestyle=":",
                label=_bound_label(scenario, bound),
            )
        ax.set_xlabel("simulated time (h)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"{scenario.name}: {ylabel} over time")
        ax.legend(fontsize="small")
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        written.append(name)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in base:
        q = r.wait_quantiles
        shares = [i / (len(q) - 1) for i in range(len(q))]
        ax.plot(q, shares, drawstyle="steps-post", linestyle=_style(r.policy), label=r.policy)
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("wait before first start (s, symlog)")
    ax.set_ylabel("share of pods")
    ax.set_title(f"{scenario.name}: wait-time distribution")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out / "waits.png", dpi=100)
    plt.close(fig)
    written.append("waits.png")
    return written


def write_report(
    out: Path, scenario: Scenario, results: Sequence[RunResult], bound: LowerBound
) -> list[Path]:
    """Write results.json, summary.md, the plots and (for sweeps) sweep.json into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.json"]
    (out / "results.json").write_text(
        json.dumps(results_json(scenario, results, bound), indent=2) + "\n"
    )
    sweep = sweep_json(results)
    if sweep:
        (out / "sweep.json").write_text(json.dumps(sweep, indent=2) + "\n")
        written.append(out / "sweep.json")
    plots = write_plots(out, scenario, results, bound)
    (out / "summary.md").write_text(summary_markdown(scenario, results, bound, plots))
    written.append(out / "summary.md")
    written += [out / p for p in plots]
    return written
