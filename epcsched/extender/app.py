"""The extender's aiohttp application, built by one factory from settings and cluster state.

State lives under typed `web.AppKey`s; background work (informers, telemetry polls) starts and
stops with the app through `cleanup_ctx`. Handlers only move bytes between HTTP and
`ExtenderService`; every malformed request becomes a 400 with a one-line message, and nothing a
client sends can produce a traceback. The extender verbs (`Verb`) answer from the request body
alone, so `fastpath` answers kube-scheduler's calls with the same code without aiohttp's
per-request objects, and `VERBS` lists the paths it may.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import NamedTuple

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
            return web.Response(status=500, body=_INTERNAL, content_type=_JSON)
        finally:
            settle(
                request.app,
                Call(verb, request.method, request.path, request.remote),
                code,
                refusal,
                time.perf_counter() - started,
                request.content_length or 0,
            )

    return handle


_INTERNAL = error_reply("internal error; see the extender log")


class Call(NamedTuple):
    """What the log says of a call: the verb, and the request's method, path and peer."""

    verb: str
    method: str
    path: str
    remote: str | None


def settle(
    app: web.Application, call: Call, code: int, refusal: str, elapsed: float, size: int
) -> None:
    """Count and time an answered call, and log it: a refusal as a warning naming why."""
    app[METRICS].observe(call.verb, code, elapsed)
    if 400 <= code < 500:
        log.warning(
            "%s %s from %s answered %d: %s",
            call.method,
            call.path,
            call.remote,
            code,
            refusal,
            extra={"verb": call.verb, "status": code, "reason": refusal},
        )
    elif log.isEnabledFor(logging.DEBUG):
        log.debug(
            "%s %s from %s answered %d in %.2f ms (%d bytes in)",
            call.method,
            call.path,
            call.remote,
            code,
            elapsed * 1000,
            size,
            extra={"verb": call.verb, "status": code, "seconds": elapsed},
        )


def answer_observed(app: web.Application, verb: Verb, body: bytes, call: Call) -> tuple[int, bytes]:
    """`verb`'s status and reply for `body`, observed as `observed` observes a handler: for a
    caller that has read the request without aiohttp (`fastpath`)."""
    started = time.perf_counter()
    code = 500
    refusal = ""
    try:
        code, reply = verb.reply(app, body)
        if 400 <= code < 500:
            refusal = _error_text(reply)
        return code, reply
    except Exception:
        log.exception("internal error answering %s %s", call.method, call.path)
        return 500, _INTERNAL
    finally:
        settle(app, call, code, refusal, time.perf_counter() - started, len(body))


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


Answer = Callable[[ExtenderService, bytes], bytes | tuple[bytes, FilterFailures | None]]


@dataclass(frozen=True)
class Verb:
    """An extender verb answered by `answer` from the request body alone, with nothing to
    await: by its aiohttp handler and by `fastpath` alike, through `reply`. An answer that comes
    with the nodes it failed hands them to `decided`; `then` runs once the reply is sent."""

    name: str
    answer: Answer
    decided: Callable[[FilterFailures], None] | None = None
    then: Callable[[ExtenderService], None] | None = None

    def reply(self, app: web.Application, body: bytes) -> tuple[int, bytes]:
        """The status and JSON reply for `body`; `Error` until the state has synced."""
        gate = app[GATE]
        if not gate.open and not gate.check():
            return 200, gate.refuse()
        try:
            answered = self.answer(app[SERVICE], body)
        except BadRequest as exc:
            return 400, error_reply(str(exc))
        if isinstance(answered, tuple):
            answered, failures = answered
            if failures is not None and self.decided is not None:
                # After the reply is on the socket: kube-scheduler need not wait.
                asyncio.get_running_loop().call_soon(self.decided, failures)
        if self.then is not None:
            asyncio.get_running_loop().call_soon(self.then, app[SERVICE])
        return 200, answered

    def handler(self) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            code, reply = self.reply(request.app, await request.read())
            return web.Response(status=code, body=reply, content_type=_JSON)

        return handle


VERBS = web.AppKey("verbs", dict[bytes, Verb])
"""By path (bytes, as on the wire), the verbs `fastpath` may answer itself."""


def add_sync_verb(app: web.Application, verb: Verb) -> None:
    """Serve `verb` as `add_verb` does, and list it for `fastpath`."""
    add_verb(app, verb.name, verb.handler())
    app[VERBS][f"{app[PREFIX]}/{verb.name}".encode()] = verb


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
    app[VERBS] = {}
    add_sync_verb(
        app,
        Verb(
            "filter",
            ExtenderService.filter_and_failures,
            decided=log_failures,
            then=_prioritize_ahead,
        ),
    )
    add_sync_verb(app, Verb("prioritize", ExtenderService.prioritize))
    add_sync_verb(app, Verb("preempt", ExtenderService.preempt))
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
