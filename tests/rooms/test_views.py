"""The control API's reads and long-polls."""

from __future__ import annotations

from twisted.internet.task import Clock

from stubserver.rooms.long_poll import MAX_RECEIVED_EDU_BYTES, ReceivedEdus
from stubserver.rooms.room import Room
from stubserver.rooms.store import RoomStore
from stubserver.rooms.transaction import MAX_EDU_CONTENT_BYTES, Edu, TransactionMemory
from stubserver.rooms.versions import ROOM_VERSIONS
from stubserver.rooms.views import RoomViews
from tests.rooms.room_fixtures import ALICE, TS, new_room, send
from tests.support import has_fired, result_now

#: Rooms freed and allocated at most until one lands at the freed one's address.
MAX_ATTEMPTS = 1_000


def test_a_room_at_a_freed_rooms_address_is_watched() -> None:
    """A room watched, then freed (a re-join replaces it), and a new room allocated at
    its address: the new room is watched too, so its long-polls wake at its next event
    (rooms were watched by id(), and such a room's long-polls slept to their deadline)."""
    clock = Clock()
    store = RoomStore("a.test", TransactionMemory(clock))
    views = RoomViews(clock, store, lambda room: store.get_room(room) or Room(room, V12))
    events = [record.event for record in new_room("12").room.events_since(0)]
    room_id = events[0].room_id
    for _ in range(MAX_ATTEMPTS):
        first = Room(room_id, V12)
        views.watch(first)
        address = id(first)
        del first  # freed: a re-join replaces the room held under its ID
        second = Room(room_id, V12)
        if id(second) == address:
            break
    else:
        raise AssertionError("no room was allocated at a freed room's address")
    for event in events:
        second.add_event(event, TS, origin="a.test")
    store.add_room(second)
    views.watch(second)
    poll = views.events(room_id, len(events), 60_000)
    assert not has_fired(poll)
    send(second, ALICE, "m.room.message", {"body": "wake up"})
    clock.advance(0)
    assert has_fired(poll)


V12 = ROOM_VERSIONS["12"]


def test_events_added_in_one_turn_answer_a_long_poll_once_with_all_of_them() -> None:
    """Issue 22: a long-poll is woken at the end of the reactor turn in which its room
    gained events, so the events a /send adds in one turn make one answer holding them
    all (the first event woke it at once, answering it alone, and the watcher's next
    long-poll fetched the rest: two answers written and one more request per /send)."""
    clock = Clock()
    store = RoomStore("a.test", TransactionMemory(clock))
    room = new_room("12").room
    store.add_room(room)
    views = RoomViews(clock, store, lambda room_id: store.get_room(room_id) or room)
    start = len(room.events_since(0))
    poll = views.events(room.room_id, start, 60_000)
    sent = [send(room, ALICE, "m.room.message", {"body": f"m{i}"}).event_id for i in range(3)]
    assert not has_fired(poll)
    clock.advance(0)
    answer = result_now(poll)
    assert [e["event_id"] for e in answer["events"]] == sent
    assert answer["next"] == start + 3
    assert not clock.getDelayedCalls()


def test_received_edus_are_bounded_in_bytes() -> None:
    """Issue 22, row 9: 1,000 EDUs of 64 KiB (64 MiB) leave at most MAX_RECEIVED_EDU_BYTES
    kept, the newest, with positions still counting (all 1,000 were kept)."""
    edus = ReceivedEdus()
    content = {"p": "x" * (MAX_EDU_CONTENT_BYTES - 8)}
    edus.extend(Edu("b.test", "x", content, MAX_EDU_CONTENT_BYTES) for _ in range(1_000))
    answer = edus.answer(0)
    assert len(answer["edus"]) == MAX_RECEIVED_EDU_BYTES // MAX_EDU_CONTENT_BYTES == 256
    assert (answer["next"], edus.size) == (1_000, MAX_RECEIVED_EDU_BYTES)
