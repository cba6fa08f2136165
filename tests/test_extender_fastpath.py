"""The extender's own HTTP/1.1 path for the verbs answers exactly as aiohttp would.

`epcsched extender` listens with `fastpath.ExtenderSite`: plain verb calls are read and
answered by `fastpath.Connection`, and the first request that is anything else hands the
connection to aiohttp. Here one app is served by both sites at once, and the same bytes sent to
each must come back the same, byte for byte but for the `Date` header; which path served them
is told by the site's count of connections handed over.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import gzip
import json
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from epcsched.config import Config, config_from_mapping
from epcsched.extender.app import SERVICE, create_app
from epcsched.extender.fastpath import ExtenderSite
from epcsched.extender.service import ExtenderService
from epcsched.netutil import free_port
from epcsched.state import SnapshotState
from tests.helpers import names_request, node, pod, snapshot_of

LIMIT = 4096
"""`extender.maxBodyBytes` of the app under test, so a body over it is cheap to send."""
NAMES = [f"sgx-{i}" for i in range(6)]


def cluster() -> Any:
    return snapshot_of(
        *(node(name, "64Mi") for name in NAMES),
        node("plain"),
        pod("big", "60Mi", node_name="sgx-0"),
    )


MAX_HEAD = 8190
"""The longest request line and headers the fast path reads (fastpath._MAX_HEAD)."""
FILTER = names_request(*NAMES, "plain", epc="8Mi")
"""A filter that fails sgx-0 (full) and plain (no EPC): a reply with reasons."""
PRIORITIZE = names_request(*NAMES[1:], epc="8Mi")


def post(path: str, body: bytes, *headers: str, version: str = "1.1") -> bytes:
    lines = [f"POST {path} HTTP/{version}", "Host: extender", *headers]
    if not any(h.lower().startswith(("content-length", "transfer-encoding")) for h in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def head_of(size: int) -> bytes:
    """A filter whose request line and headers (up to the blank line) are `size` bytes."""
    short = post("/filter", FILTER, "X-Pad: a")
    pad = size - short.index(b"\r\n\r\n")
    return post("/filter", FILTER, "X-Pad: a" + "a" * pad)


@dataclass
class Sites:
    fast: ExtenderSite
    plain: web.TCPSite
    app: web.Application


@pytest.fixture
async def sites() -> AsyncIterator[Sites]:
    config = config_from_mapping({"extender": {"maxBodyBytes": LIMIT}})
    app = create_app(config, SnapshotState(cluster()))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    fast = ExtenderSite(runner, "127.0.0.1", 0)
    plain = web.TCPSite(runner, "127.0.0.1", 0)
    await fast.start()
    await plain.start()
    try:
        yield Sites(fast, plain, app)
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def served(**site: Any) -> AsyncIterator[ExtenderSite]:
    """The extender app with default settings, on an `ExtenderSite` (`site`: its options)."""
    runner = web.AppRunner(create_app(Config(), SnapshotState(cluster())), access_log=None)
    await runner.setup()
    try:
        listening = ExtenderSite(runner, "127.0.0.1", site.pop("port", 0), **site)
        await listening.start()
        yield listening
    finally:
        await runner.cleanup()


async def read_until(reader: asyncio.StreamReader, end: bytes) -> bytes:
    """What arrives until it ends in `end`, however long (readuntil stops at 64 KiB)."""
    received = b""
    while not received.endswith(end):
        chunk = await asyncio.wait_for(reader.read(1 << 20), 5)
        assert chunk
        received += chunk
    return received


async def transcript(port: int, pieces: list[bytes], *, quiet: float = 0.4) -> bytes:
    """What the server sends back for `pieces` (sent one by one): until it closes the
    connection, or sends nothing for `quiet` seconds."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            if len(pieces) > 1:
                await asyncio.sleep(0.005)
        received = b""
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), quiet)
            except TimeoutError:
                return received
            if not chunk:
                return received
            received += chunk
    finally:
        writer.close()


def without_date(raw: bytes) -> bytes:
    return b"\r\n".join(line for line in raw.split(b"\r\n") if not line.startswith(b"Date: "))


def replies(raw: bytes) -> list[tuple[int, bytes]]:
    """Status and body of each response in a transcript of Content-Length responses."""
    found = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next(
            int(x.split(b":")[1]) for x in lines if x.lower().startswith(b"content-length")
        )
        found.append((int(lines[0].split()[1]), rest[:length]))
        raw = rest[length:]
    return found


