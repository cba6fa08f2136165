"""Every node's raw score for the kinds of pod being scheduled, kept current node by node.

kube-scheduler asks to prioritize the same few kinds of pod (the replicas of a workload) over
the same nodes, one pod at a time, with one node changed in between (the last bind). A node's
raw score depends only on that node and the pod's requests, so it is computed for every slot
once per kind of pod, and afterwards only for the slots the snapshot reports changed (the
core's `raw_score_at` for each of a few slots, its `raw_scores` for more). Whether the pod fits
every candidate is the core's `fits_everywhere` over the snapshot's own fit view, which the
snapshot keeps current; when one does not fit, the caller scores the general way. A request
then gathers its candidates' raw scores, and only the candidates above the lowest need
spreading onto 0..10: with binpack on a live cluster, the handful of partly filled nodes. The
spreading is the core's own `normalise` (`normalise_above` for a handful), given the lowest and
the highest raw score, so every score is the one the core computes over all candidates.

`refresh` brings the most recently used table up to date, and rebuilds any other that a change
in bulk made stale: the extender calls it after watch events and telemetry polls, between
requests, so that a change is folded in while kube-scheduler is busy elsewhere, not while it
waits for a prioritize reply.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from epcsched.core.fit import PodRequest, fits_everywhere
from epcsched.core.score import (
    normalise,
    normalise_above,
    raw_and_eligible,
    raw_score_at,
    raw_scores,
)
from epcsched.core.snapshot import ClusterSnapshot, FloatArray, IntArray
from epcsched.extender.cover import Cover

_TABLES = 8
_FEW = 16
"""Up to this many candidates above the lowest are spread in Python, not numpy."""
_FEW_CHANGED = 8
"""Up to this many changed slots are rescored one by one in Python floats."""

_Key = tuple[tuple[tuple[str, int], ...], int, int]


def _key(request: PodRequest) -> _Key:
    """The kind of pod: what a raw score depends on."""
    return (tuple(sorted(request.epc.items())), request.cpu_milli, request.memory)


@dataclass(slots=True)
class _Table:
    """Raw score of one kind of pod at every slot, plus the spare slot -1 reads."""

    mark: tuple[int, int]
    raw: FloatArray
    request: PodRequest
    """The request the table was built for (any of its kind), for `refresh`."""


class ScoreTables:
    """Raw scores per kind of pod, current with the snapshot they were last read against."""

    def __init__(self, strategy: str, *, prefer_non_sgx: bool) -> None:
        self.strategy = strategy
        self.prefer_non_sgx = prefer_non_sgx
        self._tables: OrderedDict[_Key, _Table] = OrderedDict()

    def _table(self, snapshot: ClusterSnapshot, request: PodRequest) -> _Table:
        """The table for `request`'s kind of pod, brought up to date with `snapshot`."""
        key = _key(request)
        table = self._tables.get(key)
        if table is not None:
            self._tables.move_to_end(key)
            changed = snapshot.changed_since(table.mark)
            if changed is not None:
                count = changed.shape[0]
                if 0 < count <= _FEW_CHANGED and request.wants_epc:
                    raw = table.raw
                    for slot in changed.tolist():
                        raw[slot] = raw_score_at(snapshot, request, slot, self.strategy)
                elif count:
                    table.raw[changed] = self._raw(snapshot, request, changed)
                table.mark = snapshot.mark()
                return table
        size = len(snapshot.slot_names)
        raw = np.zeros(size + 1, dtype=np.float64)
        raw[:size] = self._raw(snapshot, request, np.arange(size, dtype=np.int64))
        table = self._tables[key] = _Table(snapshot.mark(), raw, request)
        if len(self._tables) > _TABLES:
            self._tables.popitem(last=False)
        return table

    def refresh(self, snapshot: ClusterSnapshot, cover: Cover | None = None) -> None:
        """Bring the most recently used table up to date with `snapshot` (the next pod is most
        likely another replica of the last one), and rebuild any other that a change in bulk
        (a telemetry poll, a node added or removed) has made stale as a whole. The others catch
        up when next read, each for the few slots a bind changed meanwhile: updating them all
        on every event would multiply the work by the kinds of pod in flight. Tables are
        visited least recently used first, so their order of use is kept. With `cover`, the
        candidates of the list asked about last, the most recent table's figures over them
        are brought up to date too."""
        tables = list(self._tables.values())
        for table in tables[:-1]:
            if snapshot.changed_since(table.mark) is None:
                self._table(snapshot, table.request)
        if tables:
            request = tables[-1].request
            table = self._table(snapshot, request)
            if cover is not None:
                cover.spread(snapshot, _key(request), table.raw)

    def _raw(self, snapshot: ClusterSnapshot, request: PodRequest, slots: IntArray) -> FloatArray:
        """The core's raw scores at `slots`; fit is not needed here (see `above_lowest`)."""
        if request.wants_epc:
            return raw_scores(snapshot, request, slots, self.strategy)
        raw, _ = raw_and_eligible(
            snapshot, request, slots, self.strategy, prefer_non_sgx=self.prefer_non_sgx
        )
        return raw

    def above_lowest(
        self,
        snapshot: ClusterSnapshot,
        request: PodRequest,
        slots: IntArray,
        *,
        fits: bool = False,
    ) -> tuple[IntArray | None, IntArray] | None:
        """Positions in `slots` that score above the lowest candidate, with their scores 1..10
        (the lowest scores 0, or all alike when every raw score is equal); when most do,
        positions None and every candidate's score 0..10, in order. None when some candidate
        does not fit, for the caller to score every candidate the general way. `fits`: the
        caller knows every candidate fits `snapshot` as it is."""
        if slots.shape[0] == 0 or not (fits or fits_everywhere(snapshot, request, slots)):
            return None
        raw = self._table(snapshot, request).raw[slots]
        low = raw.min()
        above = np.flatnonzero(raw > low)
        if above.shape[0] == 0:
            return _NONE, _NONE
        count = above.shape[0]
        if 2 * count > raw.shape[0]:
            # Most candidates differ from the lowest (a cluster of varied loads): spread all.
            return None, normalise(raw, np.ones(raw.shape[0], dtype=np.bool_))
        if count <= _FEW:
            # The usual binpack answer: a handful of partly filled nodes, spread in Python
            # floats, which for so few costs less than numpy's fixed cost per call.
            scores = normalise_above(raw[above].tolist(), float(low))
            kept = [i for i, score in enumerate(scores) if score]
            return above[kept], np.array([scores[i] for i in kept], dtype=np.int64)
        # With the lowest raw score beside them, normalise spreads exactly as over all.
        values = np.append(raw[above], low)
        spread = normalise(values, np.ones(values.shape[0], dtype=np.bool_))[:-1]
        nonzero = np.flatnonzero(spread)
        return above[nonzero], spread[nonzero]

    def above_lowest_over(
        self, snapshot: ClusterSnapshot, request: PodRequest, cover: Cover
    ) -> tuple[IntArray, IntArray] | None:
        """`above_lowest` when the candidates are `cover`'s and all fit, from the figures kept
        over the cover instead of a gather over every candidate: the slots above the lowest
        with their scores 1..10. None when those figures cannot say (more than a handful above
        the lowest, or most of the candidates), for the caller to ask `above_lowest`."""
        table = self._table(snapshot, request)
        spread = cover.spread(snapshot, _key(request), table.raw)
        above = spread.above
        if above is None or 2 * len(above) > cover.members.shape[0]:
            return None
        slots = list(above)
        if len(slots) <= _FEW:
            scores = normalise_above(list(above.values()), spread.low)
            kept = [i for i, score in enumerate(scores) if score]
            return (
                np.array([slots[i] for i in kept], dtype=np.int64),
                np.array([scores[i] for i in kept], dtype=np.int64),
            )
        values = np.array([*above.values(), spread.low], dtype=np.float64)
        spread_scores = normalise(values, np.ones(values.shape[0], dtype=np.bool_))[:-1]
        nonzero = np.flatnonzero(spread_scores)
        return np.array(slots, dtype=np.int64)[nonzero], spread_scores[nonzero]


_NONE = np.zeros(0, dtype=np.int64)
