"""Filter and prioritize as pure request-bytes-to-reply-bytes functions over cluster state.

Kept apart from aiohttp so the same code is driven by the HTTP app, the benchmark and tests.
Hot-path choices, all because kube-scheduler waits for every call, one pod at a time: the
`NodeNames` list is resolved to slots run by run (`names.NameResolver`), never name by name,
read in place in the request body; fit is one gather and one comparison per requested EPC name,
over free-EPC arrays the snapshot keeps current node by node, or, for a list that names most
nodes (`cover.Cover`), one comparison with the least free EPC kept over those candidates; a
reply where every node passes echoes the request's own list; raw scores are kept per kind of
pod and node (`scores.ScoreTables`); a prioritize reply lists only the hosts that score above
the lowest (kube-scheduler adds nothing for a host it is not given, and a score all candidates
share decides nothing), found from the figures kept over a cover when there is one, and written
from names pre-encoded by slot.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import numpy as np

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
from epcsched.extender.cover import Cover
from epcsched.extender.names import NameResolver, SlotNames
from epcsched.extender.scores import ScoreTables
from epcsched.objects import ObjectError, ObjectMeta, PodStatus, pod_info

_POD_CACHE_SIZE = 64

NamesAt = Callable[[IntArray], list[str]]
"""The request's names at some of its positions."""