async def both(sites: Sites, pieces: list[bytes]) -> tuple[bytes, bytes, bool]:
    """The two transcripts, and whether the fast path answered all of its own: True when it
    never handed the connection to aiohttp, False when it handed it over once."""
    handed = sites.fast.handed_over
    fast, plain = await asyncio.gather(
        transcript(sites.fast.port, pieces), transcript(sites.plain.port, pieces)
    )
    # The client has closed; the fast path keeps no connection it handed over or lost.
    for _ in range(100):
        if not sites.fast.connections:
            break
        await asyncio.sleep(0.01)
    assert sites.fast.connections == set()
    assert sites.fast.handed_over - handed in (0, 1)
    return without_date(fast), without_date(plain), sites.fast.handed_over == handed


FAST_CASES = {
    "filter": [post("/filter", FILTER, "Content-Type: application/json")],
    "prioritize": [post("/prioritize", PRIORITIZE)],
    "preempt": [post("/preempt", b'{"Pod":' + json.dumps(pod("p", "8Mi")).encode() + b"}")],
    "bad json": [post("/filter", b'{"Pod": nope}')],
    "empty body": [post("/filter", b"")],
    "no pod": [post("/filter", b'{"NodeNames":["sgx-1"]}')],
    "keep-alive named": [post("/filter", FILTER, "Connection: Keep-Alive")],
    "blanks around a value": [post("/filter", FILTER, "User-Agent:   Go-http-client/1.1  ")],
    "pipelined": [post("/filter", FILTER) + post("/prioritize", PRIORITIZE)],
    "byte by byte head": [bytes([b]) for b in post("/filter", FILTER)[:60]]
    + [post("/filter", FILTER)[60:]],
    "body in pieces": [post("/filter", FILTER)[:-60], FILTER[-60:-30], FILTER[-30:]],
    "body exactly at the limit": [post("/filter", b" " * (LIMIT - len(FILTER)) + FILTER)],
    "head exactly at its limit": [head_of(MAX_HEAD)],
    "fifteen-digit length": [post("/filter", FILTER, f"Content-Length: {len(FILTER):015d}")],
    "second request's head split": [
        post("/filter", b" " * (LIMIT - len(FILTER)) + FILTER) + post("/filter", FILTER)[:20],
        post("/filter", FILTER)[20:],
    ],
}
"""Requests the fast path answers itself, keeping the connection."""

CLOSED_CASES = {
    "connection close": [post("/filter", FILTER, "Connection: close")],
    "close after pipelined": [
        post("/filter", FILTER) + post("/filter", FILTER, "connection: CLOSE"),
        FILTER,
    ],
}
"""Requests the fast path answers itself and then closes the connection."""

