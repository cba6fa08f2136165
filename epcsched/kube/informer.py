"""Nodes and pods from the Kubernetes API, kept current in a `ClusterSnapshot` by list and watch.

This is what lets the extender answer from memory: each resource is listed once, then watched
from the list's resourceVersion (with bookmarks, so a resume after a quiet period does not fall
out of the server's history). Each watch event costs one O(1) snapshot update; nothing walks all
pods per request. A `410 Gone` (history compacted) triggers a fresh list that replaces the
resource's contents; other failures and dropped connections resume the watch from the last
version seen, after an exponential backoff with jitter so a restarting API server is not hit by
every client at once.

Requests go through kubernetes-asyncio's generated `CoreV1Api` with `_preload_content=False`:
the client still builds the URL, authentication and TLS, and the bytes are decoded straight into
epcsched's msgspec structs instead of the generated models, which are an order of magnitude
slower on large lists and busy watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import msgspec
from kubernetes_asyncio import client

from epcsched.config import Config
from epcsched.core.snapshot import ClusterSnapshot
from epcsched.kube.client import api_client
from epcsched.lookalike import describe, pod_lookalikes
from epcsched.model import NodeInfo, PodInfo
from epcsched.objects import Node, ObjectError, Pod, node_info, pod_info

log = logging.getLogger("epcsched.kube.informer")

#: Pods that can still hold resources, as kube-scheduler's own pod informer selects them.
ACTIVE_PODS = "status.phase!=Succeeded,status.phase!=Failed"

#: A watch line longer than this is refused (the watch is then resumed): etcd keeps objects
#: under 1.5 MiB, so only a broken stream gets here, and it must not grow memory without end.
MAX_EVENT_BYTES = 16 * 2**20


# ----- wire structs ----------------------------------------------------------------------
class ListMeta(msgspec.Struct):
    resourceVersion: str = ""
    continue_: str | None = msgspec.field(default=None, name="continue")


class PodList(msgspec.Struct):
    metadata: ListMeta = msgspec.field(default_factory=ListMeta)
    items: list[Pod] | None = None


class NodeList(msgspec.Struct):
    metadata: ListMeta = msgspec.field(default_factory=ListMeta)
    items: list[Node] | None = None


class WatchEvent(msgspec.Struct):
    type: str
    object: msgspec.Raw


class _VersionMeta(msgspec.Struct):
    resourceVersion: str | None = None


class _Versioned(msgspec.Struct):
    metadata: _VersionMeta | None = None


class Status(msgspec.Struct):
    code: int = 0
    reason: str = ""
    message: str = ""


_status_decoder = msgspec.json.Decoder(Status)
_event_decoder = msgspec.json.Decoder(WatchEvent)
_version_decoder = msgspec.json.Decoder(_Versioned)


class ApiFailure(Exception):
    """The API answered with an error status (or an ERROR watch event)."""

    def __init__(self, code: int, reason: str, message: str, *, retry_after: float = 0.0):
        super().__init__(f"{code} {reason}: {message}" if reason else f"{code}: {message}")
        self.code = code
        self.retry_after = retry_after


class Gone(ApiFailure):
    """410: the version asked for is older than the server's history; list again."""


def _failure(code: int, body: bytes, retry_after: str | None = None) -> ApiFailure:
    try:
        status = _status_decoder.decode(body)
        reason, message = status.reason, status.message
    except msgspec.DecodeError:
        reason, message = "", body[:200].decode("utf-8", "replace")
    delay = 0.0
    if retry_after:
        with contextlib.suppress(ValueError):
            delay = float(retry_after)
    cls = Gone if code == 410 else ApiFailure
    return cls(code, reason, message, retry_after=delay)


