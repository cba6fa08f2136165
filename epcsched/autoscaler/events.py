"""Kubernetes Events from the autoscaler, written the way client-go's event recorder writes them.

Events are how a person running `kubectl describe pod` learns why the autoscaler did (or did not)
add a node for it (`TriggeredScaleUp`, `NotTriggerScaleUp`) or why a node went (`ScaleDown`).
The loop repeats the same verdict on every pass, so repeats are folded as client-go's correlator
folds them: the same object, type, reason and message within ten minutes raises the existing
Event's `count` and `lastTimestamp` instead of adding one more Event. An Event is never worth
failing the loop for: API errors are logged and swallowed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast

from kubernetes_asyncio import client

from epcsched.autoscaler.kubeapi import KubeApiError, Obj, request

log = logging.getLogger("epcsched.autoscaler.events")

EventType = Literal["Normal", "Warning"]
MERGE_PATCH = "application/merge-patch+json"
#: events.k8s.io rejects longer notes; core/v1 Events are kept within the same bound.
MAX_MESSAGE = 1024


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """The object an Event is about (core/v1 ObjectReference). `namespace` is "" for
    cluster-scoped objects such as Nodes."""

    kind: str
    namespace: str
    name: str
    uid: str = ""
    api_version: str = "v1"

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> ObjectRef:
        """The reference to an object as the API sends it (JSON with kind and metadata); a
        list item without `kind`/`apiVersion` is taken for a Pod (namespaced) or Node."""
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace") or ""
        kind = obj.get("kind") or ("Pod" if namespace else "Node")
        return cls(
            kind,
            namespace,
            meta.get("name") or "",
            meta.get("uid") or "",
            obj.get("apiVersion") or "v1",
        )

    def body(self) -> Obj:
        ref: Obj = {"kind": self.kind, "name": self.name, "apiVersion": self.api_version}
        if self.namespace:
            ref["namespace"] = self.namespace
        if self.uid:
            ref["uid"] = self.uid
        return ref


@dataclass(slots=True)
class _Seen:
    namespace: str
    name: str
    count: int
    first_timestamp: str
    last: float


def _stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    """Writes core/v1 Events, folding repeats as client-go does.

    `api` is an open kubernetes-asyncio ApiClient. Events about cluster-scoped objects go to
    `namespace_for_cluster_scoped` (client-go uses "default"). `clock` is Unix time in seconds.
    """

    def __init__(
        self,
        api: client.ApiClient,
        namespace_for_cluster_scoped: str = "default",
        component: str = "epcsched-autoscaler",
        *,
        host: str = "",
        clock: Callable[[], float] = time.time,
        repeat_window: float = 600.0,
        cache_size: int = 4096,
        request_timeout: float = 10.0,
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.namespace_for_cluster_scoped = namespace_for_cluster_scoped
        self.component = component
        self.host = host
        """`source.host` and `reportingInstance`: the pod or host the recorder runs in."""
        self.clock = clock
        self.repeat_window = repeat_window
        """A repeat this soon after the last one updates the Event instead of adding one."""
        self.cache_size = cache_size
        self.request_timeout = request_timeout
        self._seen: OrderedDict[tuple[str, ...], _Seen] = OrderedDict()
        self._locks: dict[tuple[str, ...], asyncio.Lock] = {}
        self._last_nanos = 0

    async def record(self, involved: ObjectRef, type: EventType, reason: str, message: str) -> None:
        """Record that `reason: message` happened to `involved`. Never raises an API error."""
        message = message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."
        key = (
            involved.kind,
            involved.namespace,
            involved.name,
            involved.uid,
            involved.api_version,
            type,
            reason,
            message,
        )
        # One lock per Event: two records of one event must not both see "not seen yet",
        # while Events about different objects (a scale-up's hundreds of pods) go out at once.
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                now = self.clock()
                seen = self._seen.get(key)
                if seen is not None and now - seen.last <= self.repeat_window:
                    await self._repeat(key, seen, now, involved, type, reason, message)
                else:
                    await self._create(key, now, involved, type, reason, message)
        finally:
            if not lock.locked() and self._locks.get(key) is lock:
                del self._locks[key]

    async def _create(
        self,
        key: tuple[str, ...],
        now: float,
        involved: ObjectRef,
        type: EventType,
        reason: str,
        message: str,
        *,
        count: int = 1,
        first_timestamp: str | None = None,
        name: str | None = None,
    ) -> None:
        namespace = involved.namespace or self.namespace_for_cluster_scoped
        if name is None:
            # client-go names an Event after its object and the time in nanoseconds, in hex;
            # the stamp only moves forward, so two Events in one clock tick get two names.
            self._last_nanos = max(int(now * 1e9), self._last_nanos + 1)
            name = f"{involved.name}.{self._last_nanos:x}"
        stamp = _stamp(now)
        event: Obj = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": involved.body(),
            "reason": reason,
            "message": message,
            "source": {"component": self.component, **({"host": self.host} if self.host else {})},
            "firstTimestamp": first_timestamp or stamp,
            "lastTimestamp": stamp,
            "count": count,
            "type": type,
            "reportingComponent": self.component,
            "reportingInstance": self.host,
        }
        try:
            await request(
                self.core.create_namespaced_event(
                    namespace,
                    cast(Any, event),
                    _preload_content=False,
                    _request_timeout=self.request_timeout,
                )
            )
        except KubeApiError as exc:
            log.warning(
                "event %s %s on %s %s not recorded: %s",
                type,
                reason,
                involved.kind,
                _name(involved),
                exc,
            )
            return
        log.debug("event %s %s on %s %s: %s", type, reason, involved.kind, _name(involved), message)
        self._remember(key, _Seen(namespace, name, count, event["firstTimestamp"], now))

    async def _repeat(
        self,
        key: tuple[str, ...],
        seen: _Seen,
        now: float,
        involved: ObjectRef,
        type: EventType,
        reason: str,
        message: str,
    ) -> None:
        patch = {"count": seen.count + 1, "lastTimestamp": _stamp(now)}
        try:
            await request(
                # The client accepts `_content_type`; its type stubs do not list it.
                self.core.patch_namespaced_event(  # type: ignore[call-arg]
                    seen.name,
                    seen.namespace,
                    patch,
                    _content_type=MERGE_PATCH,
                    _preload_content=False,
                    _request_timeout=self.request_timeout,
                )
            )
        except KubeApiError as exc:
            if exc.status == 404:
                # The Event expired (kube-apiserver keeps them an hour): client-go writes it
                # again under its old name, keeping the count.
                await self._create(
                    key,
                    now,
                    involved,
                    type,
                    reason,
                    message,
                    count=seen.count + 1,
                    first_timestamp=seen.first_timestamp,
                    name=seen.name,
                )
                return
            log.warning(
                "event %s %s on %s %s (repeat %d) not recorded: %s",
                type,
                reason,
                involved.kind,
                _name(involved),
                seen.count + 1,
                exc,
            )
            return
        seen.count += 1
        seen.last = now
        self._remember(key, seen)

    def _remember(self, key: tuple[str, ...], seen: _Seen) -> None:
        self._seen[key] = seen
        self._seen.move_to_end(key)
        while len(self._seen) > self.cache_size:
            self._seen.popitem(last=False)


def _name(ref: ObjectRef) -> str:
    return f"{ref.namespace}/{ref.name}" if ref.namespace else ref.name


__all__ = ["EventRecorder", "EventType", "ObjectRef"]
