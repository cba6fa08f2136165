"""The metrics APIs on the wire: which URL names what, and the JSON documents answered.

Shapes follow k8s.io/metrics (custom_metrics v1beta1 and v1beta2, external_metrics v1beta1) and
apimachinery's discovery and `Status` types, because the HPA controller's clients decode them
with those Go structs: v1beta2 items carry `metric: {name}` and `windowSeconds`, v1beta1 items
`metricName` and `window`, and `describedObject` names the pod with apiVersion `/v1` (the core
group written as group/version). `route` also gives the request's attributes the way
kube-apiserver's RequestInfo reads a URL, which is what a SubjectAccessReview must carry for RBAC
to match (`pods/<metric>` in custom.metrics.k8s.io, the metric name as the resource in
external.metrics.k8s.io).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from epcsched.metricsapi.values import EXTERNAL_METRICS, POD_METRICS, PodEntry

CUSTOM = "custom.metrics.k8s.io"
EXTERNAL = "external.metrics.k8s.io"
VERSIONS: dict[str, tuple[str, ...]] = {CUSTOM: ("v1beta2", "v1beta1"), EXTERNAL: ("v1beta1",)}
"""Served versions per group, preferred first (the HPA's client picks the preferred one)."""

Obj = dict[str, Any]
_encode = msgspec.json.Encoder().encode


# ----- routes ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Route:
    """What a request path names, and its attributes for authorisation."""

    kind: str
    """`discovery`, `pods`, `external` or `unknown`."""
    group: str = ""
    version: str = ""
    namespace: str = ""
    name: str = ""
    """A pod's name, or `*` for every pod the selector picks."""
    metric: str = ""
    path: str = ""

    def attributes(self, verb: str = "get") -> tuple[str, Obj]:
        """(`resourceAttributes` or `nonResourceAttributes`, the attributes) for a
        SubjectAccessReview, as kube-apiserver derives them from the URL."""
        if self.kind == "pods":
            return "resourceAttributes", {
                "namespace": self.namespace,
                "verb": verb,
                "group": self.group,
                "version": self.version,
                "resource": "pods",
                "subresource": self.metric,
                "name": self.name,
            }
        if self.kind == "external":
            # No object name in the URL: kube-apiserver calls a GET on it a list.
            return "resourceAttributes", {
                "namespace": self.namespace,
                "verb": "list" if verb == "get" else verb,
                "group": self.group,
                "version": self.version,
                "resource": self.metric,
            }
        return "nonResourceAttributes", {"path": self.path, "verb": verb}


def route(path: str) -> Route:
    """The route for a (percent-decoded) request path."""
    parts = [p for p in path.split("/") if p]
    if not parts or parts[0] != "apis" or len(parts) <= 3:
        return Route("discovery" if parts[:1] == ["apis"] else "unknown", path=path)
    group, version, rest = parts[1], parts[2], parts[3:]
    if version not in VERSIONS.get(group, ()):
        return Route("unknown", path=path)
    if rest[0] != "namespaces" or len(rest) < 3:
        return Route("unknown", group, version, path=path)
    namespace, rest = rest[1], rest[2:]
    if group == CUSTOM and len(rest) == 3 and rest[0] == "pods":
        return Route("pods", group, version, namespace, rest[1], rest[2], path)
    if group == EXTERNAL and len(rest) == 1:
        return Route("external", group, version, namespace, metric=rest[0], path=path)
    return Route("unknown", group, version, namespace, path=path)


# ----- discovery ---------------------------------------------------------------------------
def _version_entry(group: str, version: str) -> Obj:
    return {"groupVersion": f"{group}/{version}", "version": version}


def api_group(group: str) -> Obj:
    versions = VERSIONS[group]
    return {
        "name": group,
        "versions": [_version_entry(group, v) for v in versions],
        "preferredVersion": _version_entry(group, versions[0]),
    }


def discovery(path: str) -> bytes | None:
    """`/apis`, `/apis/<group>` or `/apis/<group>/<version>`; None for anything else."""
    parts = [p for p in path.split("/") if p]
    if parts == ["apis"]:
        return _encode(
            {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [api_group(g) for g in VERSIONS],
            }
        )
    if len(parts) == 2 and parts[1] in VERSIONS:
        return _encode({"kind": "APIGroup", "apiVersion": "v1", **api_group(parts[1])})
    if len(parts) == 3 and parts[2] in VERSIONS.get(parts[1], ()):
        return _encode(resource_list(parts[1], parts[2]))
    return None


def resource_list(group: str, version: str) -> Obj:
    """The APIResourceList naming each metric as a resource (`pods/<metric>` for pod metrics)."""
    if group == CUSTOM:
        names = [f"pods/{name}" for name in POD_METRICS]
        kind = "MetricValueList"
    else:
        names = list(EXTERNAL_METRICS)
        kind = "ExternalMetricValueList"
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}",
        "resources": [
            {"name": n, "singularName": "", "namespaced": True, "kind": kind, "verbs": ["get"]}
            for n in names
        ],
    }


