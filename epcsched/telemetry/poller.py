"""Telemetry: polls Prometheus for measured EPC and feeds it into the live snapshot.

Placement works on requests alone; measured use and paging make it better (DESIGN.md section 4).
This poller asks Prometheus every `prometheus.interval` for EPC in use, capacity, paging and the
time of each node's newest sample, and writes usage and pressure into the snapshot. When
Prometheus cannot answer, or its newest data is older than `staleAfter`, it clears everything it
wrote within that same poll, so decisions fall back to requests rather than trusting old figures.
Degradation shows in the `epcsched_telemetry_stale` gauge and the `/readyz` body and is logged
once when it starts and once when it ends, never on every poll.

prometheus-api-client is synchronous (requests), so queries run in a worker thread; the snapshot
is only touched back on the event loop, between requests.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_client import CollectorRegistry, Counter, Gauge
from urllib3.util.retry import Retry

from epcsched.config import PressureSettings, PrometheusSettings
from epcsched.core.snapshot import ClusterSnapshot
from epcsched.telemetry.readings import QueryResults, Readings, Vector, evaluate

log = logging.getLogger("epcsched.telemetry")

_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")
_API_BODY = re.compile(r"^HTTP Status Code (\d+) \((b['\"].*['\"])\)$", re.DOTALL)


class TelemetryError(Exception):
    """A poll that got nothing usable from Prometheus; the message is for operators."""


class Telemetry:
    """Polls Prometheus and applies measured EPC use and pressure to the cluster snapshot."""

    def __init__(
        self,
        settings: PrometheusSettings,
        pressure: PressureSettings,
        snapshot_provider: Callable[[], ClusterSnapshot],
        registry: CollectorRegistry,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not settings.url:
            raise ValueError("prometheus.url: required for telemetry")
        self.settings = settings
        self.pressure = pressure
        self._snapshot_provider = snapshot_provider
        # Wall-clock time: it is compared with Prometheus sample timestamps.
        self._clock = clock
        # No retries inside a poll: the next poll is the retry, and a poll must end well within
        # one interval so that a dead Prometheus is noticed in time.
        self._prometheus = PrometheusConnect(
            url=settings.url.rstrip("/"),
            retry=Retry(total=0, read=False, raise_on_status=False),
            timeout=settings.timeout,
        )
        self._task: asyncio.Task[None] | None = None
        self._stale = True
        self._announced: bool | None = None
        self._error: str | None = "no poll yet"
        self._last_success: float | None = None
        self._readings = Readings()
        self._pressured: set[str] = set()
        self._seen: dict[str, float] = {}
        """Each node's newest sample time as of the last poll (see `evaluate`)."""
        self.change_listeners: list[Callable[[], None]] = []
        """Called on the event loop after a poll changed the snapshot (figures applied or
        withdrawn): every node's measured use is replaced at once."""

        self._stale_gauge = Gauge(
            "epcsched_telemetry_stale",
            "1 while EPC telemetry is unavailable or too old and decisions use requests alone.",
            registry=registry,
        )
        self._stale_gauge.set(1)
        self._polls = Counter(
            "epcsched_telemetry_polls",
            "Prometheus polls by outcome: ok, stale (answered, but no fresh data) or error.",
            ["result"],
            registry=registry,
        )
        for result in ("ok", "stale", "error"):
            self._polls.labels(result)
        self._last_success_gauge = Gauge(
            "epcsched_telemetry_last_success_timestamp_seconds",
            "When a poll last gave fresh EPC data (Unix time).",
            registry=registry,
        )
        self._pressure_gauge = Gauge(
            "epcsched_telemetry_pressure_nodes",
            "Nodes failed for new EPC pods because of measured EPC pressure.",
            registry=registry,
        )

    # ----- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Start polling in the background; the first poll runs at once."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="epcsched-telemetry")

    async def stop(self) -> None:
        """Stop polling and withdraw what was applied; idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._withdraw()
            self._prometheus.close()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A bug here must not leave old figures in place or kill the poller for good.
                log.exception("telemetry poll failed unexpectedly")
                self._degrade(f"internal error: {exc!r}", outcome="error")
            await asyncio.sleep(max(0.0, self.settings.interval - (loop.time() - started)))

    # ----- one poll ----------------------------------------------------------------------------
    async def poll(self) -> None:
        """Query Prometheus once and apply the result (or the fallback) to the snapshot."""
        now = self._clock()
        try:
            readings = await asyncio.to_thread(self._read, now, dict(self._seen))
        except TelemetryError as exc:
            self._degrade(str(exc), outcome="error")
            return
        self._seen = readings.newest
        if readings.problem is not None:
            self._readings = readings
            self._degrade(readings.problem, outcome="stale")
            return
        self._apply(readings, now)

    def _read(self, now: float, seen: dict[str, float]) -> Readings:
        """Query and evaluate in the worker thread: only applying is left for the event loop."""
        return evaluate(
            self._query_all(now),
            label=self.settings.node_label,
            now=now,
            stale_after=self.settings.stale_after,
            pressure=self.pressure,
            seen=seen,
        )

    def _query_all(self, now: float) -> QueryResults:
        s = self.settings
        used = self._query(s.used_query, now)
        freshness = self._query(s.freshness_query, now) if s.freshness_query else None
        # Capacity and paging only matter for pressure; skip them when it is off.
        capacity = (
            self._query(s.capacity_query, now)
            if self.pressure.usage_watermark is not None
            else None
        )
        paging = self._query(s.paging_query, now) if self.pressure.paging_rate is not None else None
        return QueryResults(used=used, freshness=freshness, capacity=capacity, paging=paging)

    def _query(self, query: str, now: float) -> Vector:
        url = self.settings.url
        try:
            result = self._prometheus.custom_query(query, params={"time": f"{now:.3f}"})
        except requests.Timeout:
            raise TelemetryError(
                f"Prometheus at {url} did not answer within {self.settings.timeout:g}s"
            ) from None
        except requests.ConnectionError as exc:
            found = _ERRNO.search(str(exc))
            cause = found[1].strip() if found else type(exc).__name__
            raise TelemetryError(f"cannot reach Prometheus at {url}: {cause}") from None
        except requests.RequestException as exc:
            raise TelemetryError(f"query to Prometheus at {url} failed: {exc}") from None
        except PrometheusApiClientException as exc:
            raise TelemetryError(
                f"Prometheus rejected query {query!r}: {_api_error(exc)}"
            ) from None
        except ValueError as exc:
            raise TelemetryError(f"Prometheus at {url} sent an unreadable answer: {exc}") from None
        if not isinstance(result, list):
            raise TelemetryError(f"Prometheus answered query {query!r} with a non-vector result")
        return result

    # ----- applying ------------------------------------------------------------------------------
    def _apply(self, readings: Readings, now: float) -> None:
        snapshot = self._snapshot_provider()
        snapshot.clear_usage()
        for node, used in readings.usage.items():
            snapshot.set_usage(node, used)
        # Only withdraw pressure this poller set: other owners of the snapshot may set their own.
        for node in self._pressured - readings.pressure.keys():
            snapshot.set_pressure(node, None)
        for node, reason in readings.pressure.items():
            snapshot.set_pressure(node, reason)
        self._pressured = set(readings.pressure)
        self._changed()
        self._readings = readings
        self._last_success = now
        self._error = None
        self._stale = False
        self._stale_gauge.set(0)
        self._last_success_gauge.set(now)
        self._pressure_gauge.set(len(readings.pressure))
        self._polls.labels("ok").inc()
        if self._announced is not False:
            log.info(
                "EPC telemetry from %s: measured use for %d nodes, %d under pressure",
                self.settings.url,
                len(readings.usage),
                len(readings.pressure),
            )
            self._announced = False

    def _withdraw(self) -> None:
        snapshot = self._snapshot_provider()
        snapshot.clear_usage()
        for node in self._pressured:
            snapshot.set_pressure(node, None)
        self._pressured = set()
        self._pressure_gauge.set(0)
        self._changed()

    def _changed(self) -> None:
        for listener in self.change_listeners:
            listener()

    def _degrade(self, error: str, *, outcome: str) -> None:
        self._withdraw()
        self._error = error
        self._stale = True
        self._stale_gauge.set(1)
        self._polls.labels(outcome).inc()
        if self._announced is not True:
            log.warning("EPC telemetry degraded, placing by requests alone: %s", error)
            self._announced = True

    # ----- health --------------------------------------------------------------------------------
    @property
    def stale(self) -> bool:
        """True while decisions use requests alone because telemetry is missing or too old."""
        return self._stale

    def detail(self) -> dict[str, object]:
        """Telemetry health for the `/readyz` body."""
        age = None if self._last_success is None else round(self._clock() - self._last_success, 1)
        body: dict[str, object] = {
            "prometheus": self.settings.url,
            "stale": self._stale,
            "lastSuccessAgeSeconds": age,
            "error": self._error,
        }
        stale = self._readings.stale_nodes
        if not self._stale:
            body["nodes"] = self._readings.fresh_nodes
            body["pressureNodes"] = len(self._readings.pressure)
            # EPC nodes Prometheus has no reading for at all (no exporter there, or its series
            # gone for longer than the queries look back) are left to requests too.
            known = self._readings.fresh | set(stale)
            stale = tuple(
                sorted(
                    {*stale, *(n for n in _epc_nodes(self._snapshot_provider()) if n not in known)}
                )
            )
        if stale:
            body["staleNodes"] = _some(stale)
        return body


def _api_error(exc: PrometheusApiClientException) -> str:
    """Prometheus' own error text from the client's exception, which holds the raw body."""
    found = _API_BODY.match(str(exc))
    if found is not None:
        with contextlib.suppress(ValueError, SyntaxError):
            body = json.loads(ast.literal_eval(found[2]))
            if isinstance(body, dict) and isinstance(body.get("error"), str):
                return f"HTTP {found[1]}: {body['error']}"
    return str(exc)[:300]


def _epc_nodes(snapshot: ClusterSnapshot) -> list[str]:
    """Nodes that advertise any EPC resource."""
    names = snapshot.slot_names
    has = np.zeros(len(names), dtype=np.bool_)
    for column in snapshot.epc.values():
        has |= column.has[: len(names)]
    return [name for i in np.flatnonzero(has).tolist() if (name := names[i]) is not None]


def _some(names: tuple[str, ...], limit: int = 10) -> Mapping[str, Any]:
    """A count and the first few names: a /readyz body must stay small on big clusters."""
    return {"count": len(names), "names": list(names[:limit])}
