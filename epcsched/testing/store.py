"""The fake API server's storage: objects, one resourceVersion sequence, watch history.

It behaves like etcd behind kube-apiserver as far as clients can tell: every write takes the next
resourceVersion (one sequence for all kinds), a bounded history of changes serves watches that
resume from a version, and a version older than that history is `410 Gone`. Stored objects are
never mutated in place: a write stores a new dict, so a list or a watch can hand objects out
without copying. Errors are `ApiError`s carrying the Kubernetes `Status` the server sends.
"""

from __future__ import annotations

import asyncio
import copy
import math
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from epcsched.testing.patch import STRATEGIC_MERGE_PATCH, PatchError, apply_patch
from epcsched.testing.selectors import Selector

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Resource:
    """One kind of object the server stores, named as in its URL paths."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    subresources: frozenset[str] = frozenset()
    singular: str = ""
    verbs: tuple[str, ...] = (
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    )
    custom: bool = False
    """Served from a CustomResourceDefinition: no strategic merge patch (415), as in
    apiextensions-apiserver."""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)


RESOURCES: tuple[Resource, ...] = (
    Resource("", "v1", "pods", "Pod", True, frozenset({"status", "binding", "eviction"}), "pod"),
    Resource("", "v1", "nodes", "Node", False, frozenset({"status"}), "node"),
    Resource("", "v1", "namespaces", "Namespace", False, frozenset({"status"}), "namespace"),
    Resource("", "v1", "events", "Event", True, singular="event"),
    Resource("", "v1", "configmaps", "ConfigMap", True, singular="configmap"),
    Resource("", "v1", "bindings", "Binding", True, singular="binding", verbs=("create",)),
    Resource("coordination.k8s.io", "v1", "leases", "Lease", True, singular="lease"),
    Resource(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        True,
        frozenset({"status"}),
        "poddisruptionbudget",
    ),
    Resource(
        "cluster.x-k8s.io",
        "v1beta1",
        "machinedeployments",
        "MachineDeployment",
        True,
        frozenset({"status", "scale"}),
        "machinedeployment",
        custom=True,
    ),
    Resource(
        "cluster.x-k8s.io",
        "v1beta1",
        "machines",
        "Machine",
        True,
        frozenset({"status"}),
        "machine",
        custom=True,
    ),
    # Create-only reviews that aggregated API servers send; answered, never stored (access.py).
    Resource(
        "authentication.k8s.io", "v1", "tokenreviews", "TokenReview", False, verbs=("create",)
    ),
    Resource(
        "authorization.k8s.io",
        "v1",
        "subjectaccessreviews",
        "SubjectAccessReview",
        False,
        verbs=("create",),
    ),
)

BY_KIND: dict[str, Resource] = {r.kind: r for r in RESOURCES}


def find_resource(group: str, version: str, plural: str) -> Resource | None:
    for resource in RESOURCES:
        if (resource.group, resource.version, resource.plural) == (group, version, plural):
            return resource
    return None


class ApiError(Exception):
    """A failed request, as the Kubernetes `Status` object the server answers with."""

    REASONS: ClassVar[dict[int, str]] = {
        400: "BadRequest",
        401: "Unauthorized",
        403: "Forbidden",
        404: "NotFound",
        405: "MethodNotAllowed",
        409: "Conflict",
        410: "Expired",
        415: "UnsupportedMediaType",
        422: "Invalid",
        429: "TooManyRequests",
        500: "InternalError",
        503: "ServiceUnavailable",
        504: "Timeout",
    }

    def __init__(
        self,
        code: int,
        message: str,
        *,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or self.REASONS.get(code, "Unknown")
        self.details = dict(details or {})
        self.retry_after = retry_after

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def not_found(resource: Resource, name: str) -> ApiError:
    group = resource.plural if not resource.group else f"{resource.plural}.{resource.group}"
    return ApiError(
        404,
        f'{group} "{name}" not found',
        details={"name": name, "group": resource.group, "kind": resource.plural},
    )


def gone(message: str) -> ApiError:
    return ApiError(410, message, reason="Expired")


@dataclass(frozen=True, slots=True)
class Change:
    """One write, as watches replay it: the object before (None on create) and after."""

    rv: int
    resource: Resource
    old: Obj | None
    new: Obj
    deleted: bool = False


@dataclass(eq=False)
class Subscription:
    """A watch's feed of changes to one resource, filled synchronously by every write."""

    resource: Resource
    queue: asyncio.Queue[Change | None] = field(default_factory=asyncio.Queue)
    abort: bool = False
    """Set by fault injection: the stream is cut without a clean end."""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(obj: Obj) -> Obj:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
        obj["metadata"] = meta
    return meta


