"""A proven lower bound on the nodes a workload needs if no pod ever waits.

If every pod ran from its submit time for its duration, then at each moment the pods running
would have to be bin-packed, by EPC, into the nodes present; so no run in which no pod waited can
have fewer nodes at its peak than `max over t of OPT(EPC of the pods active at t)`. Only the
moments when the active set is maximal (an arrival followed by a departure before the next
arrival) can give the maximum, since a subset never needs more bins.

The bound is the largest Martello-Toth L2 bound (Martello & Toth, 1990) over those moments,
itself a proven lower bound on `OPT`. It is then proven exact where seconds allow: every moment
that could need more bins is packed first-fit-decreasing, and where that does not meet L2, the
bin packing is solved with `scipy.optimize.milp` (up to `EXACT_MAX_ITEMS` pods). `method` is
`milp` when the bound is the exact optimum and `l2` when it is the L2 bound only.

Bins are the pool template's EPC less the headroom. With several pools, each pool gets its own
figure; the overall bound uses the pool with the most EPC per node, since swapping any
node for a bigger one never hurts.

The bound in dollars (the pools' `costPerHour`) holds for any mix of pools. At each moment, a
run without waiting pays at least (a) for each running pod, its EPC at the lowest price per byte
among the pools whose nodes can hold it (every node's price spread over its EPC), and (b) the
cheapest node's price times the nodes needed in the biggest template, since no mix of smaller
nodes needs fewer. `cost_per_hour` is the larger of the two at the worst moment (b with the
bound on peak nodes), and `cost` integrates it over the horizon (b with the node-hours figure's
nodes at each moment).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

from epcsched.simulation.scenario import Scenario
from epcsched.simulation.workload import Workload

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

#: Largest set of pods handed to the MILP; beyond it only matching bounds prove the optimum.
EXACT_MAX_ITEMS = 80
#: Wall-clock budget for proving the bound exact (over all pools), in seconds.
EXACT_BUDGET_S = 5.0


@dataclass(frozen=True, slots=True)
class PoolBound:
    """The bound in nodes of one pool's template."""

    pool: str
    capacity: int
    """EPC bytes one node offers (allocatable less headroom)."""
    peak_nodes: int
    method: str
    """`milp` (exact) or `l2` (Martello-Toth lower bound)."""
    at_s: float
    """A moment at which the bound is reached."""
    pods_excluded: int
    """Pods too big for this template (they can never run on it)."""

    def to_json(self) -> dict[str, object]:
        return {
            "peakNodes": self.peak_nodes,
            "method": self.method,
            "atS": round(self.at_s, 3),
            "podsExcluded": self.pods_excluded,
        }


@dataclass(frozen=True, slots=True)
class LowerBound:
    peak_nodes: int
    method: str
    per_pool: dict[str, PoolBound]
    node_hours: float = 0.0
    """Node-hours (of the biggest template) below which no run without waiting can go."""
    cost_per_hour: float = 0.0
    """Dollars an hour no run without waiting can stay below at its busiest."""
    cost: float = 0.0
    """Dollars over the horizon below which no run without waiting can go."""

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "peakNodes": self.peak_nodes,
            "method": self.method,
            "nodeHours": round(self.node_hours, 4),
            "costPerHourAtPeak": round(self.cost_per_hour, 4),
            "cost": round(self.cost, 4),
        }
        if len(self.per_pool) > 1:
            data["perPool"] = {name: b.to_json() for name, b in self.per_pool.items()}
        return data


