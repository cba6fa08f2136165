"""Watch events are read line by line whatever way the server cuts the stream into chunks.

Protects the informer's own line splitting (issue 10: one wake-up per chunk instead of the
stream's line search): an event split over several chunks, several events in one chunk, blank
lines, and a last event the server closes the stream on without its newline all reach the
snapshot, in order; a line that never ends is refused once it passes the limit, and the watch is
resumed from the last version the informer saw. A real kubernetes-asyncio client reads from an
HTTP server on loopback that writes the chunks exactly as given.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from epcsched.config import Config
from epcsched.kube.client import load_configuration
from epcsched.kube.informer import MAX_EVENT_BYTES, InformerSettings, InformerState
from epcsched.testing.apiserver import kubeconfig
from tests.kube_helpers import MI, node, pod

FAST = InformerSettings(backoff_initial=0.01, backoff_max=0.05, watch_timeout=(60, 60))
EPC = "sgx.intel.com/epc"


def line(kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


def versioned(obj: dict[str, Any], version: int) -> dict[str, Any]:
    obj["metadata"]["resourceVersion"] = str(version)
    return obj


class Server:
    """Lists one node and no pods at version 1; the pod watches answer with `watches` in turn
    (each a list of byte chunks, written one by one), then stay open and quiet."""

    def __init__(self, watches: list[list[bytes]]) -> None:
        self.watches = watches
        self.asked: list[str] = []
        """The resourceVersion each pod watch started from."""

    async def nodes(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("watch"):
            return await self.quiet(request)
        items = [versioned(node("n1", "100Mi"), 1)]
        return web.json_response({"metadata": {"resourceVersion": "1"}, "items": items})

    async def pods(self, request: web.Request) -> web.StreamResponse:
        if not request.query.get("watch"):
            return web.json_response({"metadata": {"resourceVersion": "1"}, "items": []})
        self.asked.append(request.query.get("resourceVersion", ""))
        if not self.watches:
            return await self.quiet(request)
        chunks = self.watches.pop(0)
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for chunk in chunks:
            await response.write(chunk)
            await asyncio.sleep(0.01)  # each its own HTTP chunk, read on its own
        await response.write_eof()
        return response

    async def quiet(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await asyncio.sleep(30)
        return response


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Any]:
    runners: list[web.AppRunner] = []

    async def start(server: Server) -> InformerState:
        app = web.Application()
        app.router.add_get("/api/v1/nodes", server.nodes)
        app.router.add_get("/api/v1/pods", server.pods)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        runners.append(runner)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        path = tmp_path / "kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig(f"http://127.0.0.1:{port}", None)))
        return InformerState(await load_configuration(path), Config(), settings=FAST)

    yield start
    for runner in runners:
        await runner.cleanup()


async def until(check: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


def used(state: InformerState) -> int:
    snap = state.snapshot
    return int(snap.epc[EPC].requested[snap.slots["n1"]])


async def test_events_cut_anywhere_arrive_whole_and_in_order(serve: Any) -> None:
    a = line("ADDED", versioned(pod("a", "10Mi", node_name="n1", phase="Running"), 2))
    b = line("ADDED", versioned(pod("b", "20Mi", node_name="n1", phase="Running"), 3))
    c = line("MODIFIED", versioned(pod("a", "30Mi", node_name="n1", phase="Running"), 4))
    d = line("ADDED", versioned(pod("d", "1Mi", node_name="n1", phase="Running"), 5))
    bookmark = line("BOOKMARK", {"kind": "Pod", "metadata": {"resourceVersion": "6"}})
    last = line("DELETED", versioned(pod("b", "20Mi", node_name="n1", phase="Running"), 7))
    chunks = [
        a[:5], a[5:40], a[40:],  # one event over three chunks
        b + c[:10],  # an event and the start of the next
        c[10:] + b"\n" + d + bookmark,  # the rest of it, a blank line, two more
        last[:-1],  # the last event, and the server closes without its newline
    ]  # fmt: skip
    server = Server([chunks])
    state = await serve(server)
    await state.start()
    try:
        await state.wait_synced(timeout=5)
        assert state.pods is not None
        await until(lambda: state.pods is not None and state.pods.status.events == 5)
        snap = state.snapshot
        assert sorted(snap.pods) == ["default/a", "default/d"]
        assert snap.pods["default/a"].epc == {EPC: 30 * MI}
        assert used(state) == 31 * MI
        # The next watch resumes after the last event.
        await until(lambda: len(server.asked) == 2)
        assert server.asked == ["1", "7"]
        assert state.pods.status.bookmarks == 1
        assert state.pods.status.errors == 0
    finally:
        await state.stop()


async def test_a_line_that_never_ends_is_refused_and_the_watch_resumed(serve: Any) -> None:
    a = line("ADDED", versioned(pod("a", "10Mi", node_name="n1", phase="Running"), 2))
    endless = [a, b'{"type":"ADDED","object":{"metadata":{"name":"' + b"x" * MAX_EVENT_BYTES]
    b = line("ADDED", versioned(pod("b", "20Mi", node_name="n1", phase="Running"), 3))
    server = Server([endless, [b]])
    state = await serve(server)
    await state.start()
    try:
        await state.wait_synced(timeout=5)
        assert state.pods is not None
        await until(lambda: "default/b" in state.snapshot.pods, timeout=10)
        assert used(state) == 30 * MI
        assert state.pods.status.errors == 1
        assert f"longer than {MAX_EVENT_BYTES} bytes" in state.pods.status.last_error
        # Resumed from the event before the broken one.
        assert server.asked[:2] == ["1", "2"]
    finally:
        await state.stop()
