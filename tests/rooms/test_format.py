"""The event format checks on received PDUs (every InvalidPdu rule) and event_from_pdu."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from nacl.signing import SigningKey

from stubserver.rooms.format import (
    MAX_PDU_BYTES,
    InvalidPdu,
    check_canonical_values,
    event_from_pdu,
    is_user_id,
    validate_pdu,
)
from stubserver.rooms.hashes import compute_event_id
from stubserver.rooms.signing import sign_event
from stubserver.rooms.versions import ROOM_VERSIONS, RoomVersion
from stubserver.signing.canonical_json import encode_canonical_json, encode_json, parse_json_bytes

V10 = ROOM_VERSIONS["10"]
V11 = ROOM_VERSIONS["11"]
V12 = ROOM_VERSIONS["12"]
ALL = pytest.mark.parametrize("version", [V10, V11, V12], ids=["10", "11", "12"])
KEY = SigningKey(b"\x03" * 32)


def pdu(**changes: Any) -> dict[str, Any]:
    """A valid message PDU for any of our versions, with ``changes`` applied (a value of
    ``...`` removes the key)."""
    base: dict[str, Any] = {
        "type": "m.room.message",
        "room_id": "!room:a.test",
        "sender": "@u:a.test",
        "content": {"body": "hi"},
        "depth": 3,
        "prev_events": ["$p"],
        "auth_events": ["$a"],
        "origin_server_ts": 1_700_000_000_000,
        "hashes": {"sha256": "aGFzaA"},
        "signatures": {"a.test": {"ed25519:1": "c2ln"}},
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}


def v12_create(**changes: Any) -> dict[str, Any]:
    create: dict[str, Any] = {
        "type": "m.room.create",
        "state_key": "",
        "room_id": ...,
        "content": {"room_version": "12"},
        "prev_events": [],
        "auth_events": [],
        "depth": 1,
    }
    return pdu(**(create | changes))


def refused(candidate: object, version: RoomVersion, fragment: str) -> None:
    with pytest.raises(InvalidPdu) as raised:
        validate_pdu(candidate, version)
    assert fragment in raised.value.reason


@ALL
def test_valid_pdu_passes(version: RoomVersion) -> None:
    """The baseline message PDU has every version's format."""
    validate_pdu(pdu(), version)


@ALL
def test_not_an_object(version: RoomVersion) -> None:
    """A PDU that is not a JSON object is invalid."""
    refused(["x"], version, "object")


@ALL
def test_event_id_key_is_refused(version: RoomVersion) -> None:
    """A v3+ PDU carrying an ``event_id`` key is invalid."""
    refused(pdu(event_id="$x"), version, "event_id")


@ALL
@pytest.mark.parametrize(
    "key", ["type", "sender", "content", "room_id", "prev_events", "auth_events", "depth",
            "origin_server_ts", "hashes", "signatures"]
)  # fmt: skip
def test_required_key_missing(version: RoomVersion, key: str) -> None:
    """Each required key's absence makes a (non-create) PDU invalid."""
    refused(pdu(**{key: ...}), version, key)


@ALL
@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("type", 5),
        ("content", "x"),
        ("content", []),
        ("state_key", 0),
        ("room_id", 1),
        ("prev_events", "$p"),
        ("auth_events", {"$a": 1}),
        ("origin_server_ts", "1"),
        ("origin_server_ts", True),
        ("hashes", "x"),
        ("hashes", {"sha256": 1}),
        ("hashes", {"sha512": "x"}),
        ("signatures", []),
    ],
)
def test_wrong_types(version: RoomVersion, key: str, value: Any) -> None:
    """A required key of the wrong JSON type makes the PDU invalid."""
    refused(pdu(**{key: value}), version, key)


@ALL
@pytest.mark.parametrize("depth", [True, "3", -1, 2**53])
def test_bad_depth(version: RoomVersion, depth: Any) -> None:
    """``depth`` must be a real integer (not bool or string) within 0..2^53-1."""
    with pytest.raises(InvalidPdu):
        validate_pdu(pdu(depth=depth), version)


@ALL
def test_depth_bounds_are_inclusive(version: RoomVersion) -> None:
    """Depths 0 and 2^53-1 are valid."""
    validate_pdu(pdu(depth=0), version)
    validate_pdu(pdu(depth=2**53 - 1), version)


