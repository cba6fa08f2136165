"""A pod's effective resource requests, by the rule kube-scheduler and the kubelet use.

The rule (k8s.io/component-helpers resource.PodRequests): app containers and restartable
("sidecar") init containers run together; each plain init container runs alone beside the
sidecars started before it; the pod needs the larger of the two, plus its overhead. A container
limit without a request implies an equal request (API defaulting).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction

ResourceAmounts = dict[str, Fraction]


@dataclass(frozen=True, slots=True)
class ContainerRequests:
    """One container's requests and limits, already parsed."""

    requests: Mapping[str, Fraction]
    limits: Mapping[str, Fraction]
    restartable: bool = False
    """True for an init container with `restartPolicy: Always` (a sidecar)."""

    def effective(self) -> ResourceAmounts:
        merged = dict(self.requests)
        for name, limit in self.limits.items():
            merged.setdefault(name, limit)
        return merged


def _add(into: ResourceAmounts, amounts: Mapping[str, Fraction]) -> None:
    for name, amount in amounts.items():
        into[name] = into.get(name, Fraction(0)) + amount


def _max(into: ResourceAmounts, amounts: Mapping[str, Fraction]) -> None:
    for name, amount in amounts.items():
        if amount > into.get(name, Fraction(0)):
            into[name] = amount


def pod_requests(
    containers: Iterable[ContainerRequests],
    init_containers: Iterable[ContainerRequests] = (),
    overhead: Mapping[str, Fraction] | None = None,
) -> ResourceAmounts:
    """Effective requests of a whole pod, for every resource name it mentions."""
    total: ResourceAmounts = {}
    for container in containers:
        _add(total, container.effective())
    sidecars: ResourceAmounts = {}
    init_peak: ResourceAmounts = {}
    for container in init_containers:
        own = container.effective()
        if container.restartable:
            # A sidecar keeps running beside the app containers and every later init container.
            _add(total, own)
            _add(sidecars, own)
            _max(init_peak, sidecars)
        else:
            alone = dict(own)
            _add(alone, sidecars)
            _max(init_peak, alone)
    _max(total, init_peak)
    if overhead:
        _add(total, overhead)
    return total
