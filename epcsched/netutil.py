"""Loopback helpers for the programs that start servers of their own (demos, live checks)."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on `host` a moment ago (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_listen_host(host: str, *, flag: str = "--host") -> None:
    """Raise ValueError with a one-line message if `host` cannot be an address to listen on."""
    try:
        socket.getaddrinfo(host or None, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) and exc.strerror else str(exc)
        raise ValueError(f"{flag}: cannot listen on {host!r}: {reason}") from None
