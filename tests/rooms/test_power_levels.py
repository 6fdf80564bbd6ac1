"""Power levels: who has which level (per room version), and rule 10 (v10/v11: rule 9),
the checks on an m.room.power_levels event."""

from __future__ import annotations

from typing import Any

import pytest

from stubserver.rooms.auth_rules import AuthError, check_auth
from stubserver.rooms.power_levels import (
    CREATOR_POWER_LEVEL,
    may_redact_others,
    named_level,
    required_power_level,
    user_power_level,
)
from tests.rooms.room_builder import ALICE, BOB, CAROL, RoomBuilder, standard_room

ALL = ("10", "11", "12")


def _levels(version: str, **content: Any) -> dict[str, Any]:
    users = dict(content.pop("users", {}))
    if version != "12":
        users.setdefault(ALICE, 100)
    return {"users": users, **content}


def _check_levels(room: RoomBuilder, sender: str, content: dict[str, Any]) -> None:
    event = room.build("m.room.power_levels", sender, content, state_key="")
    check_auth(event, room.auth_state())


# --- levels without and with a power levels event -------------------------------------


@pytest.mark.parametrize("version", ["10", "11"])
def test_without_power_levels_the_creator_has_100(version: str) -> None:
    """No m.room.power_levels: the creator has 100 and everyone else 0 (v10/v11)."""
    room = RoomBuilder(version)
    room.member(ALICE, "join")
    assert user_power_level(ALICE, room.auth_state()) == 100
    assert user_power_level(BOB, room.auth_state()) == 0


def test_v10_creator_is_content_creator() -> None:
    """v10: the creator is content.creator, not the create event's sender."""
    room = RoomBuilder("10", creator=ALICE, create_content={"creator": CAROL})
    assert user_power_level(CAROL, room.auth_state()) == 100
    assert user_power_level(ALICE, room.auth_state()) == 0


def test_v11_creator_is_the_sender() -> None:
    """v11: content.creator is ignored; the sender is the creator."""
    room = RoomBuilder("11", creator=ALICE, create_content={"creator": CAROL})
    assert user_power_level(ALICE, room.auth_state()) == 100
    assert user_power_level(CAROL, room.auth_state()) == 0


def test_v12_creators_have_infinite_power() -> None:
    """v12: the sender and additional_creators have 2**53, with or without power levels."""
    room = RoomBuilder("12", create_content={"additional_creators": [BOB]})
    assert user_power_level(ALICE, room.auth_state()) == CREATOR_POWER_LEVEL
    assert user_power_level(BOB, room.auth_state()) == CREATOR_POWER_LEVEL
    room.member(ALICE, "join")
    room.send("m.room.power_levels", ALICE, {"users_default": 10}, state_key="")
    assert user_power_level(BOB, room.auth_state()) == CREATOR_POWER_LEVEL
    assert user_power_level(CAROL, room.auth_state()) == 10


def test_v11_additional_creators_mean_nothing() -> None:
    """Before v12, additional_creators gives no power."""
    room = RoomBuilder("11", create_content={"additional_creators": [BOB]})
    assert user_power_level(BOB, room.auth_state()) == 0


def test_default_levels() -> None:
    """Defaults: state_default 50, events_default 0, invite 0, kick/ban/redact 50."""
    room = RoomBuilder("11")
    state = room.auth_state()
    assert required_power_level("m.room.name", True, state) == 50
    assert required_power_level("m.room.message", False, state) == 0
    assert [named_level(n, state) for n in ("invite", "kick", "ban", "redact")] == [0, 50, 50, 50]


def test_users_default_applies_to_unlisted_users() -> None:
    """users_default is the level of users not in `users`."""
    room = standard_room("12")
    room.send("m.room.power_levels", ALICE, {"users_default": 7}, state_key="")
    assert user_power_level(BOB, room.auth_state()) == 7


def test_may_redact_others_follows_the_redact_level() -> None:
    """After auth, a redaction by a sender with the redact level may redact anyone's."""
    room = standard_room("11", users={BOB: 50})
    room.member(BOB, "join")
    room.member(CAROL, "join")
    state = room.auth_state()
    assert may_redact_others(room.build("m.room.redaction", BOB, {"redacts": "$x"}), state)
    assert not may_redact_others(room.build("m.room.redaction", CAROL, {"redacts": "$x"}), state)


# --- rule 10 ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize("value", ["50", 50.5, True, None])
def test_level_values_must_be_integers(version: str, value: object) -> None:
    """Rule 10.1 (enforce_int_power_levels): levels are JSON integers, not strings,
    floats, booleans or null."""
    room = standard_room(version)
    with pytest.raises(AuthError, match=r"rule 10\.1"):
        _check_levels(room, ALICE, _levels(version, ban=value))


@pytest.mark.parametrize("events", [{"m.room.name": "50"}, [], {"m.room.name": False}])
def test_events_must_map_to_integers(events: object) -> None:
    """Rule 10.2: `events` is an object of integers."""
    room = standard_room("12")
    with pytest.raises(AuthError, match=r"rule 10\.2"):
        _check_levels(room, ALICE, _levels("12", events=events))


