"""Node names between the wire and snapshot slots, without a Python step per name per request.

kube-scheduler filters nodes in parallel and lists the feasible ones in completion order, so a
`NodeNames` list holds nearly the same names on every request but in a different order on most
of them (753 distinct orders in 1,000 calls over 1,000 nodes): a cache keyed on the list's bytes
misses, and decoding and looking up every name costs more than everything else in a request.
What repeats is the pieces: the list is a permutation of contiguous runs of kube-scheduler's own
node order (the parallelizer's chunks, about √n nodes each).

`NameResolver` therefore keeps one reference list, the names in an order kube-scheduler sent
them, as compact JSON with each name's slot, and reads a request as a sequence of byte-for-byte
slices of it: per run one `find`, one dictionary lookup and one `startswith` (a memcmp), then
one `concatenate` of the runs' slot arrays. A run once found is remembered by its first name. A
list this cannot read (whitespace, escapes, a name the reference lacks) is decoded in full, and
a compact one then becomes the reference, so the next request reads fast again.

The runs a list was read from also tell, once a set of them has been checked, that the list
names most nodes, each once (`cover.Cover`): the service then keeps what it needs over
those candidates instead of reading it from each of them. The list is read where it lies in the
request body; it is not copied out.

`SlotNames` goes the other way: the JSON of each known node's name by slot, so a reply names
the nodes it keeps by one gather and one join.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from epcsched.core.snapshot import ClusterSnapshot, IntArray
from epcsched.extender import wire
from epcsched.extender.cover import Cover

_QUOTE, _COMMA, _OPEN, _CLOSE = 0x22, 0x2C, 0x5B, 0x5D
_EMPTY = np.zeros(0, dtype=np.int64)
_RECENT = 8
"""Lists remembered whole, byte for byte, with their slots."""
_EDGE = 48
"""Bytes from each end of a list that, with its length, key a remembered list: a key costs no
pass over the list, and a list that shares it is told apart by one memcmp."""


_COVERS = 8
"""Sets of runs remembered with the cover their lists make (or that they make none)."""
_RUN_BITS = 1024
"""Runs learned before all are forgotten and learned again, which keeps each run's bit (and
the integers a list's bits are gathered in) small."""

_Run = tuple[bytes, bytes, int, bytes, int]
"""Consecutive names of the reference: their JSON with the comma that follows them inside a
list (`"a","b",`), their slots (the bytes of an int64 array), the length of that JSON, the
JSON alone (for the list's last run, which a `]` follows), and a bit of its own, which tells
the runs a list was read from. A tuple, because the reading loop indexes it once per run and a
tuple index is the cheapest read Python has; slots as bytes, because joining bytes costs far
less per run than `np.concatenate` does per array."""


