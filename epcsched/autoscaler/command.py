"""`epcsched autoscaler`: grow and shrink SGX node pools by EPC (DESIGN.md section 5)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from epcsched import logs
from epcsched.cli import CommandError
from epcsched.config import PROVIDERS, Config, load_config
from epcsched.kube.client import add_api_arguments
from epcsched.netutil import check_listen_host


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "autoscaler",
        help="grow and shrink SGX node pools by EPC (Cluster API, AKS, simulated)",
        description="Observe pending EPC pods and EPC pressure, plan with the EPC-aware planner "
        "and resize node pools. Acts only while it holds the Lease epcsched-autoscaler.",
    )
    parser.add_argument("--config", metavar="FILE", help="epcsched YAML configuration (required)")
    parser.add_argument(
        "--snapshot",
        action="append",
        default=[],
        metavar="FILE",
        help="plan for the cluster in `kubectl get nodes,pods -A -o json` files (with --once "
        "--dry-run); repeatable",
    )
    parser.add_argument(
        "--kubeconfig",
        metavar="FILE",
        help="the API server in this kubeconfig (default in a pod: its service account)",
    )
    parser.add_argument("--once", action="store_true", help="run one loop and exit")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan as one JSON object and change nothing",
    )
    parser.add_argument(
        "--prometheus-url",
        metavar="URL",
        help="measured EPC use and paging from this Prometheus (prometheus.url)",
    )
    parser.add_argument("--host", default="0.0.0.0", help="address for /healthz, /readyz, /metrics")
    parser.add_argument(
        "--port", type=int, default=8085, help="port for /healthz, /readyz, /metrics (0: any)"
    )
    parser.add_argument(
        "--namespace",
        metavar="NS",
        help="namespace of the Lease and the status ConfigMap (default: the pod's, or "
        "epcsched-system)",
    )
    parser.add_argument(
        "--identity", metavar="NAME", help="leader election identity (default: the host name)"
    )
    parser.add_argument(
        "--lease-duration", type=float, default=15.0, help="Lease duration in seconds"
    )
    logs.add_arguments(parser)
    add_api_arguments(parser)
    parser.set_defaults(func=run)


def settings_from(args: argparse.Namespace) -> Config:
    """The configuration, checked for what the autoscaler needs; flags override the file."""
    if not args.config:
        raise CommandError("--config: required (the autoscaler.nodePools to manage)")
    config = load_config(args.config)
    if args.prometheus_url is not None:
        url = args.prometheus_url
        if not url.startswith(("http://", "https://")):
            raise CommandError(
                f"--prometheus-url: must start with http:// or https://, got {url!r}"
            )
        config.prometheus.url = url
    check_pools(config)
    return config


def check_pools(config: Config) -> None:
    """What the configuration schema cannot say: each pool can be observed and grown."""
    from epcsched.objects import ObjectError

    settings = config.autoscaler
    if not settings.node_pools:
        raise CommandError("autoscaler.nodePools: no node pools configured")
    if settings.interval <= 0:
        raise CommandError("autoscaler.interval: must be positive")
    if settings.batch_max < settings.batch_idle:
        raise CommandError("autoscaler.batchMax: must be >= batchIdle")
    from epcsched.autoscaler.loop import pool_template

    for i, pool in enumerate(settings.node_pools):
        where = f"autoscaler.nodePools[{i}]"
        if pool.template is None or not pool.template.resources:
            raise CommandError(
                f"{where}.template.resources: required (the allocatable of one new node, for "
                "scale-from-zero)"
            )
        if not pool.node_selector and not pool.template.labels:
            raise CommandError(f"{where}.nodeSelector: required (the labels of this pool's nodes)")
        try:
            pool_template(pool, config)
        except ObjectError as exc:
            raise CommandError(f"{where}.template.{exc}") from None
        for t, taint in enumerate(pool.template.taints):
            if not taint.get("key") or taint.get("effect") not in (
                "NoSchedule",
                "PreferNoSchedule",
                "NoExecute",
            ):
                raise CommandError(
                    f"{where}.template.taints[{t}]: needs a key and an effect of NoSchedule, "
                    "PreferNoSchedule or NoExecute"
                )
        if pool.provider not in PROVIDERS:
            raise CommandError(f"{where}.provider: must be one of {', '.join(PROVIDERS)}")
        from epcsched.autoscaler.runtime import provider_problems

        problems = provider_problems(pool, i)
        if problems:
            raise CommandError(problems[0])


def run(args: argparse.Namespace) -> int:
    config = settings_from(args)
    try:
        check_listen_host(args.host)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if not 0 <= args.port <= 65535:
        raise CommandError(f"--port: must be 0..65535, got {args.port}")
    if args.lease_duration <= 0:
        raise CommandError("--lease-duration: must be positive")
    if args.snapshot and args.kubeconfig:
        raise CommandError("--snapshot and --kubeconfig: give one source of cluster state")
    if args.snapshot:
        if not (args.once and args.dry_run):
            raise CommandError("--snapshot: a file cannot be scaled; add --once --dry-run")
        return _print(asyncio.run(_snapshot_once(config, args)))
    if args.once and not args.dry_run:
        raise CommandError(
            "--once: acting needs the Lease held over time; use --once --dry-run, or no --once"
        )
    from epcsched.kube.client import KubeConfigError, in_cluster, load_from_args

    if not args.kubeconfig and not in_cluster():
        raise CommandError(
            "--snapshot or --kubeconfig: give cluster snapshot files or an API server"
        )
    try:
        configuration = asyncio.run(load_from_args(args))
    except KubeConfigError as exc:
        raise CommandError(f"--kubeconfig: {exc}") from None
    from epcsched.autoscaler import runtime

    if args.once:
        return _print(asyncio.run(runtime.dry_run_once(config, configuration)))
    logs.log_start("autoscaler", "epcsched.autoscaler")
    return runtime.serve(config, configuration, args)


def _print(plan: dict[str, object]) -> int:
    sys.stdout.write(json.dumps(plan, indent=2) + "\n")
    return 0


async def _snapshot_once(config: Config, args: argparse.Namespace) -> dict[str, object]:
    from epcsched.autoscaler import runtime
    from epcsched.kube.snapshot import load_snapshot

    snapshot = load_snapshot(args.snapshot, config)
    if len(snapshot) == 0 and not snapshot.pods:
        # No Node alone is a cluster scaled to zero; nothing at all is the wrong file.
        raise CommandError(f"--snapshot: no Node or Pod in {', '.join(args.snapshot)}")
    return await runtime.snapshot_once(config, snapshot, list(args.snapshot))
