"""The kube-scheduler extender v1 wire format: decoding requests, encoding replies.

kube-scheduler sends `ExtenderArgs` with Go field names (`Pod`, `Nodes`, `NodeNames`) and reads
replies the same way. Bodies are large (a `NodeNames` list of every feasible node, or a whole
NodeList), so decoding reads only what epcsched needs: the top level is split into raw slices,
the Pod is decoded into a narrow struct, and Node objects are kept as raw bytes so a full-nodes
reply can return them unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import msgspec

from epcsched.model import NodeInfo
from epcsched.objects import Node, ObjectError, Pod, node_info


class BadRequest(ValueError):
    """A malformed extender request; becomes HTTP 400 with this one-line message."""


class _NodeMeta(msgspec.Struct):
    name: str = ""


class _NodeName(msgspec.Struct):
    metadata: _NodeMeta | None = None


class _NodeNamesList(msgspec.Struct):
    items: list[_NodeName] | None = None


class _RawNodeList(msgspec.Struct):
    items: list[msgspec.Raw] | None = None


_top_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_pod_decoder = msgspec.json.Decoder(Pod)
_names_decoder = msgspec.json.Decoder(list[str] | None)
_node_names_decoder = msgspec.json.Decoder(_NodeNamesList | None)
_raw_nodes_decoder = msgspec.json.Decoder(_RawNodeList | None)
_str_decoder = msgspec.json.Decoder(str | None)

NULL = b"null"
_CANONICAL = {"pod": "Pod", "nodes": "Nodes", "nodenames": "NodeNames"}


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


@dataclass(frozen=True, slots=True)
class ExtenderArgs:
    """One filter or prioritize request, with the node list still raw."""

    pod_raw: bytes
    names_buffer: bytes | None
    """What holds the raw `NodeNames` JSON array (cache mode) at `names_start:names_end`, or
    None: the request body itself when the list was sliced off its tail, so that a list of
    hundreds of kilobytes is not copied out of it on every request."""
    nodes_raw: bytes | None
    """The raw `Nodes` NodeList (full-nodes mode), or None."""
    names_from_tail: bool = False
    """The names were sliced off the body's end unchecked; see `split_args`."""
    names_start: int = 0
    names_end: int = 0

    @property
    def node_names_raw(self) -> bytes | None:
        """The raw `NodeNames` JSON array, or None (a copy when it lies inside the body)."""
        buffer = self.names_buffer
        if buffer is None or (self.names_start == 0 and self.names_end == len(buffer)):
            return buffer
        return buffer[self.names_start : self.names_end]

    def node_names_view(self) -> memoryview:
        """The raw `NodeNames` JSON array without a copy; only when there is one."""
        assert self.names_buffer is not None
        return memoryview(self.names_buffer)[self.names_start : self.names_end]


_WHITESPACE = b" \t\r\n"
_NODE_NAMES_KEY = b'"NodeNames"'


def _skip(body: bytes, i: int, step: int) -> int:
    while 0 <= i < len(body) and body[i] in _WHITESPACE:
        i += step
    return i


def _split_trailing_names(body: bytes) -> tuple[dict[str, bytes], int, int] | None:
    """The other top-level parts, and where the raw `NodeNames` array lies in `body` when it is
    the last key.

    kube-scheduler writes `Pod`, `Nodes`, `NodeNames` in that order, so the large list ends the
    body. Slicing it off avoids scanning tens of kilobytes of names on every request. The key is
    searched from the front (it sits right after the pod); an occurrence counts only if what
    precedes it closes into a complete JSON object, which no occurrence nested in the pod or in
    a string does. Any body this does not recognise takes the general path, which decodes it all.
    """
    end = _skip(body, len(body) - 1, -1)
    if end < 0 or body[end] != 0x7D:  # }
        return None
    end = _skip(body, end - 1, -1)
    if end < 0 or body[end] != 0x5D:  # ]
        return None
    key = body.find(_NODE_NAMES_KEY)
    while 0 < key < end:
        found = _names_after(body, key, end)
        if found is not None:
            return found
        key = body.find(_NODE_NAMES_KEY, key + 1)
    return None


def _names_after(body: bytes, key: int, end: int) -> tuple[dict[str, bytes], int, int] | None:
    i = _skip(body, key + len(_NODE_NAMES_KEY), 1)
    if i >= len(body) or body[i] != 0x3A:  # :
        return None
    start = _skip(body, i + 1, 1)
    if start >= end or body[start] != 0x5B:  # [
        return None
    before = _skip(body, key - 1, -1)
    # A body that opens with NodeNames is not kube-scheduler's order: read it in full.
    if before < 0 or body[before] != 0x2C:  # ,
        return None
    try:
        parts = _parts(body[:before] + b"}")
    except BadRequest:
        return None
    return parts, start, end + 1


