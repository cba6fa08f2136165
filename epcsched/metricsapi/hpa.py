"""What a HorizontalPodAutoscaler does with the metrics this package serves: its replica rule.

The metrics API only serves values; whether they make a Deployment grow is the HPA controller's
arithmetic (kube-controller-manager, `pkg/controller/podautoscaler`). It lives here once, pure,
so that the demo can print the replica count an HPA derives from the values served, and the
simulator scales its Deployments by the very same rule. The arithmetic is the controller's own,
step for step (an integer average, then a float64 ratio), because boundary cases fall by it: at
880m against an 800m target the ratio 1.1 is, in float64, a hair more than 10 % away from 1 and
the controller scales, while at 720m it is a hair less and the count stays.

- `replicas_for_pods_metric`: a `type: Pods` metric with an `AverageValue` target, such as
  `sgx_epc_usage_ratio` at `averageValue: 800m`: the average of the pods' values over the target;
- `replicas_for_utilization`: a `type: Resource` metric with an `averageUtilization` target, such
  as CPU at 70 %: total use over total requests, in whole percent as the controller truncates it;
- both keep the replica count while the ratio is within `tolerance` (10 %) of 1, and otherwise
  ask for `ceil(ratio * pods measured)`. Pods still Pending are left out, and so are running pods
  without a sample; when that could change the answer they are filled back in the controller's
  cautious way (on a scale-up as using nothing, a pod without a sample on a scale-down as sitting at
  the target) and the count is kept if the direction would flip;
- `Behavior.next_replicas`: the `behavior` applied to that raw count, with the defaults an HPA
  gets when it names none: a scale-down takes the highest recommendation of the last
  `scale_down_window` (300 s), a scale-up at most doubles or adds 4 pods per sync (whichever is
  more), and the result stays within `[min_replicas, max_replicas]`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

TOLERANCE = 0.1
"""kube-controller-manager's `--horizontal-pod-autoscaler-tolerance` default."""
SYNC_PERIOD = 15.0
"""Seconds between two reconciliations of one HPA (`--horizontal-pod-autoscaler-sync-period`)."""


class NoMetrics(ValueError):
    """No ready pod has a value: the controller keeps the scale and reports the condition."""


def _settle(
    current: int,
    measured: int,
    ratio: float,
    refilled: tuple[float, int] | None,
    tolerance: float,
) -> int:
    """The rule once the ratio is known. `refilled` is the ratio and pod count with the pods
    left out filled back in, or None when none need to be."""
    if refilled is None:
        if abs(1.0 - ratio) <= tolerance:
            return current
        return math.ceil(ratio * measured)
    new_ratio, count = refilled
    if abs(1.0 - new_ratio) <= tolerance or (ratio < 1 < new_ratio) or (new_ratio < 1 < ratio):
        return current
    desired = math.ceil(new_ratio * count)
    # Counting more pods must never turn a scale-up into a scale-down or the other way round.
    if (new_ratio < 1 and desired > current) or (new_ratio > 1 and desired < current):
        return current
    return desired


