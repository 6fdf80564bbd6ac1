"""Shared state maps: deltas over snapshots, and a 10,000-event room's memory."""

from __future__ import annotations

import tracemalloc
from typing import Any

from stubserver.rooms import state_store
from stubserver.rooms.event import Event
from stubserver.rooms.room import Room
from stubserver.rooms.state_store import EMPTY_STATE, MIN_DELTAS_BEFORE_SNAPSHOT, StateNode
from tests.rooms.room_fixtures import ALICE, new_room

# A generous ceiling per event: an Event with its PDU dict is most of it.
MAX_BYTES_PER_EVENT = 8_000


def test_changes_apply_and_removal_works() -> None:
    """with_changes sets and (with None) removes keys; materialise and get agree."""
    node = EMPTY_STATE.with_changes({("a", ""): "$1", ("b", ""): "$2"})
    node = node.with_changes({("a", ""): "$3", ("b", ""): None})
    assert node.materialise() == {("a", ""): "$3"}
    assert node.get(("a", "")) == "$3" and node.get(("b", "")) is None
    assert node.size == 1


def test_no_change_shares_the_node() -> None:
    """Changes that change nothing return the same node (no copy)."""
    node = EMPTY_STATE.with_changes({("a", ""): "$1"})
    assert node.with_changes({("a", ""): "$1"}) is node


def test_long_delta_chains_are_folded_into_snapshots() -> None:
    """A chain never grows past its bound: a snapshot is taken."""
    node: StateNode = EMPTY_STATE
    for i in range(MIN_DELTAS_BEFORE_SNAPSHOT * 3):
        node = node.with_changes({("m.room.member", f"@u{i}:x"): f"${i}"})
        assert node.chain_entries <= max(
            MIN_DELTAS_BEFORE_SNAPSHOT, node.size // state_store.SNAPSHOT_SIZE_DIVISOR
        )
    assert len(node.materialise()) == MIN_DELTAS_BEFORE_SNAPSHOT * 3


def test_diff_to_turns_one_map_into_another() -> None:
    """diff_to gives the changes from a node's map to another map."""
    node = EMPTY_STATE.with_changes({("a", ""): "$1", ("b", ""): "$2"})
    target = {("a", ""): "$9", ("c", ""): "$3"}
    assert node.with_changes(node.diff_to(target)).materialise() == target


def _message(room: Room, n: int, prev: str, depth: int, auth: list[str]) -> Event:
    pdu: dict[str, Any] = {
        "type": "m.room.message",
        "sender": ALICE,
        "content": {"body": f"m{n}"},
        "room_id": room.room_id,
        "prev_events": [prev],
        "auth_events": auth,
        "depth": depth,
        "origin_server_ts": n,
        "hashes": {"sha256": "x"},
        "signatures": {"a.test": {"ed25519:a1": "x"}},
    }
    return Event(event_id=f"$m{n}", room_version=room.room_version, pdu=pdu, room_id=room.room_id)


def test_ten_thousand_messages_share_one_state_map() -> None:
    """10,000 messages add no state copies: every message's state is the same node,
    and the room's memory stays under MAX_BYTES_PER_EVENT per event."""
    room = new_room("12").room
    state = room.current_state
    auth = [state[("m.room.power_levels", "")], state[("m.room.member", ALICE)]]
    (prev,) = room.forward_extremities
    depth = room.get_event(prev).depth  # type: ignore[union-attr]
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for n in range(10_000):
            depth += 1
            event = _message(room, n, prev, depth, auth)
            assert room.add_event(event, n).outcome == "accepted"
            prev = event.event_id
        used = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    assert used < 10_000 * MAX_BYTES_PER_EVENT
    assert room.state_at("$m0") == room.state_at("$m9999") == state
    assert room._state_after["$m0"] is room._state_after["$m9999"]
