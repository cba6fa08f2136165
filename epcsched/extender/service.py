"""Filter and prioritize as pure request-bytes-to-reply-bytes functions over cluster state.

Kept apart from aiohttp so the same code is driven by the HTTP app, the benchmark and tests.
Hot-path choices, all because kube-scheduler waits for every call: the `NodeNames` list is
almost the same on every request, so its decoding and name-to-slot lookup are cached against
its raw bytes (the slots redone only when the node set changes); fit is one gather and one
comparison per requested EPC name; a reply where every node passes echoes the request's own
list; a prioritize reply is a fixed-width template with the score digits written in.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from epcsched.core.fit import (
    FitMasks,
    PodRequest,
    fit_masks,
    fits_after_evicting,
    fits_everywhere,
    reasons,
)
from epcsched.core.score import normalise, raw_and_eligible, score
from epcsched.core.snapshot import ClusterSnapshot, IntArray
from epcsched.extender import wire
from epcsched.objects import ObjectError, pod_info

ObjectArray = npt.NDArray[np.object_]

_POD_CACHE_SIZE = 64
_NAMES_CACHE_SIZE = 8


@dataclass(slots=True)
class _NameList:
    """A decoded `NodeNames` list and what is derived from it."""

    raw: bytes
    names: list[str]
    encoded: ObjectArray
    """Each name as a JSON string literal, ready to join."""
    generation: int = -1
    slots: IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    score_template: _ScoreTemplate | None = None
    all_pass_reply: bytes | None = None
    """The filter reply when every listed node passes: the list echoed back."""


@dataclass(frozen=True, slots=True)
class _ScoreTemplate:
    """The whole prioritize reply for a name list, with two bytes left for each score.

    Every entry is `{"Host":"<name>","Score":NN}` where NN is ` 0`..`10` (a space is valid
    JSON whitespace), so entries have a fixed length whatever the scores; a reply is the
    template with the score digits written in by index.
    """

    buffer: npt.NDArray[np.uint8]
    offsets: IntArray

    @classmethod
    def of(cls, encoded_names: list[bytes]) -> _ScoreTemplate:
        pieces = [b"["]
        offsets = []
        position = 1
        for i, name in enumerate(encoded_names):
            head = (b"," if i else b"") + b'{"Host":' + name + b',"Score":'
            offsets.append(position + len(head))
            pieces.append(head + b" 0}")
            position += len(head) + 3
        pieces.append(b"]")
        buffer = np.frombuffer(b"".join(pieces), dtype=np.uint8).copy()
        return cls(buffer, np.array(offsets, dtype=np.int64))

    def render(self, scores: IntArray) -> bytes:
        out = self.buffer.copy()
        out[self.offsets] = _TENS[scores]
        out[self.offsets + 1] = _ONES[scores]
        return out.tobytes()


_TENS = np.frombuffer(b"          1", dtype=np.uint8)
_ONES = np.frombuffer(b"01234567890", dtype=np.uint8)


@dataclass(frozen=True, slots=True)
class _FullNodes:
    """A full-nodes request's Node list, resolved against the cache."""

    names: list[str]
    raws: list[bytes]
    slots: IntArray
    """Cache slot of each node, -1 where the cache does not know it."""
    missing: IntArray
    """Positions of the nodes the cache does not know."""
    scratch: ClusterSnapshot | None
    """Those nodes, from the request's own objects, with the cache's pods bound to them."""
    scratch_slots: IntArray | None


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
        # Most recent first. Looked up by length, then compared byte for byte: that is a memcmp,
        # far cheaper than hashing a list of thousands of names on every request.
        self._names: list[_NameList] = []

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
        entry = None
        for i, candidate in enumerate(self._names):
            if len(candidate.raw) == len(raw) and candidate.raw == raw:
                entry = candidate
                if i:
                    self._names.insert(0, self._names.pop(i))
                break
        if entry is None:
            names = wire.decode_node_names(raw)
            encoded = np.empty(len(names), dtype=object)
            encoded[:] = [wire.encode_name(n) for n in names]
            entry = _NameList(raw=raw, names=names, encoded=encoded)
            self._names.insert(0, entry)
            del self._names[_NAMES_CACHE_SIZE:]
        if entry.generation != snapshot.generation:
            entry.slots = snapshot.slots_of(entry.names)
            entry.generation = snapshot.generation
        return entry

    def _args(
        self, body: bytes, snapshot: ClusterSnapshot
    ) -> tuple[wire.ExtenderArgs, _NameList | None]:
        args = wire.split_args(body)
        if args.node_names_raw is None or args.nodes_raw is not None:
            return args, None
        try:
            return args, self._name_list(args.node_names_raw, snapshot)
        except wire.BadRequest:
            if not args.names_from_tail:
                raise
        # The tail slice was not the whole NodeNames value after all; read the body in full.
        args = wire.split_args(body, fast=False)
        if args.node_names_raw is None or args.nodes_raw is not None:
            return args, None
        return args, self._name_list(args.node_names_raw, snapshot)

    # ----- full-nodes mode ---------------------------------------------------------------
    def _full_nodes(self, snapshot: ClusterSnapshot, raw: bytes) -> _FullNodes:
        """The request's Nodes, each resolved to the cache or, if the cache has not seen it
        yet, to a scratch snapshot built from the request's own Node object and the pods the
        cache has bound to that name."""
        names, raws = wire.decode_nodes(raw)
        slots = snapshot.slots_of(names)
        missing = np.flatnonzero(slots < 0)
        if missing.size == 0:
            return _FullNodes(names, raws, slots, missing, None, None)
        scratch = ClusterSnapshot(
            snapshot.epc_resources, headroom=snapshot.headroom, accounting="requests"
        )
        for i in missing.tolist():
            info = wire.decode_node(raws[i], i, snapshot.epc_resources)
            if info.name not in scratch.slots:
                scratch.upsert_node(info)
                for pod in snapshot.pods_on(info.name):
                    scratch.upsert_pod(pod)
        # Reasons such as "no node in the cluster advertises X" must count the whole cluster.
        for name, count in snapshot.advertisers.items():
            scratch.advertisers[name] += count
        scratch_slots = scratch.slots_of([names[i] for i in missing.tolist()])
        return _FullNodes(names, raws, slots, missing, scratch, scratch_slots)

    def _filter_full(self, snapshot: ClusterSnapshot, request: PodRequest, raw: bytes) -> bytes:
        nodes = self._full_nodes(snapshot, raw)
        masks = fit_masks(snapshot, request, nodes.slots)
        ok = masks.ok.copy()
        known = np.flatnonzero(nodes.slots >= 0)
        failed, unresolvable = self._failures(
            snapshot, request, nodes.names, nodes.slots, masks, among=known
        )
        if nodes.scratch is not None and nodes.scratch_slots is not None:
            scratch_masks = fit_masks(nodes.scratch, request, nodes.scratch_slots)
            ok[nodes.missing] = scratch_masks.ok
            more_failed, more_unresolvable = self._failures(
                nodes.scratch,
                request,
                [nodes.names[i] for i in nodes.missing.tolist()],
                nodes.scratch_slots,
                scratch_masks,
            )
            failed.update(more_failed)
            unresolvable.update(more_unresolvable)
        passing = [nodes.raws[i] for i in np.flatnonzero(ok).tolist()]
        return wire.filter_reply_nodes(passing, failed, unresolvable)

    def _prioritize_full(
        self, snapshot: ClusterSnapshot, request: PodRequest, raw_nodes: bytes
    ) -> bytes:
        nodes = self._full_nodes(snapshot, raw_nodes)
        raw, eligible = raw_and_eligible(
            snapshot, request, nodes.slots, self.strategy, prefer_non_sgx=self.prefer_non_sgx
        )
        if nodes.scratch is not None and nodes.scratch_slots is not None:
            more_raw, more_eligible = raw_and_eligible(
                nodes.scratch,
                request,
                nodes.scratch_slots,
                self.strategy,
                prefer_non_sgx=self.prefer_non_sgx,
            )
            raw[nodes.missing] = more_raw
            eligible[nodes.missing] = more_eligible
        scores = normalise(raw, eligible).tolist()
        return wire.encode(
            [{"Host": n, "Score": s} for n, s in zip(nodes.names, scores, strict=True)]
        )

    # ----- verbs -------------------------------------------------------------------------
    def filter(self, body: bytes) -> bytes:
        snapshot = self._snapshot()
        args, entry = self._args(body, snapshot)
        request = self.pod_request(args.pod_raw, snapshot)
        if entry is None:
            assert args.nodes_raw is not None
            return self._filter_full(snapshot, request, args.nodes_raw)
        if fits_everywhere(snapshot, request, entry.slots):
            if entry.all_pass_reply is None:
                entry.all_pass_reply = wire.filter_reply_names(entry.raw, {}, {})
            return entry.all_pass_reply
        masks = fit_masks(snapshot, request, entry.slots)
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
        *,
        among: IntArray | None = None,
    ) -> tuple[dict[str, str], dict[str, str]]:
        """Reasons for the candidates that failed (only those in `among`, when given)."""
        failed: dict[str, str] = {}
        unresolvable: dict[str, str] = {}
        bad = np.flatnonzero(~masks.ok)
        if among is not None:
            bad = np.intersect1d(bad, among)
        if bad.size == 0:
            return failed, unresolvable
        texts = reasons(snapshot, request, slots[bad])
        hard = masks.unresolvable[bad].tolist()
        for i, text, is_hard in zip(bad.tolist(), texts, hard, strict=True):
            (unresolvable if is_hard else failed)[names[i]] = text
        return failed, unresolvable

    def prioritize(self, body: bytes) -> bytes:
        snapshot = self._snapshot()
        args, entry = self._args(body, snapshot)
        request = self.pod_request(args.pod_raw, snapshot)
        if entry is None:
            assert args.nodes_raw is not None
            return self._prioritize_full(snapshot, request, args.nodes_raw)
        scores = score(
            snapshot, request, entry.slots, self.strategy, prefer_non_sgx=self.prefer_non_sgx
        )
        if entry.score_template is None:
            entry.score_template = _ScoreTemplate.of(entry.encoded.tolist())
        return entry.score_template.render(scores)

    def preempt(self, body: bytes) -> bytes:
        """Keep only the nodes where evicting the proposed victims frees enough EPC.

        kube-scheduler proposes victims per node from its own view; a node where they hold too
        little EPC of the requested name would be preempted for nothing, so it is dropped.
        """
        args = wire.decode_preempt(body)
        snapshot = self._snapshot()
        request = self.pod_request(args.pod_raw, snapshot)
        kept: dict[str, dict[str, object]] = {}
        if args.meta_victims is not None:
            for node, meta in sorted(args.meta_victims.items()):
                uids = [p.UID for p in meta.Pods or ()]
                on_node = {p.uid: p for p in snapshot.pods_on(node)}
                victims = [on_node[uid] for uid in uids if uid in on_node]
                if not request.wants_epc or fits_after_evicting(snapshot, request, node, victims):
                    kept[node] = _meta_victims(uids, meta.NumPDBViolations)
        else:
            assert args.victims is not None
            for node, full in sorted(args.victims.items()):
                victims = []
                for i, pod in enumerate(full.Pods or ()):
                    try:
                        victims.append(pod_info(pod, snapshot.epc_resources))
                    except ObjectError as exc:
                        raise wire.BadRequest(
                            f"NodeNameToVictims[{node}].Pods[{i}]: {exc}"
                        ) from None
                if not request.wants_epc or fits_after_evicting(snapshot, request, node, victims):
                    kept[node] = _meta_victims([v.uid for v in victims], full.NumPDBViolations)
        return wire.encode({"NodeNameToMetaVictims": kept})


def _meta_victims(uids: list[str], pdb_violations: int) -> dict[str, object]:
    return {"Pods": [{"UID": uid} for uid in uids], "NumPDBViolations": pdb_violations}
