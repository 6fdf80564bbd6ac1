"""Dummy events cap our rooms' forward extremities, as Synapse's do (issue 22 row 4)."""

from __future__ import annotations

import random

from twisted.internet.task import Clock

from stubserver.devtools import room_attacks
from stubserver.rooms.create import create_room
from stubserver.rooms.dummy_events import (
    DUMMY_EVENT_TYPE,
    DUMMY_EVENTS_INTERVAL_S,
    DUMMY_PREV_EVENTS,
    EXCLUSION_S,
    DummyEvents,
)
from stubserver.rooms.room import EventRecord, Room
from stubserver.rooms.store import RoomStore
from stubserver.rooms.transaction import TransactionMemory
from stubserver.rooms.versions import ROOM_VERSIONS
from tests.rooms.room_fixtures import A_SIGNER, ALICE, BOB, TS, join, send


def _setup(*forks: int) -> tuple[Clock, DummyEvents, list[Room]]:
    """A store of a.test holding one public v12 room per entry of ``forks`` (distinct
    room IDs), created by Alice, joined by Bob, who made that many forks (messages on
    one parent)."""
    clock = Clock()
    clock.advance(TS / 1000)
    store = RoomStore("a.test", TransactionMemory(clock))
    rooms = []
    for i, count in enumerate(forks):
        room = create_room(
            ROOM_VERSIONS["12"], A_SIGNER, creator=ALICE, now=TS, rng=random.Random(i)
        ).room
        join(room, BOB)
        room_attacks.forks(room, BOB, count, conflicting=False)
        store.add_room(room)
        rooms.append(room)
    dummies = DummyEvents(store, A_SIGNER, lambda: int(clock.seconds() * 1000), clock)
    return clock, dummies, rooms


def _dummies(room: Room) -> list[EventRecord]:
    return [r for r in room.events_since(0) if r.event.type == DUMMY_EVENT_TYPE]


def test_2000_forks_are_merged_to_10_by_dummy_events_of_20_prev_events_in_two_runs() -> None:
    """A room with 2,000 extremities holds at most 10 after two runs: 105 dummy events of
    ours (content ``{}``, from our joined user), each citing the 20 deepest extremities
    (the spec's limit), accepted, with no state resolution (the forks share one state)."""
    _, dummies, (room,) = _setup(2_000)
    assert len(room.forward_extremities) == 2_000
    first = dummies.run()
    assert first == 100
    assert len(room.forward_extremities) == 2_000 - 19 * 100
    assert dummies.run() == 5
    assert len(room.forward_extremities) <= 10
    records = _dummies(room)
    assert len(records) == 105
    assert all(r.outcome == "accepted" for r in records)
    assert all(r.event.sender == ALICE and r.event.content == {} for r in records)
    assert all(len(r.event.prev_event_ids) == DUMMY_PREV_EVENTS for r in records)
    assert room.resolution_work.resolutions == 0
    assert dummies.run() == 0


def test_a_room_at_the_threshold_gets_none_and_one_past_it_gets_one() -> None:
    """10 extremities are left as they are (Synapse's threshold); 11 are merged by one
    dummy event into one."""
    _, dummies, (at, past) = _setup(10, 11)
    assert dummies.run() == 1
    assert _dummies(at) == []
    assert len(at.forward_extremities) == 10
    (record,) = _dummies(past)
    assert past.forward_extremities == {record.event_id}


def test_one_run_serves_the_five_most_crowded_rooms() -> None:
    """Seven crowded rooms: one run sends into the five with the most extremities, the
    next run into the other two."""
    _, dummies, rooms = _setup(11, 12, 13, 14, 15, 16, 17)
    dummies.run()
    assert [len(_dummies(r)) for r in rooms] == [0, 0, 1, 1, 1, 1, 1]
    dummies.run()
    assert [len(_dummies(r)) for r in rooms] == [1, 1, 1, 1, 1, 1, 1]


def test_a_room_none_of_our_users_may_send_into_is_left_out_for_seven_days() -> None:
    """With no joined user of ours a room gets no dummy event and is left out of the
    runs for 7 days (Synapse's exclusion), even after our user joins again; then it is
    merged."""
    clock, dummies, (room,) = _setup(0)
    send(room, ALICE, "m.room.member", {"membership": "leave"}, state_key=ALICE)
    room_attacks.forks(room, BOB, 20, conflicting=False)
    assert dummies.run() == 0
    # Her join a moment after her leave: with equal timestamps state resolution orders the
    # two by event ID (the spec's tie-break), and which forks her join cites decides that.
    send(room, ALICE, "m.room.member", {"membership": "join"}, state_key=ALICE, ts=TS + 1)
    assert room.members[ALICE] == "join"
    room_attacks.forks(room, BOB, 20, conflicting=False)
    clock.advance(EXCLUSION_S - 1)
    assert dummies.run() == 0
    clock.advance(2)
    assert dummies.run() == 1
    assert len(room.forward_extremities) == 1


def test_started_runs_come_every_five_minutes_on_the_clock() -> None:
    """``start`` runs first after 5 minutes, then every 5 minutes; stopped, no more."""
    clock, dummies, (room,) = _setup(2_000)
    loop = dummies.start()
    clock.advance(DUMMY_EVENTS_INTERVAL_S - 1)
    assert dummies.sent == 0
    clock.advance(1)
    assert dummies.sent == 100
    clock.advance(DUMMY_EVENTS_INTERVAL_S)
    assert dummies.sent == 105
    loop.stop()
    assert len(room.forward_extremities) <= 10