HANDED_OVER = {
    "get": [b"GET /filter HTTP/1.1\r\nHost: x\r\n\r\n"],
    "unknown path": [post("/nowhere", FILTER)],
    "query": [post("/filter?x=1", FILTER)],
    "escaped path": [post("/%66ilter", FILTER)],
    "http/1.0": [post("/filter", FILTER, version="1.0")],
    "lower-case method": [post("/filter", FILTER).replace(b"POST", b"post", 1)],
    "absolute form": [post("/filter", FILTER).replace(b"/filter", b"http://x/filter", 1)],
    "chunked": [
        post("/filter", b"", "Transfer-Encoding: chunked")
        + b"%x\r\n" % len(FILTER)
        + FILTER
        + b"\r\n0\r\n\r\n"
    ],
    "expect": [post("/filter", FILTER, "Expect: 100-continue")],
    "gzip": [post("/filter", gzip.compress(FILTER), "Content-Encoding: gzip")],
    "upgrade": [post("/filter", FILTER, "Connection: Upgrade", "Upgrade: websocket")],
    "over the limit": [post("/filter", b" " * (LIMIT + 1 - len(FILTER)) + FILTER)],
    "no length": [b"POST /filter HTTP/1.1\r\nHost: x\r\n\r\n"],
    "two lengths": [
        post("/filter", FILTER, *[f"Content-Length: {len(FILTER)}"] * 2),
    ],
    "signed length": [post("/filter", FILTER, f"Content-Length: +{len(FILTER)}")],
    "space before colon": [post("/filter", FILTER, f"Content-Length : {len(FILTER)}")],
    "folded header": [post("/filter", FILTER, "X-A: one", " two")],
    "header without colon": [post("/filter", FILTER, "Broken")],
    "control byte in a value": [post("/filter", FILTER, "X-A: a\x7fb")],
    "other connection token": [post("/filter", FILTER, "Connection: keep-alive, te")],
    # The header that decides comes last, after the length.
    "expect last": [
        post("/filter", FILTER, f"Content-Length: {len(FILTER)}", "Expect: 100-continue")
    ],
    "then a GET": [post("/filter", FILTER) + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"],
    # In a read of its own: aiohttp answers a read that ends in a bad request with that
    # request's 400 alone, where the fast path first answers the good ones before it.
    "then garbage": [post("/filter", FILTER), b"\x00\x01\x02\r\n\r\n"],
    "head too long": [post("/filter", FILTER, "X-Long: " + "a" * 9000)],
    "head one over its limit": [head_of(MAX_HEAD + 1)],
    "sixteen-digit length": [post("/filter", FILTER, f"Content-Length: {len(FILTER):016d}")],
    "two zero lengths": [post("/filter", b"", "Content-Length: 0", "Content-Length: 0")],
    "empty connection": [post("/filter", FILTER, "Connection:")],
}
"""Requests (or a request after fast ones) the fast path leaves to aiohttp."""


@pytest.mark.parametrize("pieces", FAST_CASES.values(), ids=FAST_CASES.keys())
async def test_plain_verb_calls_are_answered_on_the_fast_path_as_aiohttp_would(
    sites: Sites, pieces: list[bytes]
) -> None:
    fast, plain, kept = await both(sites, pieces)
    assert fast == plain
    assert kept
    assert fast.startswith(b"HTTP/1.1 ")
    assert b"Connection: close" not in fast


async def test_the_replies_are_the_verbs_answers(sites: Sites) -> None:
    fast, _, _ = await both(sites, FAST_CASES["pipelined"])
    (code, filtered), (code2, scored) = replies(fast)
    assert (code, code2) == (200, 200)
    reply = json.loads(filtered)
    assert reply["NodeNames"] == NAMES[1:]
    assert list(reply["FailedNodes"]) == ["sgx-0"]
    assert "insufficient sgx.intel.com/epc" in reply["FailedNodes"]["sgx-0"]
    assert list(reply["FailedAndUnresolvableNodes"]) == ["plain"]
    assert reply["Error"] == ""
    # binpack over five equally empty nodes: no host scores above the others.
    assert json.loads(scored) == []
    bad, _, _ = await both(sites, FAST_CASES["bad json"])
    [(status, body)] = replies(bad)
    assert status == 400
    assert json.loads(body)["Error"].startswith("malformed JSON: ")
    assert b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n" in bad


@pytest.mark.parametrize("pieces", CLOSED_CASES.values(), ids=CLOSED_CASES.keys())
async def test_connection_close_is_honoured_on_the_fast_path(
    sites: Sites, pieces: list[bytes]
) -> None:
    fast, plain, kept = await both(sites, pieces)
    assert fast == plain
    assert kept  # closed after the reply, not handed over: no further request is read
    assert fast.endswith(replies(fast)[-1][1])
    assert fast.count(b"Connection: close\r\n") == 1
    assert [code for code, _ in replies(fast)] == [200] * fast.count(b"HTTP/1.1 ")


@pytest.mark.parametrize("pieces", HANDED_OVER.values(), ids=HANDED_OVER.keys())
async def test_anything_else_is_left_to_aiohttp(sites: Sites, pieces: list[bytes]) -> None:
    fast, plain, kept = await both(sites, pieces)
    assert fast == plain
    assert not kept
    assert fast  # every case gets an answer, from the fast path or from aiohttp


async def test_a_connection_handed_over_stays_served(sites: Sites) -> None:
    first = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    for count in (1, 2):
        fast, plain, _ = await both(sites, [first, post("/filter", FILTER)])
        assert fast == plain
        assert [code for code, _ in replies(fast)] == [200, 200]
        assert sites.fast.handed_over == count


async def test_a_client_that_does_not_read_is_not_read_from() -> None:
    """Flow control: replies the client does not read stop the fast path reading requests,
    instead of piling up in the server; every reply arrives once the client reads."""
    # 2,000 names the cache does not know: a reply of about 100 KB, each with its reason.
    request = post("/filter", names_request(*(f"gone-{i:04d}" for i in range(2000))))
    async with served() as site:
        reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
        sent = 0
        try:
            while sent < 1000:
                writer.write(request)
                sent += 1
                try:
                    await asyncio.wait_for(writer.drain(), 0.3)
                except TimeoutError:
                    break
            # The server stopped reading long before 1,000 requests (100 MB of replies), and
            # holds about one reply beyond its transport's high-water mark (64 KiB).
            assert sent < 1000
            [connection] = site.connections
            assert connection._transport is not None
            assert connection._transport.get_write_buffer_size() < 64 * 1024 + 120_000
            received = await read_until(reader, b'""}')
            while received.count(b"HTTP/1.1 200 OK") < sent:
                received += await read_until(reader, b'""}')
            answered = replies(received)
            assert [code for code, _ in answered] == [200] * sent
            assert len(json.loads(answered[-1][1])["FailedNodes"]) == 2000
            # Writing resumed: a request handed to aiohttp now (a query string) gets its
            # whole reply, about 100 KB, through the same transport.
            writer.write(request.replace(b"POST /filter ", b"POST /filter?again=1 ", 1))
            reply = await read_until(reader, b'"Error":""}')
            assert reply.startswith(b"HTTP/1.1 200 OK")
            assert site.handed_over == 1
        finally:
            writer.close()


async def test_a_bad_request_in_the_same_read_as_good_ones(sites: Sites) -> None:
    """Where the fast path differs from aiohttp, by design: aiohttp answers a read that ends in
    a request it refuses with that request's 400 alone; the fast path answers the requests
    before it first, as it would had they come in reads of their own."""
    pieces = [post("/filter", FILTER) + b"\x00\x01\x02\r\n\r\n"]
    fast, plain, _ = await both(sites, pieces)
    assert [code for code, _ in replies(fast)] == [200, 400]
    assert [code for code, _ in replies(plain)] == [400]
    # Both 400s are aiohttp's own.
    assert plain.startswith(b"HTTP/1.0 400 Bad Request\r\n")
    assert fast.count(b"HTTP/1.0 400 Bad Request\r\n") == 1
    # Bytes after a request that asked to close: aiohttp refuses the read, the fast path
    # answers the request and closes, reading no further.
    pieces = [post("/filter", FILTER, "Connection: close") + post("/prioritize", PRIORITIZE)]
    fast, plain, kept = await both(sites, pieces)
    assert [code for code, _ in replies(fast)] == [200]
    assert kept
    assert fast.endswith(b'"Error":""}')
    assert plain.startswith(b"HTTP/1.0 400 Bad Request\r\n")


async def test_an_idle_connection_is_closed(sites: Sites) -> None:
    site = ExtenderSite(sites.fast._runner, "127.0.0.1", 0, keepalive=0.3)  # type: ignore[arg-type]
    await site.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
    loop = asyncio.get_running_loop()
    try:
        # Busy for longer than the timeout, a request every 0.1 s: kept open.
        for _ in range(5):
            writer.write(post("/filter", FILTER))
            await writer.drain()
            reply = await asyncio.wait_for(reader.readuntil(b'"Error":""}'), 2)
            assert reply.startswith(b"HTTP/1.1 200")
            await asyncio.sleep(0.1)
        assert len(site.connections) == 1
        # Then quiet: closed about 0.3 s after the last byte, not before.
        quiet_since = loop.time() - 0.1
        assert await asyncio.wait_for(reader.read(), 2) == b""
        assert 0.25 <= loop.time() - quiet_since < 1.5
        assert site.connections == set()
        # A client that connects and never sends is closed after the same time.
        silent_reader, silent = await asyncio.open_connection("127.0.0.1", site.port)
        opened = loop.time()
        assert await asyncio.wait_for(silent_reader.read(), 2) == b""
        assert 0.25 <= loop.time() - opened < 1.5
        silent.close()
    finally:
        writer.close()
        await site.stop()


async def test_stopping_closes_fast_connections(sites: Sites) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sites.fast.port)
    writer.write(post("/filter", FILTER))
    await writer.drain()
    await asyncio.wait_for(reader.readuntil(b'"Error":""}'), 2)
    assert len(sites.fast.connections) == 1
    await sites.fast.stop()
    assert await asyncio.wait_for(reader.read(), 2) == b""
    assert sites.fast.connections == set()
    writer.close()


