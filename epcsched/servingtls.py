"""A TLS server context from PEM files that follows the files as they are rotated.

An extender run as its own Deployment is reached over the network, so it serves HTTPS and, with
a client CA, requires a client certificate (mutual TLS, as kube-scheduler's extender `tlsConfig`
presents one). cert-manager and kubelet-mounted Secrets replace certificate files in place (a
symlink swap), and a certificate that expires while the extender runs would fail every
scheduling attempt; so the files are checked every few seconds and re-read when they change.

The same `SSLContext` object stays in the listening socket: `load_cert_chain` on it replaces the
certificate for the handshakes that follow, and a rotated client CA is added to the ones it
trusts (a CA is dropped only by a restart, which is also how CA rotations overlap). A half-written
rotation (a new certificate with the old key) is tried on a scratch context first, found not to
load, and retried at the next check, with the previous certificate still served.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from pathlib import Path

log = logging.getLogger("epcsched.tls")


class TlsFilesError(ValueError):
    """Certificate files that cannot be used; the message names the files and the reason."""


def _stamp(path: str) -> tuple[int, int, int]:
    info = os.stat(path)  # follows the symlinks a mounted Secret swaps
    return info.st_ino, info.st_mtime_ns, info.st_size


def _reason(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc).replace("_", " ").lower()
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


class CertificateFiles:
    """The server context for `cert`/`key`, requiring client certificates signed by `client_ca`
    when it is given."""

    def __init__(self, cert: str, key: str, *, client_ca: str | None = None) -> None:
        self.cert = cert
        self.key = key
        self.client_ca = client_ca
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.set_alpn_protocols(["http/1.1"])
        if client_ca is not None:
            self.context.verify_mode = ssl.CERT_REQUIRED
        self.reloads = 0
        self._stamps = self._load()

    @property
    def files(self) -> list[str]:
        return [self.cert, self.key] + ([self.client_ca] if self.client_ca else [])

    def _load(self) -> list[tuple[int, int, int]]:
        try:
            stamps = [_stamp(path) for path in self.files]
            # A certificate that does not match its key would leave a context that fails every
            # handshake: try the files on a scratch context before the one that serves.
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(self.cert, self.key)
            self.context.load_cert_chain(self.cert, self.key)
            if self.client_ca is not None:
                self.context.load_verify_locations(cafile=self.client_ca)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise TlsFilesError(f"cannot use {', '.join(self.files)}: {_reason(exc)}") from None
        return stamps

    def reload_if_changed(self) -> bool:
        """Re-read the files if any changed since they were last read; True if it did."""
        try:
            stamps = [_stamp(path) for path in self.files]
        except OSError as exc:
            log.warning("TLS files: %s; serving the certificate read before", _reason(exc))
            return False
        if stamps == self._stamps:
            return False
        try:
            self._stamps = self._load()
        except TlsFilesError as exc:
            log.warning("TLS files changed but %s; serving the certificate read before", exc)
            return False
        self.reloads += 1
        log.info("re-read TLS certificate %s", self.cert, extra={"files": self.files})
        return True

    async def watch(self, interval: float = 2.0) -> None:
        """Check the files every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.reload_if_changed()


def check_files(cert: str | None, key: str | None, client_ca: str | None) -> None:
    """One-line errors for flags that cannot work together, before anything starts."""
    if (cert is None) != (key is None):
        raise TlsFilesError("--tls-cert and --tls-key: give both, or neither for plain HTTP")
    if client_ca is not None and cert is None:
        raise TlsFilesError("--tls-client-ca: needs --tls-cert and --tls-key (HTTPS)")
    for flag, path in (("--tls-cert", cert), ("--tls-key", key), ("--tls-client-ca", client_ca)):
        if path is not None and not Path(path).is_file():
            raise TlsFilesError(f"{flag}: {path}: no such file")
