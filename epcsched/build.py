"""What a running epcsched says about itself: its version and the standard process metrics.

An operator comparing replicas, or a dashboard after a rollout, needs to know which build each
process runs: `epcsched --version`, the first log line of every server, and the
`epcsched_build_info{version}` series all carry the same version, read from the installed
package's metadata so it cannot drift from `pyproject.toml`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from prometheus_client import (
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.registry import CollectorRegistry


def _version() -> str:
    try:
        return version("epcsched")
    except PackageNotFoundError:  # pragma: no cover - run from a tree that was never installed
        return "unknown"


VERSION = _version()


def register_build_metrics(registry: CollectorRegistry) -> None:
    """`epcsched_build_info{version}` plus prometheus_client's process, platform and GC
    collectors (the `process_*` and `python_*` series every Python exporter has) in
    `registry`; call once per registry."""
    info = Gauge(
        "epcsched_build_info",
        "Always 1; the epcsched version this process runs.",
        ["version"],
        registry=registry,
    )
    info.labels(version=VERSION).set(1)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
