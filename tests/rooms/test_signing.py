"""Signing events and checking their signatures (spec: "Signing Events", appendix
"Cryptographic Test Vectors")."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from nacl.signing import SigningKey
from signedjson.key import decode_verify_key_bytes
from signedjson.sign import verify_signed_json as signedjson_verify

from stubserver.rooms.hashes import ContentHashMismatch, check_content_hash, compute_event_id
from stubserver.rooms.redaction import redact
from stubserver.rooms.signing import (
    EventSignatureError,
    add_signature,
    sign_event,
    verify_event_signature,
)
from stubserver.rooms.versions import ROOM_VERSIONS

V10 = ROOM_VERSIONS["10"]
V11 = ROOM_VERSIONS["11"]
V12 = ROOM_VERSIONS["12"]

#: The spec's test-vector key: seed, server name "domain", key ID "ed25519:1".
SPEC_KEY = SigningKey(base64.b64decode("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1="))
OTHER_KEY = SigningKey(b"\x02" * 32)


def test_spec_minimal_event_signature() -> None:
    """The spec's minimally-sized event signs to its published hash and signature (the
    example keeps top-level ``origin``, so it uses the v9 rules of room v10)."""
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
    signed = sign_event(pdu, V10, "domain", "ed25519:1", SPEC_KEY)
    assert signed == {
        **pdu,
        "hashes": {"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},
        "signatures": {
            "domain": {
                "ed25519:1": "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZ"
                "lHi5KLjAWbOoMszkwsQma+lYAg"
            }
        },
    }


def test_spec_redactable_event_signature() -> None:
    """The spec's event with redactable content signs to its published hash and
    signature: the signature covers the redacted form, the hash the full content."""
    pdu = {
        "content": {"body": "Here is the message content"},
        "event_id": "$0:domain",
        "origin": "domain",
        "origin_server_ts": 1000000,
        "type": "m.room.message",
        "room_id": "!r:domain",
        "sender": "@u:domain",
        "signatures": {},
        "unsigned": {"age_ts": 1000000},
    }
    signed = sign_event(pdu, V10, "domain", "ed25519:1", SPEC_KEY)
    assert signed["hashes"] == {"sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"}
    assert signed["signatures"] == {
        "domain": {
            "ed25519:1": "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn2"
            "41eYHYMGCA5McEiVPdhzBA"
        }
    }
    assert signed["unsigned"] == {"age_ts": 1000000}


def message(**extra: Any) -> dict[str, Any]:
    return {
        "type": "m.room.message",
        "room_id": "!r:a.test",
        "sender": "@u:a.test",
        "content": {"body": "hi"},
        "depth": 2,
        "prev_events": ["$p"],
        "auth_events": ["$a"],
        "origin_server_ts": 1_700_000_000_000,
        **extra,
    }


@pytest.mark.parametrize("version", [V10, V11, V12], ids=["10", "11", "12"])
def test_sign_then_verify_round_trip(version: Any) -> None:
    """An event we sign verifies with our verify key and has a valid content hash."""
    signed = sign_event(message(), version, "a.test", "ed25519:k1", SPEC_KEY)
    verify_event_signature(signed, version, "a.test", "ed25519:k1", SPEC_KEY.verify_key)
    check_content_hash(signed)


def test_signature_is_over_the_redacted_form() -> None:
    """signedjson verifies our signature on the redacted event (what Synapse checks)."""
    signed = sign_event(message(origin="a.test"), V11, "a.test", "ed25519:k1", SPEC_KEY)
    key = decode_verify_key_bytes("ed25519:k1", bytes(SPEC_KEY.verify_key))
    signedjson_verify(redact(signed, V11), "a.test", key)


def test_sign_event_does_not_modify_its_input() -> None:
    """sign_event returns a new dict; the input keeps no hashes or signatures."""
    pdu = message()
    before = copy.deepcopy(pdu)
    sign_event(pdu, V12, "a.test", "ed25519:k1", SPEC_KEY)
    assert pdu == before


def test_tampered_content_keeps_a_valid_signature_but_fails_the_hash() -> None:
    """Changing the content after signing leaves the signature valid (it covers the
    redacted form) but the content hash no longer matches."""
    signed = sign_event(message(), V11, "a.test", "ed25519:k1", SPEC_KEY)
    signed["content"] = {"body": "tampered"}
    verify_event_signature(signed, V11, "a.test", "ed25519:k1", SPEC_KEY.verify_key)
    with pytest.raises(ContentHashMismatch):
        check_content_hash(signed)


def test_tampered_essential_field_fails_the_signature() -> None:
    """Changing a field the redacted form keeps (``depth``) breaks the signature."""
    signed = sign_event(message(), V11, "a.test", "ed25519:k1", SPEC_KEY)
    signed["depth"] = 3
    with pytest.raises(EventSignatureError):
        verify_event_signature(signed, V11, "a.test", "ed25519:k1", SPEC_KEY.verify_key)


def test_signature_checked_under_the_wrong_version_fails() -> None:
    """An event with ``origin`` signed under v10 rules fails under v11 rules."""
    signed = sign_event(message(origin="a.test"), V10, "a.test", "ed25519:k1", SPEC_KEY)
    with pytest.raises(EventSignatureError):
        verify_event_signature(signed, V11, "a.test", "ed25519:k1", SPEC_KEY.verify_key)


def test_wrong_key_fails() -> None:
    """A signature does not verify with another server's key."""
    signed = sign_event(message(), V12, "a.test", "ed25519:k1", SPEC_KEY)
    with pytest.raises(EventSignatureError):
        verify_event_signature(signed, V12, "a.test", "ed25519:k1", OTHER_KEY.verify_key)


