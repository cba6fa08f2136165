"""Putting the autoscaler together: state, telemetry, providers, Kubernetes parts, the loop.

`command.py` parses flags; this module builds the objects for each mode (a snapshot dry run,
a one-shot dry run against an API server, the long-running controller) so that tests and the
demo can build the same objects without a command line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client
from prometheus_client import CollectorRegistry

from epcsched.autoscaler.loop import Autoscaler, pool_nodes
from epcsched.autoscaler.metrics import AutoscalerMetrics
from epcsched.autoscaler.providers.base import NodePoolProvider
from epcsched.cli import CommandError
from epcsched.config import Config, NodePoolSettings
from epcsched.core.snapshot import ClusterSnapshot
from epcsched.state import SnapshotState

log = logging.getLogger("epcsched.autoscaler")

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
DEFAULT_NAMESPACE = "epcsched-system"


def provider_problems(pool: NodePoolSettings, index: int) -> list[str]:
    """Configuration problems of `pool`'s provider settings, each naming its key path."""
    if pool.provider == "clusterapi":
        from epcsched.autoscaler.providers.clusterapi import validate_clusterapi_settings

        return validate_clusterapi_settings(pool, index=index)
    if pool.provider == "aks":
        from epcsched.autoscaler.providers.aks import validate_aks_settings

        return validate_aks_settings(pool, index=index)
    return []


def default_namespace() -> str:
    with contextlib.suppress(OSError):
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or DEFAULT_NAMESPACE
    return DEFAULT_NAMESPACE


async def _with_telemetry(
    config: Config, snapshot: ClusterSnapshot, registry: CollectorRegistry
) -> Any:
    """One Prometheus poll applied to `snapshot` (measured use, paging), or None without one."""
    if not config.prometheus.url:
        return None
    from epcsched.telemetry.poller import Telemetry

    telemetry = Telemetry(config.prometheus, config.pressure, lambda: snapshot, registry)
    await telemetry.poll()
    return telemetry


async def snapshot_once(
    config: Config, snapshot: ClusterSnapshot, sources: list[str]
) -> dict[str, object]:
    """The dry-run plan for snapshot files: pool sizes are their node counts, nothing changes."""
    registry = CollectorRegistry()
    telemetry = await _with_telemetry(config, snapshot, registry)
    scaler = Autoscaler(
        config,
        SnapshotState(snapshot, sources=sources),
        {},
        AutoscalerMetrics(registry),
        telemetry=telemetry,
        dry_run=True,
    )
    decision = await scaler.run_once()
    if decision is None:
        raise CommandError("the plan could not be made; see the log above")
    return _dry_run_output(scaler, decision)


def _dry_run_output(scaler: Autoscaler, decision: Any) -> dict[str, object]:
    output: dict[str, object] = decision.to_json()
    if scaler.telemetry is not None:
        output["telemetry"] = {
            "stale": scaler.telemetry.stale,
            "detail": scaler.telemetry.detail(),
        }
    return output


def build_providers(
    config: Config, api: client.ApiClient | None, snapshot: ClusterSnapshot | None = None
) -> dict[str, NodePoolProvider]:
    """One provider object per provider kind the configured pools use."""
    kinds = {p.provider for p in config.autoscaler.node_pools}
    providers: dict[str, NodePoolProvider] = {}
    if "clusterapi" in kinds:
        if api is None:
            raise CommandError("provider clusterapi: needs an API server (--kubeconfig)")
        from epcsched.autoscaler.providers.clusterapi import ClusterApiProvider

        providers["clusterapi"] = ClusterApiProvider(api)
    if "aks" in kinds:
        from epcsched.autoscaler.providers.aks import AksProvider
        from epcsched.autoscaler.providers.base import ProviderError

        try:
            providers["aks"] = AksProvider()
        except ProviderError as exc:
            raise CommandError(f"provider aks: {exc}") from None
    if "simulated" in kinds:
        providers["simulated"] = simulated_provider(config, api, snapshot)
    return providers


def simulated_provider(
    config: Config,
    api: client.ApiClient | None,
    snapshot: ClusterSnapshot | None,
    *,
    delay: float = 2.0,
) -> NodePoolProvider:
    """A simulated pool whose nodes join the API server in `api` (the demo, tests)."""
    from epcsched.autoscaler.loop import pool_template
    from epcsched.autoscaler.providers.simulated import SimulatedProvider, node_object

    initial: dict[str, list[str]] = {}
    if snapshot is not None:
        for pool in config.autoscaler.node_pools:
            if pool.provider == "simulated":
                nodes, _ = pool_nodes(snapshot, pool, pool_template(pool, config))
                initial[pool.name] = list(nodes)
    provider: SimulatedProvider

    async def register(pool: NodePoolSettings, name: str) -> None:
        if api is not None:
            body = node_object(pool, name, epc=provider.epc.get(pool.name, True))
            await client.CoreV1Api(api).create_node(body)  # type: ignore[arg-type]

    async def unregister(pool: NodePoolSettings, name: str) -> None:
        if api is not None:
            await client.CoreV1Api(api).delete_node(name)

    provider = SimulatedProvider(
        delay=delay, register=register, unregister=unregister, initial=initial
    )
    return provider


