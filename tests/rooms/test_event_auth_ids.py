"""An event's auth event IDs, as the graph walks read them (issue 23: read once)."""

from __future__ import annotations

from stubserver.rooms.state_res import auth_event_ids
from tests.rooms.room_fixtures import BOB, build, join, new_room


def test_the_auth_event_ids_are_read_from_the_pdu_once() -> None:
    """Asked again, an event answers the same tuples (its PDU never changes): state
    resolution reads them for every state set and every walk."""
    room = new_room("12").room
    join(room, BOB)
    event = build(room, BOB, "m.room.message", {"body": "x"}).event
    assert event.auth_event_ids is event.auth_event_ids
    assert auth_event_ids(event) is auth_event_ids(event)


def test_v12_adds_the_implied_create_event_to_every_event_but_the_create_event() -> None:
    """In v12 the create event (``"$" + room_id[1:]``) is an auth event of every other
    event, though not listed; the create event has none; in v11 nothing is added."""
    created = new_room("12")
    room = created.room
    join(room, BOB)
    create_id = "$" + room.room_id[1:]
    message = build(room, BOB, "m.room.message", {"body": "x"}).event
    assert create_id not in message.auth_event_ids
    assert auth_event_ids(message) == (*message.auth_event_ids, create_id)
    create = room.get_event(create_id)
    assert create is not None and auth_event_ids(create) == ()
    v11 = new_room("11").room
    join(v11, BOB)
    old = build(v11, BOB, "m.room.message", {"body": "x"}).event
    assert auth_event_ids(old) == old.auth_event_ids