# ----- settings and backoff --------------------------------------------------------------
@dataclass
class InformerSettings:
    """How the informers talk to the API; the defaults follow client-go's reflector."""

    backoff_initial: float = 0.8
    """First delay after a failure, in seconds."""
    backoff_max: float = 30.0
    """Longest delay between attempts."""
    watch_timeout: tuple[int, int] = (300, 600)
    """Each watch asks the server to end it after a random number of seconds in this range."""
    page_size: int = 500
    """Objects per list page (`limit`)."""
    request_timeout: float = 60.0
    """Seconds a list page may take."""


class Backoff:
    """Exponential backoff with equal jitter: half the delay fixed, half random."""

    def __init__(self, initial: float, maximum: float, rng: random.Random) -> None:
        self.initial = initial
        self.maximum = maximum
        self.rng = rng
        self.attempt = 0

    def next(self) -> float:
        ceiling = min(self.maximum, self.initial * 2**self.attempt)
        self.attempt = min(self.attempt + 1, 32)
        return float(ceiling / 2 + self.rng.uniform(0, ceiling / 2))

    def reset(self) -> None:
        self.attempt = 0


# ----- one resource ----------------------------------------------------------------------
class Sink(Protocol):
    """Where a reflector puts what it learns (raw bytes, so decoding happens once)."""

    def replace(self, items: list[Any]) -> None: ...
    def apply(self, event_type: str, raw: msgspec.Raw) -> str | None: ...


@dataclass
class ReflectorStatus:
    """What `/readyz` reports about one list-and-watch loop."""

    synced: bool = False
    phase: str = "starting"
    resource_version: str = ""
    lists: int = 0
    watches: int = 0
    events: int = 0
    bookmarks: int = 0
    relists_after_gone: int = 0
    errors: int = 0
    last_error: str = ""
    last_error_at: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "synced": self.synced,
            "phase": self.phase,
            "resourceVersion": self.resource_version,
            "lists": self.lists,
            "watches": self.watches,
            "events": self.events,
            "bookmarks": self.bookmarks,
            "relistsAfterGone": self.relists_after_gone,
            "errors": self.errors,
            "lastError": self.last_error,
        }


