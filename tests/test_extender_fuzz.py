"""No request body, however odd, makes the extender fail other than with a clean 400.

Hypothesis builds JSON bodies around the real shape (wrong types at every level, odd keys,
odd quantities) and feeds the same service the HTTP handlers call; a last test replays a sample
over real HTTP to check the status codes end to end.
"""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient
from hypothesis import event, given, settings
from hypothesis import strategies as st

from epcsched.config import Config
from epcsched.extender.app import create_app
from epcsched.extender.service import ExtenderService
from epcsched.extender.wire import BadRequest
from epcsched.state import SnapshotState
from tests.helpers import node, pod, snapshot_of

SNAP = snapshot_of(node("a", "94Mi"), node("b", "16Gi"), pod("x", "10Mi", node_name="a"))

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(["64Mi", "1e3", "0.5Gi", "-1", "100m", "1E", "x", "Always"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
quantities = st.one_of(scalars, json_values)
containers = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "name": json_values,
            "restartPolicy": st.sampled_from(["Always", "Never", 3]),
            "resources": st.fixed_dictionaries(
                {},
                optional={
                    "requests": st.dictionaries(
                        st.sampled_from(["sgx.intel.com/epc", "cpu", "memory"]), quantities
                    ),
                    "limits": st.one_of(
                        json_values,
                        st.dictionaries(st.sampled_from(["sgx.intel.com/epc"]), quantities),
                    ),
                },
            ),
        },
    ),
    max_size=3,
)
pods = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "metadata": st.one_of(json_values, st.fixed_dictionaries({"name": json_values})),
            "spec": st.one_of(
                json_values,
                st.fixed_dictionaries(
                    {},
                    optional={
                        "containers": st.one_of(json_values, containers),
                        "initContainers": st.one_of(json_values, containers),
                        "overhead": json_values,
                        "nodeName": json_values,
                    },
                ),
            ),
        },
    ),
)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "Pod": pods,
            "NodeNames": st.one_of(json_values, st.lists(st.sampled_from(["a", "b", "zz"]))),
            "Nodes": st.one_of(
                json_values,
                st.fixed_dictionaries(
                    {"items": st.lists(st.one_of(json_values, st.just(node("a", "94Mi"))))}
                ),
            ),
            "nodenames": json_values,
        },
    ),
)


@settings(max_examples=400, deadline=None)
@given(bodies)
def test_service_answers_or_raises_bad_request_only(body: Any) -> None:
    service = ExtenderService(lambda: SNAP, strategy="binpack")
    raw = json.dumps(body).encode()
    for verb in (service.filter, service.prioritize):
        try:
            reply = verb(raw)
        except BadRequest as exc:
            assert "\n" not in str(exc)
        else:
            json.loads(reply)


CACHE_BODY = json.dumps({"Pod": pod("p", "1Mi"), "Nodes": None, "NodeNames": ["a", "b", "zz"]})
FULL_BODY = json.dumps(
    {"Pod": pod("p", "64Mi"), "Nodes": {"items": [node("a", "94Mi"), node("b", "16Gi")]}}
)
# Spread, a 1Mi or 64Mi pod: "b" (16Gi, empty) is the emptier node by far and scores 10, "a"
# (94Mi, 10Mi in use) 0, and a 0 is left out. "zz" is not a node.
UNEDITED = {
    CACHE_BODY: (
        {
            "NodeNames": ["a", "b"],
            "FailedNodes": {"zz": "node is not in epcsched's cluster cache"},
            "FailedAndUnresolvableNodes": {},
            "Error": "",
        },
        [{"Host": "b", "Score": 10}],
    ),
    FULL_BODY: (
        {
            "Nodes": {"metadata": {}, "items": [node("a", "94Mi"), node("b", "16Gi")]},
            "NodeNames": None,
            "FailedNodes": {},
            "FailedAndUnresolvableNodes": {},
            "Error": "",
        },
        [{"Host": "b", "Score": 10}],
    ),
}
edits = st.lists(
    st.tuples(
        st.sampled_from(["delete", "insert", "replace"]),
        st.integers(min_value=0),
        st.sampled_from(list(b'{}[]",:0123456789.-eE ntfaMiGk\\\xff')),
    ),
    max_size=3,
)