@ALL
def test_float_depth_is_refused(version: RoomVersion) -> None:
    """A float depth, even ``3.0``, is invalid."""
    refused(pdu(depth=3.0), version, "float")


@ALL
@pytest.mark.parametrize(
    "where",
    [
        lambda v: {"content": {"n": v}},
        lambda v: {"content": {"deep": [{"x": [v]}]}},
        lambda v: {"unsigned": {"age": v}},
        lambda v: {"extra": v},
    ],
    ids=["content", "nested", "unsigned", "top-level"],
)
@pytest.mark.parametrize("value", [1.5, 2**53, -(2**53)], ids=["float", "big", "-big"])
def test_non_canonical_numbers_anywhere(
    version: RoomVersion, where: Callable[[Any], dict[str, Any]], value: Any
) -> None:
    """A float or an integer outside ±(2^53-1) anywhere, even in unsigned, is invalid."""
    with pytest.raises(InvalidPdu):
        validate_pdu(pdu(**where(value)), version)


def test_canonical_integer_bounds_are_inclusive() -> None:
    """±(2^53-1) themselves are canonical integers."""
    check_canonical_values({"a": [2**53 - 1, -(2**53 - 1)]})


@pytest.mark.parametrize("value", [{1: "x"}, {"a": {1, 2}}, {"a": b"x"}])
def test_non_json_values(value: Any) -> None:
    """Non-string object keys and non-JSON Python values are refused."""
    with pytest.raises(InvalidPdu):
        check_canonical_values(value)


def test_nesting_too_deep() -> None:
    """More than 100 levels of nesting are refused, without recursion."""
    deep: Any = "x"
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(InvalidPdu):
        check_canonical_values(deep)


@ALL
@pytest.mark.parametrize(
    "sender",
    ["u:a.test", "@u", "@:a.test", "@u:", "@u:bad_host!", 5, "@u:a.test:99999"],
)
def test_sender_must_be_a_user_id(version: RoomVersion, sender: Any) -> None:
    """``sender`` must be ``@localpart:server_name``."""
    refused(pdu(sender=sender), version, "sender")


@pytest.mark.parametrize("sender", ["@u:a.test", "@U.x=y:a.test:8448", "@u:[::1]", "@u:1.2.3.4"])
def test_user_id_forms(sender: str) -> None:
    """User IDs with ports, IP literals and historical localparts are user IDs."""
    assert is_user_id(sender)


@ALL
def test_prev_events_limit(version: RoomVersion) -> None:
    """At most 20 prev_events; 21 is invalid."""
    validate_pdu(pdu(prev_events=[f"$p{i}" for i in range(20)]), version)
    refused(pdu(prev_events=[f"$p{i}" for i in range(21)]), version, "prev_events")


@ALL
def test_auth_events_limit(version: RoomVersion) -> None:
    """At most 10 auth_events; 11 is invalid."""
    validate_pdu(pdu(auth_events=[f"$a{i}" for i in range(10)]), version)
    refused(pdu(auth_events=[f"$a{i}" for i in range(11)]), version, "auth_events")


@ALL
def test_v1_style_prev_events_are_refused(version: RoomVersion) -> None:
    """v1-style ``[[id, hashes]]`` prev_events are invalid in v3+."""
    refused(pdu(prev_events=[["$p", {"sha256": "x"}]]), version, "prev_events")


@ALL
@pytest.mark.parametrize("key", ["type", "state_key", "sender", "room_id"])
def test_field_longer_than_255_bytes(version: RoomVersion, key: str) -> None:
    """``type``, ``state_key``, ``sender`` and ``room_id`` over 255 bytes are invalid."""
    long_value = {
        "type": "t" * 256,
        "state_key": "s" * 256,
        "sender": "@" + "u" * 250 + ":a.test",
        "room_id": "!" + "r" * 255,
    }[key]
    refused(pdu(**{key: long_value}), version, key)


@pytest.mark.parametrize("version", [V11, V12], ids=["11", "12"])
def test_multibyte_field_counts_bytes_from_v11(version: RoomVersion) -> None:
    """From v11 the limit counts UTF-8 bytes: 128 two-byte characters are too long."""
    refused(pdu(type="é" * 128), version, "type")