class NameResolver:
    """Slots of the names in a `NodeNames` array, read run by run against a reference list."""

    def __init__(self) -> None:
        self._generation = -1
        self._names: list[str] = []
        self._encoded: list[bytes] = []
        self._ref = b""
        """The reference names as `"a","b",...` (a JSON array without its brackets)."""
        self._ends: list[int] = []
        """Where each reference name's JSON ends in `_ref` (exclusive)."""
        self._starts: list[int] = []
        self._position: dict[bytes, int] = {}
        """Reference index of each name, keyed by its JSON (quotes included)."""
        self._slots = _EMPTY
        self._width = 0
        """The length of every reference name's JSON when they all have one, else 0."""
        self._runs: dict[bytes, _Run] = {}
        self._bits = 0
        """Runs learned so far: the next run's bit is `1 << _bits`."""
        self._covers: dict[int, Cover | None] = {}
        """By the bits of a set of runs, the cover a list read from them makes, or None."""
        self._cover: tuple[IntArray, Cover] | None = None
        """The slots `resolve` returned last and the cover they make, if they make one."""
        self._recent: dict[
            tuple[bool, int, bytes, bytes], tuple[memoryview, IntArray, Cover | None]
        ] = {}

    def resolve(
        self,
        raw: bytes,
        snapshot: ClusterSnapshot,
        start: int = 0,
        end: int | None = None,
        *,
        any_order: bool = False,
    ) -> IntArray:
        """Slot of each name in the JSON array `raw[start:end]` (read in place: the request
        body, not a copy of the list), -1 for names that are not known nodes. The caller must
        not modify the array.

        With `any_order`, a list that makes a cover already seen (see `cover`) is answered with
        the cover's slots in their own order: the same set, without gathering each run's slots
        into the list's order, for a caller to whom only the set matters.

        Raises `wire.BadRequest` when that is not an array of strings.
        """
        if end is None:
            end = len(raw)
        if snapshot.generation != self._generation:
            self._relink(snapshot)
        # prioritize repeats its filter's list exactly, and a quiet cluster sends the same few
        # lists again: one memcmp answers those.
        key = (
            any_order,
            end - start,
            raw[start : min(start + _EDGE, end)],
            raw[max(end - _EDGE, start) : end],
        )
        seen = self._recent.get(key)
        if seen is not None and raw.startswith(seen[0], start):
            slots, cover = seen[1], seen[2]
        else:
            if self._bits >= _RUN_BITS:
                # Between lists, never within one: a list's bits all come from one set of runs.
                self._forget_runs()
            read = self._read(raw, start, end)
            if read is None:
                names = wire.decode_node_names(raw[start:end])
                slots = snapshot.slots_of(names)
                slots.flags.writeable = False
                cover = None
                encoded = wire.encode(names)
                if len(encoded) == end - start and raw.startswith(encoded, start):
                    self._learn(names, snapshot)
            else:
                parts, runs = read
                cover, slots = self._cover_of(parts, runs, snapshot, any_order)
            recent = self._recent
            recent.pop(key, None)
            # The list itself is held as a view of what holds it: no copy of it is made.
            recent[key] = (memoryview(raw)[start:end], slots, cover)
            if len(recent) > _RECENT:
                del recent[next(iter(recent))]
        self._cover = None if cover is None else (slots, cover)
        return slots

    def cover(self, slots: IntArray, snapshot: ClusterSnapshot) -> Cover | None:
        """The cover `slots` make (most nodes, each once), when `resolve` returned them last
        and found one; what holds over the cover then holds for the list, with no pass over
        it."""
        found = self._cover
        if found is None or found[0] is not slots:
            return None
        return self.current_cover(snapshot)

    def current_cover(self, snapshot: ClusterSnapshot) -> Cover | None:
        """The cover of the list `resolve` returned last, if it made one and is current."""
        found = self._cover
        if found is None or found[1].generation != snapshot.generation:
            return None
        return found[1]

    def _cover_of(
        self, parts: list[_Run], runs: int, snapshot: ClusterSnapshot, any_order: bool
    ) -> tuple[Cover | None, IntArray]:
        """The cover a list read from the runs `parts` (whose bits are `runs`) makes, if any,
        and its slots (the cover's own, with `any_order`, when it has one). Each set of runs
        is checked once, by its slots, and remembered: a list read from the same runs, none
        of them twice, holds the same names."""
        if not parts or len(parts) != runs.bit_count():
            return None, _joined(parts)
        if runs in self._covers:
            cover = self._covers[runs]
            if cover is not None and any_order:
                return cover, cover.members
            return cover, _joined(parts)
        slots = _joined(parts)
        cover = self._covers[runs] = Cover.of(slots, snapshot)
        if len(self._covers) > _COVERS:
            del self._covers[next(iter(self._covers))]
        return cover, slots

    # ----- the fast reading --------------------------------------------------------------
    def _read(self, raw: bytes, start: int, end: int) -> tuple[list[_Run], int] | None:
        """The runs the list `raw[start:end]` is read from, in order, and their bits; None
        when it cannot be read run by run."""
        last = end - 1
        if last - start < 1 or raw[start] != _OPEN or raw[last] != _CLOSE:
            return None
        if last - start == 1:
            return [], 0
        runs_get, find, startswith = self._runs.get, raw.find, raw.startswith
        width = self._width
        parts: list[_Run] = []
        append = parts.append
        runs = 0
        pos = start + 1
        # Once per run, not per name: the loop is kept to a handful of C calls. A run matched
        # with its comma is followed by another; only the last one is followed by the `]`.
        while True:
            # The first name's JSON when it has no escapes; otherwise (or when `pos` is not at
            # a quote) the key is no name's JSON and the lookup fails, as it should. When every
            # reference name's JSON has one length, any name found is that long: no search.
            key = raw[pos : pos + width] if width else raw[pos : find(b'"', pos + 1) + 1]
            run = runs_get(key)
            if run is not None and startswith(run[0], pos):
                append(run)
                runs |= run[4]
                pos += run[2]
                continue
            if run is None or not startswith(run[3], pos):
                run = self._extend(raw, pos, key)
                if run is None:
                    return None
                if startswith(run[0], pos):
                    append(run)
                    runs |= run[4]
                    pos += run[2]
                    continue
            # The run found here is the list's last, or the list goes on without its comma.
            if pos + len(run[3]) != last:
                return None
            append(run)
            runs |= run[4]
            break
        return parts, runs

    def _extend(self, raw: bytes, pos: int, key: bytes) -> _Run | None:
        """The longest run of reference names from `key` that `raw` repeats at `pos`,
        remembered under `key`; None when `key` is no reference name.

        Each candidate run ends with a name's closing quote, so a match is whole names.
        Galloping then bisecting: a few memcmps, however long the run.
        """
        first = self._position.get(key)
        if first is None:
            return None
        ref = memoryview(self._ref)
        start, ends = self._starts[first], self._ends
        limit = len(ends) - first

        def repeats(count: int) -> bool:
            return raw.startswith(ref[start : ends[first + count - 1]], pos)

        good, bad = 1, limit + 1
        while good < limit:
            trial = min(good * 2, limit)
            if not repeats(trial):
                bad = trial
                break
            good = trial
        while bad - good > 1:
            middle = (good + bad) // 2
            if repeats(middle):
                good = middle
            else:
                bad = middle
        text = bytes(ref[start : ends[first + good - 1]])
        slots = self._slots[first : first + good].tobytes()
        run = self._runs[key] = (text + b",", slots, len(text) + 1, text, 1 << self._bits)
        self._bits += 1
        return run

    def _forget_runs(self) -> None:
        self._runs = {}
        self._bits = 0
        self._covers = {}
        self._cover = None

    # ----- the reference -----------------------------------------------------------------
    def _learn(self, names: list[str], snapshot: ClusterSnapshot) -> None:
        """Make `names` the reference, followed by the old reference names it lacks (a list
        of fewer nodes, for a bigger pod, must not make the next full list slow)."""
        ordered = list(dict.fromkeys([*names, *self._names]))
        known = dict(zip(self._names, self._encoded, strict=True))
        encoded = [known.get(n) or wire.encode_name(n) for n in ordered]
        self._build(ordered, encoded, snapshot)

    def _relink(self, snapshot: ClusterSnapshot) -> None:
        """The node set changed: slots again, and names no longer nodes are dropped."""
        slots = snapshot.slots_of(self._names)
        keep = np.flatnonzero(slots >= 0).tolist()
        if len(keep) < len(self._names):
            self._build([self._names[i] for i in keep], [self._encoded[i] for i in keep], snapshot)
        else:
            self._slots = slots
            self._forget_runs()
            self._generation = snapshot.generation
        self._recent = {}

    def _build(self, names: list[str], encoded: list[bytes], snapshot: ClusterSnapshot) -> None:
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        ends = np.cumsum(lengths + 1) - 1
        self._names = names
        self._encoded = encoded
        self._ref = b",".join(encoded)
        widths = set(lengths.tolist())
        self._width = widths.pop() if len(widths) == 1 else 0
        self._ends = ends.tolist()
        self._starts = (ends - lengths).tolist()
        self._position = dict(zip(encoded, range(len(encoded)), strict=True))
        self._slots = snapshot.slots_of(names)
        self._forget_runs()
        self._generation = snapshot.generation
        self._recent = {}


