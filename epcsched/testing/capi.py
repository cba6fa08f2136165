"""Cluster API's MachineDeployment, MachineSet and Machine controllers, played against the fake
API server, so that a node pool really grows and shrinks when the autoscaler scales it.

    reconciler = CapiReconciler(api, templates={"md-dcsv3": {"labels": {...},
                                                             "resources": {...}}},
                                node_delay=0.2)
    await reconciler.start()      # or: async with CapiReconciler(...) as reconciler:
    ...
    await reconciler.stop()

What it does, for every MachineDeployment in the store (all namespaces), whenever a
MachineDeployment or Machine changes:
- keeps the Machines labelled `cluster.x-k8s.io/deployment-name=<md>` that are not being deleted
  equal in number to the MachineDeployment's replicas (read as its `scale` subresource reads
  them). A paused MachineDeployment (`spec.paused`) is left alone.
- scale-up creates Machines (finalizer, labels, owner reference, `spec.infrastructureRef`); after
  `node_delay` seconds each gets a Ready Node, named after its infrastructure machine (as with
  Cluster API's Azure provider, the Node is not named after the Machine), with the labels,
  taints and allocatable of the MachineDeployment's template, the annotations Cluster API puts
  on Nodes (`cluster.x-k8s.io/machine`, ...), and the Machine gets `status.nodeRef`,
  `spec.providerID` and phase Running.
- scale-down deletes Machines in Cluster API's order (`deletion_order`): being deleted, then
  annotated `cluster.x-k8s.io/delete-machine`, then without a Node yet, then the newest. That is
  the `Newest` delete policy; the default `Random` one differs only in the last step, so this
  is a deterministic stand-in for it.
- every Machine gets Cluster API's finalizer (`machine.cluster.x-k8s.io`), including ones a
  test loaded; a Machine being deleted (by the reconciler or by anyone, e.g.
  `kubectl delete machine`) loses its Node after `delete_delay` seconds, then that finalizer,
  and is gone; a MachineDeployment whose replicas did not drop then gets a replacement, as with
  Cluster API.
- the MachineDeployment's status (`replicas`, `readyReplicas`, `availableReplicas`,
  `updatedReplicas`, `unavailableReplicas`, `selector`, `phase`, `observedGeneration`) follows.

A template uses the keys of a pool's `template` in the configuration (`labels`, `resources`
as allocatable, `taints`), as a mapping or a `NodeTemplate`; a MachineDeployment without one gets
Nodes with 4 CPUs, 16Gi of memory and 110 pods.

It works on the `Store` in-process rather than over HTTP: it is a controller, not the code under
test, so it must not use up the server's injected faults, count in its request statistics, or
race the test for them. Its writes still go through the store, so watches see every step.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from epcsched.config import NodeTemplate
from epcsched.testing.apiserver import FakeApiServer
from epcsched.testing.store import BY_KIND, ApiError, Obj, Store, Subscription

log = logging.getLogger("epcsched.testing.capi")

DEPLOYMENT_NAME_LABEL = "cluster.x-k8s.io/deployment-name"
CLUSTER_NAME_LABEL = "cluster.x-k8s.io/cluster-name"
SET_NAME_LABEL = "cluster.x-k8s.io/set-name"
DELETE_MACHINE_ANNOTATION = "cluster.x-k8s.io/delete-machine"
MACHINE_FINALIZER = "machine.cluster.x-k8s.io"
DEFAULT_RESOURCES: dict[str, str] = {"cpu": "4", "memory": "16Gi", "pods": "110"}

_MD = BY_KIND["MachineDeployment"]
_MACHINE = BY_KIND["Machine"]
_NODE = BY_KIND["Node"]

Template = NodeTemplate | Mapping[str, Any]


def deletion_order(machines: Sequence[Obj]) -> list[Obj]:
    """The order in which a MachineSet deletes `machines` when it scales down (first goes
    first): being deleted, annotated `cluster.x-k8s.io/delete-machine`, without a Node yet,
    then newest first (creationTimestamp, then name, both descending)."""

    def rank(machine: Obj) -> int:
        meta = machine["metadata"]
        if meta.get("deletionTimestamp"):
            return 0
        if DELETE_MACHINE_ANNOTATION in (meta.get("annotations") or {}):
            return 1
        if not _node_of(machine):
            return 2
        return 3

    newest_first = sorted(
        machines,
        key=lambda m: (m["metadata"].get("creationTimestamp") or "", m["metadata"]["name"]),
        reverse=True,
    )
    return sorted(newest_first, key=rank)


def _node_of(machine: Obj) -> str | None:
    ref = (machine.get("status") or {}).get("nodeRef") or {}
    name = ref.get("name") if isinstance(ref, dict) else None
    return name if isinstance(name, str) and name else None


def _template_parts(template: Template | None) -> tuple[dict[str, str], dict[str, Any], list[Any]]:
    """(labels, allocatable, taints) of a template given either way."""
    if template is None:
        return {}, dict(DEFAULT_RESOURCES), []
    if isinstance(template, NodeTemplate):
        labels, resources, taints = template.labels, template.resources, template.taints
    else:
        labels = template.get("labels") or {}
        resources = template.get("resources") or {}
        taints = template.get("taints") or []
    allocatable = {k: str(v) for k, v in (resources or DEFAULT_RESOURCES).items()}
    return dict(labels), allocatable, [dict(t) for t in taints]


class CapiReconciler:
    """Cluster API's controllers for the MachineDeployments in a fake API server's store."""

    def __init__(
        self,
        server: FakeApiServer | Store,
        templates: Mapping[str, Template] | None = None,
        *,
        node_delay: float = 0.2,
        delete_delay: float = 0.0,
    ) -> None:
        self.store = server.store if isinstance(server, FakeApiServer) else server
        self.templates: dict[str, Template] = dict(templates or {})
        """Node template per MachineDeployment name; may be changed while running."""
        self.node_delay = node_delay
        """Seconds from a Machine's creation to its Node being Ready."""
        self.delete_delay = delete_delay
        """Seconds from a Machine's deletion starting to its Node (then the Machine) going."""
        self.created: list[str] = []
        """Names of the Machines created, in order."""
        self.deleted: list[str] = []
        """Names of the Machines whose deletion finished, in order."""
        self._subscriptions: list[Subscription] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._timers: dict[tuple[str, str, str], asyncio.TimerHandle] = {}
        self._wake = asyncio.Event()

    async def start(self) -> CapiReconciler:
        if self._tasks:
            return self
        for resource in (_MD, _MACHINE):
            sub = self.store.subscribe(resource)
            self._subscriptions.append(sub)
            self._tasks.append(asyncio.create_task(self._forward(sub)))
        self._tasks.append(asyncio.create_task(self._run()))
        return self

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for sub in self._subscriptions:
            self.store.unsubscribe(sub)
        self._subscriptions.clear()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    async def __aenter__(self) -> CapiReconciler:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _forward(self, sub: Subscription) -> None:
        while True:
            await sub.queue.get()
            # The pass reads the store's current state; the change itself is not needed.
            while not sub.queue.empty():
                sub.queue.get_nowait()
            self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            self.reconcile()
            await self._wake.wait()

    # ----- one pass --------------------------------------------------------------------------
    def reconcile(self) -> None:
        """Bring every MachineDeployment one step towards its replicas (synchronous)."""
        for md in self.store.items(_MD, None):
            try:
                self._reconcile(md)
            except ApiError as exc:
                # Someone (a test) changed or removed an object under us: the next change
                # triggers another pass from the new state.
                log.warning(
                    "MachineDeployment %s/%s: %s",
                    md["metadata"]["namespace"],
                    md["metadata"]["name"],
                    exc.message,
                )

    def _reconcile(self, md: Obj) -> None:
        namespace = md["metadata"]["namespace"]
        name = md["metadata"]["name"]
        spec = md.get("spec") or {}
        machines = [
            m
            for m in self.store.items(_MACHINE, namespace)
            if (m["metadata"].get("labels") or {}).get(DEPLOYMENT_NAME_LABEL) == name
        ]
        for machine in machines:
            if machine["metadata"].get("deletionTimestamp"):
                # Only Cluster API's own finalizer is ours to finish; others hold the Machine.
                if MACHINE_FINALIZER in (machine["metadata"].get("finalizers") or ()):
                    self._schedule(machine, "delete", self.delete_delay, self._finish_deletion)
            else:
                if MACHINE_FINALIZER not in (machine["metadata"].get("finalizers") or ()):
                    # The Machine controller's first step, so that a deletion waits for it.
                    held = copy.deepcopy(machine)
                    held["metadata"]["finalizers"] = [
                        *(machine["metadata"].get("finalizers") or ()),
                        MACHINE_FINALIZER,
                    ]
                    self.store.update(_MACHINE, namespace, machine["metadata"]["name"], held)
                if not _node_of(machine):
                    self._schedule(machine, "node", self.node_delay, self._provision)
        if not spec.get("paused"):
            replicas = self.store.scale(_MD, namespace, name)["spec"].get("replicas", 0)
            active = [m for m in machines if not m["metadata"].get("deletionTimestamp")]
            surplus = len(active) - replicas
            for machine in deletion_order(active)[: max(surplus, 0)]:
                log.info(
                    "MachineDeployment %s/%s: %d Machines for %d replicas: deleting Machine %s",
                    namespace,
                    name,
                    len(active),
                    replicas,
                    machine["metadata"]["name"],
                )
                self.store.delete(_MACHINE, namespace, machine["metadata"]["name"])
            for _ in range(-surplus):
                self._create_machine(md)
        self._update_status(namespace, name)

    def _create_machine(self, md: Obj) -> None:
        namespace = md["metadata"]["namespace"]
        name = md["metadata"]["name"]
        spec = md.get("spec") or {}
        template = spec.get("template") or {}
        cluster = spec.get("clusterName") or ""
        set_name = f"{name}-{uuid.uuid5(uuid.NAMESPACE_OID, md['metadata']['uid']).hex[:5]}"
        infra = f"{name}-{uuid.uuid4().hex[:5]}"
        labels = dict((template.get("metadata") or {}).get("labels") or {})
        labels.update({DEPLOYMENT_NAME_LABEL: name, SET_NAME_LABEL: set_name})
        if cluster:
            labels[CLUSTER_NAME_LABEL] = cluster
        machine_spec = copy.deepcopy(template.get("spec") or {})
        machine_spec["clusterName"] = cluster
        machine_spec["infrastructureRef"] = {
            **(machine_spec.get("infrastructureRef") or {"kind": "FakeMachine"}),
            "name": infra,
            "namespace": namespace,
        }
        body: Obj = {
            "metadata": {
                "name": f"{set_name}-{uuid.uuid4().hex[:5]}",
                "namespace": namespace,
                "labels": labels,
                "finalizers": [MACHINE_FINALIZER],
                "ownerReferences": [
                    {
                        "apiVersion": _MD.api_version,
                        "kind": "MachineDeployment",
                        "name": name,
                        "uid": md["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": machine_spec,
        }
        machine = self.store.create(_MACHINE, namespace, body)
        status = copy.deepcopy(machine)
        status["status"] = {"phase": "Provisioning"}
        self.store.update(
            _MACHINE, namespace, machine["metadata"]["name"], status, subresource="status"
        )
        self.created.append(machine["metadata"]["name"])
        log.info(
            "MachineDeployment %s/%s: created Machine %s", namespace, name, body["metadata"]["name"]
        )

    def _schedule(
        self, machine: Obj, what: str, delay: float, action: Callable[[Obj], None]
    ) -> None:
        key = (machine["metadata"]["namespace"], machine["metadata"]["name"], what)
        if key in self._timers:
            return
        self._timers[key] = asyncio.get_running_loop().call_later(delay, self._fire, key, action)

    def _fire(self, key: tuple[str, str, str], action: Callable[[Obj], None]) -> None:
        self._timers.pop(key, None)
        namespace, name, _ = key
        try:
            machine = self.store.get(_MACHINE, namespace, name)
        except ApiError:
            return
        try:
            action(machine)
        except ApiError as exc:
            log.warning("Machine %s/%s: %s", namespace, name, exc.message)
        self._wake.set()

    def _provision(self, machine: Obj) -> None:
        """The infrastructure is up: the Node registers Ready and the Machine points at it."""
        meta = machine["metadata"]
        if meta.get("deletionTimestamp") or _node_of(machine):
            return
        namespace = meta["namespace"]
        deployment = (meta.get("labels") or {}).get(DEPLOYMENT_NAME_LABEL, "")
        node_name = ((machine.get("spec") or {}).get("infrastructureRef") or {}).get("name")
        node_name = node_name or meta["name"]
        labels, allocatable, taints = _template_parts(self.templates.get(deployment))
        labels["kubernetes.io/hostname"] = node_name
        provider_id = f"fake:///{namespace}/{node_name}"
        node: Obj = {
            "metadata": {
                "name": node_name,
                "labels": labels,
                "annotations": {
                    "cluster.x-k8s.io/cluster-name": (machine.get("spec") or {}).get(
                        "clusterName", ""
                    ),
                    "cluster.x-k8s.io/cluster-namespace": namespace,
                    "cluster.x-k8s.io/machine": meta["name"],
                    "cluster.x-k8s.io/owner-kind": "MachineSet",
                    "cluster.x-k8s.io/owner-name": (meta.get("labels") or {}).get(
                        SET_NAME_LABEL, ""
                    ),
                },
            },
            "spec": {"providerID": provider_id, "taints": taints},
            "status": {
                "capacity": dict(allocatable),
                "allocatable": allocatable,
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            },
        }
        # The kubelet registers its Node with the status filled in.
        created = self.store.create(_NODE, None, node)
        with_id = copy.deepcopy(machine)
        with_id.setdefault("spec", {})["providerID"] = provider_id
        with_id = self.store.update(_MACHINE, namespace, meta["name"], with_id)
        running = copy.deepcopy(with_id)
        running["status"] = {
            **(running.get("status") or {}),
            "phase": "Running",
            "nodeRef": {
                "apiVersion": "v1",
                "kind": "Node",
                "name": node_name,
                "uid": created["metadata"]["uid"],
            },
        }
        self.store.update(_MACHINE, namespace, meta["name"], running, subresource="status")
        log.info("Machine %s/%s: Node %s is Ready", namespace, meta["name"], node_name)

    def _finish_deletion(self, machine: Obj) -> None:
        """Drain and infrastructure are done: the Node goes, then the finalizer."""
        meta = machine["metadata"]
        namespace = meta["namespace"]
        if MACHINE_FINALIZER not in (meta.get("finalizers") or ()):
            return
        node_timer = self._timers.pop((namespace, meta["name"], "node"), None)
        if node_timer is not None:
            node_timer.cancel()
        node_name = _node_of(machine)
        if node_name:
            with contextlib.suppress(ApiError):
                self.store.delete(_NODE, None, node_name)
            log.info("Machine %s/%s: Node %s deleted", namespace, meta["name"], node_name)
        done = copy.deepcopy(machine)
        done["metadata"]["finalizers"] = [f for f in meta["finalizers"] if f != MACHINE_FINALIZER]
        self.store.update(_MACHINE, namespace, meta["name"], done)
        self.deleted.append(meta["name"])
        log.info("Machine %s/%s deleted", namespace, meta["name"])

    def _update_status(self, namespace: str, name: str) -> None:
        md = self.store.get(_MD, namespace, name)
        machines = [
            m
            for m in self.store.items(_MACHINE, namespace)
            if (m["metadata"].get("labels") or {}).get(DEPLOYMENT_NAME_LABEL) == name
        ]
        ready = sum(
            1 for m in machines if _node_of(m) and not m["metadata"].get("deletionTimestamp")
        )
        replicas = self.store.scale(_MD, namespace, name)["spec"].get("replicas", 0)
        selector = f"{DEPLOYMENT_NAME_LABEL}={name}"
        cluster = (md.get("spec") or {}).get("clusterName")
        if cluster:
            selector = f"{CLUSTER_NAME_LABEL}={cluster},{selector}"
        if len(machines) < replicas:
            phase = "ScalingUp"
        elif len(machines) > replicas:
            phase = "ScalingDown"
        else:
            phase = "Running"
        status = {
            **(md.get("status") or {}),
            "replicas": len(machines),
            "updatedReplicas": len(machines),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": max(replicas - ready, 0),
            "selector": selector,
            "phase": phase,
            "observedGeneration": md["metadata"].get("generation", 1),
        }
        if status != md.get("status"):
            new = copy.deepcopy(md)
            new["status"] = status
            self.store.update(_MD, namespace, name, new, subresource="status")