def _decode_top(body: bytes) -> dict[str, msgspec.Raw]:
    """The body's top-level keys with their values still raw."""
    try:
        return _top_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"request body must be a JSON object: {_one_line(exc)}") from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"malformed JSON: {_one_line(exc)}") from None
    except RecursionError:
        raise BadRequest("malformed JSON: nested too deeply") from None


def _parts(body: bytes) -> dict[str, bytes]:
    top = _decode_top(body)
    # Go's encoding/json matches keys case-insensitively and the last duplicate wins.
    parts: dict[str, bytes] = {}
    for key, raw in top.items():
        lowered = key.lower()
        if lowered in _CANONICAL:
            parts[lowered] = bytes(raw)
    return parts


def split_args(body: bytes, *, fast: bool = True) -> ExtenderArgs:
    """Split a request body into its parts, reading keys case-insensitively as Go does.

    With `fast`, a trailing `NodeNames` array is sliced off without being parsed (and without
    being copied: the parts name where it lies in `body`); whoever decodes it and finds it is
    not an array of strings must call again with `fast=False`.
    """
    if fast:
        trailing = _split_trailing_names(body)
        if trailing is not None:
            parts, start, end = trailing
            try:
                return _args(parts, (body, start, end), from_tail=True)
            except BadRequest:
                pass  # The slice may not be what it seemed: the full decode decides.
    parts = _parts(body)
    names = parts.get("nodenames")
    if names is None or names == NULL:
        return _args(parts, None, from_tail=False)
    return _args(parts, (names, 0, len(names)), from_tail=False)


def _args(
    parts: dict[str, bytes], names: tuple[bytes, int, int] | None, *, from_tail: bool
) -> ExtenderArgs:
    """The request's parts, with the names at `names` (what holds them, start, end) or none."""
    pod_raw = parts.get("pod")
    if pod_raw is None or pod_raw == NULL:
        raise BadRequest("missing Pod: the request must carry the pod being scheduled")
    nodes_raw = parts.get("nodes")
    nodes_raw = None if nodes_raw is None or nodes_raw == NULL else nodes_raw
    if names is None:
        if nodes_raw is None:
            raise BadRequest("the request has neither NodeNames nor Nodes")
        return ExtenderArgs(pod_raw, None, nodes_raw, from_tail)
    buffer, start, end = names
    return ExtenderArgs(pod_raw, buffer, nodes_raw, from_tail, start, end)


def decode_pod(raw: bytes) -> Pod:
    try:
        return _pod_decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise BadRequest(f"Pod: {_one_line(exc)}") from None


def decode_node_names(raw: bytes) -> list[str]:
    try:
        return _names_decoder.decode(raw) or []
    except (msgspec.DecodeError, RecursionError) as exc:
        raise BadRequest(f"NodeNames: {_one_line(exc)}") from None


def decode_nodes(raw: bytes) -> tuple[list[str], list[bytes]]:
    """Names of the Nodes in a NodeList and each Node's raw JSON, unchanged."""
    try:
        named = _node_names_decoder.decode(raw)
        kept = _raw_nodes_decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise BadRequest(f"Nodes: {_one_line(exc)}") from None
    items = named.items if named is not None and named.items else []
    raws = kept.items if kept is not None and kept.items else []
    names = []
    for i, item in enumerate(items):
        name = item.metadata.name if item.metadata is not None else ""
        if not name:
            raise BadRequest(f"Nodes: items[{i}] has no metadata.name")
        names.append(name)
    return names, [bytes(r) for r in raws]


_node_decoder = msgspec.json.Decoder(Node)


def decode_node(raw: bytes, index: int, epc_resources: Mapping[str, int]) -> NodeInfo:
    """One Node object of a full-nodes request, for a node the cache has not seen."""
    try:
        return node_info(_node_decoder.decode(raw), epc_resources)
    except (msgspec.DecodeError, RecursionError, ObjectError) as exc:
        raise BadRequest(f"Nodes: items[{index}]: {_one_line(exc)}") from None


class MetaPod(msgspec.Struct):
    UID: str = ""


class MetaVictims(msgspec.Struct):
    Pods: list[MetaPod] | None = None
    NumPDBViolations: int = 0