def _int_or_percent(value: Any, total: int, *, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        try:
            share = float(value[:-1]) / 100
        except ValueError:
            raise ApiError(422, f"invalid percentage {value!r} in PodDisruptionBudget") from None
        amount = total * share
        return math.ceil(amount) if round_up else math.floor(amount)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(422, f"invalid value {value!r} in PodDisruptionBudget")
    return value


class Store:
    """All objects of the fake cluster and the history watches resume from."""

    def __init__(self, *, history: int = 10_000) -> None:
        self.rv = 0
        self.compacted = 0
        """Changes up to this resourceVersion are no longer in the history."""
        self._history_limit = max(history, 1)
        self.history: deque[Change] = deque()
        self.objects: dict[tuple[str, str], dict[tuple[str, str], Obj]] = {
            r.key: {} for r in RESOURCES
        }
        self.subscriptions: dict[tuple[str, str], set[Subscription]] = {
            r.key: set() for r in RESOURCES
        }

    # ----- history and watches -----------------------------------------------------------
    def _record(self, change: Change) -> None:
        self.history.append(change)
        while len(self.history) > self._history_limit:
            self.compacted = self.history.popleft().rv
        for sub in self.subscriptions[change.resource.key]:
            sub.queue.put_nowait(change)

    def compact(self) -> None:
        """Forget the whole history, as etcd compaction does: older versions become 410."""
        self.history.clear()
        self.compacted = self.rv

    def subscribe(self, resource: Resource) -> Subscription:
        sub = Subscription(resource)
        self.subscriptions[resource.key].add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self.subscriptions[sub.resource.key].discard(sub)

    def changes_since(self, resource: Resource, rv: int) -> list[Change]:
        """Changes to `resource` after `rv`; 410 when the history no longer reaches back."""
        if rv < self.compacted:
            raise gone(f"too old resource version: {rv} ({self.compacted + 1})")
        return [c for c in self.history if c.rv > rv and c.resource.key == resource.key]

    def all_subscriptions(self) -> Iterator[Subscription]:
        for subs in self.subscriptions.values():
            yield from subs

    # ----- reads -------------------------------------------------------------------------
    def get(self, resource: Resource, namespace: str | None, name: str) -> Obj:
        obj = self.objects[resource.key].get((namespace or "", name))
        if obj is None:
            raise not_found(resource, name)
        return obj

    def items(
        self, resource: Resource, namespace: str | None, selector: Selector | None = None
    ) -> list[Obj]:
        """Matching objects sorted by namespace and name, as etcd returns keys."""
        table = self.objects[resource.key]
        keys = sorted(table)
        result = []
        for key in keys:
            if namespace and key[0] != namespace:
                continue
            obj = table[key]
            if selector is None or selector.everything or selector.matches(obj):
                result.append(obj)
        return result

    # ----- writes ------------------------------------------------------------------------
    def _key(self, resource: Resource, namespace: str | None, name: str) -> tuple[str, str]:
        return ((namespace or "default") if resource.namespaced else "", name)

    def _stamp(self, obj: Obj) -> int:
        self.rv += 1
        _meta(obj)["resourceVersion"] = str(self.rv)
        return self.rv

    def load(self, resource: Resource, obj: Obj) -> Obj:
        """Store `obj` as given (status and all), as if restored from etcd; replaces any old one."""
        obj = copy.deepcopy(obj)
        meta = _meta(obj)
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            raise ApiError(422, f"{resource.kind}: metadata.name: Required value")
        namespace = meta.get("namespace") if resource.namespaced else None
        if resource.namespaced:
            meta["namespace"] = namespace or "default"
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _now())
        obj["kind"] = resource.kind
        obj["apiVersion"] = resource.api_version
        key = self._key(resource, meta.get("namespace"), name)
        old = self.objects[resource.key].get(key)
        rv = self._stamp(obj)
        self.objects[resource.key][key] = obj
        self._record(Change(rv, resource, old, obj))
        return obj

    def create(self, resource: Resource, namespace: str | None, body: Obj) -> Obj:
        obj = copy.deepcopy(body)
        meta = _meta(obj)
        if resource.namespaced:
            given = meta.get("namespace")
            if given and namespace and given != namespace:
                raise ApiError(
                    400,
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request",
                )
            meta["namespace"] = namespace or given or "default"
        else:
            meta.pop("namespace", None)
        name = meta.get("name")
        if not name and meta.get("generateName"):
            name = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
            meta["name"] = name
        if not isinstance(name, str) or not name:
            raise ApiError(
                422,
                f"{resource.kind} is invalid: metadata.name: Required value: name or "
                "generateName is required",
            )
        key = self._key(resource, meta.get("namespace"), name)
        if key in self.objects[resource.key]:
            group = resource.plural if not resource.group else f"{resource.plural}.{resource.group}"
            raise ApiError(
                409,
                f'{group} "{name}" already exists',
                reason="AlreadyExists",
                details={"name": name, "group": resource.group, "kind": resource.plural},
            )
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta.pop("deletionTimestamp", None)
        meta.setdefault("generation", 1)
        obj["kind"] = resource.kind
        obj["apiVersion"] = resource.api_version
        if resource.kind == "Pod":
            # The API server resets a new pod's status; only the kubelet moves it on.
            obj["status"] = {"phase": "Pending"}
        rv = self._stamp(obj)
        self.objects[resource.key][key] = obj
        self._record(Change(rv, resource, None, obj))
        return obj

    def _write(self, resource: Resource, key: tuple[str, str], old: Obj, new: Obj) -> Obj:
        """Store `new` in place of `old`; finishes a deletion once finalizers are gone."""
        meta = _meta(new)
        for fixed in ("uid", "creationTimestamp", "name", "namespace", "deletionTimestamp"):
            if fixed in old["metadata"]:
                meta[fixed] = old["metadata"][fixed]
            else:
                meta.pop(fixed, None)
        new["kind"] = resource.kind
        new["apiVersion"] = resource.api_version
        if new.get("spec") != old.get("spec"):
            meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        else:
            meta["generation"] = old["metadata"].get("generation", 1)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._remove(resource, key, new)
        rv = self._stamp(new)
        self.objects[resource.key][key] = new
        self._record(Change(rv, resource, old, new))
        return new

    def _remove(self, resource: Resource, key: tuple[str, str], last: Obj) -> Obj:
        old = self.objects[resource.key].pop(key)
        final = copy.deepcopy(last)
        rv = self._stamp(final)
        self._record(Change(rv, resource, old, final, deleted=True))
        return final

    def _check_version(self, resource: Resource, old: Obj, body: Obj) -> None:
        metadata = body.get("metadata")
        wanted = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
        if wanted and str(wanted) != old["metadata"]["resourceVersion"]:
            group = resource.plural if not resource.group else f"{resource.plural}.{resource.group}"
            name = old["metadata"]["name"]
            raise ApiError(
                409,
                f'Operation cannot be fulfilled on {group} "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again",
                details={"name": name, "group": resource.group, "kind": resource.plural},
            )

    @staticmethod
    def _merge_subresource(old: Obj, body: Obj, subresource: str | None, resource: Resource) -> Obj:
        """Main-resource writes keep the stored status; `/status` writes change only status."""
        new = copy.deepcopy(body)
        if "status" not in resource.subresources:
            return new
        if subresource == "status":
            merged = copy.deepcopy(old)
            merged["status"] = new.get("status")
            if merged["status"] is None:
                merged.pop("status")
            return merged
        if "status" in old:
            new["status"] = copy.deepcopy(old["status"])
        else:
            new.pop("status", None)
        return new

    def update(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        body: Obj,
        *,
        subresource: str | None = None,
    ) -> Obj:
        meta = body.get("metadata")
        if not isinstance(meta, dict):
            raise ApiError(422, f"{resource.kind} is invalid: metadata: Required value")
        if meta.get("name") not in (None, name):
            raise ApiError(
                400,
                f"the name of the object ({meta.get('name')}) does not match the name on "
                f"the URL ({name})",
            )
        key = self._key(resource, namespace, name)
        old = self.objects[resource.key].get(key)
        if old is None:
            raise not_found(resource, name)
        self._check_version(resource, old, body)
        new = self._merge_subresource(old, body, subresource, resource)
        return self._write(resource, key, old, new)

    def patch(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        content_type: str,
        patch: Any,
        *,
        subresource: str | None = None,
    ) -> Obj:
        key = self._key(resource, namespace, name)
        old = self.objects[resource.key].get(key)
        if old is None:
            raise not_found(resource, name)
        patched = _patched(resource, content_type, old, patch)
        if not isinstance(patched.get("metadata"), dict):
            raise ApiError(422, f"{resource.kind} is invalid: metadata: Required value")
        self._check_version(resource, old, patched)
        if subresource == "status":
            new = copy.deepcopy(old)
            if "status" in patched:
                new["status"] = patched["status"]
            else:
                new.pop("status", None)
            new["metadata"] = dict(new["metadata"])
        else:
            new = self._merge_subresource(old, patched, None, resource)
        return self._write(resource, key, old, new)

    def delete(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        *,
        uid: str | None = None,
        resource_version: str | None = None,
    ) -> Obj:
        key = self._key(resource, namespace, name)
        old = self.objects[resource.key].get(key)
        if old is None:
            raise not_found(resource, name)
        if uid and old["metadata"].get("uid") != uid:
            raise ApiError(
                409,
                f"Precondition failed: UID in precondition: {uid}, UID in object meta: "
                f"{old['metadata'].get('uid')}",
            )
        if resource_version and old["metadata"]["resourceVersion"] != resource_version:
            raise ApiError(
                409,
                f"Precondition failed: ResourceVersion in precondition: {resource_version}, "
                f"ResourceVersion in object meta: {old['metadata']['resourceVersion']}",
            )
        if old["metadata"].get("finalizers"):
            if old["metadata"].get("deletionTimestamp"):
                return old
            new = copy.deepcopy(old)
            new["metadata"]["deletionTimestamp"] = _now()
            rv = self._stamp(new)
            self.objects[resource.key][key] = new
            self._record(Change(rv, resource, old, new))
            return new
        return self._remove(resource, key, old)

    # ----- pod subresources --------------------------------------------------------------
    def bind(self, namespace: str, name: str, binding: Obj) -> None:
        """pods/binding: set spec.nodeName once; a bound pod answers 409 as the API does."""
        pods = BY_KIND["Pod"]
        target = binding.get("target")
        node = target.get("name") if isinstance(target, dict) else None
        if not isinstance(node, str) or not node:
            raise ApiError(422, "Binding is invalid: target.name: Required value")
        key = (namespace, name)
        old = self.objects[pods.key].get(key)
        if old is None:
            raise not_found(pods, name)
        meta = binding.get("metadata") if isinstance(binding.get("metadata"), dict) else {}
        uid = meta.get("uid") if isinstance(meta, dict) else None
        if uid and uid != old["metadata"].get("uid"):
            raise ApiError(
                409,
                f'Operation cannot be fulfilled on pods/binding "{name}": the UID in the '
                f"binding ({uid}) does not match the pod ({old['metadata'].get('uid')})",
            )
        if old["metadata"].get("deletionTimestamp"):
            raise ApiError(
                409,
                f'Operation cannot be fulfilled on pods/binding "{name}": pod {name} is '
                "being deleted, cannot be assigned to a host",
            )
        current = (old.get("spec") or {}).get("nodeName")
        if current:
            raise ApiError(
                409,
                f'Operation cannot be fulfilled on pods/binding "{name}": pod {name} is already '
                f'assigned to node "{current}"',
            )
        new = copy.deepcopy(old)
        new.setdefault("spec", {})["nodeName"] = node
        status = new.setdefault("status", {})
        conditions = [c for c in status.get("conditions") or () if c.get("type") != "PodScheduled"]
        conditions.append({"type": "PodScheduled", "status": "True", "lastTransitionTime": _now()})
        status["conditions"] = conditions
        self._write(pods, key, old, new)

    def _pdb_health(self, pdb: Obj) -> tuple[int, int, int]:
        """(disruptions allowed, desired healthy, current healthy) computed from the pods.

        This stands in for kube-controller-manager's disruption controller, which the fake does
        not run, for budgets whose status no controller (or test) has written.
        """
        spec = pdb.get("spec") or {}
        namespace = pdb["metadata"]["namespace"]
        matching = [
            p for p in self.items(BY_KIND["Pod"], namespace) if _selects(spec.get("selector"), p)
        ]
        healthy = sum(
            1
            for p in matching
            if (p.get("status") or {}).get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")
        )
        expected = len(matching)
        if spec.get("minAvailable") is not None:
            desired = _int_or_percent(spec["minAvailable"], expected, round_up=True)
        elif spec.get("maxUnavailable") is not None:
            desired = expected - _int_or_percent(spec["maxUnavailable"], expected, round_up=True)
        else:
            desired = 0
        return healthy - desired, desired, healthy

    def evict(self, namespace: str, name: str, eviction: Obj) -> None:
        """pods/eviction as kube-apiserver serves it: delete the pod unless its budget says no.

        A pod that is Pending, terminal or already being deleted ignores budgets. Otherwise the
        one PodDisruptionBudget selecting it decides (two are a 500, as in kube-apiserver): no
        disruption allowed is a 429 whose cause names the budget; an allowed one is taken from
        the budget's status (and the pod noted in `disruptedPods`) before the pod is deleted.
        """
        pods = BY_KIND["Pod"]
        pod = self.get(pods, namespace, name)
        phase = (pod.get("status") or {}).get("phase")
        ignores_budgets = phase in ("Pending", "Succeeded", "Failed") or bool(
            pod["metadata"].get("deletionTimestamp")
        )
        if not ignores_budgets:
            budgets = [
                pdb
                for pdb in self.items(BY_KIND["PodDisruptionBudget"], namespace)
                if _selects((pdb.get("spec") or {}).get("selector"), pod)
            ]
            if len(budgets) > 1:
                raise ApiError(
                    500,
                    "This pod has more than one PodDisruptionBudget, which the eviction "
                    "subresource does not support.",
                )
            if budgets:
                self._take_disruption(budgets[0], name)
        options = eviction.get("deleteOptions") or {}
        preconditions = options.get("preconditions") or {}
        self.delete(
            pods,
            namespace,
            name,
            uid=preconditions.get("uid"),
            resource_version=preconditions.get("resourceVersion"),
        )

    def _take_disruption(self, pdb: Obj, pod_name: str) -> None:
        """kube-apiserver's checkAndDecrement on `pdb`, raising the error it would answer."""
        budget = pdb["metadata"]["name"]
        status = pdb.get("status") or {}
        # A status with observedGeneration was written by the disruption controller (in tests,
        # by the test playing it): use and decrement it exactly as kube-apiserver does.
        maintained = status.get("observedGeneration") is not None
        if maintained:
            if int(status["observedGeneration"]) < int(pdb["metadata"].get("generation", 1)):
                raise _budget_busy(
                    f"The disruption budget {budget} is still being processed by the server.",
                    retry_after=10,
                )
            allowed = int(status.get("disruptionsAllowed", 0))
            desired = int(status.get("desiredHealthy", 0))
            healthy = int(status.get("currentHealthy", 0))
        else:
            allowed, desired, healthy = self._pdb_health(pdb)
        if maintained and allowed < 0:
            raise ApiError(
                403,
                f'poddisruptionbudgets.policy "{budget}" is forbidden: pdb disruptions allowed '
                "is negative",
            )
        if allowed <= 0:
            raise _budget_busy(
                f"The disruption budget {budget} needs {desired} healthy pods and has "
                f"{healthy} currently"
            )
        if not maintained:
            return
        resource = BY_KIND["PodDisruptionBudget"]
        new = copy.deepcopy(pdb)
        new_status = new.setdefault("status", {})
        new_status["disruptionsAllowed"] = allowed - 1
        new_status.setdefault("disruptedPods", {})[pod_name] = _now()
        key = self._key(resource, pdb["metadata"]["namespace"], budget)
        self._write(resource, key, pdb, new)

    # ----- scale subresource -------------------------------------------------------------
    # As apiextensions-apiserver serves it for a CRD whose scale subresource reads
    # `.spec.replicas`, `.status.replicas` and `.status.selector` (Cluster API's
    # MachineDeployment): an autoscaling/v1 Scale, whose `spec.replicas` is omitted at 0
    # (omitempty), so a client must read a missing value as 0.
    def scale(self, resource: Resource, namespace: str | None, name: str) -> Obj:
        obj = self.get(resource, namespace, name)
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        replicas = spec.get("replicas", 1)
        scale: Obj = {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": name,
                "namespace": obj["metadata"].get("namespace"),
                "uid": obj["metadata"]["uid"],
                "resourceVersion": obj["metadata"]["resourceVersion"],
                "creationTimestamp": obj["metadata"].get("creationTimestamp"),
            },
            "spec": {"replicas": replicas} if replicas else {},
            "status": {"replicas": status.get("replicas", 0)},
        }
        if status.get("selector"):
            scale["status"]["selector"] = status["selector"]
        return scale

    def set_scale(self, resource: Resource, namespace: str | None, name: str, scale: Obj) -> Obj:
        """PUT .../scale: only `spec.replicas` is written; the same value writes nothing."""
        spec = scale.get("spec")
        if not isinstance(spec, dict):
            raise ApiError(
                422, f"Scale is invalid: spec: Invalid value: {spec!r}: must be an object"
            )
        # A Scale decodes into Go's int32, so a missing replicas is 0: `{"spec": {}}` scales
        # to zero on a real server too.
        replicas = spec.get("replicas", 0)
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise ApiError(
                422,
                f"Scale is invalid: spec.replicas: Invalid value: {replicas!r}: must be "
                "greater than or equal to 0",
            )
        meta = scale.get("metadata")
        given = meta.get("name") if isinstance(meta, dict) else None
        if given not in (None, "", name):
            raise ApiError(
                400,
                f"the name of the object ({given}) does not match the name on the URL ({name})",
            )
        key = self._key(resource, namespace, name)
        old = self.objects[resource.key].get(key)
        if old is None:
            raise not_found(resource, name)
        self._check_version(resource, old, scale)
        if (old.get("spec") or {}).get("replicas", 1) == replicas:
            # etcd3's GuaranteedUpdate skips a write that changes nothing: the resourceVersion
            # stays, and no watch sees an event.
            return self.scale(resource, namespace, name)
        new = copy.deepcopy(old)
        new.setdefault("spec", {})["replicas"] = replicas
        self._write(resource, key, old, new)
        return self.scale(resource, namespace, name)

    def patch_scale(
        self, resource: Resource, namespace: str | None, name: str, content_type: str, patch: Any
    ) -> Obj:
        """PATCH .../scale: the patch applies to the Scale, then it is written as a PUT."""
        patched = _patched(resource, content_type, self.scale(resource, namespace, name), patch)
        return self.set_scale(resource, namespace, name, patched)

    def load_many(self, objects: Iterable[Obj]) -> int:
        """Load objects of any known kind (a `kubectl get -o json` List's items); returns count."""
        count = 0
        for obj in objects:
            kind = obj.get("kind")
            resource = BY_KIND.get(kind) if isinstance(kind, str) else None
            if resource is None:
                continue
            self.load(resource, obj)
            count += 1
        return count