def test_multibyte_field_counts_characters_in_v10() -> None:
    """In v10 (no strict byte limits) 128 two-byte characters are within the limit."""
    validate_pdu(pdu(type="é" * 128), V10)


@ALL
def test_pdu_over_64k_is_refused(version: RoomVersion) -> None:
    """A PDU over 65,536 bytes of canonical JSON is invalid; one at the limit is not."""
    size_without_body = len(
        b'{"auth_events":["$a"],"content":{"body":""},"depth":3,'
        b'"hashes":{"sha256":"aGFzaA"},"origin_server_ts":1700000000000,'
        b'"prev_events":["$p"],"room_id":"!room:a.test","sender":"@u:a.test",'
        b'"signatures":{"a.test":{"ed25519:1":"c2ln"}},"type":"m.room.message"}'
    )
    body = "x" * (MAX_PDU_BYTES - size_without_body)
    validate_pdu(pdu(content={"body": body}), version)
    refused(pdu(content={"body": body + "x"}), version, "bytes")


@ALL
def test_the_size_counts_hashes_and_signatures_whichever_are_present(version: RoomVersion) -> None:
    """The size is the PDU's canonical JSON without ``unsigned`` whether it has both
    ``hashes`` and ``signatures``, one or neither: at the limit it passes the size check
    (and is refused for what it lacks), one byte more is refused for its size."""
    for missing in ("signatures", "hashes"):
        size_without_body = len(encode_canonical_json(pdu(content={"body": ""}, **{missing: ...})))
        body = "x" * (MAX_PDU_BYTES - size_without_body)
        refused(pdu(content={"body": body}, **{missing: ...}), version, missing)
        refused(pdu(content={"body": body + "x"}, **{missing: ...}), version, "bytes")
    bare = pdu(content={"body": ""}, hashes=..., signatures=...)
    body = "x" * (MAX_PDU_BYTES - len(encode_canonical_json(bare)))
    refused(pdu(content={"body": body}, hashes=..., signatures=...), version, "hashes")
    refused(pdu(content={"body": body + "x"}, hashes=..., signatures=...), version, "bytes")


@ALL
def test_the_size_is_checked_before_the_values_are_walked(version: RoomVersion) -> None:
    """Issue 22 row 2: an oversized PDU is refused for its size before its values are
    walked in Python: one holding 40,000 objects and a float is refused as too large,
    not for the float (the float was found first, after the walk)."""
    content = {"many": [{} for _ in range(40_000)], "float": 1.5}
    refused(pdu(content=content), version, "bytes of canonical JSON")


@ALL
def test_unsigned_does_not_count_towards_the_size(version: RoomVersion) -> None:
    """``unsigned`` is not stored, so it is left out of the size limit."""
    validate_pdu(pdu(unsigned={"big": "x" * MAX_PDU_BYTES}), version)


def test_v10_top_level_redacts_must_be_a_string() -> None:
    """In v10 a top-level ``redacts`` must be an event ID string."""
    refused(pdu(type="m.room.redaction", redacts=5), V10, "redacts")


def test_v11_top_level_redacts_is_just_an_unknown_key() -> None:
    """From v11 ``redacts`` lives in content; a top-level one is an ignored extra key."""
    validate_pdu(pdu(type="m.room.redaction", redacts=5), V11)


def test_v12_create_without_room_id_is_valid() -> None:
    """A v12 create event has no room_id."""
    validate_pdu(v12_create(), V12)


def test_v12_create_with_room_id_is_refused() -> None:
    """A v12 create event that has a room_id is invalid."""
    refused(v12_create(room_id="!x:a.test"), V12, "room_id")


@pytest.mark.parametrize("version", [V10, V11], ids=["10", "11"])
def test_v10_v11_create_needs_room_id(version: RoomVersion) -> None:
    """Before v12 the create event needs a room_id like any other."""
    refused(v12_create(), version, "room_id")


@pytest.mark.parametrize("room_id", ["room:a.test", "$room", "!"])
def test_v12_room_id_must_start_with_bang(room_id: str) -> None:
    """In v12 a non-create event's room_id must start with "!"."""
    refused(pdu(room_id=room_id), V12, "room_id")


def test_v12_auth_events_must_not_list_the_create_event() -> None:
    """In v12 auth_events containing "$" + room_id[1:] (the create event) is invalid."""
    refused(pdu(room_id="!abc", auth_events=["$a", "$abc"]), V12, "create event")


