"""Filter and prioritize as pure request-bytes-to-reply-bytes functions over cluster state.

Kept apart from aiohttp so the same code is driven by the HTTP app, the benchmark and tests.
Hot-path choices, all because kube-scheduler waits for every call: the `NodeNames` list is
almost the same on every request, so its decoding and name-to-slot lookup are cached on its raw
bytes (and redone only when the node set changes); fit is a handful of array operations; a
reply where every node passes echoes the request's own list; scores are looked up from
pre-encoded `{"Host": ..., "Score": n}` fragments.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from epcsched.core.fit import FitMasks, PodRequest, fit_masks, reasons
from epcsched.core.score import MAX_SCORE, score
from epcsched.core.snapshot import ClusterSnapshot, IntArray
from epcsched.extender import wire
from epcsched.objects import ObjectError, pod_info

ObjectArray = npt.NDArray[np.object_]

_POD_CACHE_SIZE = 64
_NAMES_CACHE_SIZE = 8


@dataclass(slots=True)
class _NameList:
    """A decoded `NodeNames` list and what is derived from it."""

    names: list[str]
    encoded: ObjectArray
    """Each name as a JSON string literal, ready to join."""
    generation: int = -1
    slots: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    score_table: ObjectArray | None = None
    """`score_table[i, s]` is the encoded `{"Host": names[i], "Score": s}`."""


def _score_table(encoded: list[bytes]) -> ObjectArray:
    table = np.empty((len(encoded), MAX_SCORE + 1), dtype=object)
    for i, name in enumerate(encoded):
        prefix = b'{"Host":' + name + b',"Score":'
        for s in range(MAX_SCORE + 1):
            table[i, s] = prefix + str(s).encode() + b"}"
    return table


class ExtenderService:
    """Answers extender verbs from whatever `ClusterSnapshot` the state currently holds."""

    def __init__(
        self,
        snapshot: Callable[[], ClusterSnapshot],
        *,
        strategy: str,
        prefer_non_sgx: bool = True,
    ) -> None:
        self._snapshot = snapshot
        self.strategy = strategy
        self.prefer_non_sgx = prefer_non_sgx
        self._pods: OrderedDict[bytes, PodRequest] = OrderedDict()
        self._names: OrderedDict[bytes, _NameList] = OrderedDict()

    # ----- decoding with caches ----------------------------------------------------------
    def pod_request(self, raw: bytes, snapshot: ClusterSnapshot) -> PodRequest:
        cached = self._pods.get(raw)
        if cached is not None:
            self._pods.move_to_end(raw)
            return cached
        pod = wire.decode_pod(raw)
        try:
            info = pod_info(pod, snapshot.epc_resources)
        except ObjectError as exc:
            raise wire.BadRequest(f"Pod: {exc}") from None
        request = PodRequest.of(info)
        self._pods[raw] = request
        if len(self._pods) > _POD_CACHE_SIZE:
            self._pods.popitem(last=False)
        return request

    def _name_list(self, raw: bytes, snapshot: ClusterSnapshot) -> _NameList:
        entry = self._names.get(raw)
        if entry is None:
            names = wire.decode_node_names(raw)
            encoded = np.empty(len(names), dtype=object)
            encoded[:] = [wire.encode_name(n) for n in names]
            entry = _NameList(names=names, encoded=encoded)
            self._names[raw] = entry
            if len(self._names) > _NAMES_CACHE_SIZE:
                self._names.popitem(last=False)
        else:
            self._names.move_to_end(raw)
        if entry.generation != snapshot.generation:
            entry.slots = snapshot.slots_of(entry.names)
            entry.generation = snapshot.generation
        return entry

    # ----- verbs -------------------------------------------------------------------------
    def filter(self, body: bytes) -> bytes:
        args = wire.split_args(body)
        snapshot = self._snapshot()
        request = self.pod_request(args.pod_raw, snapshot)
        if args.nodes_raw is not None:
            names, raws = wire.decode_nodes(args.nodes_raw)
            slots = snapshot.slots_of(names)
            masks = fit_masks(snapshot, request, slots)
            failed, unresolvable = self._failures(snapshot, request, names, slots, masks)
            passing = [raws[i] for i in np.flatnonzero(masks.ok).tolist()]
            return wire.filter_reply_nodes(passing, failed, unresolvable)
        assert args.node_names_raw is not None
        entry = self._name_list(args.node_names_raw, snapshot)
        masks = fit_masks(snapshot, request, entry.slots)
        if masks.ok.all():
            return wire.filter_reply_names(args.node_names_raw, {}, {})
        failed, unresolvable = self._failures(snapshot, request, entry.names, entry.slots, masks)
        names_json = b"[" + b",".join(entry.encoded[masks.ok].tolist()) + b"]"
        return wire.filter_reply_names(names_json, failed, unresolvable)

    def _failures(
        self,
        snapshot: ClusterSnapshot,
        request: PodRequest,
        names: list[str],
        slots: IntArray,
        masks: FitMasks,
    ) -> tuple[dict[str, str], dict[str, str]]:
        failed: dict[str, str] = {}
        unresolvable: dict[str, str] = {}
        bad = np.flatnonzero(~masks.ok)
        if bad.size == 0:
            return failed, unresolvable
        texts = reasons(snapshot, request, slots[bad])
        hard = masks.unresolvable[bad].tolist()
        for i, text, is_hard in zip(bad.tolist(), texts, hard, strict=True):
            (unresolvable if is_hard else failed)[names[i]] = text
        return failed, unresolvable

    def prioritize(self, body: bytes) -> bytes:
        args = wire.split_args(body)
        snapshot = self._snapshot()
        request = self.pod_request(args.pod_raw, snapshot)
        if args.nodes_raw is not None:
            names, _ = wire.decode_nodes(args.nodes_raw)
            slots = snapshot.slots_of(names)
            scores = score(
                snapshot, request, slots, self.strategy, prefer_non_sgx=self.prefer_non_sgx
            )
            return wire.encode(
                [{"Host": n, "Score": s} for n, s in zip(names, scores.tolist(), strict=True)]
            )
        assert args.node_names_raw is not None
        entry = self._name_list(args.node_names_raw, snapshot)
        scores = score(
            snapshot, request, entry.slots, self.strategy, prefer_non_sgx=self.prefer_non_sgx
        )
        if entry.score_table is None:
            entry.score_table = _score_table(entry.encoded.tolist())
        picked = entry.score_table[np.arange(len(entry.names)), scores]
        return b"[" + b",".join(picked.tolist()) + b"]"
