"""Inbound /send processing: limits, deduplication, per-PDU answers (rooms.md 1.2)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from nacl.signing import VerifyKey
from twisted.internet.task import Clock

from stubserver.rooms.event import Event
from stubserver.rooms.room import Room
from stubserver.rooms.transaction import (
    MAX_EDU_CONTENT_BYTES,
    MAX_EDUS_PER_TRANSACTION,
    MAX_PDUS_PER_TRANSACTION,
    TRANSACTION_MEMORY_SECONDS,
    SignatureFailure,
    TransactionMemory,
    TransactionOutcome,
    TransactionRefused,
    process_transaction,
    verify_with_keys,
)
from stubserver.signing.canonical_json import encode_json
from tests.rooms.room_fixtures import ALICE, B_SIGNER, BOB, build, join, new_room

KEYS = {("b.test", B_SIGNER.key_id): B_SIGNER.signing_key.verify_key}


def lookup(server: str, key_id: str, minimum_valid_until_ts: int) -> VerifyKey | None:
    return KEYS.get((server, key_id))


def _setup() -> tuple[Room, TransactionMemory, Clock]:
    room = new_room("12").room
    join(room, BOB)
    clock = Clock()
    return room, TransactionMemory(clock), clock


def _send(
    room: Room, memory: TransactionMemory, txn_id: str, body: Any, origin: str = "b.test"
) -> TransactionOutcome:
    rooms = {room.room_id: room}
    return process_transaction(
        origin, txn_id, body, rooms=rooms.get, verify=verify_with_keys(lookup), memory=memory, now=0
    )


def _message(room: Room, body: str) -> dict[str, Any]:
    return build(room, BOB, "m.room.message", {"body": body}).pdu


def test_a_valid_pdu_is_answered_empty_and_added() -> None:
    """A good PDU gets {} and is added to its room as accepted."""
    room, memory, _ = _setup()
    pdu = _message(room, "hi")
    outcome = _send(room, memory, "t1", {"origin": "b.test", "origin_server_ts": 0, "pdus": [pdu]})
    (record,) = outcome.added
    assert outcome.response == {"pdus": {record.event_id: {}}}
    assert record.outcome == "accepted"


@pytest.mark.parametrize(
    ("pdus", "edus"), [(MAX_PDUS_PER_TRANSACTION + 1, 0), (0, MAX_EDUS_PER_TRANSACTION + 1)]
)
def test_too_many_pdus_or_edus_is_400_empty(pdus: int, edus: int) -> None:
    """More than 50 PDUs or 100 EDUs: 400 {} and nothing processed or remembered."""
    room, memory, _ = _setup()
    before = len(room)
    body = {
        "pdus": [_message(room, "x")] * pdus,
        "edus": [{"edu_type": "m.typing", "content": {}}] * edus,
    }
    with pytest.raises(TransactionRefused) as caught:
        _send(room, memory, "t1", body)
    assert (caught.value.status, caught.value.body) == (400, {})
    assert len(room) == before and len(memory) == 0


def test_a_repeated_transaction_id_is_answered_from_memory_and_ignored() -> None:
    """The same (origin, txn ID) again returns the first answer; its new PDUs are not
    processed. Another origin with the same ID is a new transaction."""
    room, memory, _ = _setup()
    first = _send(room, memory, "t1", {"pdus": [_message(room, "a")]})
    again = _send(room, memory, "t1", {"pdus": [_message(room, "b")]})
    assert again.replayed and again.response == first.response and again.added == ()
    other = _send(room, memory, "t1", {"pdus": []}, origin="c.test")
    assert not other.replayed


def test_remembered_answers_expire() -> None:
    """After TRANSACTION_MEMORY_SECONDS, the ID is processed afresh."""
    room, memory, clock = _setup()
    _send(room, memory, "t1", {"pdus": []})
    clock.advance(TRANSACTION_MEMORY_SECONDS)
    assert not _send(room, memory, "t1", {"pdus": []}).replayed


def test_memory_is_bounded_by_count() -> None:
    """The dedup store holds at most max_entries answers."""
    clock = Clock()
    memory = TransactionMemory(clock, max_entries=3)
    for n in range(10):
        memory.remember("b.test", f"t{n}", {"pdus": {}})
    assert len(memory) == 3
    assert memory.answer("b.test", "t0") is None


def test_unparseable_pdus_and_unknown_rooms_are_absent() -> None:
    """A PDU with an event_id key, a float, or an unknown room is left out of the
    answer; the good one beside them is answered."""
    room, memory, _ = _setup()
    good = _message(room, "ok")
    with_id = dict(_message(room, "id"), event_id="$x")
    floaty = _message(room, "f")
    floaty["content"]["n"] = 1.5
    elsewhere = dict(_message(room, "e"), room_id="!unknown")
    outcome = _send(room, memory, "t1", {"pdus": [good, with_id, floaty, elsewhere]})
    assert len(outcome.response["pdus"]) == 1
    assert [r.event.pdu["content"]["body"] for r in outcome.added] == ["ok"]


def test_a_bad_signature_is_a_per_pdu_error() -> None:
    """A PDU whose signature does not verify gets {"error": "ERROR 403: unable to
    verify signature for sender domain ..."} and is not added."""
    room, memory, _ = _setup()
    pdu = _message(room, "sig")
    pdu["signatures"]["b.test"][B_SIGNER.key_id] = "A" * 86
    outcome = _send(room, memory, "t1", {"pdus": [pdu]})
    (entry,) = outcome.response["pdus"].values()
    assert entry["error"].startswith(
        "ERROR 403: unable to verify signature for sender domain b.test"
    )
    assert outcome.added == ()


def test_an_unknown_key_is_a_per_pdu_error() -> None:
    """A signature by a key we cannot find is an error entry too."""
    room, memory, _ = _setup()
    pdu = _message(room, "k")
    pdu["signatures"] = {"b.test": {"ed25519:other": "A" * 86}}
    outcome = _send(room, memory, "t1", {"pdus": [pdu]})
    (entry,) = outcome.response["pdus"].values()
    assert "Failed to find any key" in entry["error"]


def test_a_content_hash_mismatch_stores_the_redacted_copy() -> None:
    """Content changed after signing: answered {}, stored redacted (content {}), same
    event ID."""
    room, memory, _ = _setup()
    pdu = copy.deepcopy(_message(room, "original"))
    pdu["content"]["body"] = "tampered"
    outcome = _send(room, memory, "t1", {"pdus": [pdu]})
    (record,) = outcome.added
    assert outcome.response == {"pdus": {record.event_id: {}}}
    assert record.event.content == {}


def test_an_auth_failure_still_answers_empty() -> None:
    """An event rejected by the auth rules is answered {} (Synapse decides later) and
    recorded as rejected."""
    room, memory, _ = _setup()
    state = room.current_state
    pdu = build(room, BOB, "m.room.name", {"name": "mine"}, state_key="").pdu
    outcome = _send(room, memory, "t1", {"pdus": [pdu]})
    (record,) = outcome.added
    assert outcome.response == {"pdus": {record.event_id: {}}}
    assert record.outcome == "rejected"
    assert room.current_state == state


def test_missing_prev_events_leave_the_event_pending() -> None:
    """An event whose prev_events we lack is answered {} and returned as pending, with
    the missing IDs, for the shell to fetch."""
    room, memory, _ = _setup()
    twin, _, _ = _setup()  # the same room, built the same way, on another server
    first = build(twin, BOB, "m.room.message", {"body": "1"})
    twin.add_event(first.event, 0)
    second = build(twin, BOB, "m.room.message", {"body": "2"})
    assert twin.room_id == room.room_id
    outcome = _send(room, memory, "t1", {"pdus": [second.pdu]})
    assert outcome.response == {"pdus": {second.event.event_id: {}}}
    ((_, event, missing),) = outcome.pending
    assert missing.event_ids == (first.event.event_id,)
    assert event.event_id == second.event.event_id


def test_edus_are_returned_with_their_origin() -> None:
    """Well-formed EDUs are handed back; malformed ones dropped."""
    room, memory, _ = _setup()
    outcome = _send(
        room,
        memory,
        "t1",
        {
            "pdus": [],
            "edus": [
                {
                    "edu_type": "m.typing",
                    "content": {"room_id": room.room_id, "user_id": BOB, "typing": True},
                },
                {"content": {}},
            ],
        },
    )
    assert [(e.origin, e.edu_type) for e in outcome.edus] == [("b.test", "m.typing")]


def test_an_edu_over_the_size_bound_is_dropped() -> None:
    """Issue 22, row 9: an EDU whose content is over MAX_EDU_CONTENT_BYTES (a receipt map
    of 2,000 users) is dropped, one at the bound is kept and measured (both were kept)."""
    room, memory, _ = _setup()
    receipts = {f"@u{i}:b.test": {"event_ids": ["$e"], "data": {"ts": i}} for i in range(2_000)}
    big = {room.room_id: {"m.read": receipts}}
    assert len(encode_json(big)) > MAX_EDU_CONTENT_BYTES
    padding = MAX_EDU_CONTENT_BYTES - len(encode_json({"p": ""}))
    at_bound = {"p": "x" * padding}
    edus = [{"edu_type": "m.receipt", "content": big}, {"edu_type": "x", "content": at_bound}]
    outcome = _send(room, memory, "t1", {"pdus": [], "edus": edus})
    assert [(e.edu_type, e.size) for e in outcome.edus] == [("x", MAX_EDU_CONTENT_BYTES)]


def test_a_join_authorised_by_another_server_needs_its_signature() -> None:
    """verify_with_keys requires the authorising user's server to sign a restricted
    join too."""
    room = new_room("12").room
    pdu = build(
        room,
        BOB,
        "m.room.member",
        {"membership": "join", "join_authorised_via_users_server": ALICE},
        state_key=BOB,
    ).pdu
    event = Event(event_id="$x", room_version=room.room_version, pdu=pdu, room_id=room.room_id)
    with pytest.raises(SignatureFailure, match=r"a\.test"):
        verify_with_keys(lookup)(event)


def test_pdus_from_a_server_outside_the_room_are_dropped_before_any_work() -> None:
    """Issue 22 row 2: a transaction of 50 PDUs of ~60 KB from a server with no joined
    user (b.test before Bob joins) is dropped unparsed: absent from the answer, 0
    signature checks (there were 50), nothing stored (50 rejected events were kept)."""
    room = new_room("12").room
    memory = TransactionMemory(Clock())
    pdus = [
        build(room, BOB, "m.room.message", {"body": f"{i}-" + "x" * 60_000}).pdu
        for i in range(MAX_PDUS_PER_TRANSACTION)
    ]
    checked: list[str] = []
    verify = verify_with_keys(lookup)

    def counting_verify(event: Event) -> None:
        checked.append(event.event_id)
        verify(event)

    before = len(room)
    outcome = process_transaction(
        "b.test",
        "t1",
        {"pdus": pdus},
        rooms={room.room_id: room}.get,
        verify=counting_verify,
        memory=memory,
        now=0,
    )
    assert outcome.response == {"pdus": {}}
    assert (len(checked), len(room)) == (0, before)


def test_a_server_outside_the_room_may_send_its_own_users_membership() -> None:
    """The way in stays open: b.test, not yet in the room, sends Bob's join over /send;
    it is processed (accepted in a public room)."""
    room = new_room("12").room
    memory = TransactionMemory(Clock())
    pdu = build(room, BOB, "m.room.member", {"membership": "join"}, state_key=BOB).pdu
    (record,) = _send(room, memory, "t1", {"pdus": [pdu]}).added
    assert record.outcome == "accepted"
    assert room.members[BOB] == "join"


def test_a_server_outside_the_room_may_not_send_other_servers_membership() -> None:
    """b.test, not in the room, sending a membership event for a user of another server
    (Alice's leave) is dropped: only its own users' memberships are its way in."""
    room = new_room("12").room
    memory = TransactionMemory(Clock())
    pdu = build(room, ALICE, "m.room.member", {"membership": "leave"}, state_key=ALICE).pdu
    assert _send(room, memory, "t1", {"pdus": [pdu]}).response == {"pdus": {}}
