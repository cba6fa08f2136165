"""The extender's aiohttp application, built by one factory from settings and cluster state.

State lives under typed `web.AppKey`s; background work (informers, telemetry polls) starts and
stops with the app through `cleanup_ctx`. Handlers only move bytes between HTTP and
`ExtenderService`; every malformed request becomes a 400 with a one-line message, and nothing a
client sends can produce a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from epcsched.config import Config
from epcsched.extender.decisions import log_failures
from epcsched.extender.metrics import ExtenderMetrics
from epcsched.extender.service import ExtenderService, FilterFailures
from epcsched.extender.wire import BadRequest, error_reply
from epcsched.state import ClusterState
from epcsched.telemetry import Telemetry

log = logging.getLogger("epcsched.extender")

CONFIG = web.AppKey("config", Config)
STATE = web.AppKey("state", ClusterState)
SERVICE = web.AppKey("service", ExtenderService)
METRICS = web.AppKey("metrics", ExtenderMetrics)
TELEMETRY = web.AppKey("telemetry", Telemetry)
PREFIX = web.AppKey("prefix", str)
"""The URL prefix before each verb, normalised to "" or "/something"."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_JSON = "application/json"


def observed(verb: str, handler: Handler) -> Handler:
    """`handler` counted and timed as `verb`, with any internal fault answered as a 500.

    Only the extender verbs are observed, and in the handler rather than a middleware: a
    middleware would add its cost to every call kube-scheduler waits for.
    """

    async def handle(request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        code = 500
        refusal = ""
        try:
            response = await handler(request)
            code = response.status
            if 400 <= code < 500 and isinstance(response, web.Response):
                refusal = _error_text(response.body)
            return response
        except web.HTTPException as exc:  # 413 from a body over the limit, among others
            code = exc.status
            refusal = exc.text or exc.reason
            if code < 400:
                raise
            # The same JSON error body as every other refusal, not aiohttp's plain text.
            headers = {k: v for k, v in exc.headers.items() if k.lower() != "content-type"}
            return web.Response(
                status=code, body=error_reply(refusal), content_type=_JSON, headers=headers
            )
        except Exception:
            log.exception("internal error answering %s %s", request.method, request.path)
            return web.Response(
                status=500,
                body=error_reply("internal error; see the extender log"),
                content_type=_JSON,
            )
        finally:
            elapsed = time.perf_counter() - started
            request.app[METRICS].observe(verb, code, elapsed)
            if 400 <= code < 500:
                log.warning(
                    "%s %s from %s answered %d: %s",
                    request.method,
                    request.path,
                    request.remote,
                    code,
                    refusal,
                    extra={"verb": verb, "status": code, "reason": refusal},
                )
            elif log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "%s %s from %s answered %d in %.2f ms (%d bytes in)",
                    request.method,
                    request.path,
                    request.remote,
                    code,
                    elapsed * 1000,
                    request.content_length or 0,
                    extra={"verb": verb, "status": code, "seconds": elapsed},
                )

    return handle


def _error_text(body: object) -> str:
    """The `Error` of a JSON error reply, for the log."""
    if isinstance(body, bytes):
        with contextlib.suppress(ValueError):
            decoded = json.loads(body)
            error = decoded.get("Error") if isinstance(decoded, dict) else None
            if isinstance(error, str):
                return error
    return ""


class SyncGate:
    """Whether the cluster state has synced, checked until it has (it then stays synced).

    Before the informers' first lists are in, the cache is empty or partial: a filter would
    fail every node, which marks the pod unschedulable and can start preemption. An `Error`
    reply instead makes kube-scheduler retry the pod later.
    """

    def __init__(self, state: ClusterState) -> None:
        self._state = state
        self.open = False
        self._refused = 0

    def check(self) -> bool:
        if not self.open and self._state.ready():
            self.open = True
            if self._refused:
                log.info(
                    "cluster state synced: answering extender calls (%d refused before)",
                    self._refused,
                )
        return self.open

    def refuse(self) -> bytes:
        if not self._refused:
            log.warning("cluster state not synced yet: answering extender calls with Error")
        self._refused += 1
        return error_reply(
            "epcsched has not synced its cluster state yet (first list of nodes and pods in "
            "progress); retry shortly"
        )


GATE = web.AppKey("gate", SyncGate)


def _extender_verb(
    answer: Callable[[ExtenderService, bytes], bytes | tuple[bytes, FilterFailures | None]],
    *,
    decided: Callable[[FilterFailures], None] | None = None,
    then: Callable[[ExtenderService], None] | None = None,
) -> Handler:
    """A verb answered by `answer` once the state has synced (`Error` before); an answer that
    comes with the nodes it failed hands them to `decided`; `then` runs once the reply is
    sent."""

    async def handle(request: web.Request) -> web.StreamResponse:
        gate = request.app[GATE]
        if not gate.open and not gate.check():
            return web.Response(body=gate.refuse(), content_type=_JSON)
        body = await request.read()
        try:
            answered = answer(request.app[SERVICE], body)
        except BadRequest as exc:
            return web.Response(status=400, body=error_reply(str(exc)), content_type=_JSON)
        if isinstance(answered, tuple):
            answered, failures = answered
            if failures is not None and decided is not None:
                # After this handler's reply is on the socket: kube-scheduler need not wait.
                asyncio.get_running_loop().call_soon(decided, failures)
        if then is not None:
            asyncio.get_running_loop().call_soon(then, request.app[SERVICE])
        return web.Response(body=answered, content_type=_JSON)

    return handle


def _prioritize_ahead(service: ExtenderService) -> None:
    try:
        service.prioritize_ahead()
    except Exception:
        # The prioritize request itself then answers, or reports the fault.
        log.exception("answering prioritize ahead of its request failed")