@pytest.mark.parametrize("users", [{"bob": 10}, {BOB: "10"}, [BOB]])
def test_users_must_map_user_ids_to_integers(users: object) -> None:
    """Rule 10.3: `users` maps valid user IDs to integers."""
    room = standard_room("12")
    with pytest.raises(AuthError, match=r"rule 10\.3"):
        _check_levels(room, ALICE, {"users": users})


def test_v12_power_levels_must_not_list_the_creator() -> None:
    """v12 rule 10.4: the create event's sender must not be in `users`."""
    room = standard_room("12")
    with pytest.raises(AuthError, match=r"rule 10\.4"):
        _check_levels(room, ALICE, {"users": {ALICE: 100}})


def test_v12_power_levels_must_not_list_additional_creators() -> None:
    """v12 rule 10.4: additional_creators must not be in `users` either."""
    room = standard_room("12", create_content={"additional_creators": [BOB]})
    with pytest.raises(AuthError, match=r"rule 10\.4"):
        _check_levels(room, ALICE, {"users": {BOB: 1}})


@pytest.mark.parametrize("version", ["10", "11"])
def test_v10_v11_power_levels_may_list_the_creator(version: str) -> None:
    """Before v12 the creator is listed in `users` as usual."""
    room = standard_room(version)
    _check_levels(room, ALICE, {"users": {ALICE: 100, BOB: 50}})


@pytest.mark.parametrize("version", ALL)
def test_first_power_levels_event_is_allowed(version: str) -> None:
    """Rule 10.5: with no previous power levels event, any well-formed one passes."""
    room = RoomBuilder(version)
    room.member(ALICE, "join")
    _check_levels(room, ALICE, _levels(version, users={BOB: 100}, ban=100))


def test_cannot_set_a_level_above_own() -> None:
    """Rule 10.6.2: a named level may not be set above the sender's level."""
    room = standard_room("11", users={BOB: 60})
    room.member(BOB, "join")
    with pytest.raises(AuthError, match=r"rule 10\.6"):
        _check_levels(room, BOB, _levels("11", users={BOB: 60}, ban=70))


def test_cannot_change_a_level_currently_above_own() -> None:
    """Rule 10.6.1: a named level currently above the sender's may not change."""
    room = standard_room("11", users={BOB: 60})
    room.send("m.room.power_levels", ALICE, _levels("11", users={BOB: 60}, ban=80), state_key="")
    room.member(BOB, "join")
    with pytest.raises(AuthError, match=r"rule 10\.6"):
        _check_levels(room, BOB, _levels("11", users={BOB: 60}, ban=10))


def test_events_entry_above_own_level_cannot_be_changed_or_added() -> None:
    """Rules 10.7-10.8: `events` entries above the sender's level, old or new, block it."""
    room = standard_room("12", users={BOB: 60})
    room.send(
        "m.room.power_levels",
        ALICE,
        {"users": {BOB: 60}, "events": {"m.room.tombstone": 150}},
        state_key="",
    )
    room.member(BOB, "join")
    with pytest.raises(AuthError, match=r"rules 10\.7-10\.8"):
        _check_levels(room, BOB, {"users": {BOB: 60}, "events": {}})
    with pytest.raises(AuthError, match=r"rules 10\.7-10\.8"):
        _check_levels(
            room, BOB, {"users": {BOB: 60}, "events": {"m.room.tombstone": 150, "m.x": 61}}
        )
    _check_levels(room, BOB, {"users": {BOB: 60}, "events": {"m.room.tombstone": 150, "m.x": 60}})


def test_cannot_change_a_user_at_own_level() -> None:
    """Rule 10.9: another user's entry at or above the sender's level may not change."""
    room = standard_room("12", users={BOB: 60, CAROL: 60})
    room.member(BOB, "join")
    with pytest.raises(AuthError, match=r"rule 10\.9"):
        _check_levels(room, BOB, {"users": {BOB: 60}})


def test_may_lower_own_level() -> None:
    """Rule 10.9 exempts the sender's own entry: users may demote themselves."""
    room = standard_room("12", users={BOB: 60})
    room.member(BOB, "join")
    _check_levels(room, BOB, {"users": {BOB: 10}})


def test_cannot_raise_a_user_above_own_level() -> None:
    """Rule 10.10: no user may be given more than the sender's level."""
    room = standard_room("12", users={BOB: 60})
    room.member(BOB, "join")
    with pytest.raises(AuthError, match=r"rule 10\.10"):
        _check_levels(room, BOB, {"users": {BOB: 60, CAROL: 61}})
    _check_levels(room, BOB, {"users": {BOB: 60, CAROL: 60}})


def test_v12_creator_may_change_anything() -> None:
    """v12: a creator's infinite level passes every rule 10 comparison."""
    room = standard_room("12", users={BOB: 100})
    _check_levels(room, ALICE, {"users": {BOB: 0, CAROL: 2**53 - 1}, "ban": 9000})


def test_v11_creator_is_bounded_by_own_level() -> None:
    """v11: the creator is an ordinary user at its `users` level (100)."""
    room = standard_room("11")
    with pytest.raises(AuthError, match=r"rule 10\.10"):
        _check_levels(room, ALICE, {"users": {ALICE: 100, CAROL: 101}})