@dataclass
class Reflector:
    """List, then watch from the list's version, forever; feeds one `Sink`."""

    name: str
    list_call: Callable[..., Any]
    """The CoreV1Api method that lists (and, with watch=True, watches) the resource."""
    list_type: type[PodList] | type[NodeList]
    sink: Sink
    settings: InformerSettings
    rng: random.Random
    field_selector: str | None = None
    changed: Callable[[], None] | None = None
    """Called after a list or a chunk of watch events has changed the sink."""
    status: ReflectorStatus = field(default_factory=ReflectorStatus)
    synced: asyncio.Event = field(default_factory=asyncio.Event)

    def _query(self) -> dict[str, Any]:
        return {"field_selector": self.field_selector} if self.field_selector else {}

    async def run(self) -> None:
        backoff = Backoff(self.settings.backoff_initial, self.settings.backoff_max, self.rng)
        need_list = True
        while True:
            try:
                if need_list:
                    self.status.phase = "listing"
                    self.status.resource_version = await self._list()
                    need_list = False
                # The backoff resets only once a watch delivers: a server that answers every
                # watch with 410 must not be hit by a full list in a tight loop.
                self.status.phase = "watching"
                started = time.monotonic()
                if await self._watch():
                    backoff.reset()
                elif time.monotonic() - started < 1.0:
                    # A watch that ends at once with nothing in it is a misbehaving server.
                    await self._sleep(backoff.next(), None)
            except Gone as exc:
                # The history no longer reaches our version: only a fresh list is consistent.
                self.status.relists_after_gone += 1
                self._note(exc)
                need_list = True
                if backoff.attempt:
                    await self._sleep(backoff.next(), exc)
                else:
                    backoff.next()
            except ApiFailure as exc:
                self._note(exc)
                await self._sleep(max(backoff.next(), exc.retry_after), exc)
            except (
                aiohttp.ClientError,
                TimeoutError,
                msgspec.DecodeError,
                ValueError,
            ) as exc:
                self._note(exc)
                await self._sleep(backoff.next(), exc)
            except Exception as exc:  # a bug must not end the informer for good
                log.exception("%s: unexpected failure", self.name)
                self._note(exc)
                await self._sleep(backoff.next(), exc)

    def _note(self, exc: Exception) -> None:
        self.status.errors += 1
        self.status.last_error = f"{type(exc).__name__}: {exc}"
        self.status.last_error_at = time.time()

    async def _sleep(self, delay: float, exc: Exception | None) -> None:
        self.status.phase = "backoff"
        why = self.status.last_error if exc is not None else "watch ended empty"
        log.info("%s: %s; retrying in %.2fs", self.name, why, delay)
        await asyncio.sleep(delay)

    async def _list(self) -> str:
        items: list[Any] = []
        token: str | None = None
        version = ""
        while True:
            kwargs = self._query()
            kwargs["limit"] = self.settings.page_size
            if token:
                kwargs["_continue"] = token
            response = await self.list_call(
                _preload_content=False,
                _request_timeout=self.settings.request_timeout,
                **kwargs,
            )
            try:
                body = await response.read()
                if response.status != 200:
                    raise _failure(response.status, body, response.headers.get("Retry-After"))
            finally:
                response.release()
            page = msgspec.json.decode(body, type=self.list_type)
            items.extend(page.items or ())
            version = page.metadata.resourceVersion
            token = page.metadata.continue_
            if not token:
                break
        self.sink.replace(items)
        if self.changed is not None:
            self.changed()
        self.status.lists += 1
        if not self.status.synced:
            self.status.synced = True
            self.synced.set()
        log.debug("%s: listed %d at version %s", self.name, len(items), version)
        return version

    async def _watch(self) -> bool:
        """One watch request; returns whether it delivered anything (ends cleanly on timeout)."""
        low, high = self.settings.watch_timeout
        timeout = self.rng.randint(low, high) if high > low else low
        response = await self.list_call(
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=self.status.resource_version or None,
            timeout_seconds=timeout,
            _preload_content=False,
            _request_timeout=(self.settings.request_timeout, timeout + 30),
            **self._query(),
        )
        self.status.watches += 1
        delivered = False
        try:
            if response.status != 200:
                body = await response.read()
                raise _failure(response.status, body, response.headers.get("Retry-After"))
            content = response.content
            # Events are JSON lines; reading whatever arrived and splitting it here costs one
            # wake-up per chunk (usually one event), without the stream's line search.
            pending = b""
            while True:
                data = await content.readany()
                if not data:
                    # The server ended the watch; a last line without its newline still counts.
                    if pending and not pending.isspace():
                        if self._event(pending) and self.changed is not None:
                            self.changed()
                        delivered = True
                    return delivered
                lines = (pending + data if pending else data).split(b"\n")
                pending = lines.pop()
                if len(pending) > MAX_EVENT_BYTES:
                    raise ValueError(f"a watch event longer than {MAX_EVENT_BYTES} bytes")
                applied = False
                for line in lines:
                    if line and not line.isspace():
                        applied |= self._event(line)
                        delivered = True
                if applied and self.changed is not None:
                    self.changed()
        finally:
            # A watch cut short leaves unread bytes: close instead of reusing the connection.
            response.close()

    def _event(self, line: bytes) -> bool:
        """Apply one watch event line; whether it went to the sink (not a bookmark)."""
        event = _event_decoder.decode(line)
        if event.type == "ERROR":
            status = _status_decoder.decode(event.object)
            cls = Gone if status.code == 410 else ApiFailure
            raise cls(status.code, status.reason, status.message)
        if event.type == "BOOKMARK":
            version = _version_decoder.decode(event.object).metadata
            if version is not None and version.resourceVersion:
                self.status.resource_version = version.resourceVersion
            self.status.bookmarks += 1
            return False
        seen = self.sink.apply(event.type, event.object)
        if seen:
            self.status.resource_version = seen
        self.status.events += 1
        return True


