"""A `NodeNames` list that names most nodes, once each, and figures kept over it.

With room in the cluster, kube-scheduler's own filters pass every node except those that are
full, lack the EPC name or are cordoned, so its list is the same set of nodes from one pod to
the next, in a new order each time. `names.NameResolver` recognises such a list by the runs it
was read from and hands out its `Cover`: the candidates as every node of the snapshot except
`excluded`. What a request needs over the candidates is then kept over the cover and followed
through the snapshot's change log one changed node at a time, instead of gathered from every
candidate on every request: the least free EPC of each name (does the pod fit every candidate?)
and, per kind of pod, the lowest raw score and the candidates above it (the prioritize reply).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from epcsched.core.snapshot import ClusterSnapshot, FloatArray, IntArray

_ABOVE = 64
"""Most candidates kept above the lowest raw score: binpack's partly filled nodes."""
_FEW_CHANGED = 8
"""More changed slots than this and a figure is found again over every candidate."""


@dataclass(slots=True)
class _Floor:
    """The least value of a per-slot array over the candidates, and a candidate holding it."""

    mark: tuple[int, int]
    low: int
    holder: int


@dataclass(slots=True)
class Spread:
    """The lowest raw score over the candidates, how many hold it, and each candidate above it
    with its raw score (None when more than `_ABOVE` are)."""

    mark: tuple[int, int]
    low: float
    at_low: int
    above: dict[int, float] | None


class Cover:
    """Every node of one generation of the snapshot except `excluded`, as a candidate list."""

    def __init__(self, generation: int, members: IntArray, excluded: frozenset[int]) -> None:
        self.generation = generation
        self.members = members
        """The candidates' slots, ascending."""
        self.excluded = excluded
        self._floors: dict[str, _Floor] = {}
        self._spreads: dict[object, Spread] = {}

    @classmethod
    def of(cls, slots: IntArray, snapshot: ClusterSnapshot) -> Cover | None:
        """The cover `slots` make, if they name at least half the nodes, each once (for fewer,
        a pass over them costs little, and a cover would cost a pass over every node)."""
        count = slots.shape[0]
        if count == 0 or 2 * count < len(snapshot.slots) or slots.min() < 0:
            return None
        times = np.bincount(slots, minlength=len(snapshot.slot_names))
        if int(times.max()) > 1:
            return None
        # Every slot known and none twice: the nodes left out are the rest.
        live = snapshot.sorted_slots()[1]
        excluded = live[times[live] == 0].tolist()
        members = np.sort(slots)
        # Handed out as a list's slots (`NameResolver.resolve`), and kept: read-only.
        members.flags.writeable = False
        return cls(snapshot.generation, members, frozenset(excluded))

    def floor(self, snapshot: ClusterSnapshot, name: str) -> int:
        """The least `fit_view(name)` over the candidates: a pod needing at most this much of
        `name` fits every one of them."""
        view = snapshot.fit_view(name)
        state = self._floors.get(name)
        if state is not None and self._follow(snapshot, state, view):
            return state.low
        at = int(np.argmin(view[self.members]))
        holder = int(self.members[at])
        self._floors[name] = _Floor(snapshot.mark(), int(view[holder]), holder)
        return int(view[holder])

    def _changed(self, snapshot: ClusterSnapshot, mark: tuple[int, int]) -> list[int] | None:
        """The candidates changed since `mark`, one by one; None when figures kept since then
        must be found again (they moved in bulk, or more than a few changed)."""
        changed = snapshot.changed_since(mark)
        if changed is None or changed.shape[0] > _FEW_CHANGED:
            return None
        excluded = self.excluded
        return [slot for slot in changed.tolist() if slot not in excluded]

    def _follow(self, snapshot: ClusterSnapshot, state: _Floor, view: IntArray) -> bool:
        """Bring `state` up to date from the slots changed since its mark; False when it must
        be found again (figures moved in bulk, or the candidate holding it gained)."""
        changed = self._changed(snapshot, state.mark)
        if changed is None:
            return False
        for slot in changed:
            value = int(view[slot])
            if value < state.low:
                state.low, state.holder = value, slot
            elif slot == state.holder and value > state.low:
                # Another candidate may hold the old low, or none: look again.
                return False
        state.mark = snapshot.mark()
        return True

    def spread(self, snapshot: ClusterSnapshot, key: object, raw: FloatArray) -> Spread:
        """The lowest of the raw-score table `raw` over the candidates and the candidates above
        it; `raw` must be current with `snapshot`, and `key` names its kind of pod."""
        state = self._spreads.get(key)
        if state is not None and self._follow_spread(snapshot, state, raw):
            return state
        values = raw[self.members]
        low = float(values.min())
        above = np.flatnonzero(values > low)
        kept: dict[int, float] | None = None
        if above.shape[0] <= _ABOVE:
            kept = dict(zip(self.members[above].tolist(), values[above].tolist(), strict=True))
        state = Spread(snapshot.mark(), low, self.members.shape[0] - above.shape[0], kept)
        self._spreads[key] = state
        return state

    def _follow_spread(self, snapshot: ClusterSnapshot, state: Spread, raw: FloatArray) -> bool:
        """`_follow` for a spread, reading the changed slots' raw scores from `raw` (the table
        as it is now, rebuilt or not: a slot not in the log since the mark scores the same)."""
        changed = self._changed(snapshot, state.mark)
        above = state.above
        if changed is None:
            return False
        if changed and above is None:
            return False
        for slot in changed:
            value = float(raw[slot])
            assert above is not None
            if value < state.low:
                return False
            if value > state.low:
                if slot not in above:
                    state.at_low -= 1
                above[slot] = value
            elif slot in above:
                del above[slot]
                state.at_low += 1
        if state.at_low == 0 or (above is not None and len(above) > _ABOVE):
            return False
        state.mark = snapshot.mark()
        return True
