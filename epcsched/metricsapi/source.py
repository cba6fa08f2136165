"""Where the metrics API's measurements come from: any `MetricsSource`, Prometheus or memory.

The app asks a source for a named series (`usage`, `limit_hits`, `node_used`, `node_paging`;
see `app.queries_of`) and gets one `Series`: values keyed by pod UID or node name, and the time
they were read. `PrometheusSource` runs PromQL; `MemorySource` answers from values held in
memory and set by its owner, so that the demo (and anything else that has no Prometheus) serves
exactly what the real server serves, through the same app, authentication and documents.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Protocol

from epcsched.metricsapi.prometheus import Series

SERIES = ("usage", "limit_hits", "node_used", "node_paging")
"""The names the app asks for."""


class MetricsSource(Protocol):
    """What the app needs from a source of measurements."""

    @property
    def url(self) -> str:
        """Where the values come from, for /readyz and the logs."""
        ...

    async def series(self, name: str) -> Series:
        """The current values of series `name`; raises `SourceError` when there are none to
        give (the API then answers 503)."""
        ...

    async def close(self) -> None: ...


class MemorySource:
    """Series held in memory: `set` replaces one, `series` returns it stamped with `clock()`."""

    def __init__(
        self,
        values: Mapping[str, Mapping[str, float]] | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._values: dict[str, dict[str, float]] = {name: {} for name in SERIES}
        for name, series in (values or {}).items():
            self.set(name, series)
        self._clock = clock

    @property
    def url(self) -> str:
        return "in-process values (no Prometheus)"

    def set(self, name: str, values: Mapping[str, float]) -> None:
        """Replace series `name` (one of `SERIES`) with `values`."""
        if name not in SERIES:
            raise KeyError(f"unknown series {name!r} (known: {', '.join(SERIES)})")
        self._values[name] = dict(values)

    async def series(self, name: str) -> Series:
        return Series(self._clock(), dict(self._values[name]))

    async def close(self) -> None:
        return None