async def test_fast_calls_are_counted_and_refusals_logged(
    sites: Sites, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="epcsched.extender"):
        _, _, kept = await both(sites, [post("/filter", FILTER) + post("/filter", b"{}")])
    assert kept
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    # One refusal from each site, each naming the path, the peer and why.
    assert len(warnings) == 2
    for record in warnings:
        assert record.getMessage().startswith("POST /filter from 127.0.0.1 answered 400: ")
        assert "Pod" in record.getMessage()
    metrics = await transcript(sites.plain.port, [b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"])
    text = metrics.decode()
    assert 'epcsched_extender_requests_total{code="200",verb="filter"} 2.0' in text
    assert 'epcsched_extender_requests_total{code="400",verb="filter"} 2.0' in text


async def test_an_internal_fault_is_a_json_500_on_both_paths(sites: Sites) -> None:
    def broken() -> Any:
        raise RuntimeError("injected")

    sites.app[SERVICE]._snapshot = broken  # what a fault inside the service looks like
    fast, plain, kept = await both(sites, [post("/filter", FILTER)])
    assert fast == plain
    assert kept
    [(code, body)] = replies(fast)
    assert code == 500
    assert json.loads(body) == {"Error": "internal error; see the extender log"}


def test_prefix_routes_are_the_fast_paths_too() -> None:
    config = config_from_mapping({"extender": {"prefix": "/epc/"}})
    app = create_app(config, SnapshotState(cluster()))
    from epcsched.extender.app import VERBS

    assert sorted(app[VERBS]) == [b"/epc/filter", b"/epc/preempt", b"/epc/prioritize"]
    assert isinstance(app[SERVICE], ExtenderService)
    assert Config().extender.max_body_bytes > LIMIT


async def test_a_fast_reply_is_dated_now_as_aiohttp_dates_it(sites: Sites) -> None:
    before = time.time()
    fast, plain = await asyncio.gather(
        transcript(sites.fast.port, [post("/filter", FILTER)]),
        transcript(sites.plain.port, [post("/filter", FILTER)]),
    )
    after = time.time()
    dates = [
        next(line[6:] for line in raw.split(b"\r\n") if line.startswith(b"Date: "))
        for raw in (fast, plain)
    ]
    # The same RFC 9110 IMF-fixdate form (`Wed, 02 Dec 2026 05:49:34 GMT`), of this second.
    assert len(dates[0]) == len(dates[1]) == 29
    assert dates[0].endswith(b" GMT")
    when = email.utils.parsedate_to_datetime(dates[0].decode()).timestamp()
    assert int(before) <= when <= after
    assert abs(when - email.utils.parsedate_to_datetime(dates[1].decode()).timestamp()) <= 1
    # And of the second it is sent in, not the one the first reply was.
    await asyncio.sleep(1.1)
    later = await transcript(sites.fast.port, [post("/filter", FILTER)])
    date = next(line[6:] for line in later.split(b"\r\n") if line.startswith(b"Date: "))
    assert email.utils.parsedate_to_datetime(date.decode()).timestamp() >= when + 1


async def test_replies_are_not_delayed_by_nagle(sites: Sites) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sites.fast.port)
    try:
        writer.write(post("/filter", FILTER))
        await asyncio.wait_for(reader.readuntil(b'"Error":""}'), 2)
        [connection] = sites.fast.connections
        assert connection._transport is not None
        sock = connection._transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        writer.close()


async def test_a_client_that_stops_sending_gets_its_reply_and_the_close(sites: Sites) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sites.fast.port)
    try:
        writer.write(post("/filter", FILTER))
        writer.write_eof()
        received = await asyncio.wait_for(reader.read(), 2)  # to the server's close
        assert [code for code, _ in replies(received)] == [200]
    finally:
        writer.close()


