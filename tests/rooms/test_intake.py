"""The receive pipeline: what it computes per event is computed once and reused."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import pytest
from nacl.signing import VerifyKey
from twisted.internet.defer import Deferred, succeed

from stubserver.rooms.event import content_hash_bytes_of, signed_bytes_of
from stubserver.rooms.format import event_from_pdu
from stubserver.rooms.hashes import compute_event_id, event_id_from_signed_bytes
from stubserver.rooms.intake import Intake
from stubserver.rooms.redaction import redact
from stubserver.rooms.signing import EventSignatureError, verify_signed_event
from stubserver.rooms.transaction import checked_copy
from stubserver.rooms.versions import ROOM_VERSIONS
from tests.rooms.room_fixtures import B_SIGNER, BOB, TS, build, join, new_room
from tests.support import result_now

V12 = ROOM_VERSIONS["12"]


def message(body: str = "hi") -> dict[str, Any]:
    room = new_room("12").room
    join(room, BOB)
    return copy.deepcopy(build(room, BOB, "m.room.message", {"body": body}, ts=TS + 1).pdu)


def b_key(server: str, key_id: str, ts: int) -> Deferred[VerifyKey | None]:
    return succeed(B_SIGNER.signing_key.verify_key if server == "b.test" else None)


def test_parsing_computes_the_hash_the_redacted_form_and_the_signed_bytes_once() -> None:
    """event_from_pdu keeps what it computed on the event: the content hash, the redacted
    form, and the signed bytes, whose SHA-256 is the event ID."""
    pdu = message()
    event = event_from_pdu(pdu, V12)
    derived = event.derived
    assert derived.content_hash == hashlib.sha256(content_hash_bytes_of(pdu)).digest()
    assert derived.redacted == redact(pdu, V12)
    assert derived.signed_bytes == signed_bytes_of(redact(pdu, V12))
    assert event.event_id == event_id_from_signed_bytes(derived.signed_bytes)
    assert event.event_id == compute_event_id(pdu, V12)


def test_the_signature_check_uses_the_bytes_computed_at_parse() -> None:
    """verify_signed_event checks the signature over the event's kept signed bytes, not a
    new encoding: with other bytes kept there, a valid signature fails."""
    event = event_from_pdu(message(), V12)
    verify_signed_event(event, "b.test", B_SIGNER.key_id, B_SIGNER.signing_key.verify_key)
    event.derived.signed_bytes = b"{}"
    with pytest.raises(EventSignatureError):
        verify_signed_event(event, "b.test", B_SIGNER.key_id, B_SIGNER.signing_key.verify_key)


def test_a_hash_mismatch_stores_the_redacted_form_already_computed() -> None:
    """On a content hash mismatch the stored copy is the redacted form computed for the
    event (not a new redaction), with the same signed bytes and event ID."""
    pdu = message()
    pdu["content"] = {"body": "changed after hashing"}
    event = event_from_pdu(pdu, V12)
    stored = checked_copy(event)
    assert stored.pdu is event.derived.redacted
    assert stored.signed_bytes() is event.signed_bytes()
    assert stored.event_id == event.event_id
    assert "body" not in stored.content


def test_intake_parse_keeps_the_body_values_without_a_copy() -> None:
    """Intake.parse hands a parsed body's values over to the event (no deep copy); the
    default event_from_pdu copies them."""
    pdu = message()
    assert Intake.parse(pdu, V12).pdu["content"] is pdu["content"]
    assert event_from_pdu(pdu, V12).pdu["content"] is not pdu["content"]


def test_intake_verified_drops_bad_signatures_and_redacts_mismatches() -> None:
    """Intake.verified keeps the events whose signature verifies, a hash mismatch as its
    redacted copy, and drops one signed by nobody we have a key for."""
    good = Intake.parse(message("good"), V12)
    changed = message("changed")
    changed["content"] = {"body": "changed after hashing"}
    mismatch = Intake.parse(changed, V12)
    unsigned = message("unsigned")
    unsigned["signatures"] = {"b.test": {"ed25519:other": "AAAA"}}
    bad = Intake.parse(unsigned, V12)
    kept = result_now(Deferred.fromCoroutine(Intake(b_key).verified([good, mismatch, bad])))
    assert [e.event_id for e in kept] == [good.event_id, mismatch.event_id]
    assert kept[1].content == {}


def test_a_stored_event_keeps_nothing_derived() -> None:
    """Once a room stores an event, the content hash, redacted form and signed bytes
    computed to check it are released (memory per stored event)."""
    room = new_room("12").room
    join(room, BOB)
    event = event_from_pdu(build(room, BOB, "m.room.message", {"body": "x"}, ts=TS + 2).pdu, V12)
    assert event.derived.signed_bytes is not None
    room.add_event(event, TS + 3, origin="b.test")
    derived = event.derived
    assert (derived.redacted, derived.signed_bytes, derived.content_hash) == (None, None, None)