def _joined(parts: list[_Run]) -> IntArray:
    """The slots of the runs `parts`, in order; read-only, like every array `resolve` returns."""
    if not parts:
        return _EMPTY
    joined = parts[0][1] if len(parts) == 1 else b"".join([run[1] for run in parts])
    return np.frombuffer(joined, dtype=np.int64)


class _Rows:
    """One byte row per slot, kept as 2-D arrays of the rows that have the same length, so
    that the rows of many slots are gathered by one numpy index per length, not joined one by
    one in Python. Node names come in a few lengths, so there are a few arrays."""

    def __init__(self, rows: list[bytes]) -> None:
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        self.group = np.zeros(len(rows), dtype=np.int64)
        self.row = np.zeros(len(rows), dtype=np.int64)
        self.tables: list[npt.NDArray[np.uint8]] = []
        for group, length in enumerate(np.unique(lengths).tolist()):
            members = np.flatnonzero(lengths == length)
            self.group[members] = group
            self.row[members] = np.arange(members.shape[0])
            joined = b"".join([rows[i] for i in members.tolist()])
            self.tables.append(np.frombuffer(joined, dtype=np.uint8).reshape(-1, length))

    def array(self, slots: IntArray) -> tuple[npt.NDArray[np.uint8], list[Placed]]:
        """The bytes of a JSON array of the rows of `slots` (each row ends in a comma; the last
        one becomes the `]`), written straight into one buffer, and where each length's rows
        landed: their positions in `slots` (None for all of them, in order), where they start
        in the buffer and their length, for the caller to write into before taking the bytes."""
        members: list[tuple[int, IntArray | None]]
        if len(self.tables) == 1:
            # Every name has the same length (one node pool's naming scheme): no grouping.
            members = [(0, None)]
        else:
            groups = self.group[slots]
            first = int(groups[0])
            if first == int(groups.max()) == int(groups.min()):
                members = [(first, None)]
            else:
                members = [(g, np.flatnonzero(groups == g)) for g in np.unique(groups).tolist()]
        counts = [slots.shape[0] if at is None else at.shape[0] for _, at in members]
        lengths = [self.tables[g].shape[1] * n for (g, _), n in zip(members, counts, strict=True)]
        out = np.empty(1 + sum(lengths), dtype=np.uint8)
        out[0] = _OPEN
        placed: list[Placed] = []
        start = 1
        for (group, at), length in zip(members, lengths, strict=True):
            table = self.tables[group]
            view = out[start : start + length].reshape(-1, table.shape[1])
            rows = self.row[slots] if at is None else self.row[slots[at]]
            # mode="clip" writes straight into `view`; "raise" would go through a temporary.
            np.take(table, rows, axis=0, out=view, mode="clip")
            placed.append((at, start, table.shape[1]))
            start += length
        out[-1] = _CLOSE
        return out, placed