async def test_a_lost_connection_leaves_nothing_behind(sites: Sites) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sites.fast.port)
    writer.write(post("/filter", FILTER))
    await asyncio.wait_for(reader.readuntil(b'"Error":""}'), 2)
    [connection] = sites.fast.connections
    assert connection._idle is not None
    writer.close()
    for _ in range(100):
        if not sites.fast.connections:
            break
        await asyncio.sleep(0.01)
    assert sites.fast.connections == set()
    assert connection._idle is None  # its keep-alive timer is cancelled, not left to fire


async def test_keepalive_is_aiohttps_unless_the_runner_sets_one() -> None:
    plain = web.AppRunner(create_app(Config(), SnapshotState(cluster())))
    timed = web.AppRunner(create_app(Config(), SnapshotState(cluster())), keepalive_timeout=20)
    await plain.setup()
    await timed.setup()
    try:
        assert ExtenderSite(plain, "127.0.0.1", 0).keepalive == 3630.0  # aiohttp's default
        assert ExtenderSite(timed, "127.0.0.1", 0).keepalive == 20.0
        assert ExtenderSite(timed, "127.0.0.1", 0, keepalive=0.5).keepalive == 0.5
    finally:
        await plain.cleanup()
        await timed.cleanup()


async def test_an_idle_timer_does_not_close_a_connection_handed_to_aiohttp(sites: Sites) -> None:
    site = ExtenderSite(sites.fast._runner, "127.0.0.1", 0, keepalive=0.3)  # type: ignore[arg-type]
    await site.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", site.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await asyncio.wait_for(reader.readuntil(b"ok\n"), 2)).startswith(b"HTTP/1.1 200")
        assert site.handed_over == 1
        # aiohttp's own keep-alive (3630 s) applies now: served past the fast path's 0.3 s.
        for _ in range(4):
            await asyncio.sleep(0.2)
            writer.write(post("/filter", FILTER))
            reply = await asyncio.wait_for(reader.readuntil(b'"Error":""}'), 2)
            assert reply.startswith(b"HTTP/1.1 200")
    finally:
        writer.close()
        await site.stop()


