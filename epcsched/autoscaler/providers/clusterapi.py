"""The `clusterapi` node-pool provider: a pool is one Cluster API MachineDeployment.

Sizes go through the MachineDeployment's `scale` subresource (the RBAC the manifests grant:
get/update on `machinedeployments/scale`, never an update of the MachineDeployment itself), so
the MachineDeployment and MachineSet controllers do the rest. Removing a chosen node is two
writes in a fixed order: first the node's Machine is annotated `cluster.x-k8s.io/delete-machine`,
then replicas drop to the target. Every MachineSet delete policy (Random, Newest, Oldest)
deletes annotated Machines before any other, so exactly the drained node goes; the reverse order
would let the MachineSet pick a node the autoscaler never drained.

Choices an operator should know:
- `size().busy` is always False. A MachineDeployment takes a new absolute replica count at any
  time (the controllers converge to the latest), and nodes that are asked for but not yet Ready
  are the loop's in-flight accounting, not a reason to stop scaling.
- A node whose Machine is already gone (deleted by a person, or by an earlier attempt of the
  same removal) is not an error, but replicas are never lowered below the Machines that remain:
  lowering them without an annotated Machine would make the MachineSet delete some other node,
  one nobody drained. The pool then stays larger than asked, and the loop sees that next time.
- A removal whose target is not below the current replicas would annotate a Machine that
  nothing deletes (and that a later scale-down would then pick first): it is refused.
- If lowering replicas fails after the annotation was added, the annotation is taken off again,
  for the same reason.
- A paused MachineDeployment (`spec.paused`, or the `cluster.x-k8s.io/paused` annotation) is
  refused before any write, with the reason: its controllers would act on nothing we write.
  (A paused Cluster, `Cluster.spec.paused`, is not checked: that needs read access to Clusters.)
- A 409 on the scale write (someone else changed replicas between our read and our write) is
  retried once from a fresh read, then reported as retryable. Every other failure, including a
  missing MachineDeployment, a version the API server does not serve, 5xx and an unreachable
  server, is a ProviderError naming the MachineDeployment.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from epcsched.autoscaler.providers.base import PoolSize, ProviderError
from epcsched.config import NodePoolSettings

log = logging.getLogger("epcsched.autoscaler.clusterapi")

GROUP = "cluster.x-k8s.io"
DEFAULT_VERSION = "v1beta1"
DELETE_MACHINE_ANNOTATION = "cluster.x-k8s.io/delete-machine"
"""Machines carrying this annotation are the first a MachineSet deletes when it scales down."""
PAUSED_ANNOTATION = "cluster.x-k8s.io/paused"
"""Cluster API's controllers skip an object carrying this annotation, as they do one whose
`spec.paused` is true."""
DEPLOYMENT_NAME_LABEL = "cluster.x-k8s.io/deployment-name"
"""Set by Cluster API on every Machine of a MachineDeployment."""

_KEYS = ("namespace", "machineDeployment")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")

T = TypeVar("T")
Obj = dict[str, Any]


def validate_clusterapi_settings(pool: NodePoolSettings, index: int | None = None) -> list[str]:
    """Problems with a `clusterapi` pool's `clusterapi` settings, one line each, key path first.

    `index` is the pool's position in `autoscaler.nodePools` (the pool's name stands in for it
    when not given). Pools of other providers have nothing to check here.
    """
    if pool.provider != "clusterapi":
        return []
    where = f"autoscaler.nodePools[{index if index is not None else repr(pool.name)}].clusterapi"
    return _problems(pool.clusterapi, where)


def _problems(settings: Mapping[str, str], where: str) -> list[str]:
    problems = [
        f"{where}.{key}: unknown key (known: {', '.join(sorted(_KEYS))})"
        for key in settings
        if key not in _KEYS
    ]
    namespace = settings.get("namespace", "")
    if not namespace:
        problems.append(f"{where}.namespace: required (the MachineDeployment's namespace)")
    elif len(namespace) > 63 or not _LABEL.fullmatch(namespace):
        problems.append(
            f"{where}.namespace: {namespace!r} is not a namespace name (lowercase letters, "
            "digits and '-', at most 63 characters)"
        )
    name = settings.get("machineDeployment", "")
    if not name:
        problems.append(
            f"{where}.machineDeployment: required (the MachineDeployment that owns this pool's "
            "nodes: kubectl get machinedeployments -A)"
        )
    elif len(name) > 253 or not _SUBDOMAIN.fullmatch(name):
        problems.append(
            f"{where}.machineDeployment: {name!r} is not an object name (lowercase letters, "
            "digits, '-' and '.', at most 253 characters)"
        )
    return problems


@dataclass(frozen=True, slots=True)
class MachineDeploymentRef:
    """Which MachineDeployment a pool is."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class _Conflict(Exception):
    """A 409 on a write: someone else changed the object since we read it."""


