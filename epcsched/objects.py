"""Typed views of the parts of Kubernetes Pod and Node objects that epcsched reads.

The same structs decode an extender request body, a `kubectl get -o json` snapshot and a watch
event, so a pod is understood the same way everywhere. Unknown fields are skipped while decoding,
which is what keeps the extender fast on large bodies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction
from functools import lru_cache

import msgspec

from epcsched.core.requests import ContainerRequests, pod_requests
from epcsched.core.rules import NODE_SELECTOR_OPERATORS, TAINT_EFFECTS, parse_int64
from epcsched.model import (
    NodeInfo,
    NodeSelectorRequirement,
    NodeSelectorTerm,
    PodInfo,
    Taint,
    Toleration,
)
from epcsched.quantity import QuantityError, ceil_int, parse_quantity

QuantityValue = str | int | float

# Per-node sums are int64 arrays; no real amount (bytes, millicores) comes near 2**53 (8 PiB),
# so anything larger is refused rather than allowed to overflow a sum.
MAX_AMOUNT = 2**53
ResourceList = dict[str, QuantityValue]

SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"
MIRROR = "kubernetes.io/config.mirror"
_REQUIRED_TERMS = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"


class ObjectError(ValueError):
    """A Kubernetes object epcsched cannot read; the message names the field."""


class OwnerReference(msgspec.Struct, omit_defaults=True):
    kind: str = ""
    name: str = ""
    controller: bool | None = None


class ObjectMeta(msgspec.Struct, omit_defaults=True):
    name: str = ""
    namespace: str | None = None
    uid: str | None = None
    resourceVersion: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    ownerReferences: list[OwnerReference] | None = None
    deletionTimestamp: str | None = None


class ResourceRequirements(msgspec.Struct, omit_defaults=True):
    requests: ResourceList | None = None
    limits: ResourceList | None = None


class Container(msgspec.Struct, omit_defaults=True):
    name: str = ""
    resources: ResourceRequirements | None = None
    restartPolicy: str | None = None


class PodToleration(msgspec.Struct, omit_defaults=True):
    key: str | None = None
    operator: str | None = None
    value: str | None = None
    effect: str | None = None


class SelectorRequirement(msgspec.Struct, omit_defaults=True):
    key: str = ""
    operator: str = ""
    values: list[str] | None = None


class SelectorTerm(msgspec.Struct, omit_defaults=True):
    matchExpressions: list[SelectorRequirement] | None = None
    matchFields: list[SelectorRequirement] | None = None


class NodeSelector(msgspec.Struct, omit_defaults=True):
    nodeSelectorTerms: list[SelectorTerm] | None = None


class NodeAffinity(msgspec.Struct, omit_defaults=True):
    requiredDuringSchedulingIgnoredDuringExecution: NodeSelector | None = None


class Affinity(msgspec.Struct, omit_defaults=True):
    nodeAffinity: NodeAffinity | None = None


class PodSpec(msgspec.Struct, omit_defaults=True):
    nodeName: str | None = None
    containers: list[Container] | None = None
    initContainers: list[Container] | None = None
    overhead: ResourceList | None = None
    nodeSelector: dict[str, str] | None = None
    affinity: Affinity | None = None
    tolerations: list[PodToleration] | None = None
    resources: ResourceRequirements | None = None


class PodCondition(msgspec.Struct, omit_defaults=True):
    type: str = ""
    status: str = ""
    reason: str | None = None


class PodStatus(msgspec.Struct, omit_defaults=True):
    phase: str | None = None
    conditions: list[PodCondition] | None = None


class Pod(msgspec.Struct, omit_defaults=True):
    metadata: ObjectMeta | None = None
    spec: PodSpec | None = None
    status: PodStatus | None = None


class NodeTaint(msgspec.Struct, omit_defaults=True):
    key: str = ""
    value: str | None = None
    effect: str = ""


class NodeSpec(msgspec.Struct, omit_defaults=True):
    unschedulable: bool | None = None
    taints: list[NodeTaint] | None = None


class NodeCondition(msgspec.Struct, omit_defaults=True):
    type: str = ""
    status: str = ""


class NodeStatus(msgspec.Struct, omit_defaults=True):
    capacity: ResourceList | None = None
    allocatable: ResourceList | None = None
    conditions: list[NodeCondition] | None = None


class Node(msgspec.Struct, omit_defaults=True):
    metadata: ObjectMeta | None = None
    spec: NodeSpec | None = None
    status: NodeStatus | None = None


@lru_cache(maxsize=8192)
def _cached_quantity(value: QuantityValue) -> Fraction:
    return parse_quantity(value)


def _amounts(resources: ResourceList | None, path: str) -> dict[str, Fraction]:
    if not resources:
        return {}
    parsed: dict[str, Fraction] = {}
    for name, value in resources.items():
        try:
            amount = _cached_quantity(value)
        except QuantityError as exc:
            raise ObjectError(f"{path}[{name}]: {exc}") from None
        if amount < 0:
            raise ObjectError(f"{path}[{name}]: negative quantity {value!r}")
        if amount > MAX_AMOUNT:
            raise ObjectError(f"{path}[{name}]: quantity {value!r} is too large")
        parsed[name] = amount
    return parsed


def _container_requests(containers: list[Container] | None, path: str) -> list[ContainerRequests]:
    result = []
    for i, container in enumerate(containers or ()):
        res = container.resources or ResourceRequirements()
        where = f"{path}[{i}].resources"
        result.append(
            ContainerRequests(
                requests=_amounts(res.requests, f"{where}.requests"),
                limits=_amounts(res.limits, f"{where}.limits"),
                restartable=container.restartPolicy == "Always",
            )
        )
    return result


def pod_resource_amounts(pod: Pod) -> dict[str, Fraction]:
    """Effective requests of `pod` for every resource it names (exact, unrounded)."""
    spec = pod.spec or PodSpec()
    total = pod_requests(
        _container_requests(spec.containers, "spec.containers"),
        _container_requests(spec.initContainers, "spec.initContainers"),
        _amounts(spec.overhead, "spec.overhead"),
    )
    if spec.resources is not None:
        # Pod-level resources (PodLevelResources) override the container sum for cpu and memory.
        pod_level = ContainerRequests(
            requests=_amounts(spec.resources.requests, "spec.resources.requests"),
            limits=_amounts(spec.resources.limits, "spec.resources.limits"),
        ).effective()
        overhead = _amounts(spec.overhead, "spec.overhead")
        for name in ("cpu", "memory"):
            if name in pod_level:
                total[name] = pod_level[name] + overhead.get(name, Fraction(0))
    return total


def _bounded(name: str, amount: int) -> int:
    if amount > MAX_AMOUNT:
        raise ObjectError(f"{name}: {amount} is too large")
    return amount


def epc_of(
    amounts: Mapping[str, Fraction], epc_resources: Mapping[str, int], *, keep_zero: bool = False
) -> dict[str, int]:
    """EPC bytes per resource name, for the names `epc_resources` maps to a unit.

    A pod's zero request asks for nothing, but a node advertising zero still advertises the name.
    """
    return {
        name: _bounded(name, ceil_int(amount * epc_resources[name]))
        for name, amount in amounts.items()
        if name in epc_resources and (amount > 0 or keep_zero)
    }


def _tolerations(tolerations: list[PodToleration] | None) -> tuple[Toleration, ...]:
    """Tolerations as kube-apiserver validates them; an empty operator means Equal."""
    result = []
    for i, t in enumerate(tolerations or ()):
        where = f"spec.tolerations[{i}]"
        key, value, effect = t.key or "", t.value or "", t.effect or ""
        operator = t.operator or "Equal"
        if operator not in ("Equal", "Exists"):
            raise ObjectError(f'{where}.operator: unknown operator "{operator}"')
        if effect and effect not in TAINT_EFFECTS:
            raise ObjectError(f'{where}.effect: unknown effect "{effect}"')
        if operator == "Exists" and value:
            raise ObjectError(f"{where}.value: must be empty when operator is Exists")
        if not key and operator != "Exists":
            raise ObjectError(f"{where}.operator: must be Exists when key is empty")
        result.append(Toleration(key, operator, value, effect))
    return tuple(result)


def _requirement(item: SelectorRequirement, where: str, *, field: bool) -> NodeSelectorRequirement:
    op, values = item.operator, tuple(item.values or ())
    if not item.key:
        raise ObjectError(f"{where}.key: must not be empty")
    if field:
        # matchFields may only name the node: metadata.name In/NotIn one name.
        if item.key != "metadata.name":
            raise ObjectError(f'{where}.key: unknown field "{item.key}" (only metadata.name)')
        if op not in ("In", "NotIn"):
            raise ObjectError(f'{where}.operator: unknown operator "{op}" for matchFields')
        if len(values) != 1:
            raise ObjectError(f"{where}.values: must have exactly one value")
    elif op not in NODE_SELECTOR_OPERATORS:
        raise ObjectError(f'{where}.operator: unknown operator "{op}"')
    if op in ("In", "NotIn") and not values:
        raise ObjectError(f"{where}.values: must be non-empty for {op}")
    if op in ("Exists", "DoesNotExist") and values:
        raise ObjectError(f"{where}.values: must be empty for {op}")
    if op in ("Gt", "Lt") and (len(values) != 1 or parse_int64(values[0]) is None):
        raise ObjectError(f"{where}.values: {op} needs exactly one integer value")
    return NodeSelectorRequirement(item.key, op, values, field)


def _node_affinity(affinity: Affinity | None) -> tuple[NodeSelectorTerm, ...]:
    """Required node affinity terms; an absent requirement is no constraint."""
    node = affinity.nodeAffinity if affinity is not None else None
    required = node.requiredDuringSchedulingIgnoredDuringExecution if node is not None else None
    if required is None:
        return ()
    terms = required.nodeSelectorTerms or []
    if not terms:
        raise ObjectError(f"{_REQUIRED_TERMS}.nodeSelectorTerms: must have at least one term")
    result = []
    for i, term in enumerate(terms):
        where = f"{_REQUIRED_TERMS}.nodeSelectorTerms[{i}]"
        result.append(
            tuple(
                _requirement(r, f"{where}.matchExpressions[{j}]", field=False)
                for j, r in enumerate(term.matchExpressions or ())
            )
            + tuple(
                _requirement(r, f"{where}.matchFields[{j}]", field=True)
                for j, r in enumerate(term.matchFields or ())
            )
        )
    return tuple(result)


_RequestKey = tuple[bytes, tuple[tuple[str, int], ...]]
_Requests = tuple[dict[str, int], int, int]
_REQUESTS: dict[_RequestKey, _Requests] = {}
_REQUESTS_SIZE = 4096
_key_encoder = msgspec.json.Encoder()


def _requests(pod: Pod, epc_resources: Mapping[str, int]) -> _Requests:
    """The pod's effective EPC bytes by name, millicores and memory bytes, cached.

    A watch sees the same few pod templates over and over (every replica, and each pod again at
    its bind and at each status change), and parsing quantities into exact fractions is most of
    the cost of reading a pod. The key is the JSON of exactly the fields
    `pod_resource_amounts` reads, with the unit table, so an entry can only ever be found for
    the same inputs: a changed request is a different key, never a stale record. Refusals are
    not cached (they raise again, with their message).
    """
    spec = pod.spec or PodSpec()
    key = (
        _key_encoder.encode((spec.containers, spec.initContainers, spec.overhead, spec.resources)),
        tuple(epc_resources.items()),
    )
    found = _REQUESTS.get(key)
    if found is None:
        amounts = pod_resource_amounts(pod)
        found = (
            epc_of(amounts, epc_resources),
            _bounded("cpu", ceil_int(amounts.get("cpu", Fraction(0)) * 1000)),
            _bounded("memory", ceil_int(amounts.get("memory", Fraction(0)))),
        )
        if len(_REQUESTS) >= _REQUESTS_SIZE:
            # The oldest entry; whichever goes, a miss only costs a parse.
            _REQUESTS.pop(next(iter(_REQUESTS)), None)
        _REQUESTS[key] = found
    epc, cpu_milli, memory = found
    # Each PodInfo gets its own dict: nothing one holder does can reach another, or the cache.
    return dict(epc), cpu_milli, memory


def pod_info(pod: Pod, epc_resources: Mapping[str, int]) -> PodInfo:
    """Reduce a Pod object to what the core needs. Raises ObjectError naming the bad field."""
    meta = pod.metadata or ObjectMeta()
    spec = pod.spec or PodSpec()
    status = pod.status or PodStatus()
    epc, cpu_milli, memory = _requests(pod, epc_resources)
    owner = next(
        (ref.kind for ref in meta.ownerReferences or () if ref.controller),
        None,
    )
    annotations = meta.annotations or {}
    safe = annotations.get(SAFE_TO_EVICT)
    return PodInfo(
        namespace=meta.namespace or "default",
        name=meta.name,
        uid=meta.uid or "",
        node_name=spec.nodeName or None,
        phase=status.phase or "Pending",
        epc=epc,
        cpu_milli=cpu_milli,
        memory=memory,
        node_selector=dict(spec.nodeSelector or {}),
        node_affinity=_node_affinity(spec.affinity),
        tolerations=_tolerations(spec.tolerations),
        owner_kind=owner,
        marked_unschedulable=any(
            c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
            for c in status.conditions or ()
        ),
        # cluster-autoscaler reads exactly "true" and "false"; anything else is no opinion.
        safe_to_evict=True if safe == "true" else False if safe == "false" else None,
        mirror=MIRROR in annotations,
    )


def node_info(node: Node, epc_resources: Mapping[str, int]) -> NodeInfo:
    """Reduce a Node object to what the core needs. Raises ObjectError naming the bad field."""
    meta = node.metadata or ObjectMeta()
    if not meta.name:
        raise ObjectError("metadata.name: a node needs a name")
    status = node.status or NodeStatus()
    spec = node.spec or NodeSpec()
    ready = (
        any(c.type == "Ready" and c.status == "True" for c in status.conditions or ())
        or not status.conditions
    )
    return _node(
        meta.name,
        _amounts(
            status.allocatable if status.allocatable is not None else status.capacity,
            "status.allocatable",
        ),
        epc_resources,
        labels=meta.labels or {},
        taints=tuple(
            Taint(key=t.key, value=t.value or "", effect=t.effect) for t in spec.taints or ()
        ),
        unschedulable=bool(spec.unschedulable),
        ready=ready,
    )


def template_node(
    name: str,
    resources: Mapping[str, QuantityValue],
    epc_resources: Mapping[str, int],
    *,
    labels: Mapping[str, str] | None = None,
    taints: Sequence[Mapping[str, str]] = (),
) -> NodeInfo:
    """One new node of a pool template, whose `resources` are its allocatable.

    Read exactly as a Node's allocatable is, so a template and the node it becomes agree.
    """
    return _node(
        name,
        _amounts(dict(resources), "resources"),
        epc_resources,
        labels=labels or {},
        taints=tuple(
            Taint(key=t.get("key", ""), value=t.get("value", ""), effect=t.get("effect", ""))
            for t in taints
        ),
    )


def _node(
    name: str,
    allocatable: Mapping[str, Fraction],
    epc_resources: Mapping[str, int],
    *,
    labels: Mapping[str, str],
    taints: tuple[Taint, ...],
    unschedulable: bool = False,
    ready: bool = True,
) -> NodeInfo:
    return NodeInfo(
        name=name,
        epc_allocatable=epc_of(allocatable, epc_resources, keep_zero=True),
        cpu_milli=_bounded("cpu", ceil_int(allocatable.get("cpu", Fraction(0)) * 1000)),
        memory=_bounded("memory", ceil_int(allocatable.get("memory", Fraction(0)))),
        pods=_bounded("pods", ceil_int(allocatable.get("pods", Fraction(110)))),
        labels=dict(labels),
        taints=taints,
        unschedulable=unschedulable,
        ready=ready,
    )
