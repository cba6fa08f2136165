"""The autoscaler's Prometheus metrics (DESIGN.md section 7 names)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from epcsched.core.autoscale import SCALE_DOWN, SCALE_UP, Decision

POOL_STATES = ("current", "target", "in-flight", "usable")


class AutoscalerMetrics:
    """Counters and gauges one autoscaler process exports on `/metrics`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.scale_total = Counter(
            "epcsched_autoscaler_scale",
            "Nodes added (direction=up) or removed (direction=down) by the autoscaler, per pool.",
            ["pool", "direction"],
            registry=registry,
        )
        self.pool_size = Gauge(
            "epcsched_autoscaler_pool_size",
            "Nodes per pool: current (provider), target (after this loop), in-flight (asked "
            "for, not usable yet), usable (Ready with EPC allocatable).",
            ["pool", "state"],
            registry=registry,
        )
        self.unschedulable = Gauge(
            "epcsched_autoscaler_unschedulable_pods",
            "Pending EPC pods that no pool can help now.",
            registry=registry,
        )
        self.backoff = Gauge(
            "epcsched_autoscaler_backoff",
            "1 while the pool is backed off after a failure.",
            ["pool"],
            registry=registry,
        )
        self.loop_seconds = Histogram(
            "epcsched_autoscaler_loop_seconds",
            "Time of one observe-plan-act loop.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.leader = Gauge(
            "epcsched_autoscaler_leader",
            "1 while this replica holds the autoscaler Lease and acts.",
            registry=registry,
        )
        self.errors = Counter(
            "epcsched_autoscaler_errors",
            "Failed calls, by what failed: provider, drain, status, kubernetes.",
            ["what"],
            registry=registry,
        )
        for what in ("provider", "drain", "status", "kubernetes"):
            self.errors.labels(what)

    def pools(self, names: list[str]) -> None:
        """Create every pool's series at zero so dashboards see them before the first change."""
        for name in names:
            for direction in ("up", "down"):
                self.scale_total.labels(name, direction)
            self.backoff.labels(name).set(0)

    def observe(self, decision: Decision, usable: dict[str, int], backed_off: set[str]) -> None:
        for pool in decision.pools:
            self.pool_size.labels(pool.name, "current").set(pool.current_size)
            self.pool_size.labels(pool.name, "target").set(pool.target_size)
            self.pool_size.labels(pool.name, "in-flight").set(pool.in_flight)
            self.pool_size.labels(pool.name, "usable").set(usable.get(pool.name, 0))
            self.backoff.labels(pool.name).set(1 if pool.name in backed_off else 0)
        self.unschedulable.set(len(decision.unschedulable))

    def scaled(self, pool: str, action: str, count: int) -> None:
        if count > 0 and action in (SCALE_UP, SCALE_DOWN):
            self.scale_total.labels(pool, "up" if action == SCALE_UP else "down").inc(count)
