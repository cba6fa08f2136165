"""The Prometheus side of the metrics API: one instant query per kind of series, cached briefly.

The HPA controller asks every 15 s per HPA, and each answer covers every pod (or node) at once,
so a query's result is kept for `cacheTtl` and shared by all requests in that time; requests that
arrive while a query is in flight wait for that same query instead of starting their own. A
query that fails is not cached: the next request tries again. Failures are a `SourceError` whose
message says what went wrong, which the API answers with 503 (the HPA then keeps its replica
count and reports the condition). Each query sent (not each answer from the cache) is reported
to an optional observer with its duration and outcome, for the server's own /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from epcsched.telemetry.readings import by_node

log = logging.getLogger("epcsched.metricsapi")


class SourceError(Exception):
    """Prometheus gave no usable answer; the message is for the HPA's conditions and the log."""


@dataclass(frozen=True, slots=True)
class Query:
    promql: str
    label: str
    """The label whose value keys the result (`pod` UID or `node`)."""


@dataclass(frozen=True, slots=True)
class Series:
    time: float
    """When Prometheus evaluated the query (Unix seconds)."""
    values: dict[str, float]


class PrometheusSource:
    """Runs the named queries against Prometheus' HTTP API, each cached for `cache_ttl`."""

    def __init__(
        self,
        url: str,
        queries: Mapping[str, Query],
        *,
        cache_ttl: float = 10.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        observer: Callable[[str, float, bool], None] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.queries = dict(queries)
        self.cache_ttl = cache_ttl
        self.timeout = timeout
        # Wall-clock time: Prometheus evaluates at the time given, and the tests pin it.
        self._clock = clock
        self._monotonic = time.monotonic
        self._cache: dict[str, tuple[float, Series]] = {}
        self._inflight: dict[str, asyncio.Future[Series]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._observer = observer
        """Called with (query name, seconds, answered usefully) for every query sent."""
        self.queries_sent = 0
        """Queries sent to Prometheus so far (the cache's effect shows here)."""

    async def series(self, name: str) -> Series:
        """The result of query `name`, from the cache while it is younger than `cache_ttl`."""
        cached = self._cache.get(name)
        if cached is not None and self._monotonic() - cached[0] < self.cache_ttl:
            return cached[1]
        pending = self._inflight.get(name)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch(name))
            self._inflight[name] = pending
            pending.add_done_callback(lambda _: self._inflight.pop(name, None))
        # Shielded: one waiter giving up (a client that went away) must not cancel the query
        # that the others wait for.
        return await asyncio.shield(pending)

    async def _fetch(self, name: str) -> Series:
        query = self.queries[name]
        at = self._clock()
        self.queries_sent += 1
        started = time.perf_counter()
        try:
            body = await self._get(query.promql, at)
        except SourceError:
            self._observe(name, time.perf_counter() - started, ok=False)
            raise
        self._observe(name, time.perf_counter() - started, ok=True)
        values = by_node(body, query.label, max)
        series = Series(at, values)
        self._cache[name] = (self._monotonic(), series)
        return series

    def _observe(self, name: str, seconds: float, *, ok: bool) -> None:
        if self._observer is not None:
            self._observer(name, seconds, ok)

    async def _get(self, promql: str, at: float) -> list[dict[str, Any]]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.get(
                f"{self.url}/api/v1/query", params={"query": promql, "time": f"{at:.3f}"}
            ) as response:
                text = await response.text()
                status = response.status
        except TimeoutError:
            raise SourceError(
                f"Prometheus at {self.url} did not answer within {self.timeout:g}s"
            ) from None
        except aiohttp.ClientError as exc:
            raise SourceError(f"cannot reach Prometheus at {self.url}: {exc}") from None
        try:
            answer = json.loads(text)
        except ValueError:
            raise SourceError(
                f"Prometheus at {self.url} answered HTTP {status} with a body that is not JSON"
            ) from None
        if not isinstance(answer, dict) or answer.get("status") != "success":
            error = answer.get("error") if isinstance(answer, dict) else None
            raise SourceError(
                f"Prometheus rejected query {promql!r}: HTTP {status}: {error or 'no error text'}"
            )
        data = answer.get("data")
        if not isinstance(data, dict) or data.get("resultType") != "vector":
            raise SourceError(f"Prometheus answered query {promql!r} with a non-vector result")
        result = data.get("result")
        return result if isinstance(result, list) else []

    async def close(self) -> None:
        for pending in list(self._inflight.values()):
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, SourceError):
                await pending
        if self._session is not None:
            await self._session.close()
            self._session = None
