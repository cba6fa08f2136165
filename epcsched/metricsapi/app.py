"""The metrics API's aiohttp application: one factory from settings, index, measurement source
(Prometheus, or memory for the demo) and reviewer.

Every request under `/apis` is authenticated (front-proxy certificate and headers, or a bearer
token), authorised (SubjectAccessReview) and only then routed, as kube-apiserver orders it, so
an unauthorised client learns nothing about which metrics or pods exist. Answers are the
documents of `wire.py`; every failure is a `Status`: 400 for a bad selector, 401/403 for a
refusal (each logged with the peer, the path and the reason), 404 for an unknown metric or pod,
405 for a method other than GET, 503 while Prometheus or the API server cannot answer or the pod
cache has not synced. `/healthz`, `/livez` and `/readyz` are for the kubelet and need no
credentials, as in kube's aggregated servers. `/metrics` (the server's own Prometheus metrics)
is authenticated and authorised like any other path, as k8s.io/apiserver's delegated
authorisation leaves only the health paths open: Prometheus scrapes it with its ServiceAccount
token, which RBAC must allow `get` on the non-resource URL `/metrics`.

Background work runs in `cleanup_ctx`: the informers, and a loop that reads the front-proxy
ConfigMap at start and again every minute, trusting its CA for new connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from epcsched.build import register_build_metrics
from epcsched.config import Config, MetricsApiSettings
from epcsched.metricsapi import wire
from epcsched.metricsapi.auth import (
    AuthConfigError,
    FrontProxy,
    Refusal,
    Reviewer,
    User,
    common_name,
    front_proxy_user,
)
from epcsched.metricsapi.index import ClusterIndex
from epcsched.metricsapi.metrics import METRICS_PATH, ApiMetrics
from epcsched.metricsapi.prometheus import PrometheusSource, Query, SourceError
from epcsched.metricsapi.selectors import EVERYTHING, SelectorError, parse_selector
from epcsched.metricsapi.source import MetricsSource
from epcsched.metricsapi.tls import ServingTls
from epcsched.metricsapi.values import (
    EXTERNAL_METRICS,
    LIMIT_HITS,
    NODE_PAGING_RATE,
    POD_METRICS,
    Measurements,
    PoolEntry,
    external_values,
    pod_values,
)

log = logging.getLogger("epcsched.metricsapi")

FRONT_PROXY_REFRESH = 60.0
"""Seconds between reads of the front-proxy ConfigMap once it has been read."""
FRONT_PROXY_RETRY = 5.0
"""Seconds between attempts until it has been read."""

_VERBS = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch"}
_JSON = "application/json"


@dataclass
class FrontDoor:
    """What the server currently knows about the front proxy, and the TLS it serves with."""

    tls: ServingTls | None
    proxy: FrontProxy | None = None
    error: str | None = "not read yet"


SETTINGS = web.AppKey("settings", MetricsApiSettings)
INDEX = web.AppKey("index", ClusterIndex)
SOURCE: web.AppKey[MetricsSource] = web.AppKey("source")
REVIEWER = web.AppKey("reviewer", Reviewer)
DOOR = web.AppKey("door", FrontDoor)
POOLS = web.AppKey("pools", tuple[PoolEntry, ...])
METRICS = web.AppKey("metrics", ApiMetrics)


def pools_of(config: Config) -> tuple[PoolEntry, ...]:
    """The autoscaler's node pools, each with the labels that mark its nodes."""
    pools = []
    for pool in config.autoscaler.node_pools:
        selector = pool.node_selector or (pool.template.labels if pool.template else {})
        pools.append(PoolEntry(pool.name, dict(selector)))
    return tuple(pools)


def queries_of(config: Config) -> dict[str, Query]:
    """The four PromQL queries, with the window filled in."""
    settings = config.metrics_api
    window = f"{round(settings.window)}s"
    node = config.prometheus.node_label
    return {
        "usage": Query(settings.usage_query.replace("{window}", window), settings.pod_label),
        "limit_hits": Query(
            settings.limit_hits_query.replace("{window}", window), settings.pod_label
        ),
        "node_used": Query(config.prometheus.used_query, node),
        "node_paging": Query(settings.paging_query.replace("{window}", window), node),
    }


def _response(code: int, body: bytes) -> web.Response:
    return web.Response(status=code, body=body, content_type=_JSON)


def _failure(code: int, message: str, **details: str) -> web.Response:
    return _response(code, wire.status(code, message, details=dict(details) or None))


def _peer(request: web.Request) -> str:
    return request.remote or "unknown peer"


