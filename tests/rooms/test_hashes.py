"""Content hash, reference hash, event IDs and v12 room IDs, checked against an
independent computation (hashlib over ``json.dumps``) and the spec's test vectors."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest

from stubserver.rooms.hashes import (
    ContentHashMismatch,
    check_content_hash,
    compute_event_id,
    content_hash_base64,
    create_event_id_from_room_id,
    room_id_from_create_event_id,
    with_content_hash,
)
from stubserver.rooms.versions import ROOM_VERSIONS

V10 = ROOM_VERSIONS["10"]
V11 = ROOM_VERSIONS["11"]
V12 = ROOM_VERSIONS["12"]


def independent_canonical(obj: Any) -> bytes:
    """Canonical JSON by hand: sorted keys, no whitespace, UTF-8 unescaped."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def message(**extra: Any) -> dict[str, Any]:
    return {
        "type": "m.room.message",
        "room_id": "!r:a.test",
        "sender": "@u:a.test",
        "content": {"body": "héllo ☃", "msgtype": "m.text"},
        "depth": 5,
        "prev_events": ["$p"],
        "auth_events": ["$a", "$b"],
        "origin_server_ts": 1_700_000_000_000,
        "hashes": {"sha256": "stale"},
        "signatures": {"a.test": {"ed25519:1": "sig"}},
        "unsigned": {"age": 3},
        **extra,
    }


def test_spec_minimal_event_content_hash() -> None:
    """The spec's "minimally-sized event" hashes to its published ``hashes.sha256``."""
    pdu = {
        "room_id": "!x:domain",
        "sender": "@a:domain",
        "origin": "domain",
        "origin_server_ts": 1000000,
        "signatures": {},
        "hashes": {},
        "type": "X",
        "content": {},
        "prev_events": [],
        "auth_events": [],
        "depth": 3,
        "unsigned": {"age_ts": 1000000},
    }
    assert content_hash_base64(pdu) == "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"


def test_content_hash_matches_independent_computation() -> None:
    """The content hash is sha256 over canonical JSON without unsigned, signatures and
    hashes, in unpadded standard base64."""
    pdu = message(origin="a.test", unknown_key=[1, 2])
    stripped = {k: v for k, v in pdu.items() if k not in ("unsigned", "signatures", "hashes")}
    digest = hashlib.sha256(independent_canonical(stripped)).digest()
    assert content_hash_base64(pdu) == base64.b64encode(digest).decode().rstrip("=")


def test_content_hash_ignores_unsigned_signatures_and_hashes() -> None:
    """Changing ``unsigned``, ``signatures`` or ``hashes`` leaves the content hash alone."""
    changed = message(unsigned={"age": 99}, signatures={}, hashes={"sha256": "x"})
    assert content_hash_base64(changed) == content_hash_base64(message())


def test_content_hash_covers_unknown_top_level_keys() -> None:
    """An extra top-level key (e.g. ``origin``) changes the content hash."""
    assert content_hash_base64(message(origin="a.test")) != content_hash_base64(message())


def test_check_content_hash_accepts_the_right_hash() -> None:
    """An event whose ``hashes.sha256`` is its content hash passes the check."""
    check_content_hash(with_content_hash(message()))


def test_check_content_hash_accepts_padded_base64() -> None:
    """A padded encoding of the right digest is the same hash."""
    pdu = with_content_hash(message())
    pdu["hashes"] = {"sha256": pdu["hashes"]["sha256"] + "="}
    check_content_hash(pdu)


def test_tampered_content_is_a_mismatch() -> None:
    """Changing the content after hashing gives :class:`ContentHashMismatch`."""
    pdu = with_content_hash(message())
    pdu["content"] = {"body": "tampered"}
    with pytest.raises(ContentHashMismatch) as raised:
        check_content_hash(pdu)
    assert raised.value.expected == content_hash_base64(pdu)


@pytest.mark.parametrize("hashes", [None, {}, {"sha256": 5}, {"sha256": "!!!"}])
def test_missing_or_malformed_hash_is_a_mismatch(hashes: Any) -> None:
    """An absent, non-string or non-base64 ``hashes.sha256`` is a mismatch."""
    pdu = message()
    pdu.pop("hashes")
    if hashes is not None:
        pdu["hashes"] = hashes
    with pytest.raises(ContentHashMismatch):
        check_content_hash(pdu)


def independent_event_id(pdu: dict[str, Any], kept_top: set[str], content: Any) -> str:
    redacted = {k: v for k, v in pdu.items() if k in kept_top}
    redacted["content"] = content
    digest = hashlib.sha256(independent_canonical(redacted)).digest()
    return "$" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


TOP_V11 = {
    "type",
    "room_id",
    "sender",
    "state_key",
    "content",
    "hashes",
    "depth",
    "prev_events",
    "auth_events",
    "origin_server_ts",
}


@pytest.mark.parametrize("version", [V11, V12], ids=["11", "12"])
def test_event_id_matches_independent_computation(version: Any) -> None:
    """The event ID is "$" + URL-safe unpadded base64 of sha256 of the canonical redacted
    event without signatures and unsigned."""
    pdu = with_content_hash(message(origin="a.test"))
    assert compute_event_id(pdu, version) == independent_event_id(pdu, TOP_V11, {})


def test_v10_event_id_keeps_origin() -> None:
    """In v10 the reference hash covers top-level ``origin``; in v11 it does not."""
    pdu = with_content_hash(message(origin="a.test"))
    expected = independent_event_id(pdu, TOP_V11 | {"origin"}, {})
    assert compute_event_id(pdu, V10) == expected
    assert compute_event_id(pdu, V10) != compute_event_id(pdu, V11)


def test_event_id_alphabet_is_url_safe_and_unpadded() -> None:
    """Event IDs use ``-`` and ``_``, never ``+``, ``/`` or ``=``, and are 44 characters."""
    for depth in range(40):
        event_id = compute_event_id(with_content_hash(message(depth=depth)), V11)
        assert len(event_id) == 44
        assert not set("+/=") & set(event_id)


def test_event_id_ignores_signatures_and_unsigned() -> None:
    """Adding signatures or unsigned data does not change the event ID."""
    pdu = with_content_hash(message())
    other = {**pdu, "signatures": {"b.test": {"ed25519:x": "y"}}, "unsigned": {}}
    assert compute_event_id(pdu, V12) == compute_event_id(other, V12)


def test_event_id_covers_content_through_the_hash() -> None:
    """A different message body gives a different event ID (via ``hashes``)."""
    one = with_content_hash(message())
    two = with_content_hash(message(content={"body": "other"}))
    assert compute_event_id(one, V11) != compute_event_id(two, V11)


def test_v12_room_id_is_the_create_event_id_with_a_bang() -> None:
    """A v12 room ID is "!" + the create event's ID without "$", and back again."""
    assert room_id_from_create_event_id("$abc_-1") == "!abc_-1"
    assert create_event_id_from_room_id("!abc_-1") == "$abc_-1"


@pytest.mark.parametrize("bad", ["", "$", "!abc", "abc"])
def test_room_id_from_non_event_id_is_refused(bad: str) -> None:
    """Only a "$"-prefixed, non-empty event ID gives a room ID."""
    with pytest.raises(ValueError):
        room_id_from_create_event_id(bad)


@pytest.mark.parametrize("bad", ["", "!", "$abc"])
def test_create_event_id_from_non_room_id_is_refused(bad: str) -> None:
    """Only a "!"-prefixed, non-empty room ID implies a create event ID."""
    with pytest.raises(ValueError):
        create_event_id_from_room_id(bad)