def replicas_for_pods_metric(
    current: int,
    values: Sequence[int],
    target: int,
    *,
    unready: int = 0,
    missing: int = 0,
    tolerance: float = TOLERANCE,
) -> int:
    """Replicas an HPA asks for on a Pods metric with an AverageValue target.

    `values` are the ready pods' values and `target` the target, both in thousandths
    (`Quantity.MilliValue()`: `950m` is 950, `2` is 2000); `unready` counts pods still Pending,
    `missing` running pods the metrics API left out (no sample). `current` is the scale's
    replica count. Raises `NoMetrics` when `values` is empty.
    """
    if not values:
        raise NoMetrics("no ready pod has a value")
    if target <= 0:
        raise ValueError(f"target must be positive, got {target}")
    total = sum(values)
    # The controller's GetMetricUsageRatio: a truncated integer average over a float target.
    ratio = (total // len(values)) / target
    rebalance = unready > 0 and ratio > 1
    refilled = None
    if rebalance or missing:
        # Scale-up: the pods left out count as using nothing; scale-down: a pod without a
        # sample counts as sitting exactly at the target.
        fill = missing * target if ratio < 1 else 0
        count = len(values) + missing + (unready if rebalance else 0)
        refilled = (((total + fill) // count) / target, count)
    return _settle(current, len(values), ratio, refilled, tolerance)


def replicas_for_utilization(
    current: int,
    usage: Sequence[int],
    requests: Sequence[int],
    target_percent: int,
    *,
    unready_requests: Sequence[int] = (),
    missing_requests: Sequence[int] = (),
    tolerance: float = TOLERANCE,
) -> int:
    """Replicas an HPA asks for on a Resource metric with an averageUtilization target.

    `usage[i]` and `requests[i]` are ready pod i's use and request (CPU in millicores, say);
    `unready_requests` and `missing_requests` the requests of Pending pods and of running pods
    without a sample. Utilization is whole percent, truncated, as the controller computes it.
    """
    if not usage:
        raise NoMetrics("no ready pod has a value")
    if len(usage) != len(requests):
        raise ValueError("usage and requests must describe the same pods")
    if target_percent <= 0:
        raise ValueError(f"target_percent must be positive, got {target_percent}")
    used, requested = sum(usage), sum(requests)
    if requested <= 0:
        raise ValueError("the pods request none of the resource")
    ratio = (used * 100 // requested) / target_percent
    rebalance = bool(unready_requests) and ratio > 1
    refilled = None
    if rebalance or missing_requests:
        fill = sum(missing_requests) if ratio < 1 else 0
        extra = sum(missing_requests) + (sum(unready_requests) if rebalance else 0)
        count = len(usage) + len(missing_requests) + (len(unready_requests) if rebalance else 0)
        new_ratio = ((used + fill) * 100 // (requested + extra)) / target_percent
        refilled = (new_ratio, count)
    return _settle(current, len(usage), ratio, refilled, tolerance)


@dataclass(frozen=True, slots=True)
class Behavior:
    """An HPA's bounds and `behavior`, with the controller's defaults."""

    min_replicas: int = 1
    max_replicas: int = 10
    scale_down_window: float = 300.0
    """Seconds of recommendations a scale-down takes the highest of (stabilizationWindowSeconds)."""
    scale_up_window: float = 0.0
    """Seconds of recommendations a scale-up takes the lowest of."""

    def next_replicas(
        self,
        current: int,
        desired: int,
        now: float,
        history: tuple[tuple[float, int], ...] = (),
    ) -> tuple[int, tuple[tuple[float, int], ...]]:
        """The replica count to set and the recommendations to remember for the next sync.

        `desired` is the raw count of the replica rule; `history` the (time, recommendation)
        pairs kept from earlier syncs. One sync per `SYNC_PERIOD` is assumed for the scale-up
        limit: the default policies (100 % and 4 pods per 15 s) then allow
        `max(2 * current, current + 4)`.
        """
        if current > self.max_replicas:
            return self.max_replicas, history
        if current < self.min_replicas:
            return self.min_replicas, history
        up_cutoff = now - self.scale_up_window
        down_cutoff = now - self.scale_down_window
        lowest = highest = desired
        for at, recommended in history:
            if at > up_cutoff:
                lowest = min(lowest, recommended)
            if at > down_cutoff:
                highest = max(highest, recommended)
        # Only as high as every recent recommendation allows, only as low as every one allows.
        chosen = min(max(current, lowest), highest)
        oldest = min(up_cutoff, down_cutoff)
        kept = (*(entry for entry in history if entry[0] > oldest), (now, desired))
        if chosen > current:
            chosen = min(chosen, max(2 * current, current + 4), self.max_replicas)
        elif chosen < current:
            chosen = max(chosen, self.min_replicas)
        return chosen, kept
