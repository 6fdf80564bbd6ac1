"""Parsing and encoding in slices (issue 22, /version stall): the same values, bytes and
refusals as in one go, with a pause between the elements of the arrays of a body."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred

from stubserver.signing.canonical_json import (
    BadJson,
    CanonicalJsonError,
    encode_canonical_json,
    encode_parsed_canonical_json,
    encode_parsed_canonical_json_in_slices,
    parse_json_bytes,
    parse_json_bytes_in_slices,
)
from tests.support import result_now


class Pauses:
    """A pause that returns at once, counting how often it was awaited."""

    def __init__(self) -> None:
        self.count = 0

    async def __call__(self) -> None:
        self.count += 1


def parsed_in_slices(body: bytes, pauses: Pauses | None = None) -> Any:
    return result_now(Deferred.fromCoroutine(parse_json_bytes_in_slices(body, pauses or Pauses())))


def outcome(parse: Any, body: bytes) -> tuple[str, Any]:
    try:
        return "value", parse(body)
    except BadJson as e:
        return "refused", e.not_json


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=4), JSON | st.lists(JSON, max_size=5), max_size=5))
def test_a_body_parses_to_the_same_value_in_slices(body: dict[str, Any]) -> None:
    """Any object body (arrays of any values under it) parses in slices to the value the
    one-go parse gives, with or without whitespace."""
    for text in (json.dumps(body), json.dumps(body, indent=1)):
        data = text.encode()
        assert parsed_in_slices(data) == parse_json_bytes(data)


@given(st.text(alphabet=' {}[]",:1a\\e.-', max_size=60))
def test_any_text_is_refused_or_parsed_alike_in_slices(text: str) -> None:
    """Any text (mostly not JSON) gets the same value or the same kind of refusal."""
    data = text.encode()
    assert outcome(parsed_in_slices, data) == outcome(parse_json_bytes, data)


@pytest.mark.parametrize(
    "body",
    [
        b'{"pdus": [{"a": 1, "a": 2}]}',
        b'{"pdus": [], "pdus": []}',
        b'{"pdus": [1.5, NaN]}',
        b'{"pdus": [9007199254740992]}',
        b'{"pdus": ["\\ud800"]}',
        b'{"pdus": [1,]}',
        b'{"pdus": [1], }',
        b'{"pdus": [1]} x',
        b'{"pdus": [' + b"[" * 100 + b"]" * 100 + b"]}",
    ],
)
def test_refusals_are_the_same_in_slices(body: bytes) -> None:
    """Duplicate keys (inside an element and at the top), NaN, big integers, lone
    surrogates, trailing commas, extra data and nesting are refused as in one go."""
    assert outcome(parsed_in_slices, body) == outcome(parse_json_bytes, body)
    assert outcome(parsed_in_slices, body)[0] == "refused"


def test_a_pause_follows_each_element_of_a_top_level_array() -> None:
    """One pause per element of each array directly under the object, none for others
    (and one after the UTF-8 decode, before them)."""
    pauses = Pauses()
    body = b'{"origin": "x", "pdus": [{"a": [1, 2]}, {}, {}], "edus": [1], "n": {"l": [1, 2]}}'
    assert parsed_in_slices(body, pauses) == parse_json_bytes(body)
    assert pauses.count == 1 + 4


def test_the_nesting_check_pauses_between_its_rounds() -> None:
    """Before the parse, the UTF-8 decode and each round of the nesting check are a step
    of their own (issue 22: ~25 ms in one go for a body of a million ``{}``): a body 62
    deep with more than MAX_JSON_DEPTH brackets pauses after the decode and before each
    of the 62 rounds, and parses as in one go."""
    pauses = Pauses()
    body = json.dumps({"deep": {"x": json.loads("[" * 60 + "]" * 60)}, "y": {"z": [[]] * 60}})
    assert parsed_in_slices(body.encode(), pauses) == parse_json_bytes(body.encode())
    assert pauses.count == 1 + 62


def test_a_body_too_deep_is_refused_after_pauses_in_its_running_sum() -> None:
    """A text the pair removal cannot reduce (200,000 ``[``) is measured by the running
    sum in pieces of 64 Ki brackets, a pause before each (4), after the decode and the
    one round (2); refused as in one go."""
    pauses = Pauses()
    body = b"[" * 200_000
    assert outcome(lambda b: parsed_in_slices(b, pauses), body) == outcome(parse_json_bytes, body)
    assert outcome(parse_json_bytes, body) == ("refused", False)
    assert pauses.count == 2 + 4


@given(st.dictionaries(st.text(max_size=4), JSON | st.lists(JSON, max_size=5), max_size=5))
def test_encoding_in_slices_gives_the_same_bytes(value: dict[str, Any]) -> None:
    """Canonical JSON encoded in slices is byte for byte the one-go encoding."""
    signing = {"method": "PUT", "uri": "/x", "content": value}
    encoded = result_now(
        Deferred.fromCoroutine(encode_parsed_canonical_json_in_slices(signing, Pauses()))
    )
    assert encoded == encode_canonical_json(signing) == encode_parsed_canonical_json(signing)


def test_encoding_in_slices_refuses_a_float_anywhere() -> None:
    """A float deep in an element is refused, as by the one-go encoding."""
    signing = {"content": {"pdus": [{"a": [{"b": 1.5}]}]}}
    with pytest.raises(CanonicalJsonError):
        result_now(
            Deferred.fromCoroutine(encode_parsed_canonical_json_in_slices(signing, Pauses()))
        )
