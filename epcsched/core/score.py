"""Node scores 0..10 for an EPC pod, spread over each request's candidates.

Raw scores are fractions of a node's EPC; each request's feasible candidates are then mapped onto
the whole 0..10 range (best 10, worst 0, proportional between), as kube-scheduler normalises its
plugin scores. Absolute fractions rounded to 11 levels would give a small pod on big nodes the
same score everywhere, and kube-scheduler's own LeastAllocated would then decide instead of us.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from epcsched.core.fit import PodRequest, fit_masks
from epcsched.core.snapshot import ClusterSnapshot, IntArray

STRATEGIES = ("binpack", "spread", "balanced")
MAX_SCORE = 10

FloatArray = npt.NDArray[np.float64]


def _fraction(used: IntArray, total: IntArray) -> FloatArray:
    out = np.zeros(used.shape[0], dtype=np.float64)
    np.divide(used, total, out=out, where=total > 0)
    return out


def epc_fraction_after(
    snapshot: ClusterSnapshot, request: PodRequest, slots: IntArray
) -> FloatArray:
    """Share of each node's EPC in use once the pod is placed, averaged over requested names."""
    total = np.zeros(slots.shape[0], dtype=np.float64)
    for name, need in request.epc.items():
        used, allocatable = snapshot.used_and_allocatable(name)
        share = np.zeros(slots.shape[0], dtype=np.float64)
        denominator = allocatable[slots]
        np.divide(used[slots] + need, denominator, out=share, where=denominator > 0)
        total += share
    return total / max(len(request.epc), 1)


def raw_scores(
    snapshot: ClusterSnapshot, request: PodRequest, slots: IntArray, strategy: str
) -> FloatArray:
    """Higher is better; meaningful only relative to the other candidates of this request."""
    after = epc_fraction_after(snapshot, request, slots)
    if strategy == "binpack":
        return after
    if strategy == "spread":
        return 1.0 - after
    if strategy == "balanced":
        cpu = _fraction(
            snapshot.cpu_requested[slots] + request.cpu_milli, snapshot.cpu_allocatable[slots]
        )
        memory = _fraction(
            snapshot.memory_requested[slots] + request.memory, snapshot.memory_allocatable[slots]
        )
        return 1.0 - np.abs(after - (cpu + memory) / 2.0)
    raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")


def raw_score_at(snapshot: ClusterSnapshot, request: PodRequest, slot: int, strategy: str) -> float:
    """`raw_scores` of an EPC pod at one slot, for binpack and spread, in Python floats: the
    same float64 operations on the same numbers (Python floats are IEEE doubles), without
    numpy's cost per call, for the one node an event changed."""
    if strategy == "balanced":
        return float(raw_scores(snapshot, request, np.array([slot]), strategy)[0])
    total = 0.0
    for name, need in request.epc.items():
        used, allocatable = snapshot.used_and_allocatable(name)
        denominator = float(allocatable[slot])
        if denominator > 0:
            total += (float(used[slot]) + need) / denominator
    after = total / max(len(request.epc), 1)
    if strategy == "binpack":
        return after
    if strategy == "spread":
        return 1.0 - after
    raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")


def normalise(raw: FloatArray, eligible: npt.NDArray[np.bool_]) -> IntArray:
    """Map eligible raw scores onto 0..10 (best 10, worst 0); ineligible ones score 0."""
    scores = np.zeros(raw.shape[0], dtype=np.int64)
    if not eligible.any():
        return scores
    values = raw[eligible]
    low, high = float(values.min()), float(values.max())
    if high == low:
        scores[eligible] = MAX_SCORE
        return scores
    scaled = np.floor((values - low) / (high - low) * MAX_SCORE + 0.5)
    scores[eligible] = scaled.astype(np.int64)
    return scores


def normalise_above(values: list[float], low: float) -> list[int]:
    """`normalise` for candidates whose raw scores `values` are all above the lowest
    candidate's `low`, without that candidate's own 0: each the same float64 operations on
    the same numbers (Python floats are IEEE doubles), so each score is the one `normalise`
    gives over all the candidates. For the handful of candidates a binpack request finds
    above the rest, where numpy's cost per call would outweigh the arithmetic."""
    if not values:
        return []
    span = max(values) - low
    return [math.floor((value - low) / span * MAX_SCORE + 0.5) for value in values]


def raw_and_eligible(
    snapshot: ClusterSnapshot,
    request: PodRequest,
    slots: IntArray,
    strategy: str,
    *,
    prefer_non_sgx: bool = True,
) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """Raw scores of each slot and which slots may be scored at all (they fit)."""
    masks = fit_masks(snapshot, request, slots)
    if not request.wants_epc:
        if not prefer_non_sgx:
            return np.zeros(slots.shape[0]), masks.ok
        # Keep scarce SGX nodes for enclaves: a plain pod prefers nodes without EPC.
        safe = np.where(masks.unknown, 0, slots)
        has_epc = np.zeros(slots.shape[0], dtype=np.bool_)
        for column in snapshot.epc.values():
            has_epc |= column.has[safe] & (column.allocatable[safe] > 0)
        return (~has_epc).astype(np.float64), masks.ok
    # Slot -1 reads the arrays' spare last element; such candidates are never eligible anyway.
    return raw_scores(snapshot, request, slots, strategy), masks.ok


def score(
    snapshot: ClusterSnapshot,
    request: PodRequest,
    slots: IntArray,
    strategy: str,
    *,
    prefer_non_sgx: bool = True,
) -> IntArray:
    """Integer scores 0..10 for each slot (-1 for unknown names scores 0)."""
    raw, eligible = raw_and_eligible(
        snapshot, request, slots, strategy, prefer_non_sgx=prefer_non_sgx
    )
    return normalise(raw, eligible)
