"""A room resolves the same states once, not again for the next event (issue 23), and
resolves them again after it has rejected an event."""

from __future__ import annotations

from stubserver.devtools import room_attacks
from stubserver.rooms.recent_resolutions import RecentResolutions
from stubserver.rooms.room import Room
from stubserver.rooms.state_store import EMPTY_STATE
from tests.rooms.room_fixtures import ALICE, BOB, join, new_room, send


def forked_room() -> Room:
    """A v12 room where Bob changed his displayname on two forks: two forward
    extremities with conflicting states, resolved once into the current state."""
    room = new_room("12").room
    join(room, BOB)
    room_attacks.forks(room, BOB, 2, conflicting=True)
    assert room.resolution_work.resolutions == 1
    return room


def test_the_state_before_an_event_citing_the_forks_is_the_resolution_already_made() -> None:
    """Alice's message citing both forks has the current state as its state before: the
    forks' states are not resolved a second time (before: twice)."""
    room = forked_room()
    merged = send(room, ALICE, "m.room.message", {"body": "merge"})
    assert merged.outcome == "accepted"
    assert len(merged.event.prev_event_ids) == 2
    assert room.resolution_work.resolutions == 1


def test_a_rejected_event_makes_the_same_states_resolved_again() -> None:
    """After the room rejects an event (what a resolution reads), the forks' states are
    resolved anew for the next event citing them."""
    room = forked_room()
    rejected = send(room, "@eve:b.test", "m.room.message", {"body": "not a member"})
    assert rejected.outcome == "rejected"
    assert room.resolution_work.resolutions == 1
    assert send(room, ALICE, "m.room.message", {"body": "merge"}).outcome == "accepted"
    assert room.resolution_work.resolutions == 2


def test_the_oldest_resolution_is_forgotten_first() -> None:
    """Past its capacity the memory forgets the oldest set of nodes; a set remembered
    with another count of rejected events is not answered."""
    nodes = [EMPTY_STATE.with_changes({("m.room.member", f"@u{i}:a.test"): "$e"}) for i in range(4)]
    recent = RecentResolutions(capacity=2)
    recent.remember(nodes[0:2], 0, nodes[0])
    recent.remember(nodes[1:3], 0, nodes[1])
    assert recent.get(list(reversed(nodes[0:2])), 0) is nodes[0]
    assert recent.get(nodes[0:2], 1) is None
    recent.remember(nodes[2:4], 0, nodes[2])
    assert recent.get(nodes[0:2], 0) is None
    assert recent.get(nodes[1:3], 0) is nodes[1]
