"""What another server may see of a room's events (issue 22 row 5): history visibility at
each event and redactions, through the reading endpoints as Synapse's
``filter_events_for_server`` answers."""

from __future__ import annotations

from typing import Any

import pytest

from stubserver.rooms.create import build_in_room
from stubserver.rooms.redaction import redact
from stubserver.rooms.room import Room
from stubserver.rooms.routes_read import ReadEndpoints
from stubserver.rooms.visibility import history_visibility_at, server_may_see
from tests.rooms.endpoint_fixtures import parts, signed_in
from tests.rooms.room_fixtures import ALICE, BOB, TS, add, join, new_room, send, signer_for

SECRET = {"msgtype": "m.text", "body": "before you came"}


def _room_with_a_secret(version: str, visibility: str) -> tuple[Room, str, str]:
    """Alice's room at ``visibility``; she says SECRET, then Bob (b.test) joins and
    speaks. The secret's and Bob's message's IDs."""
    room = new_room(version).room
    send(room, ALICE, "m.room.history_visibility", {"history_visibility": visibility}, state_key="")
    secret = send(room, ALICE, "m.room.message", SECRET).event_id
    join(room, BOB)
    after = send(room, BOB, "m.room.message", {"msgtype": "m.text", "body": "hi"}).event_id
    return room, secret, after


def _read(room: Room) -> ReadEndpoints:
    p = parts()
    p.store.add_room(room)
    return ReadEndpoints(p)


def _served(room: Room, secret: str, after: str) -> list[dict[str, Any]]:
    """The secret as b.test gets it from /event, backfill and get_missing_events."""
    read = _read(room)
    event = read.get_event(signed_in("GET", "/event"), {"eventId": secret}).body["pdus"][0]
    args = {b"v": [after.encode()], b"limit": [b"100"]}
    backfilled = read.backfill(signed_in("GET", "/backfill", args=args), {"roomId": room.room_id})
    body = {"earliest_events": [], "latest_events": [after], "limit": 20}
    missing = read.get_missing_events(signed_in("POST", "/gme", body), {"roomId": room.room_id})
    return [
        event,
        _alices_message(backfilled.body["pdus"]),
        _alices_message(missing.body["events"]),
    ]


def _alices_message(pdus: list[dict[str, Any]]) -> dict[str, Any]:
    (message,) = [p for p in pdus if p["type"] == "m.room.message" and p["sender"] == ALICE]
    return message


@pytest.mark.parametrize("version", ["10", "11", "12"])
def test_a_server_that_joined_after_joined_visibility_gets_earlier_events_redacted(
    version: str,
) -> None:
    """history_visibility joined: b.test, whose user joined after Alice's message, gets
    it redacted (the room version's algorithm) from /event, backfill and
    get_missing_events; Bob's own later message in full (before: the full text
    everywhere)."""
    room, secret, after = _room_with_a_secret(version, "joined")
    event = room.get_event(secret)
    assert event is not None
    for pdu in _served(room, secret, after):
        assert pdu == redact(event.pdu, room.room_version)
        assert pdu["content"] == {}
    read = _read(room)
    served = read.get_event(signed_in("GET", "/event"), {"eventId": after}).body["pdus"][0]
    assert served["content"]["body"] == "hi"


@pytest.mark.parametrize(
    ("visibility", "visible"),
    [("shared", True), ("world_readable", True), ("invited", False), ("joined", False)],
)
def test_history_visibility_at_the_event_decides(visibility: str, visible: bool) -> None:
    """shared and world_readable: b.test sees what was said before its user joined;
    invited and joined: it does not; the setting is the one at the event."""
    room, secret, after = _room_with_a_secret("12", visibility)
    assert history_visibility_at(room, secret) == visibility
    assert server_may_see(room, secret, "b.test") is visible
    assert server_may_see(room, after, "b.test")
    assert server_may_see(room, secret, "a.test")


def test_invited_visibility_shows_what_was_said_after_the_invite() -> None:
    """history_visibility invited: a message after Bob's invite (before his join) is
    visible to b.test; one before the invite is not."""
    room = new_room("12").room
    send(room, ALICE, "m.room.history_visibility", {"history_visibility": "invited"}, state_key="")
    before = send(room, ALICE, "m.room.message", {"body": "before"}).event_id
    send(room, ALICE, "m.room.member", {"membership": "invite"}, state_key=BOB)
    between = send(room, ALICE, "m.room.message", {"body": "between"}).event_id
    join(room, BOB)
    assert not server_may_see(room, before, "b.test")
    assert server_may_see(room, between, "b.test")


def test_a_redacted_event_is_served_redacted_to_every_server() -> None:
    """Alice redacts her message: /event, backfill and get_missing_events serve it
    redacted, to any server, under shared visibility (before: the original text)."""
    room, secret, _ = _room_with_a_secret("11", "shared")
    build_redaction(room, ALICE, secret)
    assert room.is_redacted(secret)
    last = send(room, BOB, "m.room.message", {"body": "after"}).event_id
    event = room.get_event(secret)
    assert event is not None
    for pdu in _served(room, secret, last):
        assert pdu == redact(event.pdu, room.room_version)


def test_a_redaction_by_another_server_without_the_redact_level_takes_no_effect() -> None:
    """Bob (power 0, b.test) redacting Alice's message takes no effect; Bob redacting
    his own does (same server)."""
    room, secret, after = _room_with_a_secret("12", "shared")
    build_redaction(room, BOB, secret)
    assert not room.is_redacted(secret)
    build_redaction(room, BOB, after)
    assert room.is_redacted(after)


def test_state_answers_a_redacted_state_event_redacted() -> None:
    """A redacted topic is served redacted in /state's pdus (Synapse reads events
    redacted for every answer)."""
    room = new_room("12").room
    join(room, BOB)
    topic = send(room, ALICE, "m.room.topic", {"topic": "secret plans"}, state_key="").event_id
    build_redaction(room, ALICE, topic)
    last = send(room, ALICE, "m.room.message", {"body": "x"}).event_id
    read = _read(room)
    answer = read.get_state(
        signed_in("GET", "/state", args={b"event_id": [last.encode()]}), {"roomId": room.room_id}
    ).body
    (served,) = [p for p in answer["pdus"] if p["type"] == "m.room.topic"]
    assert served["content"] == {}


def build_redaction(room: Room, sender: str, target: str) -> str:
    """``sender`` redacts ``target`` (accepted); the redaction's ID."""
    built = build_in_room(
        room,
        signer_for(sender),
        sender=sender,
        event_type="m.room.redaction",
        content={},
        now=TS + 10,
        redacts=target,
    )
    record = add(room, built)
    assert record.outcome == "accepted", record.reason
    return record.event_id