class Victims(msgspec.Struct):
    Pods: list[Pod] | None = None
    NumPDBViolations: int = 0


_meta_victims_decoder = msgspec.json.Decoder(dict[str, MetaVictims] | None)
_victims_decoder = msgspec.json.Decoder(dict[str, Victims] | None)
_PREEMPT_KEYS = {
    "pod": "pod",
    "nodenametovictims": "victims",
    "nodenametometavictims": "meta",
}


@dataclass(frozen=True, slots=True)
class PreemptArgs:
    """`ExtenderPreemptionArgs`: victims by UID (cache mode) or as whole pods."""

    pod_raw: bytes
    meta_victims: dict[str, MetaVictims] | None
    victims: dict[str, Victims] | None


def decode_preempt(body: bytes) -> PreemptArgs:
    top = _decode_top(body)
    parts: dict[str, bytes] = {}
    for key, raw in top.items():
        name = _PREEMPT_KEYS.get(key.lower())
        if name is not None:
            parts[name] = bytes(raw)
    pod_raw = parts.get("pod")
    if pod_raw is None or pod_raw == NULL:
        raise BadRequest("missing Pod: the request must carry the pod being scheduled")
    try:
        meta = _meta_victims_decoder.decode(parts.get("meta", NULL))
    except (msgspec.DecodeError, RecursionError) as exc:
        raise BadRequest(f"NodeNameToMetaVictims: {_one_line(exc)}") from None
    try:
        victims = _victims_decoder.decode(parts.get("victims", NULL))
    except (msgspec.DecodeError, RecursionError) as exc:
        raise BadRequest(f"NodeNameToVictims: {_one_line(exc)}") from None
    if meta is None and victims is None:
        raise BadRequest("the request has neither NodeNameToMetaVictims nor NodeNameToVictims")
    return PreemptArgs(pod_raw=pod_raw, meta_victims=meta, victims=victims)


@dataclass(frozen=True, slots=True)
class BindArgs:
    pod_name: str
    pod_namespace: str
    pod_uid: str
    node: str


def decode_bind(body: bytes) -> BindArgs:
    """`ExtenderBindingArgs`: PodName, PodNamespace, PodUID, Node (keys case-insensitive)."""
    top = _decode_top(body)
    values: dict[str, str] = {}
    for key, raw in top.items():
        try:
            value = _str_decoder.decode(raw)
        except msgspec.ValidationError:
            raise BadRequest(f"{key}: must be a string") from None
        values[key.lower()] = value or ""
    missing = [k for k in ("PodName", "Node") if not values.get(k.lower())]
    if missing:
        raise BadRequest(f"missing {', '.join(missing)}")
    return BindArgs(
        pod_name=values["podname"],
        pod_namespace=values.get("podnamespace") or "default",
        pod_uid=values.get("poduid", ""),
        node=values["node"],
    )


_encoder = msgspec.json.Encoder()


def encode(value: object) -> bytes:
    return _encoder.encode(value)


def encode_name(name: str) -> bytes:
    return _encoder.encode(name)


EMPTY_FAILURES = b'"FailedNodes":{},"FailedAndUnresolvableNodes":{},"Error":""'


def filter_reply_names(
    names_json: bytes | memoryview, failed: dict[str, str], unresolvable: dict[str, str]
) -> bytes:
    """Cache-mode reply; `names_json` is an already-encoded JSON array of passing names."""
    if not failed and not unresolvable:
        # One copy of a list that can run to hundreds of kilobytes, not one per `+`.
        return b"".join((b'{"NodeNames":', names_json, b",", EMPTY_FAILURES, b"}"))
    return (
        b'{"NodeNames":'
        + names_json
        + b',"FailedNodes":'
        + _encoder.encode(failed)
        + b',"FailedAndUnresolvableNodes":'
        + _encoder.encode(unresolvable)
        + b',"Error":""}'
    )


def filter_reply_nodes(
    node_raws: list[bytes], failed: dict[str, str], unresolvable: dict[str, str]
) -> bytes:
    """Full-nodes reply: the passing Node objects exactly as they arrived."""
    return (
        b'{"Nodes":{"metadata":{},"items":['
        + b",".join(node_raws)
        + b']},"NodeNames":null,"FailedNodes":'
        + _encoder.encode(failed)
        + b',"FailedAndUnresolvableNodes":'
        + _encoder.encode(unresolvable)
        + b',"Error":""}'
    )


def error_reply(message: str) -> bytes:
    return _encoder.encode({"Error": message})
