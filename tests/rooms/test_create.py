"""Rooms we host: Synapse's presets in v10, v11 and v12 (rooms.md 3.8)."""

from __future__ import annotations

from typing import Any

import pytest

from stubserver.rooms.auth_rules import check_auth
from stubserver.rooms.create import PRESETS
from tests.rooms.room_fixtures import ALICE, VERSIONS, new_room

ALL = pytest.mark.parametrize("version", VERSIONS)
BOTH = pytest.mark.parametrize("preset", PRESETS)


def _content(created: Any, key: tuple[str, str]) -> Any:
    return created.room.get_event(created.room.current_state[key]).content


@ALL
@BOTH
def test_every_initial_event_is_accepted_by_our_own_checks(version: str, preset: str) -> None:
    """Each event of a new room passes the checks on receipt and, re-checked against
    its own auth events, the auth rules."""
    created = new_room(version, preset, name="Room", alias="#r:a.test")
    room = created.room
    records = room.events_since(0)
    assert [r.event_id for r in records] == [b.event.event_id for b in created.events]
    assert {r.outcome for r in records} == {"accepted"}
    for built in created.events:
        event = built.event
        auth_events = [room.get_event(a) for a in event.auth_event_ids]
        auth = {e.state_tuple(): e for e in auth_events if e is not None}
        if version == "12" and event.type != "m.room.create":
            create = room.get_event("$" + room.room_id[1:])
            assert create is not None
            auth[("m.room.create", "")] = create
        check_auth(event, auth)


@ALL
@BOTH
def test_the_initial_state_is_the_presets(version: str, preset: str) -> None:
    """State: create, the creator joined, power levels, join rules (public or invite),
    shared history; the room is linear with one extremity."""
    created = new_room(version, preset)
    room = created.room
    assert set(room.current_state) >= {
        ("m.room.create", ""),
        ("m.room.member", ALICE),
        ("m.room.power_levels", ""),
        ("m.room.join_rules", ""),
        ("m.room.history_visibility", ""),
    }
    expected_rule = "public" if preset == "public_chat" else "invite"
    assert _content(created, ("m.room.join_rules", "")) == {"join_rule": expected_rule}
    assert _content(created, ("m.room.history_visibility", "")) == {"history_visibility": "shared"}
    assert room.members == {ALICE: "join"}
    assert room.servers == ["a.test"]
    assert room.forward_extremities == {created.events[-1].event.event_id}
    power = _content(created, ("m.room.power_levels", ""))
    assert power["invite"] == (50 if preset == "public_chat" else 0)


@ALL
def test_the_creator_is_in_power_levels_users_except_in_v12(version: str) -> None:
    """v12: creators have infinite power and are NOT in users; v10/11: users
    {creator: 100}."""
    power = _content(new_room(version), ("m.room.power_levels", ""))
    assert power["users"] == ({} if version == "12" else {ALICE: 100})


@ALL
def test_name_and_alias_are_state(version: str) -> None:
    """With a name and an alias, m.room.name and m.room.canonical_alias are in state."""
    created = new_room(version, name="Hello", alias="#hello:a.test")
    assert _content(created, ("m.room.name", "")) == {"name": "Hello"}
    assert _content(created, ("m.room.canonical_alias", "")) == {"alias": "#hello:a.test"}


def test_v12_room_id_is_the_create_events_hash() -> None:
    """A v12 room's ID is "!" + its create event's ID without the sigil."""
    created = new_room("12")
    assert created.room.room_id == "!" + created.events[0].event.event_id[1:]


def test_an_unknown_preset_is_refused() -> None:
    """Only public_chat and private_chat exist."""
    with pytest.raises(ValueError, match="unknown preset"):
        new_room("12", "trusted_private_chat")
