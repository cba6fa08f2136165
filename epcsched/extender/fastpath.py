"""HTTP/1.1 for the extender verbs without aiohttp's per-request machinery.

kube-scheduler waits for each filter and prioritize reply before it goes on, and aiohttp
spends about 0.1 ms of that wait per request on what these verbs do not use: a request object,
a payload stream, a response object and a task step. Each verb call kube-scheduler makes is a
plain `POST` with a `Content-Length` body, answered from the body alone with nothing to await
(`app.Verb`). `Connection` reads such requests itself and answers them through the same `Verb`,
counted, timed and logged as aiohttp's handler would be (`app.answer_observed`).

The first request that is anything else (another path or method, HTTP/1.0, a chunked or
compressed body, `Expect`, `Upgrade`, a header line it does not read plainly, a body over
`extender.maxBodyBytes`) hands the connection, with every byte read so far, to aiohttp's own
protocol, which serves it from then on. So whatever is not a plain verb call gets aiohttp's
behaviour exactly: its 404, 405, 413 and 400 replies, its limits, keep-alive and shutdown. The
one difference is in a single read that holds good requests and then one aiohttp refuses (or
any bytes after a request that asked to close): aiohttp answers the refusal alone, the fast
path answers the good requests first, as it would had they come in reads of their own.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import inspect
import re
import time
from http import HTTPStatus
from ssl import SSLContext

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.tcp_helpers import tcp_nodelay
from aiohttp.web_protocol import RequestHandler

from epcsched.extender.app import CONFIG, VERBS, Call, Verb, answer_observed

_REQUEST_LINE = re.compile(rb"POST (/[-A-Za-z0-9._~!$&'()*+,;=:@/]*) HTTP/1\.1\r\n")
"""A request line the fast path reads: POST, an origin-form path without query or percent
escapes (so the bytes are the path aiohttp would route), HTTP/1.1."""
_FIELD = re.compile(rb"([-!#$%&'*+.^_`|~0-9A-Za-z]+):[ \t]*((?:[!-~]+[ \t]+)*[!-~]+)?[ \t]*\r\n")
"""One header line: a token, a colon, a value of visible ASCII (inner blanks kept)."""
_HANDED_OVER = frozenset((b"transfer-encoding", b"content-encoding", b"expect", b"upgrade"))
"""Headers that change how the body is read or what the reply must be: aiohttp's to serve."""
_MAX_HEAD = 8190
"""Bytes of request line and headers read before the connection goes to aiohttp, whose own
line and field limits then answer."""
KEEPALIVE: float = inspect.signature(RequestHandler).parameters["keepalive_timeout"].default
"""Seconds a connection may send nothing before it is closed, unless the runner sets its own:
aiohttp's keep-alive timeout, so a connection is kept as long whichever path serves it."""
_JSON_HEAD = b"Content-Type: application/json\r\nContent-Length: "

_STATUS = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}


@functools.lru_cache(maxsize=1)
def _date(second: int) -> bytes:
    """The `Date` header value for a Unix time, formatted once per second."""
    return email.utils.formatdate(second, usegmt=True).encode()