async def _authenticate(request: web.Request) -> User:
    transport = request.transport
    peercert = transport.get_extra_info("peercert") if transport is not None else None
    certificate = common_name(peercert)
    if certificate is not None:
        proxy = request.app[DOOR].proxy
        if proxy is None or proxy.client_ca is None:
            raise Refusal(401, "Unauthorized", why="client certificate but no front-proxy CA")
        return front_proxy_user(proxy, request.headers, certificate)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return await request.app[REVIEWER].token_user(token.strip())
    raise Refusal(401, "Unauthorized", why="no front-proxy client certificate and no bearer token")


async def _serve(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    route = wire.route(request.path)
    code = 500
    try:
        response = await _answer(request, route)
        code = response.status
        return response
    finally:
        request.app[METRICS].request(route, code, time.perf_counter() - started)


async def _answer(request: web.Request, route: wire.Route) -> web.StreamResponse:
    verb = _VERBS.get(request.method, request.method.lower())
    try:
        user = await _authenticate(request)
        await request.app[REVIEWER].authorize(user, route, verb)
    except Refusal as refusal:
        if refusal.code == 503:
            log.warning("cannot serve %s %s: %s", request.method, request.path, refusal.why)
        else:
            log.warning(
                "refused %s %s from %s (%d): %s",
                request.method,
                request.path_qs,
                _peer(request),
                refusal.code,
                refusal.why,
            )
        return _failure(refusal.code, refusal.message)
    if request.method not in ("GET", "HEAD"):
        return _failure(405, "the server does not allow this method on the requested resource")
    if request.path == METRICS_PATH:
        return _own_metrics(request)
    try:
        if route.kind == "discovery":
            body = wire.discovery(request.path)
            if body is not None:
                return _response(200, body)
        elif route.kind == "pods":
            return await _pod_metrics(request, route, user)
        elif route.kind == "external":
            return await _external_metrics(request, route, user)
    except SelectorError as exc:
        return _failure(400, f"unable to parse the selector: {exc}")
    except SourceError as exc:
        log.warning("cannot serve %s: %s", request.path, exc)
        return _failure(503, str(exc))
    return _failure(404, f"the server could not find the requested resource ({request.path})")


async def _pod_metrics(request: web.Request, route: wire.Route, user: User) -> web.Response:
    metric = route.metric
    info = POD_METRICS.get(metric)
    if info is None:
        return _failure(
            404,
            f"the server could not find the metric {metric} for pods",
            group=wire.CUSTOM,
            kind="pods",
        )
    selector = parse_selector(request.query.get("labelSelector"))
    metric_selector = parse_selector(request.query.get("metricLabelSelector"))
    index = request.app[INDEX]
    if not index.ready():
        return _failure(503, "the pod cache has not synced with the API server yet")
    if route.name == "*":
        pods = list(index.pods_in(route.namespace))
    else:
        pod = index.pod(route.namespace, route.name)
        if pod is None:
            return _failure(
                404, f'pods "{route.name}" not found', name=route.name, kind="pods", group=""
            )
        pods, selector = [pod], EVERYTHING
    series = await request.app[SOURCE].series("limit_hits" if metric == LIMIT_HITS else "usage")
    measured = (
        Measurements(series.time, pod_limit_hits=series.values)
        if metric == LIMIT_HITS
        else Measurements(series.time, pod_usage=series.values)
    )
    # Pod metrics carry no labels of their own: a metric selector either admits them all or
    # none.
    items = pod_values(metric, pods, selector, measured) if metric_selector.matches({}) else []
    if route.name != "*" and not items:
        return _failure(
            404,
            f"the server could not find the metric {metric} for pods {route.name}",
            group=wire.CUSTOM,
            kind="pods",
            name=route.name,
        )
    log.debug(
        "%s: %d of %d pods in %s for %s",
        metric,
        len(items),
        len(pods),
        route.namespace,
        user.name,
    )
    window = round(request.app[SETTINGS].window) if info.rate else 0
    return _response(
        200,
        wire.metric_value_list(route.version, metric, items, timestamp=series.time, window=window),
    )


async def _external_metrics(request: web.Request, route: wire.Route, user: User) -> web.Response:
    metric = route.metric
    info = EXTERNAL_METRICS.get(metric)
    if info is None:
        return _failure(
            404,
            f"the server could not find the metric {metric}",
            group=wire.EXTERNAL,
            kind=metric,
        )
    selector = parse_selector(request.query.get("labelSelector"))
    index = request.app[INDEX]
    if not index.ready():
        return _failure(503, "the node and pod cache has not synced with the API server yet")
    name = "node_paging" if metric == NODE_PAGING_RATE else "node_used"
    series = await request.app[SOURCE].series(name)
    measured = (
        Measurements(series.time, node_paging=series.values)
        if metric == NODE_PAGING_RATE
        else Measurements(series.time, node_used=series.values)
    )
    pools = request.app[POOLS]
    items = external_values(
        metric,
        selector,
        pools=pools,
        nodes=index.nodes(),
        pods=index.pods(),
        measured=measured,
    )
    log.debug("%s: %d series for %s", metric, len(items), user.name)
    window = round(request.app[SETTINGS].window) if info.rate else 0
    return _response(
        200, wire.external_value_list(metric, items, timestamp=series.time, window=window)
    )


def _own_metrics(request: web.Request) -> web.Response:
    response = web.Response(body=generate_latest(request.app[METRICS].registry))
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _readyz(request: web.Request) -> web.Response:
    index = request.app[INDEX]
    door = request.app[DOOR]
    ready = index.ready() and door.proxy is not None
    body = {
        "ready": ready,
        "index": index.detail(),
        "frontProxy": {
            "loaded": door.proxy is not None,
            "clientCA": bool(door.proxy and door.proxy.client_ca),
            "allowedNames": list(door.proxy.allowed_names) if door.proxy else [],
            "error": door.error,
        },
        "prometheus": request.app[SOURCE].url,
    }
    return web.json_response(body, status=200 if ready else 503)


async def _run_index(app: web.Application) -> AsyncIterator[None]:
    index = app[INDEX]
    await index.start()
    try:
        yield
    finally:
        await index.stop()


async def _run_front_proxy(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_front_proxy_loop(app), name="metricsapi-front-proxy")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await app[REVIEWER].close()
        await app[SOURCE].close()


async def refresh_front_proxy(app: web.Application) -> bool:
    """Read the front-proxy ConfigMap once; True when it was read and applied."""
    door = app[DOOR]
    try:
        proxy = await app[REVIEWER].front_proxy()
    except (Refusal, AuthConfigError) as exc:
        error = exc.why if isinstance(exc, Refusal) else f"front-proxy ConfigMap: {exc}"
        if error != door.error:
            log.warning("front-proxy settings not updated: %s", error)
        door.error = error
        return False
    if proxy != door.proxy:
        if door.tls is not None:
            door.tls.trust(proxy.client_ca)
        if proxy.client_ca is None:
            log.warning(
                "the front-proxy ConfigMap has no requestheader-client-ca-file: only bearer "
                "tokens are accepted"
            )
        else:
            log.info(
                "front-proxy client CA loaded; allowed names %s; user header %s",
                ", ".join(proxy.allowed_names) or "(any)",
                ", ".join(proxy.username_headers),
            )
    door.proxy = proxy
    door.error = None
    return True


async def _front_proxy_loop(app: web.Application) -> None:
    while True:
        try:
            loaded = await refresh_front_proxy(app)
        except Exception:  # a bug here must not stop the refreshes for good
            log.exception("reading the front-proxy settings failed unexpectedly")
            loaded = False
        await asyncio.sleep(FRONT_PROXY_REFRESH if loaded else FRONT_PROXY_RETRY)


def create_app(
    config: Config,
    index: ClusterIndex,
    source: MetricsSource,
    reviewer: Reviewer,
    *,
    tls: ServingTls | None = None,
    metrics: ApiMetrics | None = None,
) -> web.Application:
    """Build the metrics API; `index`, the front-proxy refresh and `source` run with it.
    `metrics` (default: a registry of its own with the build and process metrics) is what
    /metrics serves."""
    if metrics is None:
        registry = CollectorRegistry()
        register_build_metrics(registry)
        metrics = ApiMetrics(registry)
    app = web.Application(client_max_size=64 * 1024)
    app[SETTINGS] = config.metrics_api
    app[INDEX] = index
    app[SOURCE] = source
    app[REVIEWER] = reviewer
    app[DOOR] = FrontDoor(tls)
    app[POOLS] = pools_of(config)
    app[METRICS] = metrics
    for path in ("/healthz", "/livez"):
        app.router.add_get(path, _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_route("*", "/{tail:.*}", _serve)
    app.cleanup_ctx.append(_run_index)
    app.cleanup_ctx.append(_run_front_proxy)
    return app


def source_for(
    config: Config,
    *,
    clock: Callable[[], float] = time.time,
    metrics: ApiMetrics | None = None,
) -> PrometheusSource:
    """The Prometheus source `config` describes (prometheus.url must be set), reporting its
    queries to `metrics`."""
    url = config.prometheus.url
    if not url:
        raise ValueError("prometheus.url: required by the metrics API")
    return PrometheusSource(
        url,
        queries_of(config),
        cache_ttl=config.metrics_api.cache_ttl,
        timeout=config.prometheus.timeout,
        clock=clock,
        observer=metrics.query if metrics is not None else None,
    )