def _status_of(exc: ApiException) -> Obj:
    try:
        body = json.loads(exc.body) if exc.body else {}
    except (ValueError, TypeError):
        return {}
    return body if isinstance(body, dict) else {}


def _names_object(exc: ApiException) -> bool:
    """Whether a 404 is about a named object (rather than a resource the server lacks)."""
    details = _status_of(exc).get("details")
    return isinstance(details, dict) and bool(details.get("name"))


def _node_of(machine: Obj) -> str | None:
    status = machine.get("status")
    ref = status.get("nodeRef") if isinstance(status, dict) else None
    name = ref.get("name") if isinstance(ref, dict) else None
    return name if isinstance(name, str) and name else None


def _deployment_of(machine: Obj) -> str | None:
    labels = machine["metadata"].get("labels")
    name = labels.get(DEPLOYMENT_NAME_LABEL) if isinstance(labels, dict) else None
    return name if isinstance(name, str) else None


def _deleting(machine: Obj) -> bool:
    return bool((machine.get("metadata") or {}).get("deletionTimestamp"))


class ClusterApiProvider:
    """Node pools backed by Cluster API MachineDeployments, through one Kubernetes API client.

    `api` is shared with whoever made it (the autoscaler's informers use the same connection
    pool); `close()` closes it only when `own_client` is set.
    """

    def __init__(
        self,
        api: client.ApiClient,
        *,
        version: str = DEFAULT_VERSION,
        request_timeout: float = 10.0,
        own_client: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api = api
        self.version = version
        """The Cluster API version to talk: `v1beta1`, or `v1beta2` which newer Cluster API
        releases also serve. Everything used here (the scale subresource, the Machine label
        and annotation, `status.nodeRef.name`) means the same in both."""
        self.request_timeout = request_timeout
        self.own_client = own_client
        self.clock = clock
        """Wall clock for the delete-machine annotation's value (only presence counts)."""
        self._custom = client.CustomObjectsApi(api)

    # ----- the NodePoolProvider interface ---------------------------------------------------
    async def size(self, pool: NodePoolSettings) -> PoolSize:
        md = self._ref(pool)
        replicas, _ = await self._read_scale(pool, md)
        log.debug("pool %s: MachineDeployment %s has %d replicas", pool.name, md, replicas)
        return PoolSize(target=replicas)

    async def set_target(self, pool: NodePoolSettings, target: int) -> None:
        md = self._ref(pool)
        if target < 0:
            raise ProviderError(f"pool {pool.name}: cannot set MachineDeployment {md} to {target}")
        await self._scale_to(pool, md, lambda _current: target, why="set target")

    async def remove_node(self, pool: NodePoolSettings, node: str, target: int) -> None:
        md = self._ref(pool)
        # The scale is read first, so that a missing MachineDeployment is what gets reported.
        await self._read_scale(pool, md)
        await self._refuse_paused(pool, md)
        machines = await self._machines(pool, md)
        mine = [m for m in machines if _deployment_of(m) == md.name]
        machine = next((m for m in machines if _node_of(m) == node), None)
        if machine is not None:
            name = machine["metadata"]["name"]
            if _deployment_of(machine) != md.name:
                raise ProviderError(
                    f"pool {pool.name}: node {node} is Machine {md.namespace}/{name} of "
                    f"MachineDeployment {_deployment_of(machine) or '(none)'}, not of {md}"
                )
            active = sum(1 for m in mine if not _deleting(m))
            if not _deleting(machine) and target >= active:
                raise ProviderError(
                    f"pool {pool.name}: cannot remove node {node} (Machine "
                    f"{md.namespace}/{name}) at target {target}: MachineDeployment {md} has "
                    f"{active} Machines, so none would be deleted"
                )
            annotations = machine["metadata"].get("annotations") or {}
            marked = False
            if not _deleting(machine) and DELETE_MACHINE_ANNOTATION not in annotations:
                if await self._annotate(pool, md, name, self._stamp()):
                    marked = True
                    log.info(
                        "pool %s: node %s: Machine %s/%s of MachineDeployment %s marked %s",
                        pool.name,
                        node,
                        md.namespace,
                        name,
                        md,
                        DELETE_MACHINE_ANNOTATION,
                    )
                else:
                    mine = [m for m in mine if m is not machine]
                    machine = None
            if machine is not None:
                try:
                    await self._scale_to(
                        pool,
                        md,
                        lambda _now: target,
                        why=f"remove node {node}",
                        paused_checked=True,
                    )
                except ProviderError:
                    if marked:
                        await self._unmark(pool, md, name)
                    raise
                return
        remaining = sum(1 for m in mine if not _deleting(m))
        log.info(
            "pool %s: node %s has no Machine in MachineDeployment %s (already gone); replicas go "
            "to %d but not below the %d Machines that remain",
            pool.name,
            node,
            md,
            target,
            remaining,
        )
        await self._scale_to(
            pool,
            md,
            lambda now: max(target, min(now, remaining)),
            why=f"node {node} already gone",
            paused_checked=True,
        )

    async def close(self) -> None:
        if self.own_client:
            await self.api.close()

    # ----- reads and writes -----------------------------------------------------------------
    def _ref(self, pool: NodePoolSettings) -> MachineDeploymentRef:
        problems = _problems(pool.clusterapi, f"pool {pool.name}: clusterapi")
        if problems:
            raise ProviderError("; ".join(problems))
        settings = pool.clusterapi
        return MachineDeploymentRef(settings["namespace"], settings["machineDeployment"])

    def _stamp(self) -> str:
        return datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    async def _read_scale(
        self, pool: NodePoolSettings, md: MachineDeploymentRef
    ) -> tuple[int, str]:
        """The replicas and resourceVersion of the MachineDeployment's Scale."""
        scale = await self._call(
            pool,
            md,
            "read the scale of",
            self._custom.get_namespaced_custom_object_scale(
                GROUP,
                self.version,
                md.namespace,
                "machinedeployments",
                md.name,
                _request_timeout=self.request_timeout,
            ),
        )
        spec = scale.get("spec") if isinstance(scale, dict) else None
        meta = scale.get("metadata") if isinstance(scale, dict) else None
        # autoscaling/v1 omits a zero spec.replicas (omitempty): missing means 0.
        replicas = spec.get("replicas", 0) if isinstance(spec, dict) else None
        version = meta.get("resourceVersion") if isinstance(meta, dict) else None
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise ProviderError(
                f"pool {pool.name}: the scale of MachineDeployment {md} has no usable "
                f"spec.replicas: {str(scale)[:200]}"
            )
        return replicas, str(version or "")

    async def _scale_to(
        self,
        pool: NodePoolSettings,
        md: MachineDeploymentRef,
        wanted: Callable[[int], int],
        *,
        why: str,
        paused_checked: bool = False,
    ) -> None:
        """Set replicas to `wanted(current)`, with the Scale's resourceVersion as precondition;
        the same value writes nothing; one retry from a fresh read after a conflict. A paused
        MachineDeployment is refused before the write unless the caller has already refused
        it (`paused_checked`)."""
        for attempt in (1, 2):
            current, version = await self._read_scale(pool, md)
            replicas = wanted(current)
            if replicas == current:
                log.info(
                    "pool %s: MachineDeployment %s already has %d replicas (%s)",
                    pool.name,
                    md,
                    current,
                    why,
                )
                return
            if attempt == 1 and not paused_checked:
                await self._refuse_paused(pool, md)
            body: Obj = {
                "apiVersion": "autoscaling/v1",
                "kind": "Scale",
                "metadata": {
                    "name": md.name,
                    "namespace": md.namespace,
                    "resourceVersion": version,
                },
                "spec": {"replicas": replicas},
            }
            try:
                await self._call(
                    pool,
                    md,
                    "scale",
                    self._custom.replace_namespaced_custom_object_scale(
                        GROUP,
                        self.version,
                        md.namespace,
                        "machinedeployments",
                        md.name,
                        body,
                        _request_timeout=self.request_timeout,
                    ),
                    conflict=True,
                )
            except _Conflict:
                if attempt == 1:
                    log.info(
                        "pool %s: MachineDeployment %s changed while scaling (%s); reading again",
                        pool.name,
                        md,
                        why,
                    )
                    continue
                raise ProviderError(
                    f"pool {pool.name}: MachineDeployment {md} kept changing while scaling it "
                    f"to {replicas} (409 Conflict twice); will try again",
                    retryable=True,
                ) from None
            log.info(
                "pool %s: MachineDeployment %s replicas %d -> %d (%s)",
                pool.name,
                md,
                current,
                replicas,
                why,
            )
            return

    async def _refuse_paused(self, pool: NodePoolSettings, md: MachineDeploymentRef) -> None:
        """A paused MachineDeployment takes new replicas but no controller acts on them: nodes
        asked for would never come, and a marked Machine would never go. Refused, naming how
        it is paused, so the pool backs off with that reason instead of waiting for nodes."""
        obj = await self._call(
            pool,
            md,
            "read",
            self._custom.get_namespaced_custom_object(
                GROUP,
                self.version,
                md.namespace,
                "machinedeployments",
                md.name,
                _request_timeout=self.request_timeout,
            ),
        )
        spec = obj.get("spec") if isinstance(obj, dict) else None
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        annotations = meta.get("annotations") if isinstance(meta, dict) else None
        how = []
        if isinstance(spec, dict) and spec.get("paused") is True:
            how.append("spec.paused is true")
        if isinstance(annotations, dict) and PAUSED_ANNOTATION in annotations:
            how.append(f"it has the {PAUSED_ANNOTATION} annotation")
        if how:
            raise ProviderError(
                f"pool {pool.name}: MachineDeployment {md} is paused ({' and '.join(how)}): "
                "Cluster API creates and deletes no Machines for it until it is resumed"
            )

    async def _machines(self, pool: NodePoolSettings, md: MachineDeploymentRef) -> list[Obj]:
        """Every Machine in the MachineDeployment's namespace: the node's Machine may belong to
        another MachineDeployment, which must be refused rather than treated as gone."""
        listing = await self._call(
            pool,
            md,
            "list the Machines of",
            self._custom.list_namespaced_custom_object(
                GROUP, self.version, md.namespace, "machines", _request_timeout=self.request_timeout
            ),
        )
        items = listing.get("items") if isinstance(listing, dict) else None
        if not isinstance(items, list):
            raise ProviderError(
                f"pool {pool.name}: the Machine list in namespace {md.namespace} is not a list"
            )
        return [
            m
            for m in items
            if isinstance(m, dict)
            and isinstance(m.get("metadata"), dict)
            and isinstance(m["metadata"].get("name"), str)
        ]

    async def _annotate(
        self, pool: NodePoolSettings, md: MachineDeploymentRef, machine: str, value: str | None
    ) -> bool:
        """Set (or with None, remove) the delete-machine annotation; False if the Machine is
        gone."""
        result = await self._call(
            pool,
            md,
            f"annotate Machine {md.namespace}/{machine} of",
            # A merge patch touches this one annotation only (a JSON patch would have to
            # replace the whole map when it is absent). The client accepts `_content_type`;
            # its type stubs do not list it.
            self._custom.patch_namespaced_custom_object(  # type: ignore[call-arg]
                GROUP,
                self.version,
                md.namespace,
                "machines",
                machine,
                {"metadata": {"annotations": {DELETE_MACHINE_ANNOTATION: value}}},
                _content_type="application/merge-patch+json",
                _request_timeout=self.request_timeout,
            ),
            missing_ok=True,
        )
        return result is not None

    async def _unmark(self, pool: NodePoolSettings, md: MachineDeploymentRef, machine: str) -> None:
        # A mark left behind would make a later scale-down delete this Machine first.
        try:
            present = await self._annotate(pool, md, machine, None)
        except ProviderError as exc:
            log.warning(
                "pool %s: Machine %s/%s keeps %s after the failed scale-down: %s",
                pool.name,
                md.namespace,
                machine,
                DELETE_MACHINE_ANNOTATION,
                exc,
            )
        else:
            log.info(
                "pool %s: Machine %s/%s unmarked after the failed scale-down%s",
                pool.name,
                md.namespace,
                machine,
                "" if present else " (it is gone)",
            )

    async def _call(
        self,
        pool: NodePoolSettings,
        md: MachineDeploymentRef,
        action: str,
        call: Awaitable[T],
        *,
        conflict: bool = False,
        missing_ok: bool = False,
    ) -> T | None:
        """Await one API call; every failure becomes a ProviderError, except a 409 when
        `conflict` (raised as `_Conflict`) and, when `missing_ok`, a named object that does not
        exist (None)."""
        what = f"pool {pool.name}: cannot {action} MachineDeployment {md}"
        try:
            return await call
        except ApiException as exc:
            if conflict and exc.status == 409:
                raise _Conflict from None
            if missing_ok and exc.status == 404 and _names_object(exc):
                return None
            self._refuse(what, md, exc)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise ProviderError(
                f"{what}: API server unreachable: {type(exc).__name__}: {exc}".rstrip(": ")
            ) from None

    def _refuse(self, what: str, md: MachineDeploymentRef, exc: ApiException) -> NoReturn:
        status = _status_of(exc)
        message = status.get("message") or exc.reason or "no message"
        if exc.status == 404:
            details = status.get("details")
            if not _names_object(exc):
                # No object named: the URL's resource itself is unknown to this server.
                raise ProviderError(
                    f"{what}: the API server does not serve {GROUP}/{self.version} "
                    "machinedeployments/machines (is Cluster API installed, and at this "
                    f"version?): {message}"
                )
            if isinstance(details, dict) and details.get("kind") == "machinedeployments":
                raise ProviderError(f"{what}: MachineDeployment {md} not found")
        reason = status.get("reason") or exc.reason or ""
        raise ProviderError(f"{what}: {exc.status} {reason}: {message}")
