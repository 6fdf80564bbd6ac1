"""The authorisation rules, one test per rule, per room version where the rule differs.

Rule numbers are v12's (``content/rooms/v12.md``); v10/v11 number them one lower from
rule 3 on, because v12 added rule 2.
"""

from __future__ import annotations

import pytest

from stubserver.rooms.auth_rules import AuthError, check_auth
from tests.rooms.room_builder import (
    ALICE,
    BOB,
    RoomBuilder,
    allowed,
    make_event,
    rejected,
    standard_room,
)

ALL = ("10", "11", "12")


# --- rule 1: m.room.create ------------------------------------------------------------


@pytest.mark.parametrize("version", ALL)
def test_valid_create_is_allowed(version: str) -> None:
    """A create event with no prev_events, a matching room ID and a known version passes."""
    room = RoomBuilder(version)
    check_auth(room.events["$create"], {})


@pytest.mark.parametrize("version", ALL)
def test_create_with_prev_events_is_rejected(version: str) -> None:
    """Rule 1.1: a create event with prev_events is rejected."""
    room = RoomBuilder(version)
    create = make_event(
        version,
        "$c2",
        "m.room.create",
        ALICE,
        {"creator": ALICE},
        room_id=room.room_id,
        state_key="",
        prev=["$create"],
    )
    with pytest.raises(AuthError, match=r"rule 1\.1"):
        check_auth(create, {})


def test_v12_create_with_room_id_is_rejected() -> None:
    """Rule 1.2 (v12): a create event must not carry a room_id."""
    create = make_event(
        "12", "$c", "m.room.create", ALICE, {}, room_id="!c", state_key="", extra={"room_id": "!c"}
    )
    with pytest.raises(AuthError, match=r"has a room_id \(rule 1\.2\)"):
        check_auth(create, {})


@pytest.mark.parametrize("version", ["10", "11"])
def test_create_room_id_domain_must_match_sender(version: str) -> None:
    """Rule 1.2 (v10/v11): the room ID's domain must be the sender's domain."""
    create = make_event(
        version,
        "$c",
        "m.room.create",
        BOB,
        {"creator": BOB},
        room_id="!room:a.example",
        state_key="",
    )
    with pytest.raises(AuthError, match=r"domain differs"):
        check_auth(create, {})


@pytest.mark.parametrize("version", ALL)
def test_create_with_unknown_room_version_is_rejected(version: str) -> None:
    """Rule 1.3: content.room_version must be a recognised version."""
    room = RoomBuilder(version, create_content={"room_version": "99"})
    with pytest.raises(AuthError, match=r"rule 1\.3"):
        check_auth(room.events["$create"], {})


def test_v10_create_without_creator_is_rejected() -> None:
    """v10 rule 1.4: the create content must have `creator`."""
    create = make_event(
        "10",
        "$c",
        "m.room.create",
        ALICE,
        {"room_version": "10"},
        room_id="!room:a.example",
        state_key="",
    )
    with pytest.raises(AuthError, match="lacks a 'creator'"):
        check_auth(create, {})


@pytest.mark.parametrize("version", ["11", "12"])
def test_v11_plus_create_needs_no_creator(version: str) -> None:
    """v11+: the creator is implicit (the sender); a create without `creator` passes."""
    room = RoomBuilder(version)
    assert "creator" not in room.events["$create"].content
    check_auth(room.events["$create"], {})


@pytest.mark.parametrize("extra", [["bob"], "@bob:b.example", [1], ["@:b.example"]])
def test_v12_additional_creators_must_be_user_ids(extra: object) -> None:
    """v12 rule 1.4: additional_creators must be an array of valid user IDs."""
    room = RoomBuilder("12", create_content={"additional_creators": extra})
    with pytest.raises(AuthError, match=r"rule 1\.4"):
        check_auth(room.events["$create"], {})


def test_v12_valid_additional_creators_are_allowed() -> None:
    """v12 rule 1.4: a list of valid user IDs passes."""
    room = RoomBuilder("12", create_content={"additional_creators": [BOB]})
    check_auth(room.events["$create"], {})


# --- rule 2 (v12), and the create event being present ---------------------------------


