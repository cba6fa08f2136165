"""What a simulation writes: results.json for programs, summary.md for people, PNG plots.

`results.json` has exactly the keys the simulation issue fixes, for the scenario's base seed.
Sweep points (other seeds, pool sizes) go to `sweep.json` and a second table in `summary.md`.
A Deployment scenario reports per scaler what scaling is about instead (`DEPLOYMENT_KEYS`:
replicas, enclave-seconds over the EPC limit, node-hours), against the paging-free minimum, and
adds `replicas.png`. With several pools, the pools' shares and the money are what differ between
policies, so `pools.png` draws each pool's nodes and `cost.png` the spend rate and the running
total, each against its lower bound.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from epcsched.simulation.bound import LowerBound
from epcsched.simulation.deployment import (
    FIXED,
    DeploymentSpec,
    PagingFree,
    paging_free_minimum,
    replicas_per_node,
)
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
#: The per-scaler keys of a Deployment scenario's results.json, in order.
DEPLOYMENT_KEYS = (
    "peakReplicas",
    "meanReplicas",
    "replicaPodsCreated",
    "enclaveSecondsOverLimit",
    "overLimitShare",
    "peakUsageRatio",
    "secondsNoReplicaRunning",
    "nodeHours",
    "cost",
    "peakNodes",
    "podsWaited",
    "waitP95S",
    "waitMaxS",
    "evictions",
)


def paging_free(scenario: Scenario, spec: DeploymentSpec) -> PagingFree:
    """The scenario's paging-free minimum, in nodes of the pool that holds the most replicas."""
    pools = []
    for pool in scenario.pools:
        allocatable = pool.template.epc_allocatable.get(scenario.epc_resource, 0)
        headroom = scenario.headroom.of(allocatable)
        per_node = replicas_per_node(spec, pool.template, scenario.epc_resource, headroom)
        pools.append((pool.settings.name, per_node))
    return paging_free_minimum(spec, scenario.horizon, pools)


def results_json(
    scenario: Scenario, results: Sequence[RunResult], bound: LowerBound
) -> dict[str, object]:
    """The base runs as results.json: `{scenario, seed, policies, lowerBound}`; for a Deployment
    `{scenario, deployment, policy, runs, pagingFreeMinimum}`."""
    spec = scenario.deployment
    if spec is not None:
        return {
            "scenario": scenario.name,
            "deployment": spec.name,
            "policy": scenario.policies[0],
            "runs": {
                r.policy: {key: r.metrics[key] for key in DEPLOYMENT_KEYS}
                for r in results
                if r.variant == "base"
            },
            "pagingFreeMinimum": paging_free(scenario, spec).to_json(),
        }
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
    # Metrics are rounded to 4 decimals; allow that much.
    hours_ok = float(r.metrics["nodeHours"]) >= bound.node_hours - 1e-4
    cost_ok = float(r.metrics["cost"]) >= bound.cost - 1e-4 and (
        float(r.metrics["peakCostPerHour"]) >= bound.cost_per_hour - 1e-4
    )
    return "holds" if peak >= bound.peak_nodes and hours_ok and cost_ok else "VIOLATED"


def _priced(scenario: Scenario) -> bool:
    return any(p.settings.cost_per_hour > 0 for p in scenario.pools)


def _scaler_text(spec: DeploymentSpec, name: str) -> str:
    scaler = spec.scaler(name)
    if scaler.metric == FIXED:
        return f"{scaler.replicas} replicas"
    b = scaler.behavior
    target = (
        f"averageUtilization {scaler.target}%"
        if scaler.metric == "cpu"
        else f"averageValue {scaler.target}m"
    )
    return (
        f"HPA on {scaler.metric}, {target}, {b.min_replicas}..{b.max_replicas} replicas, "
        f"scale-down window {b.scale_down_window:g} s"
    )


