"""The autoscaler's own HTTP server: `/healthz`, `/readyz` and `/metrics` (port 8085).

Health says whether the loop is alive (it completed a loop recently, or has not had the time to
yet); readiness says whether it can decide (cluster state synced). Neither depends on being the
leader: a replica that only observes is healthy and ready.
"""

from __future__ import annotations

import json

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from epcsched.autoscaler.loop import Autoscaler

AUTOSCALER = web.AppKey("autoscaler", Autoscaler)
STARTED = web.AppKey("started", float)


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(body, indent=1) + "\n", status=status, content_type="application/json"
    )


async def healthz(request: web.Request) -> web.Response:
    scaler = request.app[AUTOSCALER]
    now = scaler.clock()
    grace = 3 * scaler.settings.interval + 60
    last = scaler.last_loop if scaler.last_loop is not None else request.app[STARTED]
    if now - last > grace:
        return _json({"ok": False, "error": f"no loop completed for {now - last:.0f}s"}, 503)
    return _json({"ok": True, "loops": scaler.loops})


async def readyz(request: web.Request) -> web.Response:
    scaler = request.app[AUTOSCALER]
    ready = scaler.cluster.ready()
    body: dict[str, object] = {
        "ready": ready,
        "leader": scaler.acting(),
        "dryRun": scaler.dry_run,
        "state": scaler.cluster.detail(),
    }
    if scaler.telemetry is not None:
        body["telemetry"] = scaler.telemetry.detail()
    return _json(body, 200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    registry = request.app[AUTOSCALER].metrics.registry
    return web.Response(
        body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def create_app(scaler: Autoscaler) -> web.Application:
    app = web.Application()
    app[AUTOSCALER] = scaler
    app[STARTED] = scaler.clock()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