def test_v12_room_id_must_be_the_create_event_id() -> None:
    """v12 rule 2: room_id must be "!" + the create event's ID without "$"."""
    room = standard_room("12")
    message = make_event(
        "12", "$m", "m.room.message", ALICE, {}, room_id="!other", prev=[room.last or ""]
    )
    with pytest.raises(AuthError, match=r"rule 2\)"):
        check_auth(message, room.auth_state())


@pytest.mark.parametrize("version", ALL)
def test_missing_create_event_is_rejected(version: str) -> None:
    """A non-create event is rejected when no create event is in its auth state."""
    room = standard_room(version)
    message = room.build("m.room.message", ALICE, {"body": "hi"})
    state = room.auth_state()
    del state[("m.room.create", "")]
    with pytest.raises(AuthError, match="no create event"):
        check_auth(message, state)


# --- rule 4: m.federate ---------------------------------------------------------------


@pytest.mark.parametrize("version", ALL)
def test_unfederated_room_rejects_other_domains(version: str) -> None:
    """Rule 4: with m.federate false, events from another domain are rejected."""
    room = standard_room(version, create_content={"m.federate": False})
    rejected(
        room, room.build("m.room.member", BOB, {"membership": "join"}, state_key=BOB), "rule 4"
    )


@pytest.mark.parametrize("version", ALL)
def test_unfederated_room_allows_the_creators_domain(version: str) -> None:
    """Rule 4: with m.federate false, the create sender's domain may still send."""
    room = standard_room(version, create_content={"m.federate": False})
    allowed(room, room.build("m.room.message", ALICE, {"body": "hi"}))


# --- rules 6-9 ------------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL)
def test_non_member_cannot_send(version: str) -> None:
    """Rule 6: a sender who is not joined cannot send other events."""
    room = standard_room(version)
    rejected(room, room.build("m.room.message", BOB, {"body": "hi"}), "rule 6")


def test_third_party_invite_event_needs_invite_level() -> None:
    """Rule 7: m.room.third_party_invite needs the invite level, not state_default."""
    room = standard_room("12")
    room.member(BOB, "join")
    event = room.build("m.room.third_party_invite", BOB, {"public_key": "x"}, state_key="t")
    allowed(room, event)
    room.send("m.room.power_levels", ALICE, {"invite": 10}, state_key="")
    rejected(room, event, "rule 7")


@pytest.mark.parametrize("version", ALL)
def test_state_event_below_state_default_is_rejected(version: str) -> None:
    """Rule 8: state events need state_default (50) unless `events` says otherwise."""
    room = standard_room(version)
    room.member(BOB, "join")
    rejected(room, room.build("m.room.name", BOB, {"name": "x"}, state_key=""), "rule 8")


def test_message_at_events_default_is_allowed() -> None:
    """Rule 8: messages need events_default (0)."""
    room = standard_room("12")
    room.member(BOB, "join")
    allowed(room, room.build("m.room.message", BOB, {"body": "hi"}))


def test_events_entry_overrides_the_default() -> None:
    """Rule 8: an `events` entry sets the level for its type."""
    room = standard_room("12")
    room.send("m.room.power_levels", ALICE, {"events": {"m.room.message": 10}}, state_key="")
    room.member(BOB, "join")
    rejected(room, room.build("m.room.message", BOB, {"body": "hi"}), "rule 8")


def test_state_key_naming_another_user_is_rejected() -> None:
    """Rule 9: a state_key starting with @ must be the sender."""
    room = standard_room("12")
    rejected(room, room.build("m.custom", ALICE, {}, state_key=BOB), "rule 9")
    allowed(room, room.build("m.custom", ALICE, {}, state_key=ALICE))


@pytest.mark.parametrize("version", ALL)
def test_redaction_ignores_the_redact_level(version: str) -> None:
    """Redactions pass auth like any message: the redact level is not an auth rule."""
    room = standard_room(version)
    room.member(BOB, "join")
    target = room.send("m.room.message", ALICE, {"body": "hi"}).event_id
    extra = {"redacts": target} if version == "10" else None
    content = {} if version == "10" else {"redacts": target}
    redaction = room.build("m.room.redaction", BOB, content, extra=extra)
    assert redaction.redacts == target
    allowed(room, redaction)
