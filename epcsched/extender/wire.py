"""The kube-scheduler extender v1 wire format: decoding requests, encoding replies.

kube-scheduler sends `ExtenderArgs` with Go field names (`Pod`, `Nodes`, `NodeNames`) and reads
replies the same way. Bodies are large (a `NodeNames` list of every feasible node, or a whole
NodeList), so decoding reads only what epcsched needs: the top level is split into raw slices,
the Pod is decoded into a narrow struct, and Node objects are kept as raw bytes so a full-nodes
reply can return them unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from epcsched.objects import Pod


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
_bind_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
_str_decoder = msgspec.json.Decoder(str | None)

NULL = b"null"
_CANONICAL = {"pod": "Pod", "nodes": "Nodes", "nodenames": "NodeNames"}


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


@dataclass(frozen=True, slots=True)
class ExtenderArgs:
    """One filter or prioritize request, with the node list still raw."""

    pod_raw: bytes
    node_names_raw: bytes | None
    """The raw `NodeNames` JSON array (cache mode), or None."""
    nodes_raw: bytes | None
    """The raw `Nodes` NodeList (full-nodes mode), or None."""


def split_args(body: bytes) -> ExtenderArgs:
    """Split a request body into its parts, reading keys case-insensitively as Go does."""
    try:
        top = _top_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"request body must be a JSON object: {_one_line(exc)}") from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"malformed JSON: {_one_line(exc)}") from None
    parts: dict[str, bytes] = {}
    for key, raw in top.items():
        lowered = key.lower()
        canonical = _CANONICAL.get(lowered)
        # An exact match wins over a case-insensitive one, as in Go's encoding/json.
        if canonical is not None and (key == canonical or lowered not in parts):
            parts[lowered] = bytes(raw)
    pod_raw = parts.get("pod")
    if pod_raw is None or pod_raw == NULL:
        raise BadRequest("missing Pod: the request must carry the pod being scheduled")
    names = parts.get("nodenames")
    nodes = parts.get("nodes")
    names = None if names is None or names == NULL else names
    nodes = None if nodes is None or nodes == NULL else nodes
    if names is None and nodes is None:
        raise BadRequest("the request has neither NodeNames nor Nodes")
    return ExtenderArgs(pod_raw=pod_raw, node_names_raw=names, nodes_raw=nodes)


def decode_pod(raw: bytes) -> Pod:
    try:
        return _pod_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise BadRequest(f"Pod: {_one_line(exc)}") from None


def decode_node_names(raw: bytes) -> list[str]:
    try:
        return _names_decoder.decode(raw) or []
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise BadRequest(f"NodeNames: {_one_line(exc)}") from None


def decode_nodes(raw: bytes) -> tuple[list[str], list[bytes]]:
    """Names of the Nodes in a NodeList and each Node's raw JSON, unchanged."""
    try:
        named = _node_names_decoder.decode(raw)
        kept = _raw_nodes_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
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


@dataclass(frozen=True, slots=True)
class BindArgs:
    pod_name: str
    pod_namespace: str
    pod_uid: str
    node: str


def decode_bind(body: bytes) -> BindArgs:
    """`ExtenderBindingArgs`: PodName, PodNamespace, PodUID, Node (keys case-insensitive)."""
    try:
        top = _bind_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"request body must be a JSON object: {_one_line(exc)}") from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"malformed JSON: {_one_line(exc)}") from None
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
    names_json: bytes, failed: dict[str, str], unresolvable: dict[str, str]
) -> bytes:
    """Cache-mode reply; `names_json` is an already-encoded JSON array of passing names."""
    if not failed and not unresolvable:
        return b'{"NodeNames":' + names_json + b"," + EMPTY_FAILURES + b"}"
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