def go_json(raw: bytes) -> Any:
    """JSON as Go's encoding/json (kube-scheduler's) reads it: invalid UTF-8 becomes U+FFFD."""
    return json.loads(raw.decode("utf-8", "replace"))


def edited(body: str, changes: list[tuple[str, int, int]]) -> bytes:
    raw = bytearray(body.encode())
    for kind, position, byte in changes:
        at = position % (len(raw) + 1)
        if kind == "insert":
            raw.insert(at, byte)
        elif at < len(raw):
            if kind == "delete":
                del raw[at]
            else:
                raw[at] = byte
    return bytes(raw)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(UNEDITED)), edits)
def test_edited_bodies_are_answered_or_refused_on_one_line(
    body: str, changes: list[tuple[str, int, int]]
) -> None:
    """Real bodies with a few bytes deleted, inserted or replaced: most stay JSON and reach the
    decoders past the JSON parser (a wrong type, a broken quantity, an unknown node)."""
    raw = edited(body, changes)
    try:
        go_json(raw)
        is_json = True
    except ValueError:
        is_json = False
    event("JSON: reaches the decoders" if is_json else "not JSON")
    service = ExtenderService(lambda: SNAP, strategy="spread")
    replies = []
    for verb in (service.filter, service.prioritize):
        try:
            # A full-nodes reply echoes the Node objects byte for byte, odd bytes included.
            reply = go_json(verb(raw))
        except BadRequest as exc:
            message = str(exc)
            assert message and "\n" not in message
            if not is_json:
                # Refused by the first reading, before any decoder past it.
                assert message.startswith(("malformed JSON", "request body must be")), message
            replies.append(None)
            continue
        assert is_json, raw
        if verb == service.filter:
            assert reply["Error"] == ""
            passed = reply["NodeNames"] or [
                n["metadata"]["name"] for n in (reply.get("Nodes") or {}).get("items") or []
            ]
            refused = set(reply["FailedNodes"]) | set(reply["FailedAndUnresolvableNodes"])
            assert not set(passed) & refused
        else:
            assert all(0 < entry["Score"] <= 10 for entry in reply), reply
        replies.append(reply)
    if raw == body.encode():
        assert tuple(replies) == UNEDITED[body]


async def test_random_bodies_over_http_are_200_or_400(
    extender_client: Callable[..., Awaitable[TestClient[Any, Any]]],
) -> None:
    client = await extender_client(create_app(Config(), SnapshotState(SNAP)))
    rng = random.Random(11)
    good = {"Pod": pod("p", "1Mi"), "Nodes": None, "NodeNames": ["a", "b"]}
    for i in range(150):
        body = json.loads(json.dumps(good))
        target = rng.choice(["Pod", "NodeNames", "Nodes", "spec", "containers", "quantity"])
        junk = rng.choice([None, 0, -1, "x", [], {}, [None], {"a": 1}, 1e308, True])
        if target == "spec":
            body["Pod"]["spec"] = junk
        elif target == "containers":
            body["Pod"]["spec"]["containers"][0] = junk
        elif target == "quantity":
            body["Pod"]["spec"]["containers"][0]["resources"]["requests"]["sgx.intel.com/epc"] = (
                junk
            )
        else:
            body[target] = junk
        verb = "/filter" if i % 2 else "/prioritize"
        async with client.post(verb, data=json.dumps(body)) as response:
            assert response.status in (200, 400), (body, response.status)
            payload = await response.json()
            if response.status == 400:
                assert payload["Error"]
    async with client.post("/filter", data=json.dumps(good)) as response:
        assert response.status == 200
