"""`epcsched extender`: serve kube-scheduler's extender calls."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from typing import Any

from epcsched import logs
from epcsched.cli import CommandError
from epcsched.config import STRATEGIES, Config, load_config
from epcsched.kube.client import add_api_arguments

log = logging.getLogger("epcsched.extender")


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "extender",
        help="serve the kube-scheduler extender (filter, prioritize)",
        description="Serve kube-scheduler extender v1 calls: EPC filter and scores.",
    )
    parser.add_argument(
        "--snapshot",
        action="append",
        default=[],
        metavar="FILE",
        help="cluster state from `kubectl get nodes,pods -A -o json` (JSON or YAML); repeatable",
    )
    parser.add_argument(
        "--kubeconfig",
        metavar="FILE",
        help="watch nodes and pods through the API server in this kubeconfig (default when "
        "running in a pod without --snapshot: the pod's service account)",
    )
    parser.add_argument(
        "--bind",
        action="store_true",
        default=None,
        help="serve /bind with EPC reservations (extender.bind; needs --kubeconfig or a pod)",
    )
    add_api_arguments(parser)
    parser.add_argument("--config", metavar="FILE", help="epcsched YAML configuration")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8888)")
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve /metrics (and /healthz, /readyz) on this port instead, apart from the verbs "
        "(extender.metricsPort; 0: any free port)",
    )
    parser.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="serve HTTPS with this PEM certificate (extender.tlsCert; re-read when it changes)",
    )
    parser.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    parser.add_argument(
        "--tls-client-ca",
        metavar="FILE",
        help="require client certificates signed by this PEM CA (mutual TLS; extender.tlsClientCa)",
    )
    parser.add_argument(
        "--metrics-host",
        metavar="HOST",
        help="address for --metrics-port (extender.metricsHost; default: --host)",
    )
    parser.add_argument("--strategy", choices=STRATEGIES, help="scoring strategy")
    parser.add_argument(
        "--prometheus-url",
        metavar="URL",
        help="poll this Prometheus for measured EPC use and paging (prometheus.url)",
    )
    logs.add_arguments(parser)
    parser.set_defaults(func=run)


def settings_from(args: argparse.Namespace) -> Config:
    """The config file, with flags taking precedence over it."""
    from epcsched.netutil import check_listen_host

    config = load_config(args.config)
    if args.host is not None:
        config.extender.host = args.host
    try:
        check_listen_host(config.extender.host, flag="--host" if args.host else "extender.host")
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if args.port is not None:
        if not 0 <= args.port <= 65535:
            raise CommandError(f"--port: must be 0..65535, got {args.port}")
        config.extender.port = args.port
    settings = config.extender
    if args.metrics_port is not None:
        if not 0 <= args.metrics_port <= 65535:
            raise CommandError(f"--metrics-port: must be 0..65535, got {args.metrics_port}")
        settings.metrics_port = args.metrics_port
    if args.metrics_host is not None:
        if settings.metrics_port is None:
            raise CommandError("--metrics-host: needs --metrics-port (or extender.metricsPort)")
        settings.metrics_host = args.metrics_host
    if settings.metrics_host is not None:
        try:
            check_listen_host(
                settings.metrics_host,
                flag="--metrics-host" if args.metrics_host else "extender.metricsHost",
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
    for name in ("tls_cert", "tls_key", "tls_client_ca"):
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))
    from epcsched.servingtls import TlsFilesError, check_files

    try:
        check_files(settings.tls_cert, settings.tls_key, settings.tls_client_ca)
    except TlsFilesError as exc:
        raise CommandError(str(exc)) from None
    if settings.metrics_port and settings.metrics_port == settings.port:
        raise CommandError(
            f"--metrics-port: {settings.metrics_port} is also the verbs' port (--port); give "
            "another, or leave it unset to serve /metrics beside the verbs"
        )
    if args.strategy is not None:
        config.extender.strategy = args.strategy
    if args.bind:
        config.extender.bind = True
    url = args.prometheus_url
    if url is not None:
        if not url.startswith(("http://", "https://")):
            raise CommandError(
                f"--prometheus-url: must start with http:// or https://, got {url!r}"
            )
        config.prometheus.url = url
    return config


def run(args: argparse.Namespace) -> int:
    config = settings_from(args)
    from epcsched.kube.client import in_cluster

    if args.snapshot and args.kubeconfig:
        raise CommandError("--snapshot and --kubeconfig: give one source of cluster state")
    if not args.snapshot and (args.kubeconfig or in_cluster()):
        state, binder = cluster_state(config, args)
        serve(config, state, binder=binder)
        return 0
    if not args.snapshot:
        raise CommandError(
            "--snapshot or --kubeconfig: give a cluster snapshot file or an API server"
        )
    if config.extender.bind:
        raise CommandError("extender.bind: binding needs an API server (--kubeconfig), not files")
    from epcsched.kube.snapshot import load_snapshot
    from epcsched.state import SnapshotState

    snapshot = load_snapshot(args.snapshot, config)
    if len(snapshot) == 0:
        raise CommandError(
            f"--snapshot: no Node in {', '.join(args.snapshot)} (give the cluster's nodes, "
            "e.g. `kubectl get nodes,pods -A -o json`)"
        )
    state = SnapshotState(snapshot, sources=list(args.snapshot))
    serve(config, state)
    return 0


def cluster_state(config: Config, args: argparse.Namespace) -> tuple[Any, Any]:
    """Informer-fed state (and the binder, when `extender.bind` is on) for an API server."""
    from epcsched.extender.bind import Binder
    from epcsched.kube.client import KubeConfigError, load_from_args
    from epcsched.kube.informer import InformerState

    try:
        configuration = asyncio.run(load_from_args(args))
    except KubeConfigError as exc:
        raise CommandError(f"--kubeconfig: {exc}") from None
    state = InformerState(configuration, config)
    binder = None
    if config.extender.bind:
        binder = Binder(configuration, state, ttl=config.extender.reservation_ttl)
    logging.getLogger("epcsched.extender").info(
        "serving from the API server at %s%s",
        configuration.host,
        " with /bind" if binder else "",
    )
    return state, binder


def serve(config: Config, state: Any, *, binder: Any = None) -> None:
    """Run the app until SIGTERM or SIGINT, on uvloop when it is installed."""
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(run_server(config, state, binder=binder))
    finally:
        loop.close()


async def run_server(
    config: Config,
    state: Any,
    *,
    binder: Any = None,
    stop: asyncio.Event | None = None,
    started: asyncio.Future[int] | None = None,
) -> None:
    """Serve until `stop` is set (or SIGTERM/SIGINT); `started` gets the port actually bound."""
    from aiohttp import web
    from prometheus_client import CollectorRegistry

    from epcsched.build import VERSION, register_build_metrics
    from epcsched.extender.app import create_app, create_metrics_app

    settings = config.extender
    registry = CollectorRegistry()
    register_build_metrics(registry)
    separate = settings.metrics_port is not None
    app = create_app(config, state, registry=registry, metrics_route=not separate)
    if binder is not None:
        from epcsched.extender.bind import install

        install(app, binder)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    with contextlib.suppress(NotImplementedError, RuntimeError):
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    tls = None
    if settings.tls_cert is not None and settings.tls_key is not None:
        from epcsched.servingtls import CertificateFiles, TlsFilesError

        try:
            tls = CertificateFiles(
                settings.tls_cert, settings.tls_key, client_ca=settings.tls_client_ca
            )
        except TlsFilesError as exc:
            raise CommandError(f"--tls-cert/--tls-key: {exc}") from None
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    metrics_runner: web.AppRunner | None = None
    watcher: asyncio.Task[None] | None = None
    try:
        await runner.setup()
        port = await _listen(
            runner,
            settings.host,
            settings.port,
            "--host/--port",
            ssl_context=tls.context if tls is not None else None,
            fast=True,
        )
        where = f"{settings.host}:{port}"
        extra = {"version": VERSION, "address": where}
        if tls is not None:
            watcher = asyncio.create_task(tls.watch(), name="tls-files")
            where = f"https://{where}" + (
                " (client certificates required)" if settings.tls_client_ca else ""
            )
        metrics = "/metrics beside them"
        if settings.metrics_port is not None:
            metrics_runner = web.AppRunner(
                create_metrics_app(app), access_log=None, handle_signals=False
            )
            await metrics_runner.setup()
            metrics_host = settings.metrics_host or settings.host
            metrics_port = await _listen(
                metrics_runner, metrics_host, settings.metrics_port, "--metrics-host/--metrics-port"
            )
            extra["metricsAddress"] = f"{metrics_host}:{metrics_port}"
            metrics = f"/metrics, /healthz and /readyz on {metrics_host}:{metrics_port}"
        log.info(
            "epcsched %s extender listening on %s (strategy %s%s); %s",
            VERSION,
            where,
            settings.strategy,
            ", /bind" if binder is not None else "",
            metrics,
            extra=extra,
        )
        if started is not None and not started.done():
            started.set_result(port)
        await stop.wait()
        log.info("extender stopping")
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await runner.cleanup()


async def _listen(
    runner: Any, host: str, port: int, flags: str, *, ssl_context: Any = None, fast: bool = False
) -> int:
    """Start a TCP site for `runner`, with the verbs' fast path (`fastpath`) when `fast`; the
    port actually bound."""
    from aiohttp import web

    from epcsched.extender.fastpath import ExtenderSite

    site = ExtenderSite if fast else web.TCPSite
    try:
        await site(runner, host, port, ssl_context=ssl_context).start()
    except OSError as exc:
        raise CommandError(
            f"{flags}: cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
    addresses = [a for a in runner.addresses if isinstance(a, tuple)]
    return int(addresses[-1][1]) if addresses else port
