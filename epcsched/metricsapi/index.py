"""Pods by UID and by namespace, and nodes, as the metrics API needs them, kept by list+watch.

Prometheus knows a pod only by the UID in its cgroup's name; the HPA asks by namespace and label
selector. This index is the join: the informer machinery of `epcsched.kube.informer` (its
`Reflector`: paged list, watch from the list's version with bookmarks, relist on 410, backoff)
feeds sinks that keep each active pod's namespace, name, labels, EPC limit and node, and each
node's labels and EPC, so a request is answered from memory with work proportional to the pods
of its namespace, never to the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
from kubernetes_asyncio import client

from epcsched.kube.client import api_client
from epcsched.kube.informer import (
    ACTIVE_PODS,
    InformerSettings,
    NodeList,
    PodList,
    Reflector,
)
from epcsched.metricsapi.values import NodeEntry, PodEntry
from epcsched.objects import Node, ObjectError, Pod, node_info, pod_info

log = logging.getLogger("epcsched.metricsapi")


class ClusterIndex:
    """Active pods (by UID and by namespace/name) and nodes; fed by informers or by hand."""

    def __init__(self, epc_resources: Mapping[str, int]) -> None:
        self.epc_resources = dict(epc_resources)
        self._by_uid: dict[str, PodEntry] = {}
        self._by_namespace: dict[str, dict[str, PodEntry]] = {}
        self._nodes: dict[str, NodeEntry] = {}
        self.skipped: dict[str, str] = {}
        """Objects that could not be read (bad quantities), by kind/name, with the reason."""

    # ----- reads --------------------------------------------------------------------------
    def pods_in(self, namespace: str) -> Iterable[PodEntry]:
        return self._by_namespace.get(namespace, {}).values()

    def pod(self, namespace: str, name: str) -> PodEntry | None:
        return self._by_namespace.get(namespace, {}).get(name)

    def pods(self) -> Iterable[PodEntry]:
        return self._by_uid.values()

    def nodes(self) -> Iterable[NodeEntry]:
        return self._nodes.values()

    def __len__(self) -> int:
        return len(self._by_uid)

    # ----- lifecycle (a hand-fed index is always ready) -----------------------------------
    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def ready(self) -> bool:
        return True

    def detail(self) -> dict[str, object]:
        return {"pods": len(self), "nodes": len(self._nodes)}

    # ----- writes -------------------------------------------------------------------------
    def upsert_pod(self, pod: PodEntry) -> None:
        old = self.pod(pod.namespace, pod.name)
        if old is not None and old.uid != pod.uid:
            self._by_uid.pop(old.uid, None)
        self._by_uid[pod.uid] = pod
        self._by_namespace.setdefault(pod.namespace, {})[pod.name] = pod

    def remove_pod(self, namespace: str, name: str) -> None:
        names = self._by_namespace.get(namespace)
        if names is None:
            return
        old = names.pop(name, None)
        if old is not None:
            self._by_uid.pop(old.uid, None)
        if not names:
            del self._by_namespace[namespace]

    def replace_pods(self, pods: Iterable[PodEntry]) -> None:
        self._by_uid = {}
        self._by_namespace = {}
        for pod in pods:
            self.upsert_pod(pod)

    def upsert_node(self, node: NodeEntry) -> None:
        self._nodes[node.name] = node

    def remove_node(self, name: str) -> None:
        self._nodes.pop(name, None)

    def replace_nodes(self, nodes: Iterable[NodeEntry]) -> None:
        self._nodes = {n.name: n for n in nodes}

    # ----- from API objects ---------------------------------------------------------------
    def pod_entry(self, pod: Pod) -> PodEntry | None:
        """The entry for a Pod object; None (reported once) for one that cannot be read."""
        meta = pod.metadata
        key = f"pod/{(meta.namespace if meta else None) or 'default'}/{meta.name if meta else ''}"
        try:
            info = pod_info(pod, self.epc_resources)
        except ObjectError as exc:
            self._skip(key, str(exc))
            return None
        self.skipped.pop(key, None)
        if info.terminal or not info.uid:
            return None
        return PodEntry(
            namespace=info.namespace,
            name=info.name,
            uid=info.uid,
            labels=dict(meta.labels or {}) if meta else {},
            epc_limit=info.epc_total,
            node=info.node_name,
        )

    def node_entry(self, node: Node) -> NodeEntry | None:
        key = f"node/{node.metadata.name if node.metadata else ''}"
        try:
            info = node_info(node, self.epc_resources)
        except ObjectError as exc:
            self._skip(key, str(exc))
            return None
        self.skipped.pop(key, None)
        return NodeEntry(info.name, labels=dict(info.labels), epc_allocatable=info.epc_total)

    def _skip(self, what: str, why: str) -> None:
        if what not in self.skipped:
            log.warning("ignoring %s: %s", what, why)
        self.skipped[what] = why


class _PodSink:
    def __init__(self, index: ClusterIndex) -> None:
        self.index = index
        self.decoder = msgspec.json.Decoder(Pod)

    def replace(self, items: list[Any]) -> None:
        entries = (self.index.pod_entry(pod) for pod in items)
        self.index.replace_pods(e for e in entries if e is not None)

    def apply(self, event_type: str, raw: msgspec.Raw) -> str | None:
        pod = self.decoder.decode(raw)
        meta = pod.metadata
        if meta is None:
            return None
        namespace = meta.namespace or "default"
        entry = None if event_type == "DELETED" else self.index.pod_entry(pod)
        if entry is None:
            self.index.remove_pod(namespace, meta.name)
        else:
            self.index.upsert_pod(entry)
        return meta.resourceVersion


class _NodeSink:
    def __init__(self, index: ClusterIndex) -> None:
        self.index = index
        self.decoder = msgspec.json.Decoder(Node)

    def replace(self, items: list[Any]) -> None:
        entries = (self.index.node_entry(node) for node in items)
        self.index.replace_nodes(e for e in entries if e is not None)

    def apply(self, event_type: str, raw: msgspec.Raw) -> str | None:
        node = self.decoder.decode(raw)
        meta = node.metadata
        if meta is None:
            return None
        entry = None if event_type == "DELETED" else self.index.node_entry(node)
        if entry is None:
            self.index.remove_node(meta.name)
        else:
            self.index.upsert_node(entry)
        return meta.resourceVersion


class InformedIndex(ClusterIndex):
    """A `ClusterIndex` kept current by node and pod informers over one API client."""

    def __init__(
        self,
        configuration: client.Configuration,
        epc_resources: Mapping[str, int],
        *,
        settings: InformerSettings | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(epc_resources)
        self.configuration = configuration
        self.settings = settings or InformerSettings()
        self._rng = rng or random.Random()
        self._api: client.ApiClient | None = None
        self._reflectors: list[Reflector] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if self._tasks:
            return
        self._api = api_client(self.configuration)
        core = client.CoreV1Api(self._api)
        self._reflectors = [
            Reflector("nodes", core.list_node, NodeList, _NodeSink(self), self.settings, self._rng),
            Reflector(
                "pods",
                core.list_pod_for_all_namespaces,
                PodList,
                _PodSink(self),
                self.settings,
                self._rng,
                field_selector=ACTIVE_PODS,
            ),
        ]
        for reflector in self._reflectors:
            self._tasks.append(
                asyncio.create_task(reflector.run(), name=f"metricsapi-{reflector.name}")
            )

    def ready(self) -> bool:
        return bool(self._reflectors) and all(r.status.synced for r in self._reflectors)

    async def wait_synced(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(
            asyncio.gather(*(r.synced.wait() for r in self._reflectors)), timeout
        )

    def detail(self) -> dict[str, object]:
        return {
            "server": str(self.configuration.host),
            "pods": len(self),
            "nodes": len(self._nodes),
            "informers": {r.name: r.status.as_dict() for r in self._reflectors},
            "skipped": dict(sorted(self.skipped.items())[:20]),
        }

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._api is not None:
            await self._api.close()
            self._api = None
