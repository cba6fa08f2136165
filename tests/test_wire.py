"""The fast reading of a request body agrees with a full decode, whatever the body holds.

The extender slices a trailing `NodeNames` array off without parsing it; decoys (the same key
inside the pod, in strings, in other positions, in other cases) must never fool it.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from epcsched.config import Config
from epcsched.extender import wire
from epcsched.extender.service import ExtenderService
from tests.helpers import node, pod, snapshot_of

SNAP = snapshot_of(node("a", "1Gi"), node("b", "1Gi"), node("c", "8Mi"))
POD = pod("p", "16Mi")


def general(body: bytes) -> tuple[Any, Any, Any]:
    args = wire.split_args(body, fast=False)
    return (
        msgspec.json.decode(args.pod_raw),
        None if args.node_names_raw is None else msgspec.json.decode(args.node_names_raw),
        None if args.nodes_raw is None else msgspec.json.decode(args.nodes_raw),
    )


def answers(body: bytes) -> tuple[str, str]:
    service = ExtenderService(lambda: SNAP, strategy="binpack")
    out = []
    for verb in (service.filter, service.prioritize):
        try:
            out.append(json.dumps(json.loads(verb(body)), sort_keys=True))
        except wire.BadRequest as exc:
            out.append(f"400 {exc}")
    return out[0], out[1]


def slow_answers(body: bytes) -> tuple[str, str]:
    """The same verbs with the fast path switched off, by reformatting the body."""
    return answers(json.dumps(json.loads(body)).encode().replace(b'"NodeNames"', b'"nodeNames"'))


def test_decoy_inside_the_pod_is_ignored() -> None:
    # Decoys the key search meets before the real key: strings (rejected as soon as no array
    # follows) and, last in the pod's spec, a real `, "NodeNames": [...]` pair, which only the
    # check that the text before it closes into a complete object can reject.
    decoy = dict(POD)
    decoy["metadata"] = dict(POD["metadata"], annotations={"NodeNames": '["c"]'})
    decoy["spec"] = dict(POD["spec"], nodeSelector={"NodeNames": "x"}, NodeNames=["c"])
    body = json.dumps({"Pod": decoy, "Nodes": None, "NodeNames": ["a", "b"]}).encode()
    nested = body.index(b', "NodeNames": ["c"]')
    assert nested < body.rindex(b'"NodeNames"') and body.count(b'"NodeNames"') == 4
    args = wire.split_args(body)
    assert args.names_from_tail
    assert msgspec.json.decode(args.node_names_raw or b"") == ["a", "b"]
    assert msgspec.json.decode(args.pod_raw) == decoy
    # c (8Mi) is too small for the 16Mi pod; a and b pass: the decoy's list was never read.
    assert json.loads(answers(body)[0])["NodeNames"] == ["a", "b"]
    assert answers(body) == slow_answers(body)


def test_names_not_last_take_the_general_path() -> None:
    body = b'{"NodeNames": ["a"], "Pod": ' + json.dumps(POD).encode() + b', "x": ["b"]}'
    assert answers(body) == slow_answers(body)
    assert json.loads(answers(body)[0])["NodeNames"] == ["a"]


def test_later_lowercase_key_wins_as_in_go() -> None:
    body = (
        b'{"Pod": ' + json.dumps(POD).encode() + b', "NodeNames": ["a"], "nodenames": ["b", "c"]}'
    )
    reply = json.loads(answers(body)[0])
    assert reply["NodeNames"] == ["b"] and list(reply["FailedAndUnresolvableNodes"]) == ["c"]


keys = st.sampled_from(["Pod", "pod", "Nodes", "NodeNames", "nodenames", "NODENAMES", "extra"])
names = st.lists(st.sampled_from(["a", "b", "c", "zz", 'q"NodeNames":[']), max_size=5)
values = st.one_of(
    st.just(POD),
    names,
    st.none(),
    st.just({"items": [node("a", "1Gi")]}),
    st.just({"NodeNames": ["c"]}),
    st.just('"NodeNames":["c"]'),
    st.integers(),
)


@settings(max_examples=400, deadline=None)
# Exact duplicate keys are left out: JSON leaves their meaning open (RFC 8259 section 4).
@given(
    st.lists(st.tuples(keys, values), max_size=6, unique_by=lambda pair: pair[0]),
    st.sampled_from(["", " ", "\n  "]),
)
def test_fast_path_agrees_with_full_decode(pairs: list[tuple[str, Any]], space: str) -> None:
    """The service's answers (fast reading, and its own fallback to the full one when the tail
    slice is not an array of names) equal its answers with the fast reading switched off."""
    body = (
        "{"
        + ",".join(f'{space}"{k}"{space}:{space}{json.dumps(v)}' for k, v in pairs)
        + space
        + "}"
    ).encode()
    try:
        fast = wire.split_args(body)
    except wire.BadRequest:
        fast = None
    # Known bug, pinned by test_keys_after_the_names_of_a_full_nodes_request_are_read below:
    # a tail slice in full-nodes mode is never checked. Remove this assumption with the fix.
    assume(fast is None or not (fast.names_from_tail and fast.nodes_raw is not None))
    assert answers(body) == slow_answers(body)


def test_keys_after_the_names_of_a_full_nodes_request_are_read() -> None:
    # Go reads keys case-insensitively and the last one wins: the pod is the final "Pod": [],
    # which is not an object, so the request is malformed (400). The fast path slices
    # `[], "Pod": []` off as the NodeNames value; in full-nodes mode (Nodes not null) the
    # service never decodes that slice, so it answers for the first "pod" instead.
    body = (
        b'{"pod": '
        + json.dumps(POD).encode()
        + b', "Nodes": {"items": []}, "NodeNames": [], "Pod": []}'
    )
    assert answers(body) == slow_answers(body)
    assert answers(body)[0].startswith("400 Pod: Expected `object`, got `array`")


def test_config_default_body_limit_is_8_mib() -> None:
    # Lowered from 64Mi in 22b62ef so the worst accepted request stays under the memory limit.
    assert Config().extender.max_body_bytes == 8 * 2**20