def deployment_markdown(
    scenario: Scenario,
    spec: DeploymentSpec,
    results: Sequence[RunResult],
    plots: Sequence[str],
) -> str:
    """summary.md of a Deployment scenario: one row per scaler."""
    floor = paging_free(scenario, spec)
    mib = 2**20
    lines = [f"# Simulation: {scenario.name}", ""]
    if scenario.description:
        lines += [scenario.description.strip(), ""]
    pools = ", ".join(
        f"{p.settings.name} ({p.sku or 'template'}, {p.initial_size} at start, "
        f"{p.settings.min_size}..{p.settings.max_size})"
        for p in scenario.pools
    )
    lines += [
        f"Deployment `{spec.name}`: EPC limit {spec.epc_limit // mib} MiB per replica, "
        f"{spec.epc_base // mib} MiB held idle, CPU request {spec.cpu_request}m "
        f"(use {spec.cpu_base}m + {spec.cpu_per_gib:g}m per GiB of load held); load peaks at "
        f"{spec.load.peak(0.0, scenario.horizon) / mib:,.0f} MiB. Placement `"
        f"{scenario.policies[0]}`, pools: {pools}; node autoscaling "
        f"{'on' if scenario.autoscaler else 'off'}; horizon {scenario.horizon / 3600:g} h.",
        "",
        f"Paging-free minimum: **{floor.peak_replicas}** replicas at the peak on "
        f"**{floor.peak_nodes}** nodes, **{floor.node_hours:,.2f}** node-hours "
        f"({floor.per_node} replicas per `{floor.pool}` node, every replica at its limit, nodes "
        "exactly as many as needed at every moment, no provisioning delay).",
        "",
        "| run | scaler | peak replicas | mean replicas | enclave-s over limit | share over "
        "limit | peak use / limit | node-hours | cost | peak nodes | replicas waited | "
        "wait max s | evictions |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if r.variant != "base":
            continue
        m = r.metrics
        lines.append(
            f"| {r.policy} | {_scaler_text(spec, r.policy)} | {m['peakReplicas']} | "
            f"{_fmt(m['meanReplicas'])} | {_fmt(m['enclaveSecondsOverLimit'])} | "
            f"{m['overLimitShare']:.1%} | {m['peakUsageRatio']:.2f} | {_fmt(m['nodeHours'])} | "
            f"{_fmt(m['cost'])} | {m['peakNodes']} | {m['podsWaited']} | "
            f"{_fmt(m['waitMaxS'])} | {m['evictions']} |"
        )
    lines += [
        "",
        "Each running replica holds its idle EPC plus an even share of the load; the time it "
        "spends above its EPC limit is time its enclave pages (summed over replicas: "
        "enclave-seconds). Share over limit is that over all running replica-seconds. HPAs "
        "sync every "
        f"{spec.sync_period:g} s with tolerance {spec.tolerance:g}, reading "
        "`sgx_epc_usage_ratio` as the metrics API serves it, or CPU utilization, which follows "
        "the load in its own proportion and does not see EPC. Nodes are counted from the "
        "moment they are asked for; evictions are replicas moved by node scale-down.",
    ]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def summary_markdown(
    scenario: Scenario, results: Sequence[RunResult], bound: LowerBound, plots: Sequence[str]
) -> str:
    if scenario.deployment is not None:
        return deployment_markdown(scenario, scenario.deployment, results, plots)
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
    if _priced(scenario):
        prices = ", ".join(
            f"{p.settings.name} ${p.settings.cost_per_hour:g}/h" for p in scenario.pools
        )
        lines += [
            f"Cost with no pod waiting ({prices}): at least **${bound.cost_per_hour:,.2f}** an "
            f"hour at the busiest moment and **${bound.cost:,.2f}** over the horizon (each pod's "
            "EPC at the cheapest price per byte among the pools that can hold it, and never less "
            "than the cheapest node's price times the bound in nodes)."
        ]
    lines += [
        "",
        "| policy | peak nodes | bound | bound check | node-hours | node-hours bound | cost | "
        "cost bound | peak $/h | $/h bound | completed | "
        "never scheduled | wait p50 s | wait p95 s | wait max s | pods waited | "
        "EPC overcommit pod-s | mean EPC util | evictions |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        "---:|",
    ]
    for r in base:
        m = r.metrics
        lines.append(
            f"| {r.policy} | {m['peakNodes']} | {bound.peak_nodes} | {_bound_note(r, bound)} | "
            f"{_fmt(m['nodeHours'])} | {bound.node_hours:,.2f} | {_fmt(m['cost'])} | "
            f"{bound.cost:,.2f} | {_fmt(m['peakCostPerHour'])} | {bound.cost_per_hour:,.2f} | "
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
    notes = flat_notes(results)
    if plots or notes:
        lines += ["", "## Plots", ""]
        lines += notes + ([""] if notes and plots else [])
        lines += [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def deployment_table(results: Sequence[RunResult]) -> str:
    """A plain-text table of a Deployment scenario's runs, for terminals."""
    header = (
        f"{'run':<14}{'peak repl':>10}{'mean repl':>10}{'enclave-s over':>16}{'share':>8}"
        f"{'peak use':>10}{'node-h':>9}{'cost':>8}{'peak nodes':>12}"
    )
    rows = [header, "-" * len(header)]
    for r in results:
        if r.variant != "base":
            continue
        m = r.metrics
        rows.append(
            f"{r.policy:<14}{m['peakReplicas']:>10}{m['meanReplicas']:>10.2f}"
            f"{m['enclaveSecondsOverLimit']:>16,.0f}{m['overLimitShare']:>8.1%}"
            f"{m['peakUsageRatio']:>10.2f}{m['nodeHours']:>9.2f}{m['cost']:>8.2f}"
            f"{m['peakNodes']:>12}"
        )
    return "\n".join(rows)


TABLE_LEGEND = (
    "peak: most nodes at once; bound: fewest nodes any placement needs with no pod waiting; "
    "node-h: node-hours; cost, $/h: dollars in all and an hour at the busiest (pools' "
    "costPerHour), each with the least any placement pays with no pod waiting; "
    "done + never + unfinished = pods submitted (unfinished: started, not "
    "done at the horizon); p95 wait: seconds from submission to first start; overcommit: "
    "pod-seconds on nodes past their EPC; EPC util: mean share of EPC requested"
)


def _columns(header: Sequence[str], rows: Sequence[Sequence[str]], first_left: bool) -> str:
    """Rows under `header`, each column as wide as its widest cell, two spaces apart."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i == 0 and first_left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(header), "-" * len(line(header))]
    out += [line(row) for row in rows]
    return "\n".join(out)


def comparison_table(results: Sequence[RunResult], bound: LowerBound) -> str:
    """A plain-text table of the base runs, for terminals, with a one-line legend under it."""
    if results and "peakReplicas" in results[0].metrics:
        return deployment_table(results)
    header = (
        "policy",
        "peak",
        "bound",
        "node-h",
        "cost",
        "cost bound",
        "$/h",
        "$/h bound",
        "done",
        "never",
        "unfinished",
        "p95 wait s",
        "overcommit pod-s",
        "EPC util",
    )
    rows = []
    for r in results:
        if r.variant != "base":
            continue
        m = r.metrics
        unfinished = (
            int(m["podsSubmitted"]) - int(m["podsCompleted"]) - int(m["podsNeverScheduled"])
        )
        rows.append(
            (
                r.policy,
                f"{m['peakNodes']:,}",
                f"{bound.peak_nodes:,}",
                f"{m['nodeHours']:,.2f}",
                f"{m['cost']:,.2f}",
                f"{bound.cost:,.2f}",
                f"{m['peakCostPerHour']:,.2f}",
                f"{bound.cost_per_hour:,.2f}",
                f"{m['podsCompleted']:,}",
                f"{m['podsNeverScheduled']:,}",
                f"{unfinished:,}",
                f"{m['waitP95S']:,.1f}",
                f"{m['epcOvercommitPodSeconds']:,.1f}",
                f"{m['meanEpcUtilization']:.1%}",
            )
        )
    return _columns(header, rows, first_left=True) + "\n" + TABLE_LEGEND


def _bound_label(scenario: Scenario, bound: LowerBound) -> str:
    if len(scenario.pools) == 1:
        return f"lower bound ({bound.method})"
    biggest = max(bound.per_pool.values(), key=lambda b: (b.capacity, b.pool))
    return f"lower bound ({bound.method}, in {biggest.pool} nodes)"


def _style(policy: str) -> str:
    return "-" if policy in EPCSCHED_POLICIES else "--"


def _replicas_plot(
    out: Path, scenario: Scenario, spec: DeploymentSpec, results: Sequence[RunResult]
) -> str:
    """Replicas over time per run, with the fewest that keep every enclave within its limit."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in results:
        if r.variant == "base":
            hours = [t / 3600 for t in r.times]
            ax.step(hours, r.replicas, where="post", label=r.policy)
    steps = 400
    times = [scenario.horizon * i / steps for i in range(steps + 1)]
    needed = [max(1, math.ceil(spec.load.at(t) / spec.headroom)) for t in times]
    ax.plot(
        [t / 3600 for t in times],
        needed,
        color="black",
        linewidth=0.8,
        linestyle=":",
        label="fewest that never page",
    )
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("simulated time (h)")
    ax.set_ylabel("replicas")
    ax.set_title(f"{scenario.name}: replicas of {spec.name} over time")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out / "replicas.png", dpi=100)
    plt.close(fig)
    return "replicas.png"


def _flat(series: dict[str, list[int]]) -> bool:
    """Every policy's line is the same constant: a plot would show one flat line."""
    values = {v for line in series.values() for v in line}
    return len(values) <= 1


def _dwarfing(series: dict[str, list[int]]) -> str | None:
    """The policy whose peak is over ten times every other policy's (which are not all zero)."""
    peaks = sorted(((max(v, default=0), p) for p, v in series.items()), reverse=True)
    if len(peaks) < 2 or peaks[1][0] <= 0:
        return None
    return peaks[0][1] if peaks[0][0] > 10 * peaks[1][0] else None


def flat_notes(results: Sequence[RunResult]) -> list[str]:
    """Sentences for the plots left out because every policy drew the same flat line."""
    base = [r for r in results if r.variant == "base"]
    notes = []
    nodes = {r.policy: r.nodes for r in base}
    if base and _flat(nodes):
        count = next((v for line in nodes.values() for v in line), 0)
        notes.append(
            f"Every policy kept {count} nodes throughout, so there is no plot of nodes over time."
        )
    pending = {r.policy: r.pending for r in base}
    if base and _flat(pending):
        count = next((v for line in pending.values() for v in line), 0)
        what = "No pod was ever pending" if count == 0 else f"{count} pods were pending throughout"
        notes.append(f"{what} under any policy, so there is no plot of pending pods.")
    return notes


def count_figure(
    scenario: Scenario, base: Sequence[RunResult], field: str, ylabel: str, bound: LowerBound
) -> Figure | None:
    """Nodes or pending pods (`field`) over time, one line per policy, on integer ticks; None
    when every policy drew the same flat line. A policy whose counts dwarf the others' puts the
    axis on symlog, so the others do not vanish into the floor."""
    series = {r.policy: (r.nodes if field == "nodes" else r.pending) for r in base}
    if _flat(series):
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in base:
        hours = [t / 3600 for t in r.times]
        ax.step(hours, series[r.policy], where="post", linestyle=_style(r.policy), label=r.policy)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    dwarfing = _dwarfing(series)
    if dwarfing is not None:
        ax.set_yscale("symlog", linthresh=1.0)
        ylabel = f"{ylabel} (symlog: {dwarfing} dwarfs the others)"
    if field == "nodes" and scenario.deployment is None:
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
    return fig


def _pools_flat(scenario: Scenario, base: Sequence[RunResult]) -> bool:
    """Every pool kept one count throughout, the same under every policy."""
    return all(
        _flat({r.policy: r.pool_nodes.get(p.settings.name, []) for r in base})
        for p in scenario.pools
    )


def pools_figure(scenario: Scenario, base: Sequence[RunResult]) -> Figure | None:
    """Each pool's nodes over time, a panel per pool and a line per policy; None with one pool
    or when no pool's count ever moved."""
    if len(scenario.pools) < 2 or _pools_flat(scenario, base):
        return None
    fig, axes = plt.subplots(
        len(scenario.pools), 1, sharex=True, figsize=(8, 1.2 + 2.2 * len(scenario.pools))
    )
    for ax, pool in zip(axes, scenario.pools, strict=True):
        name = pool.settings.name
        for r in base:
            hours = [t / 3600 for t in r.times]
            ax.step(
                hours,
                r.pool_nodes.get(name, []),
                where="post",
                linestyle=_style(r.policy),
                label=r.policy,
            )
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"{name} nodes")
    axes[0].set_title(f"{scenario.name}: nodes per pool over time (Ready and booting)")
    axes[0].legend(fontsize="small")
    axes[-1].set_xlabel("simulated time (h)")
    fig.tight_layout()
    return fig


def cost_figure(scenario: Scenario, base: Sequence[RunResult], bound: LowerBound) -> Figure | None:
    """Dollars an hour and dollars so far, a line per policy, each against its lower bound
    (job workloads); None with one pool (the nodes plot says it), no prices, or no pool that
    changed size."""
    if len(scenario.pools) < 2 or not _priced(scenario) or _pools_flat(scenario, base):
        return None
    prices = {p.settings.name: p.settings.cost_per_hour for p in scenario.pools}
    fig, (rate_ax, total_ax) = plt.subplots(2, 1, sharex=True, figsize=(8, 6.5))
    for r in base:
        hours = [t / 3600 for t in r.times]
        rate = [
            sum(prices[pool] * counts[i] for pool, counts in r.pool_nodes.items())
            for i in range(len(r.times))
        ]
        rate_ax.step(hours, rate, where="post", linestyle=_style(r.policy), label=r.policy)
        total_ax.plot(hours, r.spent, linestyle=_style(r.policy), label=r.policy)
    if scenario.deployment is None:
        rate_ax.axhline(
            bound.cost_per_hour,
            color="black",
            linewidth=0.8,
            linestyle=":",
            label="lower bound at the busiest moment",
        )
        total_ax.axhline(
            bound.cost,
            color="black",
            linewidth=0.8,
            linestyle=":",
            label="lower bound over the horizon",
        )
    rate_ax.set_ylabel("$ an hour")
    rate_ax.set_title(f"{scenario.name}: node cost over time (pools' costPerHour)")
    rate_ax.legend(fontsize="small")
    total_ax.set_ylabel("$ so far")
    total_ax.set_xlabel("simulated time (h)")
    total_ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def write_plots(
    out: Path, scenario: Scenario, results: Sequence[RunResult], bound: LowerBound
) -> list[str]:
    base = [r for r in results if r.variant == "base"]
    written = []
    if scenario.deployment is not None:
        written.append(_replicas_plot(out, scenario, scenario.deployment, results))
    for name, field, ylabel in (
        ("nodes.png", "nodes", "nodes (Ready and booting)"),
        ("pending.png", "pending", "pending pods"),
    ):
        fig = count_figure(scenario, base, field, ylabel, bound)
        if fig is None:
            continue  # every policy drew the same flat line: summary.md says so (flat_notes)
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        written.append(name)
    for name, figure in (
        ("pools.png", pools_figure(scenario, base)),
        ("cost.png", cost_figure(scenario, base, bound)),
    ):
        if figure is not None:
            figure.savefig(out / name, dpi=100)
            plt.close(figure)
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