@pytest.mark.parametrize(("server", "key_id"), [("b.test", "ed25519:k1"), ("a.test", "ed25519:k2")])
def test_missing_signature_fails(server: str, key_id: str) -> None:
    """No signature for the server or key ID asked about is an error naming both."""
    signed = sign_event(message(), V12, "a.test", "ed25519:k1", SPEC_KEY)
    with pytest.raises(EventSignatureError) as raised:
        verify_event_signature(signed, V12, server, key_id, SPEC_KEY.verify_key)
    assert (raised.value.server_name, raised.value.key_id) == (server, key_id)


@pytest.mark.parametrize("signatures", [None, [], {"a.test": []}, {"a.test": {"ed25519:k1": 1}}])
def test_malformed_signatures_fail(signatures: Any) -> None:
    """Absent or malformed ``signatures`` give :class:`EventSignatureError`."""
    pdu = message(hashes={"sha256": "x"})
    if signatures is not None:
        pdu["signatures"] = signatures
    with pytest.raises(EventSignatureError):
        verify_event_signature(pdu, V12, "a.test", "ed25519:k1", SPEC_KEY.verify_key)


def test_bad_base64_signature_fails() -> None:
    """A signature that is not base64 gives :class:`EventSignatureError`."""
    pdu = message(hashes={"sha256": "x"}, signatures={"a.test": {"ed25519:k1": "!!"}})
    with pytest.raises(EventSignatureError):
        verify_event_signature(pdu, V12, "a.test", "ed25519:k1", SPEC_KEY.verify_key)


def test_non_ed25519_key_id_fails() -> None:
    """Only ``ed25519:`` key IDs are checked; another algorithm is an error."""
    with pytest.raises(EventSignatureError):
        verify_event_signature(message(), V12, "a.test", "curve:k1", SPEC_KEY.verify_key)


def test_signing_with_non_ed25519_key_id_is_refused() -> None:
    """Signing with a key ID that is not ``ed25519:<version>`` raises ValueError."""
    with pytest.raises(ValueError):
        sign_event(message(), V12, "a.test", "k1", SPEC_KEY)


def test_add_signature_keeps_everything_else() -> None:
    """Countersigning someone else's event adds our signature only: their signature,
    the content hash, ``unsigned`` and the event ID are unchanged."""
    theirs = sign_event(message(unsigned={"age": 5}), V12, "a.test", "ed25519:k1", SPEC_KEY)
    ours = add_signature(theirs, V12, "b.test", "ed25519:b", OTHER_KEY)
    assert {k: v for k, v in ours.items() if k != "signatures"} == {
        k: v for k, v in theirs.items() if k != "signatures"
    }
    assert ours["signatures"]["a.test"] == theirs["signatures"]["a.test"]
    verify_event_signature(ours, V12, "a.test", "ed25519:k1", SPEC_KEY.verify_key)
    verify_event_signature(ours, V12, "b.test", "ed25519:b", OTHER_KEY.verify_key)
    check_content_hash(ours)
    assert compute_event_id(ours, V12) == compute_event_id(theirs, V12)


def test_add_signature_does_not_modify_its_input() -> None:
    """add_signature leaves the event it was given untouched (nested dicts included)."""
    theirs = sign_event(message(), V12, "a.test", "ed25519:k1", SPEC_KEY)
    before = copy.deepcopy(theirs)
    add_signature(theirs, V12, "a.test", "ed25519:k2", OTHER_KEY)
    assert theirs == before


def test_second_key_of_the_same_server_adds_beside_the_first() -> None:
    """Signing with a second key of the same server keeps the first key's signature."""
    once = sign_event(message(), V11, "a.test", "ed25519:k1", SPEC_KEY)
    twice = add_signature(once, V11, "a.test", "ed25519:k2", OTHER_KEY)
    assert set(twice["signatures"]["a.test"]) == {"ed25519:k1", "ed25519:k2"}
    verify_event_signature(twice, V11, "a.test", "ed25519:k1", SPEC_KEY.verify_key)
