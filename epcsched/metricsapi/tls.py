"""TLS for the metrics API: always on, client certificates checked against the front-proxy CA,
and every refused handshake logged.

An aggregated API server is only ever reached over TLS. Client certificates are requested but
optional (a `kubectl get --raw` user may come with a bearer token instead); one that is offered
must chain to the front-proxy CA or the handshake fails. Python's `ssl` gives no callback to let
a bad certificate through to a 401, and asyncio's own TLS server drops failed handshakes without
a word outside debug mode, so `TlsSite` accepts plain TCP and runs the handshake itself with
`loop.start_tls`: a refusal is logged with the peer and the reason (unknown CA, expired, no
shared protocol), and only a finished handshake reaches aiohttp. The context is looked up per
connection, so a rotated front-proxy CA takes effect for the next client without a restart.

Without `--tls-cert`/`--tls-key` a self-signed serving certificate is made at start-up, as
kube's own aggregated servers do; the APIService then says `insecureSkipTLSVerify: true`, or
you mount a certificate its `caBundle` names (README.md).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import os
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

log = logging.getLogger("epcsched.metricsapi.tls")

HANDSHAKE_TIMEOUT = 10.0


class ServingTls:
    """The serving certificate and the client CA; builds the context new connections use."""

    def __init__(self, cert_file: str | Path, key_file: str | Path) -> None:
        self.cert_file = str(cert_file)
        self.key_file = str(key_file)
        self.client_ca: str | None = None
        self.context = self._build(None)

    def _build(self, client_ca: str | None) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file)
        context.set_alpn_protocols(["http/1.1"])
        if client_ca:
            # Requested, not required: bearer-token clients have no certificate. One that is
            # offered must chain to this CA, or the handshake fails.
            context.verify_mode = ssl.CERT_OPTIONAL
            context.load_verify_locations(cadata=client_ca)
        return context

    def trust(self, client_ca: str | None) -> None:
        """Verify client certificates against `client_ca` (PEM) from the next connection on."""
        if client_ca == self.client_ca:
            return
        self.context = self._build(client_ca)
        self.client_ca = client_ca


def self_signed(directory: str | Path, hosts: list[str]) -> tuple[Path, Path]:
    """A fresh self-signed serving certificate for `hosts` (names or IPs): (cert, key) files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder = Path(directory)
    cert_path = folder / "serving.crt"
    key_path = folder / "serving.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


def self_signed_tls(hosts: list[str]) -> ServingTls:
    """A `ServingTls` with a self-signed certificate kept in a private temporary directory."""
    directory = tempfile.mkdtemp(prefix="epcsched-metrics-api-")
    cert, key = self_signed(directory, hosts)
    return ServingTls(cert, key)


def _peer(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer or "unknown peer")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc).replace("_", " ").lower() + (
            f" ({exc.verify_message})"
            if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message
            else ""
        )
    if isinstance(exc, TimeoutError):
        return f"no handshake within {HANDSHAKE_TIMEOUT:g}s"
    return str(exc) or type(exc).__name__


class _Handshake(asyncio.Protocol):
    """Holds a new TCP connection through the TLS handshake, then hands it to aiohttp."""

    def __init__(
        self, factory: Callable[[], asyncio.Protocol], context: Callable[[], ssl.SSLContext]
    ) -> None:
        self._factory = factory
        self._context = context
        self._task: asyncio.Task[None] | None = None
        self._early: list[bytes] = []
        self._eof = False
        self._lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        # Nothing may be read before the TLS layer is in place; start_tls resumes reading.
        transport.pause_reading()
        self._task = asyncio.get_running_loop().create_task(self._upgrade(transport))

    async def _upgrade(self, transport: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        try:
            tls = await loop.start_tls(
                transport,
                self,
                self._context(),
                server_side=True,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
            )
        except (OSError, TimeoutError, ConnectionError) as exc:
            log.warning("refused TLS connection from %s: %s", _peer(transport), _reason(exc))
            transport.abort()
            return
        if tls is None or self._lost:
            transport.abort()
            return
        protocol = self._factory()
        tls.set_protocol(protocol)
        protocol.connection_made(tls)
        # Request bytes that arrived with the end of the handshake were given to us.
        for chunk in self._early:
            protocol.data_received(chunk)
        self._early.clear()
        if self._eof:
            protocol.eof_received()

    def data_received(self, data: bytes) -> None:
        self._early.append(data)

    def eof_received(self) -> bool | None:
        self._eof = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True


class TlsSite(web.BaseSite):
    """An aiohttp site on host:port whose TLS handshakes are run (and refusals logged) here."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        tls: ServingTls,
        *,
        backlog: int = 128,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._tls = tls

    @property
    def name(self) -> str:
        return f"https://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        tls = self._tls
        self._server = await loop.create_server(
            lambda: _Handshake(server, lambda: tls.context),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
        )