# ----- values ------------------------------------------------------------------------------
def rfc3339(seconds: float) -> str:
    """metav1.Time's JSON form: UTC, whole seconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(seconds)))


def metric_value_list(
    version: str,
    metric: str,
    items: Iterable[tuple[PodEntry, str]],
    *,
    timestamp: float,
    window: int,
) -> bytes:
    """A custom.metrics.k8s.io MetricValueList of pod values, in `version`'s shape.

    Items are written from byte templates rather than built as dicts and encoded: the HPA's
    list covers every replica, and this is most of the time a large answer takes."""
    stamp = rfc3339(timestamp)
    name = _encode(metric)
    if version == "v1beta1":
        middle = b',"metricName":%s,"timestamp":"%s","window":%d,"value":' % (
            name,
            stamp.encode(),
            window,
        )
        tail = b',"selector":null}'
    else:
        middle = b',"metric":{"name":%s},"timestamp":"%s","windowSeconds":%d,"value":' % (
            name,
            stamp.encode(),
            window,
        )
        tail = b"}"
    namespaces: dict[str, bytes] = {}
    parts = []
    for pod, value in items:
        namespace = namespaces.get(pod.namespace)
        if namespace is None:
            namespace = namespaces[pod.namespace] = _encode(pod.namespace)
        parts.append(
            b'{"describedObject":{"kind":"Pod","namespace":%s,"name":%s,"apiVersion":"/v1"}%s%s%s'
            % (namespace, _encode(pod.name), middle, _encode(value), tail)
        )
    head = b'{"kind":"MetricValueList","apiVersion":"%s/%s","metadata":{},"items":[' % (
        CUSTOM.encode(),
        version.encode(),
    )
    return head + b",".join(parts) + b"]}"


def external_value_list(
    metric: str,
    items: Iterable[tuple[Mapping[str, str], str]],
    *,
    timestamp: float,
    window: int,
) -> bytes:
    """An external.metrics.k8s.io/v1beta1 ExternalMetricValueList."""
    stamp = rfc3339(timestamp)
    return _encode(
        {
            "kind": "ExternalMetricValueList",
            "apiVersion": f"{EXTERNAL}/v1beta1",
            "metadata": {},
            "items": [
                {
                    "metricName": metric,
                    "metricLabels": dict(labels),
                    "timestamp": stamp,
                    "window": window,
                    "value": value,
                }
                for labels, value in items
            ],
        }
    )


REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    503: "ServiceUnavailable",
}


def status(code: int, message: str, *, details: Obj | None = None) -> bytes:
    """A failure `Status`, the body of every refusal."""
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": REASONS.get(code, "Unknown"),
        "code": code,
    }
    if details:
        body["details"] = details
    return _encode(body)
