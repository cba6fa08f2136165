"""`epcsched simulate SCENARIO.yaml`: run a scenario's policies and write the report."""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from epcsched import logs
from epcsched.cli import CommandError
from epcsched.simulation.scenario import POLICIES, Scenario, load_scenario


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="replay a workload through the policies offline and compare them",
        description=(
            "Run every policy of a scenario on a simulated clock, compute a lower bound on "
            "nodes, and write results.json, summary.md and plots."
        ),
    )
    parser.add_argument("scenario", type=Path, help="scenario YAML file")
    parser.add_argument(
        "--out", type=Path, default=None, help="output directory (default: results/ beside it)"
    )
    parser.add_argument(
        "--policies",
        default=None,
        help=(
            f"comma-separated subset of {', '.join(POLICIES)} (for a deployment workload: "
            "of its scalers' names)"
        ),
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="local processes for the runs (default 1)"
    )
    parser.add_argument(
        "--dask",
        metavar="ADDRESS",
        default=None,
        help="run on the Dask scheduler at ADDRESS instead (its workers need epcsched installed)",
    )
    parser.add_argument(
        "--dask-timeout",
        metavar="SECONDS",
        type=float,
        default=None,
        help="with --dask: give up connecting after SECONDS (default 10)",
    )
    parser.add_argument(
        "--via-http",
        metavar="URL",
        default=None,
        help=(
            "first serve the extender at URL (http://HOST:PORT[/prefix], port 0 for any) over "
            "the simulated cluster, send it every placement of the epcsched policies as "
            "kube-scheduler would, and fail if any decision differs from the in-process one"
        ),
    )
    logs.add_arguments(parser)
    parser.set_defaults(func=run)


def _policies(scenario: Scenario, text: str | None) -> tuple[str, ...]:
    if text is None:
        return scenario.runs
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    if not names:
        raise CommandError("--policies: give at least one policy")
    if scenario.deployment is not None:
        # A deployment scenario's runs are its scalers, under its one placement policy.
        for name in names:
            if name not in scenario.runs:
                raise CommandError(
                    f"--policies: {scenario.source} has no scaler {name!r} "
                    f"(its scalers: {', '.join(scenario.runs)})"
                )
        return names
    for name in names:
        if name not in POLICIES:
            raise CommandError(
                f"--policies: unknown policy {name!r} (known: {', '.join(POLICIES)})"
            )
        if name == "cluster-autoscaler" and scenario.autoscaler is None:
            raise CommandError(
                f"--policies: cluster-autoscaler needs autoscaling; {scenario.source} turns it off"
            )
    return names


def _check_dask_address(text: str) -> None:
    # Refused before a Dask client exists: a client that failed to start warns again at exit.
    # Only TCP-like addresses are checked; Dask's other transports (inproc, ucx...) pass as given.
    parsed = urlsplit(text if "://" in text else f"tcp://{text}")
    if parsed.scheme not in ("tcp", "tls"):
        return
    try:
        port = parsed.port
    except ValueError:
        port = None
    if not parsed.hostname or port is None:
        raise CommandError(f"--dask: expected an address like tcp://host:8786, got {text!r}")


def _check_out(out: Path) -> None:
    """Refuse an output directory that cannot be written before the runs, not after them."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except FileExistsError:
        raise CommandError(f"--out: {out} is a file, not a directory") from None
    except OSError as exc:
        raise CommandError(f"--out: cannot write to {out}: {exc.strerror or exc}") from None


def run(args: argparse.Namespace) -> int:
    # Imported here: scipy, matplotlib and dask would otherwise load with every subcommand.
    from epcsched.simulation.pipeline import simulate_and_report
    from epcsched.simulation.sweep import DASK_CONNECT_TIMEOUT, DaskUnavailable
    from epcsched.simulation.workload import load_workload

    scenario = load_scenario(args.scenario)
    policies = _policies(scenario, args.policies)
    if args.workers < 1:
        raise CommandError("--workers: must be at least 1")
    if args.dask is not None:
        _check_dask_address(args.dask)
    if args.dask is not None and args.workers > 1:
        raise CommandError("--workers and --dask: choose one")
    dask_timeout = DASK_CONNECT_TIMEOUT if args.dask_timeout is None else args.dask_timeout
    if not (math.isfinite(dask_timeout) and dask_timeout > 0):
        raise CommandError(
            f"--dask-timeout: must be a positive number of seconds, got {dask_timeout}"
        )
    if args.dask_timeout is not None and args.dask is None:
        raise CommandError("--dask-timeout: only with --dask")
    out: Path = args.out if args.out is not None else args.scenario.parent / "results"
    _check_out(out)
    workload = load_workload(scenario.workload, scenario.seed)
    if args.via_http is not None:
        from epcsched.simulation.live import LiveCheckError, check_via_http

        try:
            report = check_via_http(scenario, workload, policies, args.via_http)
        except LiveCheckError as exc:
            raise CommandError(str(exc)) from None
        print(report.describe())
        if not report.ok:
            return 1
    try:
        outcome = simulate_and_report(
            scenario,
            workload,
            policies,
            out,
            workers=args.workers,
            dask_address=args.dask,
            dask_timeout=dask_timeout,
        )
    except DaskUnavailable as exc:
        raise CommandError(f"--dask: {exc}") from None
    bound = outcome.bound
    print(outcome.table)
    if scenario.deployment is not None:
        from epcsched.simulation.report import paging_free

        floor = paging_free(scenario, scenario.deployment)
        print(
            f"paging-free minimum: {floor.peak_replicas} replicas on {floor.peak_nodes} nodes "
            f"at peak, {floor.node_hours:.2f} node-hours"
        )
    else:
        print(
            f"lower bound if no pod waited: {bound.peak_nodes} nodes at peak ({bound.method}), "
            f"{bound.node_hours:.2f} node-hours, ${bound.cost_per_hour:,.2f}/h at peak, "
            f"${bound.cost:,.2f} in total"
        )
    print(f"wrote {', '.join(str(p) for p in outcome.written)}")
    return 0