async def dry_run_once(config: Config, configuration: client.Configuration) -> dict[str, object]:
    """One loop against a live API server, reading the providers' sizes, changing nothing."""
    from epcsched.kube.informer import InformerState

    state = InformerState(configuration, config)
    await state.start()
    api = client.ApiClient(configuration)
    providers: dict[str, NodePoolProvider] = {}
    try:
        try:
            await state.wait_synced(timeout=60)
        except TimeoutError:
            raise CommandError(
                f"--kubeconfig: could not list nodes and pods from {configuration.host} in 60 s"
            ) from None
        registry = CollectorRegistry()
        telemetry = await _with_telemetry(config, state.snapshot, registry)
        providers = build_providers(config, api, state.snapshot)
        scaler = Autoscaler(
            config,
            state,
            providers,
            AutoscalerMetrics(registry),
            telemetry=telemetry,
            dry_run=True,
        )
        decision = await scaler.run_once()
        if decision is None:
            raise CommandError("the plan could not be made; see the log above")
        return _dry_run_output(scaler, decision)
    finally:
        for provider in providers.values():
            with contextlib.suppress(Exception):
                await provider.close()
        await api.close()
        await state.stop()


def serve(config: Config, configuration: client.Configuration, args: argparse.Namespace) -> int:
    """Run the controller until SIGTERM/SIGINT."""
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(
            controller(
                config,
                configuration,
                namespace=args.namespace or default_namespace(),
                identity=args.identity or socket.gethostname(),
                host=args.host,
                port=args.port,
                lease_duration=args.lease_duration,
            )
        )
    finally:
        loop.close()


async def controller(
    config: Config,
    configuration: client.Configuration,
    *,
    namespace: str,
    identity: str,
    host: str = "0.0.0.0",
    port: int = 8085,
    lease_duration: float = 15.0,
    providers: Mapping[str, NodePoolProvider] | None = None,
    stop: asyncio.Event | None = None,
    started: asyncio.Future[Autoscaler] | None = None,
) -> int:
    """The long-running controller; returns when `stop` is set or on SIGTERM/SIGINT."""
    from aiohttp import web

    from epcsched.autoscaler.app import create_app
    from epcsched.autoscaler.kube import kube_parts
    from epcsched.kube.informer import InformerState

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    with contextlib.suppress(NotImplementedError, RuntimeError):
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    from epcsched.build import register_build_metrics
    from epcsched.kube.client import api_client

    registry = CollectorRegistry()
    register_build_metrics(registry)
    state = InformerState(configuration, config)
    api = api_client(configuration)
    telemetry = None
    if config.prometheus.url:
        from epcsched.telemetry.poller import Telemetry

        telemetry = Telemetry(config.prometheus, config.pressure, lambda: state.snapshot, registry)
    parts = kube_parts(
        api,
        namespace=namespace,
        identity=identity,
        lease_duration=lease_duration,
        max_pod_eviction_time=config.autoscaler.max_pod_eviction_time,
    )
    own_providers = providers is None
    built: Mapping[str, NodePoolProvider] = providers or {}
    scaler: Autoscaler | None = None
    runner: web.AppRunner | None = None
    tasks: list[asyncio.Task[Any]] = []
    try:
        await state.start()
        if telemetry is not None:
            await telemetry.start()
        tasks.append(asyncio.create_task(parts.leader.run(), name="leader-election"))
        await state.wait_synced(timeout=None)
        if own_providers:
            built = build_providers(config, api, state.snapshot)
        scaler = Autoscaler(
            config,
            state,
            built,
            AutoscalerMetrics(registry),
            strategy=config.extender.strategy,
            recorder=parts.recorder,
            remover=parts.remover,
            status=parts.status,
            leader=parts.leader,
            telemetry=telemetry,
        )
        state.pod_listeners.append(scaler.pod_changed)
        runner = web.AppRunner(create_app(scaler), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise CommandError(
                f"--host/--port: cannot listen on {host}:{port}: {exc.strerror}"
            ) from None
        bound = runner.addresses[0][1] if runner.addresses else port
        scaler.http_port = int(bound)
        log.info(
            "autoscaler %s serving /healthz, /readyz, /metrics on %s:%s; pools %s; Lease %s/%s",
            identity,
            host,
            bound,
            ", ".join(f"{p.name} ({p.provider})" for p in config.autoscaler.node_pools),
            namespace,
            "epcsched-autoscaler",
        )
        tasks.append(asyncio.create_task(scaler.run(), name="autoscaler-loop"))
        if started is not None and not started.done():
            started.set_result(scaler)
        await stop.wait()
        log.info("autoscaler %s stopping", identity)
        return 0
    finally:
        # The loop stops first; cancelling the campaign then hands the Lease back at once.
        for task in reversed(tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if scaler is not None:
            await scaler.stop()
        if runner is not None:
            await runner.cleanup()
        if own_providers:
            for provider in built.values():
                with contextlib.suppress(Exception):
                    await provider.close()
        if telemetry is not None:
            await telemetry.stop()
        await state.stop()
        await api.close()
        for sig in handled:
            loop.remove_signal_handler(sig)