class Connection(asyncio.Protocol):
    """One client connection: plain verb calls answered here, the rest handed to aiohttp."""

    def __init__(self, site: ExtenderSite) -> None:
        self._site = site
        self._app = site.app
        self._verbs: dict[bytes, Verb] = site.app[VERBS]
        self._limit = site.app[CONFIG].extender.max_body_bytes
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._remote: str | None = None
        self._held = bytearray()
        """Bytes received that do not make a whole request yet."""
        self._need: int | None = None
        """How many bytes the held request has in all, once its head is in."""
        self._seen = self._loop.time()
        """When the client last sent anything."""
        self._idle: asyncio.TimerHandle | None = None
        self._writing_paused = False

    # ----- asyncio.Protocol --------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._transport = transport
        # As aiohttp does: a reply goes out at once, not held back for the client's ACK.
        tcp_nodelay(transport, True)
        peer = transport.get_extra_info("peername")
        self._remote = str(peer[0]) if peer else None
        self._site.connections.add(self)
        self._idle = self._loop.call_later(self._site.keepalive, self._check_idle)

    def data_received(self, data: bytes) -> None:
        self._seen = self._loop.time()
        held = self._held
        if held:
            held += data
            if self._need is not None and len(held) < self._need:
                return
            data = bytes(held)
            held.clear()
        self._serve(data)

    def eof_received(self) -> bool:
        # A request cut short has no answer; an idle client hanging up needs none.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._site.connections.discard(self)
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def pause_writing(self) -> None:
        # A client that sends requests without reading the replies is not read from either,
        # so replies do not pile up here.
        self._writing_paused = True
        assert self._transport is not None
        self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        assert self._transport is not None
        self._transport.resume_reading()

    # ----- requests ----------------------------------------------------------------------
    def _serve(self, data: bytes) -> None:
        """Answer each whole request in `data`; hold an incomplete one, hand over the rest."""
        pos = 0
        while True:
            head_end = data.find(b"\r\n\r\n", pos, pos + _MAX_HEAD + 4)
            if head_end == -1:
                if len(data) - pos >= _MAX_HEAD + 4:
                    self._hand_over(data[pos:])
                else:
                    self._hold(data[pos:], None)
                return
            read = self._head(data, pos)
            if read is None:
                self._hand_over(data[pos:])
                return
            verb, path, length, close = read
            end = head_end + 4 + length
            if end > len(data):
                self._hold(data[pos:], end - pos)
                return
            call = Call(verb.name, "POST", path, self._remote)
            code, reply = answer_observed(self._app, verb, data[head_end + 4 : end], call)
            self._reply(code, reply, close)
            if close:
                return  # and read no further: the client asked to close
            if end == len(data):
                return
            pos = end

    def _head(self, data: bytes, start: int) -> tuple[Verb, str, int, bool] | None:
        """The verb, path, body length and whether to close after the reply, for a request
        whose head starts at `start` (its blank line known to be in `data`); None when it is
        not a plain verb call."""
        line = _REQUEST_LINE.match(data, start)
        if line is None:
            return None
        path = line.group(1)
        verb = self._verbs.get(path)
        if verb is None:
            return None
        length: int | None = None
        close = False
        pos = line.end()
        while not data.startswith(b"\r\n", pos):
            field = _FIELD.match(data, pos)
            if field is None:
                return None
            pos = field.end()
            name, value = field.group(1).lower(), field.group(2)
            if name == b"content-length":
                if length is not None or value is None or not value.isdigit() or len(value) > 15:
                    return None
                length = int(value)
            elif name == b"connection":
                if value is None:
                    return None
                token = value.lower()
                if token == b"close":
                    close = True
                elif token != b"keep-alive":
                    return None
            elif name in _HANDED_OVER:
                return None
        if length is None or length > self._limit:
            return None
        return verb, path.decode(), length, close

    def _reply(self, code: int, reply: bytes, close: bool) -> None:
        transport = self._transport
        assert transport is not None
        head = b"".join(
            (
                _STATUS[code],
                _JSON_HEAD,
                str(len(reply)).encode(),
                b"\r\nDate: ",
                _date(int(time.time())),
                b"\r\nServer: ",
                _SERVER,
                b"\r\nConnection: close\r\n\r\n" if close else b"\r\n\r\n",
            )
        )
        transport.writelines((head, reply))
        if close:
            transport.close()

    def _hold(self, data: bytes, need: int | None) -> None:
        self._held += data
        self._need = need

    def _hand_over(self, data: bytes) -> None:
        """From now on aiohttp serves this connection, starting with `data`."""
        transport = self._transport
        assert transport is not None
        self._site.connections.discard(self)
        self._site.handed_over += 1
        if self._idle is not None:
            self._idle.cancel()
        handler = self._site.server()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self._writing_paused:
            # Reading was paused for replies not taken yet: aiohttp now waits for them.
            handler.pause_writing()
            transport.resume_reading()
        handler.data_received(data)

    def _check_idle(self) -> None:
        transport = self._transport
        assert transport is not None
        due = self._seen + self._site.keepalive
        if self._loop.time() >= due:
            transport.close()
        else:
            self._idle = self._loop.call_at(due, self._check_idle)

    def close(self) -> None:
        assert self._transport is not None
        self._transport.close()


_SERVER = SERVER_SOFTWARE.encode()


class ExtenderSite(web.TCPSite):
    """A TCP site of the extender app whose connections start on the fast path (`Connection`)
    and go to aiohttp's protocol at the first request that is not a plain verb call."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str | None = None,
        port: int | None = None,
        *,
        ssl_context: SSLContext | None = None,
        keepalive: float | None = None,
    ) -> None:
        super().__init__(runner, host, port, ssl_context=ssl_context)
        self.app = runner.app
        if keepalive is None:
            keepalive = float(runner._kwargs.get("keepalive_timeout", KEEPALIVE))
        self.keepalive = keepalive
        """Seconds a connection may send nothing before it is closed."""
        self.connections: set[Connection] = set()
        self.handed_over = 0
        """Connections handed to aiohttp so far."""

    def server(self) -> RequestHandler:
        server = self._runner.server
        assert server is not None
        return server()

    async def start(self) -> None:
        # aiohttp's TCPSite.start with a protocol factory of our own, and asyncio's defaults
        # for what this site does not take (backlog, address and port reuse).
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Connection(self), self._host, self._port, ssl=self._ssl_context
        )
        self._bound_port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        await super().stop()
        # No call is ever in progress on a fast-path connection between events: close them.
        for connection in list(self.connections):
            connection.close()
        self.connections.clear()