async def test_a_request_handed_over_while_replies_wait_is_answered_after_them() -> None:
    """Verb calls whose replies the client does not read yet, and a GET behind them in the
    same read: the fast path stops reading for the waiting replies, hands the connection over
    at the GET, and aiohttp must answer it and read on."""
    async with served() as site:
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.setblocking(False)
        await asyncio.get_running_loop().sock_connect(client, ("127.0.0.1", site.port))
        reader, writer = await asyncio.open_connection(sock=client)
        try:
            writer.write(post("/filter", FILTER))
            await read_until(reader, b'"Error":""}')
            # Small buffers on both sides, so the first big reply waits in the server.
            [connection] = site.connections
            transport = connection._transport
            assert transport is not None
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            transport.set_write_buffer_limits(high=1)
            # 300 names the cache does not know: a 6 KB request with a reply of about 15 KB.
            request = post("/filter", names_request(*(f"gone-{i:04d}" for i in range(300))))
            writer.write(request * 4 + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.sleep(0.3)
            assert site.handed_over == 1
            assert connection._writing_paused  # handed over while the replies waited
            received = await read_until(reader, b"ok\n")
            assert received.count(b"HTTP/1.1 200 OK") == 5
            writer.write(post("/filter", FILTER))
            reply = await read_until(reader, b'"Error":""}')
            assert reply.startswith(b"HTTP/1.1 200")
        finally:
            writer.close()


async def test_the_site_listens_where_it_is_told() -> None:
    port = free_port()
    async with served(port=port) as site:
        assert site.port == port
        assert site._server is not None
        assert [s.getsockname() for s in site._server.sockets] == [("127.0.0.1", port)]
        assert site.handed_over == 0
        assert site.connections == set()


async def test_a_head_is_held_to_its_limit_and_no_further(sites: Sites) -> None:
    """A head still coming in is held while it may yet fit (8,190 bytes and its blank line)
    and handed to aiohttp as soon as the bytes in show it cannot."""
    for size, cut, handed in ((MAX_HEAD, MAX_HEAD + 2, 0), (MAX_HEAD + 1, MAX_HEAD + 4, 1)):
        request = head_of(size)
        before = sites.fast.handed_over
        reader, writer = await asyncio.open_connection("127.0.0.1", sites.fast.port)
        try:
            writer.write(request[:cut])
            await writer.drain()
            await asyncio.sleep(0.1)
            assert sites.fast.handed_over - before == handed
            writer.write(request[cut:])
            reply = await asyncio.wait_for(reader.readuntil(b'"Error":""}'), 2)
            assert reply.startswith(b"HTTP/1.1 200 OK")
            assert sites.fast.handed_over - before == handed
        finally:
            writer.close()


async def test_the_fast_path_serves_tls(tmp_path: Path) -> None:
    from tests.test_extender_tls import Authority, client_context

    ca = Authority(tmp_path, "ca")
    serving = ca.issue("epcsched-extender", server=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(serving.cert), str(serving.key))
    async with served(ssl_context=context) as site:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", site.port, ssl=client_context(ca, None), server_hostname="127.0.0.1"
        )
        writer.write(post("/filter", FILTER))
        reply = await read_until(reader, b'"Error":""}')
        assert reply.startswith(b"HTTP/1.1 200 OK")
        assert json.loads(reply.partition(b"\r\n\r\n")[2])["NodeNames"] == NAMES[1:]
        assert site.handed_over == 0
        assert writer.get_extra_info("ssl_object").version().startswith("TLS")
        writer.close()