def l2_bound(sizes: IntArray, capacity: int) -> int:
    """Martello-Toth L2: a lower bound on the bins of size `capacity` that hold `sizes`."""
    w = np.sort(sizes[sizes > 0])
    if w.shape[0] == 0:
        return 0
    big = w[2 * w > capacity]
    small = w[2 * w <= capacity]
    big_prefix = np.concatenate(([0], np.cumsum(big)))
    small_suffix = np.concatenate((np.cumsum(small[::-1])[::-1], [0]))
    alphas = np.unique(np.concatenate(([0], small)))
    j2_count = np.searchsorted(big, capacity - alphas, side="right")
    j2_sum = big_prefix[j2_count]
    j3_sum = small_suffix[np.searchsorted(small, alphas, side="left")]
    spill = j3_sum - (j2_count * capacity - j2_sum)
    extra = np.where(spill > 0, -(-spill // capacity), 0)
    return int(big.shape[0] + int(extra.max()))


def first_fit_decreasing(sizes: IntArray, capacity: int) -> int:
    """Bins first-fit-decreasing uses: an upper bound on the optimum."""
    free: list[int] = []
    for size in sorted((int(s) for s in sizes if s > 0), reverse=True):
        for i, room in enumerate(free):
            if room >= size:
                free[i] = room - size
                break
        else:
            free.append(capacity - size)
    return len(free)


def exact_bins(sizes: IntArray, capacity: int, *, upper: int, time_limit: float) -> int | None:
    """The optimal number of bins by MILP, or None if not proven within `time_limit` seconds."""
    items = sorted((int(s) for s in sizes if s > 0), reverse=True)
    n = len(items)
    if n == 0:
        return 0
    scale = math.gcd(capacity, *items)
    w = [s // scale for s in items]
    cap = capacity // scale
    bins = upper
    # x[i, j] only for j <= i (item i goes in one of the first i+1 bins), then y[j].
    index: dict[tuple[int, int], int] = {}
    for i in range(n):
        for j in range(min(i + 1, bins)):
            index[(i, j)] = len(index)
    nx = len(index)
    y0 = nx
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    lower: list[float] = []
    upper_b: list[float] = []
    r = 0
    for i in range(n):
        for j in range(min(i + 1, bins)):
            rows.append(r)
            cols.append(index[(i, j)])
            vals.append(1.0)
        lower.append(1.0)
        upper_b.append(1.0)
        r += 1
    for j in range(bins):
        for i in range(j, n):
            rows.append(r)
            cols.append(index[(i, j)])
            vals.append(float(w[i]))
        rows.append(r)
        cols.append(y0 + j)
        vals.append(-float(cap))
        lower.append(-math.inf)
        upper_b.append(0.0)
        r += 1
    for j in range(bins - 1):
        rows += [r, r]
        cols += [y0 + j, y0 + j + 1]
        vals += [1.0, -1.0]
        lower.append(0.0)
        upper_b.append(math.inf)
        r += 1
    matrix = sparse.csr_array((vals, (rows, cols)), shape=(r, nx + bins))
    cost = np.concatenate((np.zeros(nx), np.ones(bins)))
    result = milp(
        cost,
        constraints=LinearConstraint(matrix, lower, upper_b),
        integrality=np.ones(nx + bins),
        bounds=Bounds(0, 1),
        options={"time_limit": max(time_limit, 0.1)},
    )
    if result.status != 0 or result.x is None:
        return None
    x = np.rint(result.x).astype(np.int64)
    # Check the packing in integers: the solver's tolerances must not smuggle in an overfull bin.
    loads = [0] * bins
    for (i, j), k in index.items():
        if x[k]:
            loads[j] += w[i]
    if any(load > cap for load in loads):
        return None
    return sum(1 for load in loads if load > 0)


def _maximal_moments(submit: FloatArray, end: FloatArray) -> FloatArray:
    """Arrival times after which a pod leaves before the next arrival (or the last arrival)."""
    arrivals = np.unique(submit)
    ends = np.sort(end)
    nxt = np.append(arrivals[1:], np.inf)
    # A departure in (t, next arrival] makes the set at t maximal.
    left = np.searchsorted(ends, arrivals, side="right")
    right = np.searchsorted(ends, nxt, side="right")
    return np.asarray(arrivals[right > left], dtype=np.float64)


def _pool_bound(
    name: str, capacity: int, submit: FloatArray, end: FloatArray, epc: IntArray, deadline: float
) -> PoolBound:
    fits = epc <= capacity
    excluded = int((~fits).sum())
    submit, end, epc = submit[fits], end[fits], epc[fits]
    if epc.shape[0] == 0 or capacity <= 0:
        return PoolBound(name, capacity, 0, "milp", 0.0, excluded)
    moments = _maximal_moments(submit, end)
    order_s = np.argsort(submit, kind="stable")
    order_e = np.argsort(end, kind="stable")
    arrived = np.searchsorted(submit[order_s], moments, side="right")
    left = np.searchsorted(end[order_e], moments, side="right")

    def running(values: IntArray) -> IntArray:
        """Sum of `values` over the pods active at each moment."""
        into = np.concatenate(([0], np.cumsum(values[order_s])))
        out = np.concatenate(([0], np.cumsum(values[order_e])))
        return np.asarray(into[arrived] - out[left], dtype=np.int64)

    total = running(epc)
    bigs = running((2 * epc > capacity).astype(np.int64))
    pods = running(np.ones_like(epc))

    def active(k: int) -> IntArray:
        t = float(moments[k])
        return epc[(submit <= t) & (end > t)]

    # Phase 1: the largest L2 over the moments, pruned by L2 <= big pods + ceil(sum / capacity).
    l2_ceiling = bigs + (-(-total // capacity))
    best, best_at = 0, 0.0
    for k in np.argsort(-l2_ceiling, kind="stable").tolist():
        if int(l2_ceiling[k]) <= best:
            break
        low = l2_bound(active(k), capacity)
        if low > best:
            best, best_at = low, float(moments[k])
    # Phase 2: prove no moment needs more. Any-fit packing leaves at most one bin half empty,
    # so OPT <= 2 * sum / capacity + 1 (and <= pods); first-fit-decreasing, then the MILP,
    # settle the moments this cannot. Out of time or MILP reach, the bound stays L2.
    ceiling = np.minimum(pods, 2 * total // capacity + 1)
    proven = True
    for k in np.argsort(-ceiling, kind="stable").tolist():
        if int(ceiling[k]) <= best:
            break
        if time.monotonic() > deadline:
            proven = False
            break
        items = active(k)
        high = first_fit_decreasing(items, capacity)
        if high <= best:
            continue
        low = l2_bound(items, capacity)
        if low == high:
            optimum: int | None = high
        elif items.shape[0] <= EXACT_MAX_ITEMS:
            budget = deadline - time.monotonic()
            optimum = exact_bins(items, capacity, upper=high, time_limit=budget)
        else:
            optimum = None
        if optimum is None:
            proven = False
            break
        if optimum > best:
            best, best_at = optimum, float(moments[k])
    return PoolBound(name, capacity, best, "milp" if proven else "l2", best_at, excluded)


def lower_bound(
    scenario: Scenario, workload: Workload, *, budget: float = EXACT_BUDGET_S
) -> LowerBound:
    """The bound of the module docstring for `workload` on `scenario`'s pool templates;
    `budget` is the wall-clock seconds allowed for proving it exact."""
    within = workload.submit <= scenario.horizon
    submit = workload.submit[within]
    end = submit + workload.duration[within]
    epc = workload.epc[within]
    enclaves = epc > 0
    submit, end, epc = submit[enclaves], end[enclaves], epc[enclaves]
    deadline = time.monotonic() + budget
    per_pool: dict[str, PoolBound] = {}
    for pool in scenario.pools:
        allocatable = pool.template.epc_allocatable.get(scenario.epc_resource, 0)
        capacity = allocatable - scenario.headroom.of(allocatable)
        per_pool[pool.settings.name] = _pool_bound(
            pool.settings.name, capacity, submit, end, epc, deadline
        )
    biggest = max(per_pool.values(), key=lambda b: (b.capacity, b.pool))
    hours = _node_hours(submit, end, epc, biggest.capacity, scenario.horizon)
    prices = [
        (per_pool[pool.settings.name].capacity, pool.settings.cost_per_hour)
        for pool in scenario.pools
    ]
    rate, cost = _cost_bound(submit, end, epc, prices, biggest, scenario.horizon)
    return LowerBound(biggest.peak_nodes, biggest.method, per_pool, hours, rate, cost)


def _sweep(
    submit: FloatArray, end: FloatArray, epc: IntArray, *columns: npt.NDArray[Any]
) -> tuple[FloatArray, list[npt.NDArray[Any]]]:
    """Event times in order (departures before arrivals at equal times, as everywhere else)
    and, for each column of per-pod values, its sum over the pods running after each event."""
    times = np.concatenate((submit, end))
    order = np.lexsort((np.concatenate((epc, -epc)), times))
    sums = [np.cumsum(np.concatenate((c, -c))[order]) for c in columns]
    return np.asarray(times[order], dtype=np.float64), sums


def _cost_bound(
    submit: FloatArray,
    end: FloatArray,
    epc: IntArray,
    prices: list[tuple[int, float]],
    biggest: PoolBound,
    horizon: float,
) -> tuple[float, float]:
    """(dollars an hour at the worst moment, dollars over the horizon) of the module
    docstring; `prices` are (EPC bytes a node offers, costPerHour) per pool."""
    capacity = biggest.capacity
    held = [(cap, price) for cap, price in prices if cap > 0]
    fits = epc <= capacity
    if capacity <= 0 or not fits.any():
        return 0.0, 0.0
    submit, end, epc = submit[fits], end[fits], epc[fits]
    cheapest_node = min(price for _, price in held)
    per_byte = np.full(epc.shape, np.inf)
    for cap, price in held:
        per_byte = np.where(epc <= cap, np.minimum(per_byte, price / cap), per_byte)
    pod_rate = epc * per_byte
    _, (rates,) = _sweep(submit, end, epc, pod_rate)
    peak = max(float(rates.max()), biggest.peak_nodes * cheapest_node)
    live = submit < horizon
    times, (rates, total, bigs) = _sweep(
        submit[live],
        np.minimum(end[live], horizon),
        epc[live],
        pod_rate[live],
        epc[live],
        (2 * epc[live] > capacity).astype(np.int64),
    )
    nodes = np.maximum(-(-total // capacity), bigs)
    spans = np.diff(np.append(times, horizon))
    cost = float((np.maximum(rates, nodes * cheapest_node) * spans).sum()) / 3600.0
    return peak, cost


def _node_hours(
    submit: FloatArray, end: FloatArray, epc: IntArray, capacity: int, horizon: float
) -> float:
    """Node-hours no run without waiting can go below: the integral over [0, horizon] of
    max(ceil(EPC running / capacity), pods over half a node), each a lower bound on OPT(t)."""
    fits = (epc <= capacity) & (submit < horizon)
    if capacity <= 0 or not fits.any():
        return 0.0
    submit, end, epc = submit[fits], np.minimum(end[fits], horizon), epc[fits]
    times = np.concatenate((submit, end))
    amounts = np.concatenate((epc, -epc))
    big = (2 * epc > capacity).astype(np.int64)
    bigs = np.concatenate((big, -big))
    # Departures before arrivals at equal times, as everywhere else.
    order = np.lexsort((amounts, times))
    times, total, count = times[order], np.cumsum(amounts[order]), np.cumsum(bigs[order])
    nodes = np.maximum(-(-total // capacity), count)
    spans = np.diff(np.append(times, horizon))
    return float((nodes * spans).sum()) / 3600.0