Placed = tuple[IntArray | None, int, int]
"""Rows of one length in a buffer: their positions in the slots (None: all, in order), their
first byte and their length."""


def _rows(out: npt.NDArray[np.uint8], start: int, width: int, count: int) -> npt.NDArray[np.uint8]:
    return out[start : start + width * count].reshape(count, width)


# Below this many entries a Python join is cheaper than numpy's fixed cost per call.
_FEW = 16
_SCORE_HEAD = b'{"Score":'
_TENS = np.frombuffer(b"          1", dtype=np.uint8)
_ONES = np.frombuffer(b"01234567890", dtype=np.uint8)
_SPACE = 0x20
_TEMPLATES = 8
"""Replies without their scores kept, for lists asked about again."""


class SlotNames:
    """Each known node's name as JSON, by slot, for writing replies without per-name work.

    A prioritize entry is written `{"Score":NN,"Host":"name"}` with NN as ` 7` or `10` (the space
    is JSON whitespace), so every entry for one name has the same length whatever the score and
    the two digits sit at a fixed column: many entries are one row gather and two column writes.
    """

    def __init__(self) -> None:
        self._generation = -1
        self._encoded: list[bytes] = []
        self._names = _Rows([])
        self._entries = _Rows([])
        self._templates: dict[int, tuple[IntArray, npt.NDArray[np.uint8], list[Placed]]] = {}

    def _current(self, snapshot: ClusterSnapshot) -> None:
        if snapshot.generation == self._generation:
            return
        # One spare element, as in the snapshot's arrays, so slot -1 indexes something.
        names = [*snapshot.slot_names, None]
        self._encoded = [b'""' if n is None else wire.encode_name(n) for n in names]
        self._names = _Rows([e + b"," for e in self._encoded])
        self._entries = _Rows([_SCORE_HEAD + b' 0,"Host":' + e + b"}," for e in self._encoded])
        self._templates = {}
        self._generation = snapshot.generation

    def names_json(self, snapshot: ClusterSnapshot, slots: IntArray) -> bytes:
        """`["a","b",...]` for known slots."""
        self._current(snapshot)
        if slots.shape[0] <= _FEW:
            encoded = self._encoded
            return b"[" + b",".join([encoded[s] for s in slots.tolist()]) + b"]"
        out, _ = self._names.array(slots)
        return out.tobytes()

    def scores_json(self, snapshot: ClusterSnapshot, slots: IntArray, scores: IntArray) -> bytes:
        """`[{"Score":7,"Host":"a"},...]` for known slots and their scores 0..10, in the order
        of `slots` when they are few or their names equally long, and grouped by the length of
        the name otherwise (kube-scheduler adds up each host's entries: order is no matter)."""
        self._current(snapshot)
        if slots.shape[0] <= _FEW:
            encoded = self._encoded
            entries = [
                b'{"Score":%d,"Host":%s}' % (score, encoded[slot])
                for slot, score in zip(slots.tolist(), scores.tolist(), strict=True)
            ]
            return b"[" + b",".join(entries) + b"]"
        out, placed = self._entries.array(slots)
        count = slots.shape[0]
        column = len(_SCORE_HEAD)
        for at, start, width in placed:
            these = scores if at is None else scores[at]
            rows = _rows(out, start, width, count if at is None else at.shape[0])
            rows[:, column] = _TENS[these]
            rows[:, column + 1] = _ONES[these]
        return out.tobytes()

    def nonzero_scores_json(
        self, snapshot: ClusterSnapshot, slots: IntArray, scores: IntArray
    ) -> bytes:
        """`scores_json` of the slots scoring above 0, given every slot's score: for a reply
        that lists most of many candidates. The entries that score 0 are written as JSON
        whitespace instead of being cut out, so no pass picks the others out; and the reply
        without its scores is kept for the last few lists of read-only slots (the resolver
        hands back one array for a list it has seen), so a list asked about again costs one
        copy instead of a gather."""
        self._current(snapshot)
        count = slots.shape[0]
        found = self._templates.get(id(slots))
        if found is not None and found[0] is slots:
            template, placed = found[1], found[2]
        else:
            template, placed = self._entries.array(slots)
            if not slots.flags.writeable:
                # Nothing can change a read-only array, and holding it keeps its id unique.
                self._templates[id(slots)] = (slots, template, placed)
                if len(self._templates) > _TEMPLATES:
                    del self._templates[next(iter(self._templates))]
        out = template.copy()
        column = len(_SCORE_HEAD)
        last_kept = -1
        for at, start, width in placed:
            these = scores if at is None else scores[at]
            many = count if at is None else at.shape[0]
            rows = _rows(out, start, width, many)
            rows[:, column] = _TENS[these]
            rows[:, column + 1] = _ONES[these]
            zero = np.flatnonzero(these == 0)
            if zero.shape[0]:
                rows[zero] = _SPACE
            if zero.shape[0] < many:
                # The comma that ends the last kept row seen so far (rows end in one).
                last = many - 1 - int(np.argmax(these[::-1] > 0))
                last_kept = start + width * (last + 1) - 1
        # No comma may follow the last entry: it, and the blanked rows after it, become spaces.
        if last_kept >= 0:
            out[last_kept] = _SPACE
        out[-1] = _CLOSE
        return out.tobytes()
