"""Label and field selectors as kube-apiserver parses and applies them.

The fake API server filters lists and watches with these, so code under test sees the same
objects (and the same ADDED/DELETED transitions when an object starts or stops matching) that a
real API server would send for the selector it asks for. A bad selector is a `SelectorError`,
which the server answers with 400 BadRequest.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Obj = Mapping[str, Any]


class SelectorError(ValueError):
    """A selector the API server would reject; the message says which part."""


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: str
    """One of `=`, `!=`, `in`, `notin`, `exists`, `!`."""
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and labels[self.key] in self.values
        # `!=` and `notin` also match objects that lack the key, as in Kubernetes.
        return not present or labels[self.key] not in self.values


_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside `in (...)` value sets."""
    parts: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unbalanced ')' in {text!r}")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise SelectorError(f"unbalanced '(' in {text!r}")
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _check_key(key: str, whole: str) -> str:
    if not _KEY.match(key) or len(key) > 316:
        raise SelectorError(f"invalid label key {key!r} in selector {whole!r}")
    return key


def _check_value(value: str, whole: str) -> str:
    if not _VALUE.match(value) or len(value) > 63:
        raise SelectorError(f"invalid label value {value!r} in selector {whole!r}")
    return value


_SET = re.compile(r"^(?P<key>[^\s!=(),]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")


def parse_label_selector(text: str) -> list[Requirement]:
    """Parse `a=b,c!=d,e in (x,y),f notin (z),g,!h`; an empty selector matches everything."""
    if not text.strip():
        return []
    requirements: list[Requirement] = []
    for part in _split_top(text):
        if not part:
            raise SelectorError(f"empty requirement in label selector {text!r}")
        match = _SET.match(part)
        if match:
            values = [v.strip() for v in match["values"].split(",")]
            if values == [""]:
                raise SelectorError(f"empty value set in label selector {text!r}")
            requirements.append(
                Requirement(
                    _check_key(match["key"], text),
                    match["op"],
                    frozenset(_check_value(v, text) for v in values),
                )
            )
            continue
        for op in ("!=", "==", "="):
            if op in part:
                key, _, value = part.partition(op)
                requirements.append(
                    Requirement(
                        _check_key(key.strip(), text),
                        "!=" if op == "!=" else "=",
                        frozenset({_check_value(value.strip(), text)}),
                    )
                )
                break
        else:
            if part.startswith("!"):
                requirements.append(Requirement(_check_key(part[1:].strip(), text), "!"))
            else:
                requirements.append(Requirement(_check_key(part, text), "exists"))
    return requirements


def _path(*keys: str) -> Callable[[Obj], str]:
    def get(obj: Obj) -> str:
        value: Any = obj
        for key in keys:
            if not isinstance(value, Mapping):
                return ""
            value = value.get(key)
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return get


_COMMON_FIELDS: dict[str, Callable[[Obj], str]] = {
    "metadata.name": _path("metadata", "name"),
    "metadata.namespace": _path("metadata", "namespace"),
}

#: The fields each kind lets clients select on (a subset of kube-apiserver's, as epcsched uses).
FIELDS: dict[str, dict[str, Callable[[Obj], str]]] = {
    "Pod": {
        **_COMMON_FIELDS,
        "spec.nodeName": _path("spec", "nodeName"),
        "spec.schedulerName": _path("spec", "schedulerName"),
        "status.phase": _path("status", "phase"),
    },
    "Node": {**_COMMON_FIELDS, "spec.unschedulable": _path("spec", "unschedulable")},
    "Event": {
        **_COMMON_FIELDS,
        "involvedObject.kind": _path("involvedObject", "kind"),
        "involvedObject.name": _path("involvedObject", "name"),
        "involvedObject.namespace": _path("involvedObject", "namespace"),
        "reason": _path("reason"),
        "type": _path("type"),
    },
}


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    field: str
    getter: Callable[[Obj], str]
    equal: bool
    value: str

    def matches(self, obj: Obj) -> bool:
        return (self.getter(obj) == self.value) is self.equal


def parse_field_selector(text: str, kind: str) -> list[FieldRequirement]:
    """Parse `spec.nodeName=n1,status.phase!=Failed` for objects of `kind`."""
    if not text.strip():
        return []
    fields = FIELDS.get(kind, _COMMON_FIELDS)
    requirements: list[FieldRequirement] = []
    for part in text.split(","):
        part = part.strip()
        for op in ("!=", "==", "="):
            if op in part:
                name, _, value = part.partition(op)
                name = name.strip()
                getter = fields.get(name)
                if getter is None:
                    raise SelectorError(
                        f'field label not supported: "{name}" for {kind} '
                        f"(supported: {', '.join(sorted(fields))})"
                    )
                requirements.append(FieldRequirement(name, getter, op != "!=", value.strip()))
                break
        else:
            raise SelectorError(f"invalid field selector {text!r}: {part!r} has no operator")
    return requirements


@dataclass(frozen=True, slots=True)
class Selector:
    """A label selector and a field selector together; both must match."""

    labels: tuple[Requirement, ...] = ()
    fields: tuple[FieldRequirement, ...] = ()

    @classmethod
    def parse(cls, label_selector: str | None, field_selector: str | None, kind: str) -> Selector:
        return cls(
            tuple(parse_label_selector(label_selector or "")),
            tuple(parse_field_selector(field_selector or "", kind)),
        )

    @property
    def everything(self) -> bool:
        return not self.labels and not self.fields

    def matches(self, obj: Obj) -> bool:
        if self.labels:
            meta = obj.get("metadata")
            labels = (meta.get("labels") if isinstance(meta, Mapping) else None) or {}
            if not all(r.matches(labels) for r in self.labels):
                return False
        return all(f.matches(obj) for f in self.fields)
