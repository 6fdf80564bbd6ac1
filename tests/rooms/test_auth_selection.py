"""Auth events selection (Server-Server API) and the state-independent checks on an
event's own auth_events (v12 rule 3; v10/v11 rule 2)."""

from __future__ import annotations

import pytest

from stubserver.rooms.auth_rules import (
    AuthError,
    auth_types_for_event,
    check_auth_events_selection,
)
from stubserver.rooms.event import Event
from stubserver.rooms.versions import room_version
from tests.rooms.room_builder import ALICE, BOB, CAROL, RoomBuilder, make_event, standard_room

ALL = ("10", "11", "12")
CREATE = ("m.room.create", "")
PL = ("m.room.power_levels", "")
JR = ("m.room.join_rules", "")


def _auth_events(room: RoomBuilder, event: Event) -> list[Event]:
    return [room.events[i] for i in event.auth_event_ids]


@pytest.mark.parametrize("version", ["10", "11"])
def test_v10_v11_select_the_create_event(version: str) -> None:
    """v10/v11: the create event is part of every selection."""
    types = auth_types_for_event(room_version(version), "m.room.message", None, BOB, {})
    assert types == {CREATE, PL, ("m.room.member", BOB)}


def test_v12_never_selects_the_create_event() -> None:
    """v12: the create event MUST NOT be selected; room_id implies it."""
    types = auth_types_for_event(room_version("12"), "m.room.message", None, BOB, {})
    assert types == {PL, ("m.room.member", BOB)}


@pytest.mark.parametrize("version", ALL)
def test_create_event_selects_nothing(version: str) -> None:
    """The create event's auth_events are empty."""
    assert auth_types_for_event(room_version(version), "m.room.create", "", ALICE, {}) == set()


@pytest.mark.parametrize("membership", ["join", "invite", "knock"])
def test_join_invite_knock_select_join_rules(membership: str) -> None:
    """Member events with join, invite or knock also select the target and join rules."""
    types = auth_types_for_event(
        room_version("12"), "m.room.member", CAROL, BOB, {"membership": membership}
    )
    assert types == {PL, ("m.room.member", BOB), ("m.room.member", CAROL), JR}


@pytest.mark.parametrize("membership", ["leave", "ban"])
def test_leave_and_ban_do_not_select_join_rules(membership: str) -> None:
    """Leave and ban select the target's membership but not the join rules."""
    types = auth_types_for_event(
        room_version("12"), "m.room.member", CAROL, BOB, {"membership": membership}
    )
    assert types == {PL, ("m.room.member", BOB), ("m.room.member", CAROL)}


def test_third_party_invite_selects_the_token() -> None:
    """A 3pid invite selects m.room.third_party_invite for signed.token."""
    content = {"membership": "invite", "third_party_invite": {"signed": {"token": "tok"}}}
    types = auth_types_for_event(room_version("11"), "m.room.member", CAROL, BOB, content)
    assert ("m.room.third_party_invite", "tok") in types


def test_restricted_join_selects_the_authorisers_membership() -> None:
    """A join with join_authorised_via_users_server selects that user's membership."""
    content = {"membership": "join", "join_authorised_via_users_server": ALICE}
    types = auth_types_for_event(room_version("12"), "m.room.member", BOB, BOB, content)
    assert ("m.room.member", ALICE) in types


@pytest.mark.parametrize("version", ALL)
def test_correct_selection_passes(version: str) -> None:
    """An event citing exactly the selected state passes the checks."""
    room = standard_room(version)
    join = room.build("m.room.member", BOB, {"membership": "join"}, state_key=BOB)
    check_auth_events_selection(join, _auth_events(room, join))


@pytest.mark.parametrize("version", ALL)
def test_auth_event_from_another_room_is_rejected(version: str) -> None:
    """Rule 3.5: every auth event must be in the event's room."""
    room = standard_room(version)
    message = room.build("m.room.message", ALICE, {})
    other = make_event(
        version,
        "$other-pl",
        "m.room.power_levels",
        ALICE,
        {},
        room_id="!elsewhere:a.example",
        state_key="",
    )
    auth = [e for e in _auth_events(room, message) if e.type != "m.room.power_levels"]
    with pytest.raises(AuthError, match="another room"):
        check_auth_events_selection(message, [*auth, other])


@pytest.mark.parametrize("version", ALL)
def test_duplicate_auth_entries_are_rejected(version: str) -> None:
    """Rule 3.1: two auth events for one (type, state_key) are rejected."""
    room = standard_room(version)
    old_pl = room.state[PL]
    room.send("m.room.power_levels", ALICE, room.events[old_pl].content, state_key="")
    message = room.build("m.room.message", ALICE, {})
    with pytest.raises(AuthError, match="duplicate"):
        check_auth_events_selection(message, [*_auth_events(room, message), room.events[old_pl]])


@pytest.mark.parametrize("version", ALL)
def test_unselected_auth_event_is_rejected(version: str) -> None:
    """Rule 3.2: join rules cited by a message is an unexpected auth_event."""
    room = standard_room(version)
    message = room.build("m.room.message", ALICE, {})
    with pytest.raises(AuthError, match="unexpected auth_event"):
        check_auth_events_selection(
            message, [*_auth_events(room, message), room.events[room.state[JR]]]
        )


def test_v12_listed_create_event_is_unexpected() -> None:
    """v12 rule 3.2: listing the create event is an unexpected auth_event."""
    room = standard_room("12")
    message = room.build("m.room.message", ALICE, {})
    with pytest.raises(AuthError, match="unexpected auth_event"):
        check_auth_events_selection(message, [*_auth_events(room, message), room.events["$create"]])


@pytest.mark.parametrize("version", ["10", "11"])
def test_v10_v11_missing_create_event_is_rejected(version: str) -> None:
    """v10/v11 rule 2.4: the create event must be among the auth events."""
    room = standard_room(version)
    message = room.build("m.room.message", ALICE, {})
    auth = [e for e in _auth_events(room, message) if e.type != "m.room.create"]
    with pytest.raises(AuthError, match="no create event"):
        check_auth_events_selection(message, auth)


def test_v12_create_event_is_implied() -> None:
    """v12: auth events without the create event pass (room_id implies it)."""
    room = standard_room("12")
    message = room.build("m.room.message", ALICE, {})
    assert "$create" not in message.auth_event_ids
    check_auth_events_selection(message, _auth_events(room, message))


def test_create_event_with_auth_events_is_rejected() -> None:
    """The create event cites no auth events: any entry is unexpected."""
    room = RoomBuilder("11")
    create = room.events["$create"]
    with pytest.raises(AuthError, match="unexpected auth_event"):
        check_auth_events_selection(create, [create])