def _patched(resource: Resource, content_type: str, target: Obj, patch: Any) -> Obj:
    """`target` with `patch` applied; 415 for a media type the resource does not accept."""
    if resource.custom and content_type.split(";")[0].strip().lower() == STRATEGIC_MERGE_PATCH:
        raise ApiError(
            415,
            "the body of the request was in an unknown format - accepted media types include: "
            "application/json-patch+json, application/merge-patch+json, "
            "application/apply-patch+yaml",
        )
    try:
        patched = apply_patch(content_type, target, patch)
    except PatchError as exc:
        code = 415 if str(exc).startswith("unsupported patch type") else 422
        raise ApiError(code, str(exc)) from None
    if not isinstance(patched, dict):
        raise ApiError(422, f"the patch did not produce a {target.get('kind', 'object')}")
    return patched


def _expression(expression: Any, labels: Mapping[str, str]) -> bool:
    if not isinstance(expression, dict):
        return False
    key = expression.get("key")
    if not isinstance(key, str):
        return False
    op = expression.get("operator")
    values = expression.get("values") or []
    if op == "In":
        return key in labels and labels[key] in values
    if op == "NotIn":
        return key not in labels or labels[key] not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    return False


def _selects(selector: Any, pod: Obj) -> bool:
    """Whether a budget's label selector selects `pod`; a missing or empty one selects nothing,
    as kube-apiserver's eviction handler reads it."""
    if not isinstance(selector, dict):
        return False
    match_labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not match_labels and not expressions:
        return False
    labels = pod["metadata"].get("labels") or {}
    return all(labels.get(k) == v for k, v in match_labels.items()) and all(
        _expression(e, labels) for e in expressions
    )


def _budget_busy(cause: str, *, retry_after: int = 10) -> ApiError:
    """The 429 kube-apiserver answers when a budget forbids an eviction; the cause names it."""
    return ApiError(
        429,
        "Cannot evict pod as it would violate the pod's disruption budget.",
        details={"causes": [{"reason": "DisruptionBudget", "message": cause}]},
        retry_after=retry_after,
    )
