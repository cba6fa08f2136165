"""`epcsched exporter`: serve one node's kernel EPC figures to Prometheus.

Runs as a DaemonSet on SGX nodes, with the host's `/sys` mounted under `--sysfs-root` and the
node name from the downward API (`NODE_NAME`), so Prometheus series carry the name the scheduler
knows the node by.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterable
from pathlib import Path
from socketserver import ThreadingMixIn
from types import FrameType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import CollectorRegistry, make_wsgi_app

from epcsched import logs
from epcsched.build import VERSION, register_build_metrics
from epcsched.cli import CommandError
from epcsched.exporter.collector import EpcCollector
from epcsched.exporter.sysfs import read_epc
from epcsched.netutil import check_listen_host

log = logging.getLogger("epcsched.exporter")


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "exporter",
        help="serve this node's EPC figures (sysfs, SGX driver, misc cgroup) to Prometheus",
        description=(
            "Expose the node's EPC capacity, free EPC, paging counters and per-pod EPC on "
            "/metrics, read from the kernel's files on every scrape."
        ),
    )
    parser.add_argument(
        "--sysfs-root",
        default="/",
        metavar="DIR",
        help="directory that holds sys/ (default /; a DaemonSet mounts the host's /sys below it)",
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=9877, help="port to listen on (default 9877)")
    parser.add_argument(
        "--node-name",
        metavar="NAME",
        help="value of the `node` label (default: the NODE_NAME environment variable)",
    )
    logs.add_arguments(parser)
    parser.set_defaults(func=run)


def check_root(value: str) -> Path:
    root = Path(value)
    if not root.is_dir():
        raise CommandError(f"--sysfs-root: {value} is not a directory")
    try:
        next(root.iterdir(), None)
    except OSError as exc:
        raise CommandError(f"--sysfs-root: cannot read {value}: {exc.strerror}") from None
    return root


def node_name(flag: str | None) -> str:
    name = flag if flag is not None else os.environ.get("NODE_NAME", "")
    if not name.strip():
        raise CommandError("--node-name: not given and NODE_NAME is not set")
    return name.strip()


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        # One line per scrape and probe on every node would drown the log.
        return None


def exporter_app(root: Path, registry: CollectorRegistry) -> WSGIApplication:
    """/metrics (also /), and cheap probes that do not read the EPC files."""
    metrics = make_wsgi_app(registry)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path in ("/", "/metrics"):
            scrape: Iterable[bytes] = metrics(environ, start_response)
            return scrape
        if path == "/healthz" or (path == "/readyz" and root.is_dir()):
            status, body = "200 OK", b"ok\n"
        elif path == "/readyz":
            status, body = "503 Service Unavailable", f"{root} is not readable\n".encode()
        else:
            status, body = "404 Not Found", b"not found: try /metrics\n"
        start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
        return [body]

    return app


def serve(
    root: Path,
    node: str,
    *,
    host: str,
    port: int,
    registry: CollectorRegistry | None = None,
) -> tuple[WSGIServer, threading.Thread]:
    """Start serving in a background thread; the caller shuts the server down.

    `registry` may hold other collectors to serve beside the node's EPC figures.
    """
    registry = registry or CollectorRegistry(auto_describe=True)
    registry.register(EpcCollector(root, node))
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        server_class = type("_ExporterServer", (_Server,), {"address_family": family})
        server: WSGIServer = make_server(
            host, port, exporter_app(root, registry), server_class, handler_class=_QuietHandler
        )
    except OSError as exc:
        raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
    )
    thread.start()
    return server, thread


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise CommandError(f"--port: must be 0..65535, got {args.port}")
    try:
        check_listen_host(args.host)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    root = check_root(args.sysfs_root)
    node = node_name(args.node_name)
    reading = read_epc(root)
    if reading.sources:
        log.info("EPC sources under %s: %s", root, ", ".join(reading.sources))
    else:
        # Still serve: a node may get its SGX driver later, and an empty scrape is honest.
        log.warning("no EPC figures readable under %s; serving no EPC metrics for now", root)
    registry = CollectorRegistry(auto_describe=True)
    register_build_metrics(registry)
    server, thread = serve(root, node, host=args.host, port=args.port, registry=registry)
    log.info(
        "epcsched %s exporter for node %s listening on %s:%d",
        VERSION,
        node,
        args.host,
        server.server_port,
        extra={"version": VERSION, "node": node, "address": f"{args.host}:{server.server_port}"},
    )

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Kubernetes stops pods with SIGTERM; shut the server down cleanly rather than die mid-write.
    signal.signal(signal.SIGTERM, on_signal)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    return 0
