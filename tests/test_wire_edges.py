"""The wire format's fast reading at its edges, and the errors it gives, worked out by hand.

Protects: the trailing `NodeNames` slice is taken with or without whitespace around the colon
(compact bodies too), and never when the key is not followed by a colon and an array; a body
that breaks JSON around the key is refused, not sliced; a full-nodes item without a name, or
one that does not decode, is refused with the decoder's own words.
"""

from __future__ import annotations

import json

import msgspec
import pytest

from epcsched.extender import wire
from epcsched.quantity import DEFAULT_EPC_RESOURCES
from tests.helpers import node, pod

POD = json.dumps(pod("p", "16Mi"), separators=(",", ":")).encode()


@pytest.mark.parametrize(
    "names",
    [b'"NodeNames":["a","b"]', b'"NodeNames" :["a","b"]', b'"NodeNames": \n ["a","b"]'],
)
def test_the_tail_is_sliced_whatever_the_spacing(names: bytes) -> None:
    body = b'{"Pod":' + POD + b',"Nodes":null,' + names + b"}"
    args = wire.split_args(body)
    assert args.names_from_tail
    assert args.node_names_raw == b'["a","b"]'
    assert msgspec.json.decode(args.pod_raw) == pod("p", "16Mi")
    # The list stays where it is: the body itself, with where the list lies in it.
    assert args.names_buffer is body
    assert bytes(args.node_names_view()) == b'["a","b"]'
    assert body.endswith(b'["a","b"]}', 0, args.names_end + 1)


def test_a_key_without_a_colon_is_malformed_not_sliced() -> None:
    body = b'{"Pod":' + POD + b',"NodeNames" [["a"]]}'
    with pytest.raises(wire.BadRequest, match=r"^malformed JSON"):
        wire.split_args(body)


def test_a_names_value_that_is_not_an_array_takes_the_full_reading() -> None:
    # The body still ends in `]}` (another key's array), but NodeNames is a string: the full
    # decode reads it as it is, and the service's own decoder refuses it later.
    body = b'{"Pod":' + POD + b',"NodeNames":"x","y":[1]}'
    args = wire.split_args(body)
    assert not args.names_from_tail
    assert args.node_names_raw == b'"x"'
    with pytest.raises(wire.BadRequest, match=r"^NodeNames: Expected `array \| null`, got `str`$"):
        wire.decode_node_names(args.node_names_raw)


def test_full_nodes_items_without_a_name_or_that_do_not_decode() -> None:
    with pytest.raises(wire.BadRequest, match=r"^Nodes: items\[0\] has no metadata.name$"):
        wire.decode_nodes(b'{"items":[{}]}')
    with pytest.raises(wire.BadRequest, match=r"^Nodes: items\[1\] has no metadata.name$"):
        wire.decode_nodes(b'{"items":[{"metadata":{"name":"a"}},{"metadata":{}}]}')
    with pytest.raises(
        wire.BadRequest, match=r"^Nodes: Expected `array \| null`, got `str` - at `\$.items`$"
    ):
        wire.decode_nodes(b'{"items":"a"}')
    bad = node("b", "1Gi")
    bad["status"]["allocatable"]["sgx.intel.com/epc"] = "lots"
    raw = json.dumps(bad).encode()
    with pytest.raises(wire.BadRequest, match=r"^Nodes: items\[3\]: .*lots"):
        wire.decode_node(raw, 3, DEFAULT_EPC_RESOURCES)


@pytest.mark.parametrize("tail", [b"}", b"}\n", b"} \r\n\t", b" }", b"\n}\n"])
def test_whitespace_after_the_names_does_not_stop_the_slicing(tail: bytes) -> None:
    body = b'{"Pod":' + POD + b',"NodeNames":["a"]' + tail
    args = wire.split_args(body)
    assert args.names_from_tail is True
    assert args.node_names_raw == b'["a"]'


def test_the_full_reading_says_so_and_drops_null_names() -> None:
    body = b'{"NodeNames":null,"Nodes":{"items":[]},"Pod":' + POD + b"}"
    args = wire.split_args(body)
    assert args.names_from_tail is False
    assert args.node_names_raw is None
    assert args.nodes_raw == b'{"items":[]}'


def test_nodes_and_names_both_given_are_both_kept() -> None:
    # The tail sliced off (names in place in the body) and the full reading keep Nodes too:
    # the service answers with Nodes whenever they are there.
    sliced = b'{"Pod":' + POD + b',"Nodes":{"items":[]},"NodeNames":["a"]}'
    whole = b'{"NodeNames":["a"],"Pod":' + POD + b',"Nodes":{"items":[]}}'
    for body, from_tail in ((sliced, True), (whole, False)):
        args = wire.split_args(body)
        assert args.names_from_tail is from_tail
        assert (args.node_names_raw, args.nodes_raw) == (b'["a"]', b'{"items":[]}')


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b'{"Nodes":null,"NodeNames":["a"]}',
            "missing Pod: the request must carry the pod being scheduled",
        ),
        (
            b'{"Pod":null,"NodeNames":["a"]}',
            "missing Pod: the request must carry the pod being scheduled",
        ),
        (b'{"Pod":{},"NodeNames":null}', "the request has neither NodeNames nor Nodes"),
        (b"[]", "request body must be a JSON object: Expected `object`, got `array`"),
        (b"{]", "malformed JSON: JSON is malformed: "),
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, "malformed JSON: nested too deeply"),
    ],
)
def test_refusals_are_worded_exactly(body: bytes, message: str) -> None:
    with pytest.raises(wire.BadRequest) as caught:
        wire.split_args(body)
    # Ours up to the colon; msgspec's own words after "JSON is malformed: " (byte offsets).
    text = str(caught.value)
    assert text == message or (message.endswith(": ") and text.startswith(message)), text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b'{"NodeNameToMetaVictims":{}}',
            "missing Pod: the request must carry the pod being scheduled",
        ),
        (b'{"Pod":{}}', "the request has neither NodeNameToMetaVictims nor NodeNameToVictims"),
        (
            b'{"Pod":{},"NodeNameToMetaVictims":[]}',
            "NodeNameToMetaVictims: Expected `object | null`, got `array`",
        ),
        (
            b'{"Pod":{},"NodeNameToVictims":3}',
            "NodeNameToVictims: Expected `object | null`, got `int`",
        ),
    ],
)
def test_preempt_refusals_are_worded_exactly(body: bytes, message: str) -> None:
    with pytest.raises(wire.BadRequest) as caught:
        wire.decode_preempt(body)
    assert str(caught.value) == message


def test_bind_arguments_default_and_refuse_as_documented() -> None:
    assert wire.decode_bind(b'{"PodName":"a","Node":"n1"}') == wire.BindArgs(
        "a", "default", "", "n1"
    )
    assert wire.decode_bind(
        b'{"podname":"a","node":"n1","podnamespace":"ns","poduid":"u"}'
    ) == wire.BindArgs("a", "ns", "u", "n1")
    assert wire.decode_bind(
        b'{"PodName":"a","Node":"n1","PodNamespace":null,"PodUID":null}'
    ) == wire.BindArgs("a", "default", "", "n1")
    for body, message in (
        (b'{"PodName":null,"Node":"n1"}', "missing PodName"),
        (b'{"Node":"n1"}', "missing PodName"),
        (b"{}", "missing PodName, Node"),
    ):
        with pytest.raises(wire.BadRequest) as caught:
            wire.decode_bind(body)
        assert str(caught.value) == message
