"""Yardstick for the extender benchmark: an aiohttp handler that reads the body, returns a constant.

Same framework, event loop and body limit as the extender, so `ratio_vs_bare` measures what
epcsched's own work costs on top of the framework's.
"""

from __future__ import annotations

import sys

import uvloop
from aiohttp import web

REPLY = b'{"NodeNames":[],"FailedNodes":{},"FailedAndUnresolvableNodes":{},"Error":""}'


async def handle(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=REPLY, content_type="application/json")


async def ready(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    app = web.Application(client_max_size=64 * 2**20)
    app.router.add_post("/filter", handle)
    app.router.add_post("/prioritize", handle)
    app.router.add_get("/readyz", ready)
    web.run_app(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop=uvloop.new_event_loop(),
        print=None,
        access_log=None,
    )


if __name__ == "__main__":
    main()
