"""Forward extremities: the events no known event cites as a prev_event."""

from __future__ import annotations

from stubserver.rooms.forward_extremities import add_event, forward_extremities
from tests.rooms.room_builder import ALICE, BOB, standard_room


def test_linear_room_has_one_extremity() -> None:
    """In a linear history the last event is the only extremity."""
    room = standard_room("12")
    assert forward_extremities(room.events.values()) == {room.last}


def test_fork_has_two_extremities() -> None:
    """Two events built on the same prev are both extremities."""
    room = standard_room("12")
    base = room.last or ""
    first = room.build("m.room.message", ALICE, {}, prev=[base])
    second = room.build("m.room.message", ALICE, {}, prev=[base])
    assert forward_extremities(room.events.values()) == {first.event_id, second.event_id}


def test_merge_event_replaces_the_extremities_it_cites() -> None:
    """A new event citing both tips becomes the only extremity."""
    room = standard_room("12")
    room.member(BOB, "join")
    base = room.last or ""
    first = room.build("m.room.message", ALICE, {}, prev=[base])
    second = room.build("m.room.message", BOB, {}, prev=[base])
    tips = forward_extremities(room.events.values())
    merge = room.build("m.room.message", ALICE, {}, prev=[first.event_id, second.event_id])
    assert add_event(tips, merge) == {merge.event_id}


def test_new_event_on_an_old_prev_adds_an_extremity() -> None:
    """An event on an older prev forks: the current tip stays an extremity."""
    room = standard_room("12")
    old = room.last or ""
    tip = room.build("m.room.message", ALICE, {}, prev=[old])
    late = room.build("m.room.message", ALICE, {}, prev=[old])
    assert add_event({tip.event_id}, late) == {tip.event_id, late.event_id}


def test_event_already_cited_is_not_an_extremity() -> None:
    """An event arriving after a known child (e.g. by backfill) does not become a tip."""
    room = standard_room("12")
    parent = room.build("m.room.message", ALICE, {}, event_id="$parent")
    assert add_event({"$child"}, parent, cited={"$parent"}) == {"$child"}