# ----- sinks into the snapshot -----------------------------------------------------------
class _NodeSink:
    def __init__(self, state: InformerState) -> None:
        self.state = state
        self.decoder = msgspec.json.Decoder(Node)

    def replace(self, items: list[Any]) -> None:
        snapshot = self.state.snapshot
        listed: set[str] = set()
        for node in items:
            info = self.state.node_from(node)
            if info is not None:
                listed.add(info.name)
                snapshot.upsert_node(info)
        for name in [n for n in snapshot.slots if n not in listed]:
            snapshot.remove_node(name)

    def apply(self, event_type: str, raw: msgspec.Raw) -> str | None:
        node = self.decoder.decode(raw)
        meta = node.metadata
        if event_type == "DELETED":
            if meta is not None:
                self.state.snapshot.remove_node(meta.name)
        else:
            info = self.state.node_from(node)
            if info is not None:
                self.state.snapshot.upsert_node(info)
            elif meta is not None:
                self.state.snapshot.remove_node(meta.name)
        return meta.resourceVersion if meta is not None else None


class _PodSink:
    def __init__(self, state: InformerState) -> None:
        self.state = state
        self.decoder = msgspec.json.Decoder(Pod)

    def replace(self, items: list[Any]) -> None:
        snapshot = self.state.snapshot
        listed: set[str] = set()
        for pod in items:
            info = self.state.pod_from(pod)
            if info is not None:
                listed.add(info.key)
                snapshot.upsert_pod(info)
        for key in [k for k in snapshot.pods if k not in listed]:
            snapshot.remove_pod(key)

    def apply(self, event_type: str, raw: msgspec.Raw) -> str | None:
        pod = self.decoder.decode(raw)
        meta = pod.metadata
        if meta is None:
            return None
        key = f"{meta.namespace or 'default'}/{meta.name}"
        snapshot = self.state.snapshot
        if event_type == "DELETED":
            snapshot.remove_pod(key)
        else:
            info = self.state.pod_from(pod)
            if info is None:
                snapshot.remove_pod(key)
            else:
                # Most updates of a running pod (status, conditions, IPs) change nothing the
                # snapshot holds: replacing the record would only mark its node changed and
                # make every per-node cache redo that node.
                if info != snapshot.pods.get(key) or key in snapshot.reservations:
                    snapshot.upsert_pod(info)
                for listener in self.state.pod_listeners:
                    listener(info)
        return meta.resourceVersion


