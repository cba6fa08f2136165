"""Scale-down of one node, as cluster-autoscaler does it: taint, check, evict, wait, or undo.

The planner decides which node is unneeded; this module empties it through the API without ever
deleting a pod behind a PodDisruptionBudget's back. `Drainer.drain` first taints the node
(`epcsched.io/scale-down:NoSchedule`, so nothing new lands while it empties), then refuses if any
pod on it may not be moved (`drain_blocker`), then evicts the movable pods through the Eviction
API, retrying the 429s a budget answers until `max_pod_eviction_time` (cluster-autoscaler's
MaxPodEvictionTime, 2 minutes), and waits for them to leave. Anything short of an empty node
removes the taint again and returns a result that names the pods that stayed and why; the caller
removes the node from its pool only on success.

The node's taints are changed read-modify-write: the patch carries the resourceVersion that was
read, so a concurrent change (the kubelet, another controller) is a 409 and a retry, never a lost
taint. Only our own taint is ever added or removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from kubernetes_asyncio import client

from epcsched.autoscaler.events import EventRecorder, EventType, ObjectRef
from epcsched.autoscaler.kubeapi import KubeApiError, Obj, request

log = logging.getLogger("epcsched.autoscaler.drain")

SCALE_DOWN_TAINT = "epcsched.io/scale-down"
"""The taint that marks a node being emptied for removal (cluster-autoscaler's
`ToBeDeletedByClusterAutoscaler`); its value is the Unix time it was added."""
SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"
MIRROR = "kubernetes.io/config.mirror"
MERGE_PATCH = "application/merge-patch+json"

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class DrainError(Exception):
    """Cordoning or uncordoning a node failed (the API refused or did not answer)."""


# ----- which pods move, which block ----------------------------------------------------
@dataclass(frozen=True, slots=True)
class _PodFacts:
    """What the drain rules read from a pod, from a JSON object or a kubernetes model."""

    key: str
    uid: str
    phase: str
    annotations: Mapping[str, str]
    controller_kind: str | None
    deleting: bool


def _facts(pod: Any) -> _PodFacts:
    if isinstance(pod, Mapping):
        meta = pod.get("metadata") or {}
        status = pod.get("status") or {}
        owners = [
            (o.get("kind"), o.get("controller"))
            for o in meta.get("ownerReferences") or ()
            if isinstance(o, Mapping)
        ]
        namespace, name = meta.get("namespace") or "default", meta.get("name") or ""
        uid, phase = meta.get("uid") or "", status.get("phase") or ""
        annotations = meta.get("annotations") or {}
        deleting = bool(meta.get("deletionTimestamp"))
    else:  # a kubernetes-asyncio V1Pod
        meta, status = pod.metadata, pod.status
        owners = [(o.kind, o.controller) for o in (meta.owner_references or ())]
        namespace, name = meta.namespace or "default", meta.name or ""
        uid, phase = meta.uid or "", (status.phase if status else None) or ""
        annotations = meta.annotations or {}
        deleting = meta.deletion_timestamp is not None
    controller = next((str(kind) for kind, is_controller in owners if is_controller), None)
    return _PodFacts(f"{namespace}/{name}", uid, phase, annotations, controller, deleting)


def _stays(facts: _PodFacts) -> str | None:
    """Why a pod is left where it is without blocking the drain, or None if it must move."""
    if facts.phase in ("Succeeded", "Failed"):
        return f"terminal ({facts.phase})"
    if MIRROR in facts.annotations:
        return "mirror pod (the kubelet's static pod)"
    if facts.controller_kind == "DaemonSet":
        return "DaemonSet pod"
    if facts.deleting:
        return "already being deleted"
    return None


def drain_blocker(pod: Mapping[str, Any] | Any) -> str | None:
    """Why `pod` (a JSON object or a kubernetes-asyncio V1Pod) blocks draining its node.

    None when it does not block: it moves (a controller recreates it elsewhere), or it neither
    moves nor blocks (DaemonSet and mirror pods go with the node; terminal and terminating pods
    hold nothing). Blocking, as cluster-autoscaler rules: the annotation
    `cluster-autoscaler.kubernetes.io/safe-to-evict: "false"`, or a pod without a controller
    ownerReference (nothing would recreate it) unless it is annotated safe-to-evict "true".
    """
    facts = _facts(pod)
    if _stays(facts) is not None:
        return None
    safe = str(facts.annotations.get(SAFE_TO_EVICT, "")).lower()
    if safe == "false":
        return f'annotated {SAFE_TO_EVICT}: "false"'
    if safe == "true":
        return None
    if facts.controller_kind is None:
        return "not managed by a controller (nothing would recreate it elsewhere)"
    return None


# ----- the result ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DrainResult:
    """How a drain ended. On failure the node is left without our taint (when the API let us
    remove it; `reason` says so otherwise)."""

    node: str
    ok: bool
    reason: str
    """One line for logs, Events and the status ConfigMap."""
    evicted: tuple[str, ...] = ()
    """`namespace/name` of every pod an eviction was accepted for (gone, or on its way)."""
    stuck: Mapping[str, str] = field(default_factory=dict)
    """Pods that blocked the drain or did not leave in time, with why."""


# ----- the drainer ---------------------------------------------------------------------
class Drainer:
    """Empties nodes for scale-down through the Eviction API.

    `api` is an open kubernetes-asyncio ApiClient (the caller owns and closes it). `clock` is
    Unix time in seconds (deadlines, taint values); `sleep` waits between retries. Tests pass a
    fake pair so that a two-minute eviction deadline takes milliseconds.
    """

    def __init__(
        self,
        api: client.ApiClient,
        *,
        max_pod_eviction_time: float = 120.0,
        retry_interval: float = 10.0,
        events: EventRecorder | None = None,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        request_timeout: float = 10.0,
        conflict_retries: int = 5,
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.max_pod_eviction_time = max_pod_eviction_time
        """How long evictions are retried, and evicted pods waited for, before giving up."""
        self.retry_interval = retry_interval
        """Pause between eviction attempts of a pod, and between checks that pods have left."""
        self.events = events
        """Where `ScaleDown`/`ScaleDownFailed` Events go (none when None)."""
        self.clock = clock
        self.sleep = sleep
        self.request_timeout = request_timeout
        self.conflict_retries = conflict_retries

    # -- taints --------------------------------------------------------------------------
    async def cordon(self, node: str) -> Obj:
        """Add our NoSchedule taint to `node` (kept if already there); returns the Node.
        Raises DrainError."""
        value = str(int(self.clock()))

        def add(taints: list[Obj]) -> list[Obj] | None:
            if any(t.get("key") == SCALE_DOWN_TAINT for t in taints):
                return None
            return [*taints, {"key": SCALE_DOWN_TAINT, "value": value, "effect": "NoSchedule"}]

        updated, changed = await self._change_taints(node, add, "cordon")
        if changed:
            log.info("node %s: tainted %s=%s:NoSchedule", node, SCALE_DOWN_TAINT, value)
        else:
            log.info("node %s: already tainted %s", node, SCALE_DOWN_TAINT)
        return updated

    async def uncordon(self, node: str) -> None:
        """Remove our taint from `node`, leaving every other taint. A node that is gone or has no
        such taint is fine. Raises DrainError."""

        def remove(taints: list[Obj]) -> list[Obj] | None:
            kept = [t for t in taints if t.get("key") != SCALE_DOWN_TAINT]
            return None if len(kept) == len(taints) else kept

        try:
            _, changed = await self._change_taints(node, remove, "uncordon")
        except _NodeGone:
            log.info("node %s: gone, nothing to uncordon", node)
            return
        if changed:
            log.info("node %s: removed the %s taint", node, SCALE_DOWN_TAINT)

    async def uncordon_all(self) -> list[str]:
        """Remove our taint from every node carrying it; the nodes changed.

        Call once on becoming leader: a drain cut short (a crash, a lost lease) leaves its taint
        behind, as cluster-autoscaler cleans its own on start. Raises DrainError."""
        try:
            nodes = await request(
                self.core.list_node(_preload_content=False, _request_timeout=self.request_timeout)
            )
        except KubeApiError as exc:
            raise DrainError(f"listing nodes failed: {exc}") from exc
        tainted = [
            n["metadata"]["name"]
            for n in nodes.get("items") or ()
            if any(
                t.get("key") == SCALE_DOWN_TAINT for t in (n.get("spec") or {}).get("taints") or ()
            )
        ]
        for name in tainted:
            await self.uncordon(name)
        return tainted

    async def _change_taints(
        self, node: str, change: Callable[[list[Obj]], list[Obj] | None], action: str
    ) -> tuple[Obj, bool]:
        """Apply `change` to the node's taints (None: nothing to change); (node, changed)."""
        attempts = max(self.conflict_retries, 1)
        for attempt in range(1, attempts + 1):
            try:
                current = await request(
                    self.core.read_node(
                        node, _preload_content=False, _request_timeout=self.request_timeout
                    )
                )
            except KubeApiError as exc:
                if exc.status == 404:
                    raise _NodeGone(f"{action} node {node}: {exc}") from exc
                raise DrainError(f"{action} node {node}: reading it failed: {exc}") from exc
            taints = list((current.get("spec") or {}).get("taints") or [])
            wanted = change(taints)
            if wanted is None:
                return current, False
            patch = {
                "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
                # A merge patch replaces the list (as kube-apiserver does for taints with any
                # patch type): the version precondition is what keeps other writers' taints.
                "spec": {"taints": wanted or None},
            }
            try:
                updated = await request(
                    # The client accepts `_content_type`; its type stubs do not list it.
                    self.core.patch_node(  # type: ignore[call-arg]
                        node,
                        patch,
                        _content_type=MERGE_PATCH,
                        _preload_content=False,
                        _request_timeout=self.request_timeout,
                    )
                )
            except KubeApiError as exc:
                if exc.status == 409 and attempt < attempts:
                    log.info("node %s: %s met a concurrent change (409); retrying", node, action)
                    continue
                if exc.status == 404:
                    raise _NodeGone(f"{action} node {node}: {exc}") from exc
                raise DrainError(f"{action} node {node}: {exc}") from exc
            return updated, True
        raise AssertionError("unreachable: the last attempt returns or raises")

    # -- drain ---------------------------------------------------------------------------
    async def drain(self, node: str) -> DrainResult:
        """Empty `node` for removal. Never raises for API failures: the result says what
        happened, and on failure the taint is removed again."""
        try:
            node_obj = await self.cordon(node)
        except DrainError as exc:
            log.warning("node %s: not drained: %s", node, exc)
            return DrainResult(node, False, f"cordon failed: {exc}")
        node_ref = ObjectRef.of(node_obj)
        await self._event(node_ref, "Normal", "ScaleDown", "marked the node for scale-down")
        try:
            return await self._empty(node_ref)
        except asyncio.CancelledError:
            # Stopped (shutdown, lost leadership): leave the node schedulable if we still can.
            log.warning("node %s: drain cancelled; removing the taint", node)
            with contextlib.suppress(DrainError):
                await self.uncordon(node)
            raise

    async def _empty(self, node_ref: ObjectRef) -> DrainResult:
        node = node_ref.name
        try:
            pods = await self._pods_on(node)
        except KubeApiError as exc:
            return await self._fail(node_ref, f"listing its pods failed: {exc}")
        movable: list[Obj] = []
        blocked: dict[str, str] = {}
        for pod in pods:
            facts = _facts(pod)
            stays = _stays(facts)
            if stays is not None:
                log.info("node %s: pod %s stays: %s", node, facts.key, stays)
                continue
            blocker = drain_blocker(pod)
            if blocker is not None:
                blocked[facts.key] = blocker
            else:
                movable.append(pod)
        if blocked:
            reason = "; ".join(f"pod {key} blocks: {why}" for key, why in blocked.items())
            return await self._fail(node_ref, reason, stuck=blocked)

        deadline = self.clock() + self.max_pod_eviction_time
        outcomes = await asyncio.gather(*(self._evict(node, pod, deadline) for pod in movable))
        evicted = tuple(_facts(p).key for p, (ok, _) in zip(movable, outcomes, strict=True) if ok)
        refused = {
            _facts(p).key: why for p, (ok, why) in zip(movable, outcomes, strict=True) if not ok
        }
        if refused:
            reason = "; ".join(f"pod {key} was not evicted: {why}" for key, why in refused.items())
            return await self._fail(node_ref, reason, evicted=evicted, stuck=refused)

        left = await self._wait_gone(
            node, [p for p, (ok, _) in zip(movable, outcomes, strict=True) if ok], deadline
        )
        if left:
            reason = "; ".join(f"pod {key} did not leave: {why}" for key, why in left.items())
            return await self._fail(node_ref, reason, evicted=evicted, stuck=left)
        reason = f"drained: {len(evicted)} pod(s) evicted"
        log.info("node %s: %s", node, reason)
        return DrainResult(node, True, reason, evicted=evicted)

    async def _pods_on(self, node: str) -> list[Obj]:
        listed = await request(
            self.core.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={node}",
                _preload_content=False,
                _request_timeout=self.request_timeout,
            )
        )
        return [p for p in listed.get("items") or () if isinstance(p, dict)]

    async def _evict(self, node: str, pod: Obj, deadline: float) -> tuple[bool, str]:
        """Evict one pod, retrying refusals until `deadline`: (accepted, why not)."""
        facts = _facts(pod)
        namespace, name = facts.key.split("/", 1)
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
            # The UID precondition makes sure a pod recreated under the same name (a
            # StatefulSet's) is not evicted in the old one's place.
            "deleteOptions": {"preconditions": {"uid": facts.uid}} if facts.uid else {},
        }
        attempts = 0
        while True:
            attempts += 1
            try:
                await request(
                    self.core.create_namespaced_pod_eviction(
                        name,
                        namespace,
                        cast(Any, body),
                        _preload_content=False,
                        _request_timeout=self.request_timeout,
                    )
                )
            except KubeApiError as exc:
                if exc.status == 404 or (exc.status == 409 and "UID" in exc.message):
                    log.info("node %s: pod %s already gone", node, facts.key)
                    return True, ""
                why = _refusal(exc)
                if self.clock() + self.retry_interval > deadline:
                    log.warning(
                        "node %s: pod %s not evicted after %d attempts: %s",
                        node,
                        facts.key,
                        attempts,
                        why,
                    )
                    return False, f"{why} (after {attempts} attempts)"
                log.info(
                    "node %s: eviction of pod %s refused (%s); retrying in %gs",
                    node,
                    facts.key,
                    why,
                    self.retry_interval,
                )
                await self.sleep(self.retry_interval)
                continue
            log.info("node %s: evicted pod %s", node, facts.key)
            await self._event(
                ObjectRef.of(pod), "Normal", "ScaleDown", f"deleting pod for scale-down of {node}"
            )
            return True, ""

    async def _wait_gone(self, node: str, pods: list[Obj], deadline: float) -> dict[str, str]:
        """Wait until every pod in `pods` has left `node`; those still there at `deadline`."""
        waiting = {_facts(p).uid or _facts(p).key: _facts(p).key for p in pods}
        while waiting:
            try:
                current = await self._pods_on(node)
            except KubeApiError as exc:
                log.warning("node %s: checking that evicted pods left failed: %s", node, exc)
            else:
                present = {
                    f.uid or f.key: f
                    for f in map(_facts, current)
                    if f.phase not in ("Succeeded", "Failed")
                }
                for uid in list(waiting):
                    if uid not in present:
                        log.info("node %s: pod %s has left", node, waiting.pop(uid))
                if not waiting:
                    break
            if self.clock() + self.retry_interval > deadline:
                return {
                    key: "still on the node when the deadline passed" for key in waiting.values()
                }
            await self.sleep(self.retry_interval)
        return {}

    async def _fail(
        self,
        node_ref: ObjectRef,
        reason: str,
        *,
        evicted: tuple[str, ...] = (),
        stuck: Mapping[str, str] | None = None,
    ) -> DrainResult:
        node = node_ref.name
        try:
            await self.uncordon(node)
        except DrainError as exc:
            reason = f"{reason}; and the taint could not be removed: {exc}"
        log.warning("node %s: not drained: %s", node, reason)
        await self._event(node_ref, "Warning", "ScaleDownFailed", reason)
        return DrainResult(node, False, reason, evicted=evicted, stuck=dict(stuck or {}))

    async def _event(self, ref: ObjectRef, type: EventType, reason: str, message: str) -> None:
        if self.events is not None:
            await self.events.record(ref, type, reason, message)


class _NodeGone(DrainError):
    """The node no longer exists."""


def _refusal(exc: KubeApiError) -> str:
    """Why an eviction was refused, naming the budget when one said no."""
    if exc.status == 429 and exc.causes:
        return f"429 TooManyRequests: {'; '.join(exc.causes)}"
    return str(exc)


__all__ = [
    "SAFE_TO_EVICT",
    "SCALE_DOWN_TAINT",
    "DrainError",
    "DrainResult",
    "Drainer",
    "drain_blocker",
]