def refresh_on_change(state: ClusterState, service: ExtenderService) -> Callable[[], None]:
    """After each change of the cluster state, bring `service`'s per-node figures up to date
    once the event loop is free (several changes in one pass of the loop, one refresh).
    Returns the listener, for other owners of the snapshot (telemetry) to call too."""
    pending = False

    def run() -> None:
        nonlocal pending
        pending = False
        try:
            service.refresh()
        except Exception:
            # The next request redoes the same update and answers or reports any fault.
            log.exception("refreshing the extender's figures after a cluster change failed")

    def changed() -> None:
        nonlocal pending
        if not pending:
            pending = True
            asyncio.get_running_loop().call_soon(run)

    state.change_listeners.append(changed)
    return changed


def add_verb(app: web.Application, verb: str, handler: Handler) -> None:
    """Serve `POST {extender.prefix}/{verb}`, observed."""
    app.router.add_post(f"{app[PREFIX]}/{verb}", observed(verb, handler), name=verb)


UNROUTED = "unrouted"


async def _unrouted(request: web.Request) -> web.Response:
    """404 for a path nothing serves, 405 for a method a path does not take; JSON as the verbs'
    errors are. A catch-all route, so that requests that do match pay nothing for it."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource.name != UNROUTED:
            _, methods = await resource.resolve(request)
            allowed |= methods
    if allowed:
        return web.Response(
            status=405,
            body=error_reply(
                f"{request.method} {request.path}: method not allowed "
                f"(use {', '.join(sorted(allowed))})"
            ),
            content_type=_JSON,
            headers={"Allow": ",".join(sorted(allowed))},
        )
    verbs = sorted(
        r.canonical for r in request.app.router.resources() if r.name not in (UNROUTED, None)
    )
    return web.Response(
        status=404,
        body=error_reply(f"{request.path}: not found (served: {', '.join(verbs)})"),
        content_type=_JSON,
    )


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    ready = state.ready()
    detail: dict[str, object] = {"ready": ready, "state": state.detail()}
    # Stale telemetry degrades decisions to requests but does not make the extender unready.
    telemetry = request.app.get(TELEMETRY)
    if telemetry is not None:
        detail["telemetry"] = telemetry.detail()
    return web.json_response(detail, status=200 if ready else 503)


async def _metrics(request: web.Request) -> web.Response:
    payload = generate_latest(request.app[METRICS].registry)
    response = web.Response(body=payload)
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return response


def create_metrics_app(extender: web.Application) -> web.Application:
    """/metrics, /healthz and /readyz of `extender`, for a listener of their own: what Prometheus
    and the kubelet need, without the verbs that decide placements."""
    app = web.Application(client_max_size=1024)
    app[STATE] = extender[STATE]
    app[METRICS] = extender[METRICS]
    if TELEMETRY in extender:
        app[TELEMETRY] = extender[TELEMETRY]
    app.router.add_get("/healthz", _healthz, name="healthz")
    app.router.add_get("/readyz", _readyz, name="readyz")
    app.router.add_get("/metrics", _metrics, name="metrics")
    app.router.add_route("*", "/{path:.*}", _unrouted, name=UNROUTED)
    return app


async def _run_state(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    await state.start()
    try:
        yield
    finally:
        await state.stop()


async def _run_telemetry(app: web.Application) -> AsyncIterator[None]:
    telemetry = app[TELEMETRY]
    await telemetry.start()
    try:
        yield
    finally:
        await telemetry.stop()


def create_app(
    config: Config,
    state: ClusterState,
    *,
    registry: CollectorRegistry | None = None,
    telemetry: Telemetry | None = None,
    metrics_route: bool = True,
) -> web.Application:
    """Build the extender app; `state` (and telemetry, when given or when `prometheus.url` is
    set) is started and stopped with it. Without `metrics_route`, /metrics is left to
    `create_metrics_app` on a listener of its own."""
    settings = config.extender
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[CONFIG] = config
    app[STATE] = state
    app[GATE] = SyncGate(state)
    app[SERVICE] = ExtenderService(
        lambda: state.snapshot,
        strategy=settings.strategy,
        prefer_non_sgx=settings.prefer_non_sgx,
    )
    changed = refresh_on_change(state, app[SERVICE])
    app[METRICS] = ExtenderMetrics(registry or CollectorRegistry(), lambda: state.snapshot)
    prefix = settings.prefix.strip("/")
    app[PREFIX] = f"/{prefix}" if prefix else ""
    add_verb(
        app,
        "filter",
        _extender_verb(
            ExtenderService.filter_and_failures,
            decided=log_failures,
            then=_prioritize_ahead,
        ),
    )
    add_verb(app, "prioritize", _extender_verb(ExtenderService.prioritize))
    add_verb(app, "preempt", _extender_verb(ExtenderService.preempt))
    app.router.add_get("/healthz", _healthz, name="healthz")
    app.router.add_get("/readyz", _readyz, name="readyz")
    if metrics_route:
        app.router.add_get("/metrics", _metrics, name="metrics")
    app.router.add_route("*", "/{path:.*}", _unrouted, name=UNROUTED)
    app.cleanup_ctx.append(_run_state)
    if telemetry is None and config.prometheus.url:
        telemetry = Telemetry(
            config.prometheus, config.pressure, lambda: state.snapshot, app[METRICS].registry
        )
    if telemetry is not None:
        # A poll replaces every node's measured use: the figures are rebuilt then, not by the
        # next request.
        telemetry.change_listeners.append(changed)
        app[TELEMETRY] = telemetry
        app.cleanup_ctx.append(_run_telemetry)
    return app
