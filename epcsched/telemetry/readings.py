"""From Prometheus query results to what placement uses: EPC in use and pressure, per node.

Kept apart from the poller so the rules (which samples are fresh enough, when a node is under
pressure, how the reason reads) are plain functions of the query results and the time, with no
network or clock in them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from epcsched.config import PressureSettings
from epcsched.quantity import format_bytes

Vector = list[dict[str, Any]]
"""The `result` of an instant query: `[{"metric": {labels}, "value": [time, "text"]}, ...]`."""


@dataclass(frozen=True, slots=True)
class QueryResults:
    """The vectors one poll got back; None for a query the poll did not need to run."""

    used: Vector
    freshness: Vector | None = None
    capacity: Vector | None = None
    paging: Vector | None = None


@dataclass(frozen=True, slots=True)
class Readings:
    """What one poll means for placement."""

    usage: dict[str, int] = field(default_factory=dict)
    """Measured EPC in use in bytes, for nodes with fresh data."""
    pressure: dict[str, str] = field(default_factory=dict)
    """Nodes under EPC pressure, with the reason, for nodes with fresh data."""
    fresh_nodes: int = 0
    """Nodes whose newest sample is within staleAfter."""
    fresh: frozenset[str] = frozenset()
    """Their names."""
    newest: dict[str, float] = field(default_factory=dict)
    """Each node's newest sample time known after this poll (the freshness query's, or an
    earlier poll's where a missed scrape hid it), for the next poll to remember."""
    stale_nodes: tuple[str, ...] = ()
    """Nodes whose newest sample is older than staleAfter, left to requests."""
    problem: str | None = None
    """Why the poll as a whole gives nothing to use (no samples, all too old); None if usable."""


def by_node(
    vector: Iterable[Mapping[str, Any]], label: str, combine: Callable[..., float]
) -> dict[str, float]:
    """Values of `vector` per node label, several series of one node combined; NaN is dropped."""
    values: dict[str, list[float]] = {}
    for series in vector:
        node = series.get("metric", {}).get(label)
        try:
            value = float(series["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if not node or not math.isfinite(value):
            continue
        values.setdefault(node, []).append(value)
    return {node: combine(vs) for node, vs in values.items()}


def _number(value: float) -> str:
    if value == int(value):
        return str(int(value))
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _percent(share: float) -> str:
    return f"{share * 100:.1f}".rstrip("0").rstrip(".") + "%"


def pressure_reason(
    settings: PressureSettings,
    *,
    paging: float | None,
    used: int | None,
    capacity: float | None,
) -> str | None:
    """Why a node must take no new EPC pods, or None when it may."""
    why: list[str] = []
    if settings.paging_rate is not None and paging is not None and paging > settings.paging_rate:
        why.append(f"paging {_number(paging)} pages/s above {_number(settings.paging_rate)}")
    watermark = settings.usage_watermark
    if watermark is not None and used is not None and capacity is not None and capacity > 0:
        share = used / capacity
        if share > watermark:
            why.append(
                f"{_percent(share)} of EPC in use ({format_bytes(used)} of "
                f"{format_bytes(int(capacity))}), above {_percent(watermark)}"
            )
    return "EPC pressure: " + "; ".join(why) if why else None


def evaluate(
    results: QueryResults,
    *,
    label: str,
    now: float,
    stale_after: float,
    pressure: PressureSettings,
    seen: Mapping[str, float] | None = None,
) -> Readings:
    """Usage and pressure per node from one poll's results, as seen at time `now`.

    `seen` holds each node's newest sample time from earlier polls: when a scrape fails,
    Prometheus marks the node's series stale at once and an instant query of their timestamps
    returns nothing, while the values (looked back over a window) still do. The node's reading
    then holds until its last sample is older than `stale_after`, instead of blinking out.
    """
    used = by_node(results.used, label, sum)
    capacity = by_node(results.capacity or [], label, sum)
    paging = by_node(results.paging or [], label, sum)
    nodes = set(used) | set(capacity) | set(paging)
    stale: list[str] = []
    newest: dict[str, float] = {}
    if results.freshness is not None:
        newest = by_node(results.freshness, label, max)
        for node, when in (seen or {}).items():
            if node in nodes and when > newest.get(node, -math.inf):
                newest[node] = when
        nodes |= set(newest)
        stale = sorted(n for n in nodes if now - newest.get(n, -math.inf) > stale_after)
        if not nodes:
            return Readings(problem="no EPC samples in Prometheus for the configured queries")
        if not newest:
            return Readings(
                problem="the freshness query gave no sample times: set prometheus.freshnessQuery "
                "for your metrics, or to an empty string to skip the check"
            )
        if len(stale) == len(nodes):
            age = now - max(newest.values())
            return Readings(
                stale_nodes=tuple(stale),
                newest=newest,
                problem=f"newest EPC sample is {age:.0f}s old, older than staleAfter "
                f"{stale_after:g}s",
            )
    elif not nodes:
        return Readings(problem="no EPC samples in Prometheus for the configured queries")
    skip = set(stale)
    usage: dict[str, int] = {}
    reasons: dict[str, str] = {}
    for node in sorted(nodes - skip):
        # capacity - free below zero means the sources disagree: unknown, not zero.
        in_use = round(used[node]) if node in used and used[node] >= 0 else None
        if in_use is not None:
            usage[node] = in_use
        reason = pressure_reason(
            pressure, paging=paging.get(node), used=in_use, capacity=capacity.get(node)
        )
        if reason is not None:
            reasons[node] = reason
    return Readings(
        usage=usage,
        pressure=reasons,
        fresh_nodes=len(nodes) - len(skip),
        fresh=frozenset(nodes - skip),
        stale_nodes=tuple(stale),
        newest=newest,
    )
