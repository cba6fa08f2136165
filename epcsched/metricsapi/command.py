"""`epcsched metrics-api`: serve EPC use to the HorizontalPodAutoscaler as an aggregated API.

Flags override the `metricsApi` section of the config file; every value a person can get wrong
(port, Prometheus URL, certificate files, the API server) is checked before serving, and a bad
one is one line naming the flag.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from epcsched import logs
from epcsched.cli import CommandError
from epcsched.config import Config, load_config
from epcsched.kube.client import add_api_arguments
from epcsched.netutil import check_listen_host

log = logging.getLogger("epcsched.metricsapi")


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "metrics-api",
        help="serve EPC metrics to the HorizontalPodAutoscaler (custom and external metrics API)",
        description=(
            "Serve custom.metrics.k8s.io (v1beta2, v1beta1) and external.metrics.k8s.io/v1beta1 "
            "as a Kubernetes aggregated API server: per-pod EPC use, its share of the pod's EPC "
            "limit and limit hits, and per-pool utilization and per-node paging, from Prometheus."
        ),
    )
    parser.add_argument("--config", metavar="FILE", help="epcsched YAML configuration")
    parser.add_argument(
        "--kubeconfig",
        metavar="FILE",
        help="API server to watch pods and nodes and to send reviews to (default in a pod: its "
        "service account)",
    )
    add_api_arguments(parser)
    parser.add_argument(
        "--prometheus-url", metavar="URL", help="Prometheus to read EPC series from"
    )
    parser.add_argument("--host", help="address to listen on (metricsApi.host, default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="HTTPS port (metricsApi.port, default 6443)")
    parser.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="PEM serving certificate (default: a self-signed one made at start-up)",
    )
    parser.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    logs.add_arguments(parser)
    parser.set_defaults(func=run)


def settings_from(args: argparse.Namespace) -> Config:
    """The config file with the flags applied, checked."""
    config = load_config(args.config)
    settings = config.metrics_api
    if args.host is not None:
        try:
            check_listen_host(args.host)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        settings.host = args.host
    if args.port is not None:
        if not 0 <= args.port <= 65535:
            raise CommandError(f"--port: must be 0..65535, got {args.port}")
        settings.port = args.port
    if args.tls_cert is not None:
        settings.tls_cert = args.tls_cert
    if args.tls_key is not None:
        settings.tls_key = args.tls_key
    url = args.prometheus_url
    if url is not None:
        if not url.startswith(("http://", "https://")):
            raise CommandError(
                f"--prometheus-url: must start with http:// or https://, got {url!r}"
            )
        config.prometheus.url = url
    if not config.prometheus.url:
        raise CommandError("--prometheus-url: required (or prometheus.url in --config)")
    if settings.window <= 0:
        raise CommandError("metricsApi.window: must be positive")
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise CommandError("--tls-cert and --tls-key: give both, or neither for a self-signed one")
    for flag, path in (("--tls-cert", settings.tls_cert), ("--tls-key", settings.tls_key)):
        if path is not None and not Path(path).is_file():
            raise CommandError(f"{flag}: {path}: no such file")
    return config


def serving_tls(config: Config) -> Any:
    """The serving certificate from the files given, or a self-signed one."""
    from epcsched.metricsapi.tls import ServingTls, self_signed_tls

    settings = config.metrics_api
    if settings.tls_cert is None or settings.tls_key is None:
        hosts = [socket.gethostname(), "localhost", "127.0.0.1"]
        log.info("no --tls-cert given: serving a self-signed certificate for %s", ", ".join(hosts))
        return self_signed_tls(hosts)
    try:
        return ServingTls(settings.tls_cert, settings.tls_key)
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
        raise CommandError(
            f"--tls-cert/--tls-key: cannot use {settings.tls_cert} with {settings.tls_key}: "
            f"{reason}"
        ) from None


def run(args: argparse.Namespace) -> int:
    config = settings_from(args)
    from epcsched.kube.client import KubeConfigError, in_cluster, load_from_args

    if args.kubeconfig is None and not in_cluster():
        raise CommandError("--kubeconfig: required when not running in a pod")
    try:
        configuration = asyncio.run(load_from_args(args))
    except KubeConfigError as exc:
        raise CommandError(f"--kubeconfig: {exc}") from None
    tls = serving_tls(config)
    logs.log_start("metrics-api", "epcsched.metricsapi")
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(serve(config, configuration, tls))
    finally:
        loop.close()


async def serve(
    config: Config,
    configuration: Any,
    tls: Any,
    *,
    stop: asyncio.Event | None = None,
    started: asyncio.Future[int] | None = None,
    clock: Callable[[], float] = time.time,
) -> int:
    """Serve until `stop` is set or SIGTERM/SIGINT; `started` gets the bound port. `clock` is
    the time Prometheus is asked for (tests pin it to their recorded history)."""
    from aiohttp import web
    from prometheus_client import CollectorRegistry

    from epcsched.build import VERSION, register_build_metrics
    from epcsched.metricsapi.app import create_app, source_for
    from epcsched.metricsapi.auth import Reviewer
    from epcsched.metricsapi.index import InformedIndex
    from epcsched.metricsapi.metrics import ApiMetrics
    from epcsched.metricsapi.tls import TlsSite

    settings = config.metrics_api
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    with contextlib.suppress(NotImplementedError, RuntimeError):
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    registry = CollectorRegistry()
    register_build_metrics(registry)
    metrics = ApiMetrics(registry)
    app = create_app(
        config,
        InformedIndex(configuration, config.epc.resources),
        source_for(config, clock=clock, metrics=metrics),
        Reviewer(configuration, ttl=settings.auth_cache_ttl),
        tls=tls,
        metrics=metrics,
    )
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    try:
        await runner.setup()
        site = TlsSite(runner, settings.host, settings.port, tls)
        try:
            await site.start()
        except OSError as exc:
            where = f"{settings.host}:{settings.port}"
            raise CommandError(
                f"--host/--port: cannot listen on {where}: {exc.strerror or exc}"
            ) from None
        port = int(runner.addresses[0][1]) if runner.addresses else settings.port
        log.info(
            "epcsched %s metrics API listening on https://%s:%d, /metrics beside the APIs "
            "(Prometheus %s, window %gs, API server %s)",
            VERSION,
            settings.host,
            port,
            config.prometheus.url,
            settings.window,
            configuration.host,
            extra={"version": VERSION, "address": f"{settings.host}:{port}"},
        )
        if started is not None and not started.done():
            started.set_result(port)
        await stop.wait()
        log.info("metrics API stopping")
        return 0
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        await runner.cleanup()