# ----- the ClusterState ------------------------------------------------------------------
class InformerState:
    """`ClusterState` fed by node and pod informers over one API client."""

    def __init__(
        self,
        configuration: client.Configuration,
        config: Config,
        *,
        settings: InformerSettings | None = None,
        snapshot: ClusterSnapshot | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.configuration = configuration
        self.config = config
        self.settings = settings or InformerSettings()
        self._snapshot = snapshot or ClusterSnapshot(
            config.epc.resources, headroom=config.epc.headroom, accounting=config.accounting
        )
        self._rng = rng or random.Random()
        self.api: client.ApiClient | None = None
        self.nodes: Reflector | None = None
        self.pods: Reflector | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.skipped: dict[str, str] = {}
        """Objects epcsched could not read (bad quantities), by kind/name, with the reason."""
        self._names_checked: dict[str, None] = {}
        """Pending pods (by uid) already checked for names that look like EPC, oldest first."""
        self.pod_listeners: list[Callable[[PodInfo], None]] = []
        """Called with each pod a watch event added or changed (after the snapshot has it):
        the autoscaler wakes on new unschedulable pods instead of waiting for its interval."""
        self.change_listeners: list[Callable[[], None]] = []
        """Called after the informers changed the snapshot (a chunk of watch events, a list)."""

    @property
    def snapshot(self) -> ClusterSnapshot:
        return self._snapshot

    # Conversions that must never stop a watch: an unreadable object is reported and skipped.
    def node_from(self, node: Node) -> NodeInfo | None:
        name = node.metadata.name if node.metadata else ""
        try:
            info = node_info(node, self.config.epc.resources)
        except ObjectError as exc:
            self._skip(f"node/{name}", str(exc))
            return None
        self.skipped.pop(f"node/{name}", None)
        return info

    def pod_from(self, pod: Pod) -> PodInfo | None:
        meta = pod.metadata
        key = f"{(meta.namespace if meta else None) or 'default'}/{meta.name if meta else ''}"
        try:
            info = pod_info(pod, self.config.epc.resources)
        except ObjectError as exc:
            self._skip(f"pod/{key}", str(exc))
            return None
        self.skipped.pop(f"pod/{key}", None)
        if info.node_name is None:
            self._check_names(pod, info)
        return info

    def _check_names(self, pod: Pod, info: PodInfo) -> None:
        """Warn once per pending pod that asks for a name that looks like EPC but is not."""
        seen = info.uid or info.key
        if seen in self._names_checked:
            return
        if len(self._names_checked) >= 10_000:  # pods come and go; forget the oldest half
            for old in list(self._names_checked)[:5_000]:
                del self._names_checked[old]
        self._names_checked[seen] = None
        for name, nearest in pod_lookalikes(pod, self.config.epc.resources):
            log.warning(
                "pod %s (uid %s) %s",
                info.key,
                info.uid,
                describe(name, nearest),
                extra={"pod": info.key, "uid": info.uid, "resource": name, "nearest": nearest},
            )

    def _changed(self) -> None:
        for listener in self.change_listeners:
            listener()

    def _skip(self, what: str, why: str) -> None:
        if what not in self.skipped:
            log.warning("ignoring %s: %s", what, why)
        self.skipped[what] = why

    def ready(self) -> bool:
        # Ready stays true through later watch failures: a stale cache (reported in detail())
        # serves kube-scheduler better than an extender that fails every scheduling attempt.
        return bool(
            self.nodes and self.pods and self.nodes.status.synced and self.pods.status.synced
        )

    def detail(self) -> dict[str, object]:
        return {
            "source": "kubernetes",
            "server": str(self.configuration.host),
            "nodes": len(self._snapshot),
            "pods": len(self._snapshot.pods),
            "reservations": len(self._snapshot.reservations),
            "informers": {
                r.name: r.status.as_dict() for r in (self.nodes, self.pods) if r is not None
            },
            "skipped": dict(sorted(self.skipped.items())[:20]),
        }

    async def start(self) -> None:
        if self._tasks:
            return
        self.api = api_client(self.configuration)
        core = client.CoreV1Api(self.api)
        self.nodes = Reflector(
            "nodes",
            core.list_node,
            NodeList,
            _NodeSink(self),
            self.settings,
            self._rng,
            changed=self._changed,
        )
        self.pods = Reflector(
            "pods",
            core.list_pod_for_all_namespaces,
            PodList,
            _PodSink(self),
            self.settings,
            self._rng,
            field_selector=ACTIVE_PODS,
            changed=self._changed,
        )
        for reflector in (self.nodes, self.pods):
            self._tasks.append(
                asyncio.create_task(reflector.run(), name=f"informer-{reflector.name}")
            )

    async def wait_synced(self, timeout: float | None = None) -> None:
        """Until both first lists are in (for commands and tests that need a full cache)."""
        if self.nodes is None or self.pods is None:
            raise RuntimeError("start() the informers first")
        await asyncio.wait_for(
            asyncio.gather(self.nodes.synced.wait(), self.pods.synced.wait()), timeout
        )

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.api is not None:
            await self.api.close()
            self.api = None