@pytest.mark.parametrize("version", [V10, V11], ids=["10", "11"])
def test_v10_v11_auth_events_may_list_the_create_event(version: RoomVersion) -> None:
    """Before v12 listing the create event in auth_events is how it is done."""
    validate_pdu(pdu(room_id="!abc", auth_events=["$abc"]), version)


@ALL
def test_event_from_pdu_computes_the_event_id(version: RoomVersion) -> None:
    """event_from_pdu gives the Event with the reference-hash event ID and room_id."""
    signed = sign_event(pdu(), version, "a.test", "ed25519:1", KEY)
    event = event_from_pdu(signed, version)
    assert event.event_id == compute_event_id(signed, version)
    assert event.room_id == "!room:a.test"
    assert event.room_version is version


def test_event_from_pdu_derives_the_v12_room_id() -> None:
    """For a v12 create event the room ID is "!" + its event ID without "$"."""
    event = event_from_pdu(sign_event(v12_create(), V12, "a.test", "ed25519:1", KEY), V12)
    assert event.room_id == "!" + event.event_id[1:]


def test_event_from_pdu_drops_unsigned_and_copies() -> None:
    """The stored PDU is a deep copy without ``unsigned``; the event ID is unaffected."""
    received = sign_event(pdu(unsigned={"age": 5}), V11, "a.test", "ed25519:1", KEY)
    event = event_from_pdu(received, V11)
    assert "unsigned" not in event.pdu
    received["content"]["body"] = "changed later"
    assert event.content == {"body": "hi"}
    assert event.event_id == compute_event_id(received | {"content": {"body": "hi"}}, V11)


def test_event_from_pdu_refuses_invalid() -> None:
    """event_from_pdu raises InvalidPdu for a PDU that fails the format checks."""
    with pytest.raises(InvalidPdu):
        event_from_pdu(pdu(event_id="$x"), V12)


@ALL
@pytest.mark.parametrize(
    "where",
    [
        lambda v: {"content": {"n": v}},
        lambda v: {"content": {"deep": [{"x": [v]}], "s": 'a "1.5" \\" e'}},
        lambda v: {"unsigned": {"age": v}},
        lambda v: {"signatures": {"a.test": {"ed25519:1": v}}},
        lambda v: {"extra": v},
    ],
    ids=["content", "nested", "unsigned", "signatures", "top-level"],
)
@pytest.mark.parametrize("value", [1.5, 1e20, -0.0, 2.5e-7], ids=["1.5", "1e20", "-0.0", "small"])
def test_a_parsed_pdu_with_a_float_anywhere_is_refused(
    version: RoomVersion, where: Callable[[Any], dict[str, Any]], value: Any
) -> None:
    """A PDU parsed from JSON (``owned``), checked on its encoded bytes, is refused for a
    float anywhere, as the walk refuses it."""
    candidate = parse_json_bytes(encode_json(pdu(**where(value))))
    with pytest.raises(InvalidPdu):
        event_from_pdu(candidate, version, owned=True)


@ALL
def test_a_parsed_pdu_whose_strings_look_like_floats_is_valid(version: RoomVersion) -> None:
    """Dots and exponents inside strings, keys, escapes, true and false are no floats."""
    content = {
        "1.5": "2e10",
        "q": 'a \\"quoted 3.5\\" E',
        "flags": [True, False, None, -7, 2**53 - 1],
        "é.e": "ü 1.0",
    }
    candidate = parse_json_bytes(encode_json(pdu(content=content)))
    assert event_from_pdu(candidate, version, owned=True).content == content


def test_a_float_free_body_is_not_searched_for_floats_again() -> None:
    """With ``float_free`` (a /send body whose X-Matrix check encoded it whole and found no
    float: issue 22, one search per body instead of one more per PDU) the PDU's values
    are taken as vouched for; without it, or without ``owned``, a float is refused."""
    candidate = parse_json_bytes(encode_json(pdu(unsigned={"age": 1.5})))
    assert event_from_pdu(candidate, V12, owned=True, float_free=True).event_id
    with pytest.raises(InvalidPdu):
        event_from_pdu(candidate, V12, owned=True)
    with pytest.raises(InvalidPdu):
        event_from_pdu(candidate, V12, float_free=True)
