"""Label selectors in the string form the metrics APIs receive (`labelSelector`,
`metricLabelSelector`), parsed and matched as apimachinery's `labels.Parse` does.

The HPA controller sends its scale target's selector in this form (`app=enclave,tier in (a,b)`),
so the syntax is Kubernetes': `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`,
and `k>n` / `k<n` for integers, joined by commas. `!=` and `notin` also match objects without the
key. A selector that Kubernetes would refuse is a `SelectorError` whose message names the part,
which the API answers with 400.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass


class SelectorError(ValueError):
    """A selector Kubernetes would refuse; the message names the offending part."""


_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_SET = re.compile(r"^(?P<key>\S+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_COMPARE = re.compile(r"^(?P<key>[^=!<>\s]+)\s*(?P<op>==|=|!=|<|>)\s*(?P<value>\S*)$")


@dataclass(frozen=True, slots=True)
class Requirement:
    """One comma-separated part of a selector."""

    key: str
    op: str
    """`=`, `!=`, `in`, `notin`, `exists`, `!`, `<` or `>`."""
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.op == "exists":
            return value is not None
        if self.op == "!":
            return value is None
        if self.op in ("=", "in"):
            return value is not None and value in self.values
        if self.op in ("!=", "notin"):
            return value is None or value not in self.values
        # `<` and `>` compare integers; a label that is not one does not match.
        (bound,) = self.values
        try:
            number = int(value) if value is not None else None
        except ValueError:
            return False
        if number is None:
            return False
        return number < int(bound) if self.op == "<" else number > int(bound)


@dataclass(frozen=True, slots=True)
class Selector:
    """Requirements that must all hold; none selects everything."""

    requirements: tuple[Requirement, ...] = ()

    @property
    def everything(self) -> bool:
        return not self.requirements

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


EVERYTHING = Selector()


def _split(text: str) -> list[str]:
    """Split on the commas that are not inside an `in (...)` value set."""
    parts: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
            if depth > 1:
                raise SelectorError(f"nested '(' in {text!r}")
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unbalanced ')' in {text!r}")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise SelectorError(f"unclosed '(' in {text!r}")
    parts.append(text[start:])
    return parts


def _key(key: str, part: str) -> str:
    if len(key) > 316 or not _KEY.match(key) or len(key.rsplit("/", 1)[-1]) > 63:
        raise SelectorError(f"invalid label key {key!r} in {part!r}")
    return key


def _value(value: str, part: str) -> str:
    if len(value) > 63 or not _VALUE.match(value):
        raise SelectorError(f"invalid label value {value!r} in {part!r}")
    return value


def _requirement(part: str) -> Requirement:
    if not part:
        raise SelectorError("empty requirement (a stray comma?)")
    if part.startswith("!"):
        return Requirement(_key(part[1:].strip(), part), "!")
    found = _SET.match(part)
    if found:
        values = [v.strip() for v in found["values"].split(",")]
        if values == [""]:
            raise SelectorError(f"{part!r}: a set needs at least one value")
        return Requirement(
            _key(found["key"], part), found["op"], frozenset(_value(v, part) for v in values)
        )
    found = _COMPARE.match(part)
    if found:
        op = "=" if found["op"] == "==" else found["op"]
        value = found["value"]
        if op in ("<", ">"):
            try:
                int(value)
            except ValueError:
                raise SelectorError(f"{part!r}: {op} needs an integer, got {value!r}") from None
            return Requirement(_key(found["key"], part), op, frozenset({value}))
        return Requirement(_key(found["key"], part), op, frozenset({_value(value, part)}))
    if re.fullmatch(r"\S+", part):
        return Requirement(_key(part, part), "exists")
    raise SelectorError(f"unable to parse requirement {part!r}")


def parse_selector(text: str | None) -> Selector:
    """The selector in `text`; None or blank selects everything."""
    if text is None or not text.strip():
        return EVERYTHING
    return Selector(tuple(_requirement(p.strip()) for p in _split(text.strip())))
