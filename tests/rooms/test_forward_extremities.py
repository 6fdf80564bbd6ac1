"""Forward extremities: the events no known event cites as a prev_event, tracked by
:class:`ForwardExtremities` (the tracker :class:`~stubserver.rooms.room.Room` uses)."""

from __future__ import annotations

from collections.abc import Iterable

from stubserver.rooms.event import Event
from stubserver.rooms.forward_extremities import ForwardExtremities
from stubserver.rooms.state_store import EMPTY_STATE, StateNode
from tests.rooms.room_builder import ALICE, BOB, standard_room


def _track(
    events: Iterable[Event],
    tracker: ForwardExtremities | None = None,
    *,
    cited: set[str] | None = None,
) -> ForwardExtremities:
    """``events`` fed in order to a tracker (a new one unless given), each on the empty
    state; ``cited`` holds the IDs known events cite (grown by the events fed)."""
    tracker = ForwardExtremities() if tracker is None else tracker
    known = set() if cited is None else cited
    for event in events:
        state_of: dict[str, StateNode] = dict.fromkeys(event.prev_event_ids, EMPTY_STATE)
        tracker.advance(
            event.event_id,
            event.depth,
            event.prev_event_ids,
            EMPTY_STATE,
            cited=known,
            state_of=state_of,
        )
        known.update(event.prev_event_ids)
    return tracker


def test_linear_room_has_one_extremity() -> None:
    """In a linear history the last event is the only extremity."""
    room = standard_room("12")
    assert set(_track(room.events.values())) == {room.last}


def test_fork_has_two_extremities() -> None:
    """Two events built on the same prev are both extremities."""
    room = standard_room("12")
    base = room.last or ""
    first = room.build("m.room.message", ALICE, {}, prev=[base])
    second = room.build("m.room.message", ALICE, {}, prev=[base])
    assert set(_track(room.events.values())) == {first.event_id, second.event_id}


def test_merge_event_replaces_the_extremities_it_cites() -> None:
    """A new event citing both tips becomes the only extremity."""
    room = standard_room("12")
    room.member(BOB, "join")
    base = room.last or ""
    first = room.build("m.room.message", ALICE, {}, prev=[base])
    second = room.build("m.room.message", BOB, {}, prev=[base])
    tips = _track(room.events.values())
    assert set(tips) == {first.event_id, second.event_id}
    merge = room.build("m.room.message", ALICE, {}, prev=[first.event_id, second.event_id])
    assert set(_track([merge], tips)) == {merge.event_id}


def test_new_event_on_an_old_prev_adds_an_extremity() -> None:
    """An event on an older prev forks: the current tip stays an extremity."""
    room = standard_room("12")
    old = room.last or ""
    tip = room.build("m.room.message", ALICE, {}, prev=[old])
    tips = _track(room.events.values())
    assert set(tips) == {tip.event_id}
    late = room.build("m.room.message", ALICE, {}, prev=[old])
    assert set(_track([late], tips)) == {tip.event_id, late.event_id}


def test_event_already_cited_is_not_an_extremity() -> None:
    """An event arriving after a known child (e.g. by backfill) does not become a tip."""
    room = standard_room("12")
    base = room.last or ""
    child = room.build("m.room.message", ALICE, {}, event_id="$child", prev=["$parent"])
    tips = _track([child])
    parent = room.build("m.room.message", ALICE, {}, event_id="$parent", prev=[base])
    assert set(_track([parent], tips, cited={"$parent"})) == {"$child"}


def _forks(count: int) -> tuple[ForwardExtremities, list[Event]]:
    """A tracker holding ``count`` forks of a standard room's last event, with depths
    2 to ``count + 1`` in turn (made up: the builder gives them all one depth)."""
    room = standard_room("12")
    base = room.last or ""
    tracker = _track(room.events.values())
    forks = []
    for i in range(count):
        fork = room.build("m.room.message", BOB, {"body": f"{i}"}, prev=[base])
        forks.append(fork)
        tracker.advance(
            fork.event_id, i + 2, [base], EMPTY_STATE, cited=set(), state_of={base: EMPTY_STATE}
        )
    return tracker, forks


def test_deepest_are_the_greatest_depths_first() -> None:
    """``deepest(n)`` gives the ``n`` deepest extremities, deepest first (Synapse cites
    the 10 newest by depth), and does not move them out of the tracker."""
    tracker, forks = _forks(30)
    expected = [f.event_id for f in reversed(forks[-10:])]
    assert tracker.deepest(10) == expected
    assert tracker.deepest(10) == expected
    assert len(tracker) == 30
    assert tracker.deepest(100) == [f.event_id for f in reversed(forks)]


def test_deepest_skips_extremities_that_were_cited() -> None:
    """Extremities cited by a later event are not offered again."""
    tracker, forks = _forks(12)
    merged = [f.event_id for f in forks[-5:]]
    state_of = dict.fromkeys(merged, EMPTY_STATE)
    tracker.advance("$merge", 1, merged, EMPTY_STATE, cited=set(), state_of=state_of)
    assert tracker.deepest(3) == [forks[-6].event_id, forks[-7].event_id, forks[-8].event_id]
    assert "$merge" in tracker.deepest(20)
    assert not set(merged) & set(tracker.deepest(20))


def test_choosing_prev_events_costs_the_same_with_2000_extremities_as_with_10() -> None:
    """Issue 22 row 4: picking the 10 deepest of 2,000 extremities looks at as many heap
    entries as picking them of 10 (a sort of every extremity looked at 2,000); the
    first pick also drops the entries of events cited since (at most twice the
    extremities are kept in the heap)."""

    def examined(count: int) -> int:
        tracker, _ = _forks(count)
        tracker.deepest(10)
        before = tracker.examined
        tracker.deepest(10)
        return tracker.examined - before

    assert examined(2_000) == examined(10) == 10


def test_are_compares_ids_whatever_their_order_and_duplicates() -> None:
    """``are`` is true exactly for the extremities, in any order."""
    tracker, forks = _forks(3)
    ids = [f.event_id for f in forks]
    assert tracker.are(list(reversed(ids)))
    assert tracker.are([*ids, ids[0]])
    assert not tracker.are(ids[:2])
    assert not tracker.are([*ids[:2], "$other"])


def test_distinct_states_are_counted_and_reported_when_they_change() -> None:
    """``take_states`` reports the distinct states once after they change: a new state
    at an extremity, or the last extremity of a state cited; a message that keeps its
    prev's state node changes nothing."""
    tracker = ForwardExtremities()
    first, second = EMPTY_STATE.with_changes({("t", ""): "$a"}), EMPTY_STATE
    tracker.advance("$a", 1, [], first, cited=set(), state_of={})
    assert tracker.take_states() == [first]
    assert tracker.take_states() is None
    tracker.advance("$b", 2, ["$a"], first, cited=set(), state_of={"$a": first})
    assert tracker.take_states() is None
    tracker.advance("$c", 3, ["$b"], second, cited=set(), state_of={"$b": first})
    assert tracker.take_states() == [second]