@dataclass(frozen=True, slots=True)
class FilterFailures:
    """The nodes a filter turned away, by name with their reasons, and the pod's own JSON:
    what the decision log needs, handed to it so that it does not read the reply back."""

    pod_raw: bytes
    failed: dict[str, str]
    """Where preemption could help (the reply's FailedNodes)."""
    unresolvable: dict[str, str]
    """Where it cannot (FailedAndUnresolvableNodes)."""


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
        self._pods: OrderedDict[bytes, PodRequest] = OrderedDict()
        self._specs: OrderedDict[bytes, PodRequest] = OrderedDict()
        self._resolver = NameResolver()
        self._slot_names = SlotNames()
        self._scores = ScoreTables(strategy, prefer_non_sgx=prefer_non_sgx)
        self._last: (
            tuple[int, bytes, tuple[wire.ExtenderArgs, IntArray | None, PodRequest]] | None
        ) = None
        self._fits: tuple[int, IntArray, PodRequest] | None = None
        """The snapshot version, slots and request a filter last found fitting everywhere:
        prioritize repeats its filter's list, and need not check the same fit again."""
        self._passed: bytes | None = None
        """The body of the last filter that passed every node, while no prioritize has
        followed it yet."""
        self._follows = False
        """Whether prioritize calls follow filters with the same body (the base profile; the
        high-throughput profile never calls prioritize)."""
        self._ahead: tuple[int, bytes, bytes] | None = None
        """Snapshot version, body and reply of a prioritize answered ahead of its request."""

    @property
    def strategy(self) -> str:
        return self._scores.strategy

    @property
    def prefer_non_sgx(self) -> bool:
        return self._scores.prefer_non_sgx

    def refresh(self) -> None:
        """Fold the snapshot's latest changes into what the next request reads: each EPC
        name's fit view and the raw-score table of the kind of pod asked about last, and
        their figures over the candidates of the list asked about last when it named most nodes
        (`cover.Cover`).

        Called after the cluster changed (a watch event), between requests: kube-scheduler is
        then binding or filtering on its own, and the node a bind changed is updated then
        rather than while it waits for our reply. Requests stay correct without it; they
        would only do the same update themselves."""
        snapshot = self._snapshot()
        cover = self._resolver.current_cover(snapshot)
        for name in snapshot.epc:
            if cover is None:
                snapshot.fit_view(name)
            else:
                cover.floor(snapshot, name)
        self._scores.refresh(snapshot, cover)

    # ----- decoding with caches ----------------------------------------------------------
    def pod_request(self, raw: bytes, snapshot: ClusterSnapshot) -> PodRequest:
        """What the pod asks of a node. Prioritize repeats its filter's pod byte for byte, and
        the replicas of one workload differ only outside `spec`, which alone decides requests:
        both are cached, so quantities are parsed once per distinct spec. A spec seen before
        is not decoded again (its bytes are the key); the rest of the pod still is, so a pod
        `decode_pod` would refuse is refused."""
        request = _cached(self._pods, raw)
        if request is not None:
            return request
        try:
            spec: bytes | None = bytes(_pod_parts.decode(raw).spec)
        except (msgspec.DecodeError, RecursionError):
            spec = None  # `decode_pod` below says what is wrong.
        request = _cached(self._specs, spec) if spec else None
        if request is None:
            pod = wire.decode_pod(raw)
            try:
                info = pod_info(pod, snapshot.epc_resources)
            except ObjectError as exc:
                raise wire.BadRequest(f"Pod: {exc}") from None
            request = PodRequest.of(info)
            if spec:
                _remember(self._specs, spec, request)
        return _remember(self._pods, raw, request)

    def _parse(
        self, body: bytes, snapshot: ClusterSnapshot
    ) -> tuple[wire.ExtenderArgs, IntArray | None, PodRequest]:
        """The request read in full; prioritize usually repeats its filter's body byte for
        byte, and then one memcmp stands for the reading."""
        last = self._last
        if (
            last is not None
            and last[0] == snapshot.generation
            and len(last[1]) == len(body)
            and last[1] == body
        ):
            return last[2]
        args, slots = self._args(body, snapshot)
        parsed = (args, slots, self.pod_request(args.pod_raw, snapshot))
        self._last = (snapshot.generation, body, parsed)
        return parsed

    def _args(
        self, body: bytes, snapshot: ClusterSnapshot
    ) -> tuple[wire.ExtenderArgs, IntArray | None]:
        """The request's parts and, in cache mode, the slot of each listed name."""
        args = wire.split_args(body)
        if args.nodes_raw is not None and args.names_from_tail:
            # Full-nodes mode never reads NodeNames, so nothing else would notice a tail slice
            # that is not the whole value (a later key hidden in it): check it is one.
            if not _names_value(args.node_names_raw):
                args = wire.split_args(body, fast=False)
            return args, None
        if args.names_buffer is None or args.nodes_raw is not None:
            return args, None
        try:
            return args, self._resolve(args, snapshot)
        except wire.BadRequest:
            if not args.names_from_tail:
                raise
        # The tail slice was not the whole NodeNames value after all; read the body in full.
        args = wire.split_args(body, fast=False)
        if args.names_buffer is None or args.nodes_raw is not None:
            return args, None
        return args, self._resolve(args, snapshot)

    def _resolve(self, args: wire.ExtenderArgs, snapshot: ClusterSnapshot) -> IntArray:
        assert args.names_buffer is not None
        # Only the set of candidates matters to the replies (a reply's entries may come in any
        # order), so a list that makes a known cover is answered with the cover's own slots.
        return self._resolver.resolve(
            args.names_buffer, snapshot, args.names_start, args.names_end, any_order=True
        )

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

    def _filter_full(
        self, snapshot: ClusterSnapshot, request: PodRequest, raw: bytes
    ) -> tuple[bytes, dict[str, str], dict[str, str]]:
        nodes = self._full_nodes(snapshot, raw)
        masks = fit_masks(snapshot, request, nodes.slots)
        ok = masks.ok.copy()
        known = np.flatnonzero(nodes.slots >= 0)
        failed, unresolvable = self._failures(
            snapshot, request, nodes.slots, masks, _names_at(nodes.names), among=known
        )
        if nodes.scratch is not None and nodes.scratch_slots is not None:
            scratch_masks = fit_masks(nodes.scratch, request, nodes.scratch_slots)
            ok[nodes.missing] = scratch_masks.ok
            more_failed, more_unresolvable = self._failures(
                nodes.scratch,
                request,
                nodes.scratch_slots,
                scratch_masks,
                _names_at([nodes.names[i] for i in nodes.missing.tolist()]),
            )
            failed.update(more_failed)
            unresolvable.update(more_unresolvable)
        passing = [nodes.raws[i] for i in np.flatnonzero(ok).tolist()]
        return wire.filter_reply_nodes(passing, failed, unresolvable), failed, unresolvable

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
        scores = _decisive(normalise(raw, eligible)).tolist()
        return wire.encode(
            [{"Host": n, "Score": s} for n, s in zip(nodes.names, scores, strict=True) if s]
        )

    # ----- verbs -------------------------------------------------------------------------
    def filter(self, body: bytes) -> bytes:
        return self.filter_and_failures(body)[0]

    def filter_and_failures(self, body: bytes) -> tuple[bytes, FilterFailures | None]:
        """The filter reply, and the nodes it failed (None when it failed none)."""
        snapshot = self._snapshot()
        self._passed = None
        args, slots, request = self._parse(body, snapshot)
        if slots is None:
            assert args.nodes_raw is not None
            reply, failed, unresolvable = self._filter_full(snapshot, request, args.nodes_raw)
            return reply, _failures_of(args.pod_raw, failed, unresolvable)
        assert args.names_buffer is not None
        # The fit view alone, not the score tables: with the high-throughput profile no
        # prioritize follows, and updating raw scores here would be work for nothing.
        cover = self._resolver.cover(slots, snapshot)
        if (
            fits_everywhere(snapshot, request, slots)
            if cover is None
            else _cover_fits(snapshot, request, cover)
        ):
            self._fits = (snapshot.version, slots, request)
            # kube-scheduler scores only when more than one node passes.
            if slots.shape[0] > 1:
                self._passed = body
            return wire.filter_reply_names(args.node_names_view(), {}, {}), None
        masks = fit_masks(snapshot, request, slots)

        def names_at(positions: IntArray) -> list[str]:
            at = slots[positions]
            if at.shape[0] and at.min() < 0:
                # A name the cache does not know has no slot to read it from.
                return _names_at(wire.decode_node_names(args.node_names_raw or b""))(positions)
            known = snapshot.slot_names
            return [known[s] or "" for s in at.tolist()]

        failed, unresolvable = self._failures(snapshot, request, slots, masks, names_at)
        passing = self._slot_names.names_json(snapshot, slots[masks.ok])
        reply = wire.filter_reply_names(passing, failed, unresolvable)
        return reply, _failures_of(args.pod_raw, failed, unresolvable)

    def _failures(
        self,
        snapshot: ClusterSnapshot,
        request: PodRequest,
        slots: IntArray,
        masks: FitMasks,
        names_at: NamesAt,
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
        for name, text, is_hard in zip(names_at(bad), texts, hard, strict=True):
            (unresolvable if is_hard else failed)[name] = text
        return failed, unresolvable

    def prioritize_ahead(self) -> None:
        """Answer now the prioritize that kube-scheduler will send next, when its filter passed
        every node and prioritize calls have been repeating their filter's body: between the
        two calls kube-scheduler runs its own scoring, and the reply is then ready when asked.
        The reply is used only if the request is that body and the snapshot has not changed
        since."""
        body = self._passed
        if body is None or not self._follows:
            return
        self._passed = None
        snapshot = self._snapshot()
        self._ahead = (snapshot.version, body, self._prioritize(snapshot, body))

    def prioritize(self, body: bytes) -> bytes:
        snapshot = self._snapshot()
        ahead, self._ahead = self._ahead, None
        passed, self._passed = self._passed, None
        if ahead is not None and ahead[0] == snapshot.version and ahead[1] == body:
            return ahead[2]
        # Whether prioritize repeats its filter's body is learned from traffic: speculating
        # when none follows would be work for nothing. A hint only, so the length will do
        # (`_parse` compares the bytes themselves); after a filter that failed nodes, whose
        # prioritize lists only the rest, there is nothing to learn from.
        last = passed if passed is not None else ahead[1] if ahead is not None else None
        if last is not None:
            self._follows = len(last) == len(body)
        return self._prioritize(snapshot, body)

    def _prioritize(self, snapshot: ClusterSnapshot, body: bytes) -> bytes:
        args, slots, request = self._parse(body, snapshot)
        if slots is None:
            assert args.nodes_raw is not None
            return self._prioritize_full(snapshot, request, args.nodes_raw)
        fits = self._fits
        # The very list and request its filter passed whole, with nothing changed since.
        passed = (
            fits is not None
            and fits[0] == snapshot.version
            and fits[1] is slots
            and fits[2] is request
        )
        cover = self._resolver.cover(slots, snapshot)
        if cover is not None and (passed or _cover_fits(snapshot, request, cover)):
            over = self._scores.above_lowest_over(snapshot, request, cover)
            if over is not None:
                return self._slot_names.scores_json(snapshot, over[0], over[1])
            passed = True
        found = self._scores.above_lowest(snapshot, request, slots, fits=passed)
        if found is not None:
            positions, scores = found
            if positions is None:
                return self._slot_names.nonzero_scores_json(snapshot, slots, scores)
            return self._slot_names.scores_json(snapshot, slots[positions], scores)
        scores = _decisive(
            score(snapshot, request, slots, self.strategy, prefer_non_sgx=self.prefer_non_sgx)
        )
        scored = np.flatnonzero(scores)
        return self._slot_names.scores_json(snapshot, slots[scored], scores[scored])

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


def _cover_fits(snapshot: ClusterSnapshot, request: PodRequest, cover: Cover) -> bool:
    """`fits_everywhere` over `cover`'s candidates, from the least free EPC kept over them."""
    for name, need in request.epc.items():
        if name not in snapshot.epc or cover.floor(snapshot, name) < need:
            return False
    return True


def _failures_of(
    pod_raw: bytes, failed: dict[str, str], unresolvable: dict[str, str]
) -> FilterFailures | None:
    return FilterFailures(pod_raw, failed, unresolvable) if failed or unresolvable else None


def _decisive(scores: IntArray) -> IntArray:
    """The scores less what every candidate shares, which changes no decision.

    kube-scheduler adds each listed host's score to that host's total and picks the highest
    total; a host it is not given adds nothing, the same as 0. So only the hosts that score
    above the lowest are worth listing, and when all score alike (identical empty nodes all get
    10) the answer is an empty list.
    """
    if scores.shape[0] == 0:
        return scores
    lowest = int(scores.min())
    return scores - lowest if lowest else scores


def _cached(cache: OrderedDict[bytes, PodRequest], key: bytes) -> PodRequest | None:
    request = cache.get(key)
    if request is not None:
        cache.move_to_end(key)
    return request


def _remember(cache: OrderedDict[bytes, PodRequest], key: bytes, request: PodRequest) -> PodRequest:
    cache[key] = request
    if len(cache) > _POD_CACHE_SIZE:
        cache.popitem(last=False)
    return request


def _names_at(names: list[str]) -> NamesAt:
    return lambda positions: [names[i] for i in positions.tolist()]


def _meta_victims(uids: list[str], pdb_violations: int) -> dict[str, object]:
    return {"Pods": [{"UID": uid} for uid in uids], "NumPDBViolations": pdb_violations}


class _PodParts(msgspec.Struct):
    """A Pod with its spec kept raw (empty when absent); metadata and status typed as in
    `objects.Pod`, so that the same pods fail to decode."""

    metadata: ObjectMeta | None = None
    spec: msgspec.Raw = msgspec.Raw()
    status: PodStatus | None = None


_pod_parts = msgspec.json.Decoder(_PodParts)
_NAMES = msgspec.json.Decoder(list[str] | None)


def _names_value(raw: bytes | None) -> bool:
    """Whether `raw` is exactly one JSON value of NodeNames' type (a list of names, or null)."""
    if raw is None:
        return True
    try:
        _NAMES.decode(raw)
    except msgspec.DecodeError:
        return False
    return True
