"""The authorisation rules for m.room.member (rule 5; v10/v11 rule 4), one test per rule,
per room version where the rule differs.

Rule numbers are v12's (``content/rooms/v12.md``); v10/v11 number them one lower from
rule 3 on, because v12 added rule 2.
"""

from __future__ import annotations

import pytest

from stubserver.rooms.event import Event
from tests.rooms.room_builder import (
    ALICE,
    BOB,
    CAROL,
    RoomBuilder,
    allowed,
    rejected,
    standard_room,
)

ALL = ("10", "11", "12")


# --- rule 5: m.room.member ------------------------------------------------------------


@pytest.mark.parametrize("version", ALL)
def test_member_without_membership_is_rejected(version: str) -> None:
    """Rule 5.1: a member event needs content.membership."""
    room = standard_room(version)
    rejected(room, room.build("m.room.member", BOB, {}, state_key=BOB), "rule 5.1")


@pytest.mark.parametrize("version", ALL)
def test_authorised_join_needs_the_authorising_servers_signature(version: str) -> None:
    """Rule 5.2: join_authorised_via_users_server requires that server's signature."""
    room = standard_room(version, join_rule="restricted")
    join = room.build(
        "m.room.member",
        BOB,
        {"membership": "join", "join_authorised_via_users_server": ALICE},
        state_key=BOB,
    )
    rejected(room, join, "rule 5.2")


@pytest.mark.parametrize("version", ALL)
def test_first_join_by_creator_after_create_is_allowed(version: str) -> None:
    """Rule 5.3.1: the creator's join directly after the create event is allowed, with
    no join rules or power levels yet (v10: content.creator; v11+: the sender)."""
    room = RoomBuilder(version)
    allowed(room, room.build("m.room.member", ALICE, {"membership": "join"}, state_key=ALICE))


@pytest.mark.parametrize("version", ALL)
def test_first_join_by_someone_else_is_rejected(version: str) -> None:
    """Rule 5.3.1 does not cover non-creators: with no join rules the room is invite-only."""
    room = RoomBuilder(version)
    rejected(
        room, room.build("m.room.member", BOB, {"membership": "join"}, state_key=BOB), "rule 5.3.4"
    )


def test_v10_first_join_uses_content_creator_not_sender() -> None:
    """v10 rule 5.3.1: the creator is content.creator, even when another user sent it."""
    room = RoomBuilder("10", creator=ALICE, create_content={"creator": CAROL})
    allowed(room, room.build("m.room.member", CAROL, {"membership": "join"}, state_key=CAROL))


@pytest.mark.parametrize("version", ALL)
def test_join_for_someone_else_is_rejected(version: str) -> None:
    """Rule 5.3.2: a join's sender must be its state_key."""
    room = standard_room(version)
    rejected(
        room,
        room.build("m.room.member", ALICE, {"membership": "join"}, state_key=BOB),
        "rule 5.3.2",
    )


@pytest.mark.parametrize("version", ALL)
def test_banned_user_cannot_join(version: str) -> None:
    """Rule 5.3.3: a banned user's join is rejected, even in a public room."""
    room = standard_room(version)
    room.member(BOB, "ban", ALICE)
    rejected(
        room, room.build("m.room.member", BOB, {"membership": "join"}, state_key=BOB), "rule 5.3.3"
    )


@pytest.mark.parametrize("rule", ["invite", "knock"])
def test_invite_only_join_needs_an_invite(rule: str) -> None:
    """Rule 5.3.4: in invite or knock rooms an uninvited join is rejected."""
    room = standard_room("12", join_rule=rule)
    rejected(
        room, room.build("m.room.member", BOB, {"membership": "join"}, state_key=BOB), "rule 5.3.4"
    )


@pytest.mark.parametrize("rule", ["invite", "knock"])
def test_invite_only_join_with_an_invite_is_allowed(rule: str) -> None:
    """Rule 5.3.4: in invite or knock rooms an invited user may join."""
    room = standard_room("12", join_rule=rule)
    room.member(BOB, "invite", ALICE)
    allowed(room, room.build("m.room.member", BOB, {"membership": "join"}, state_key=BOB))


@pytest.mark.parametrize("rule", ["restricted", "knock_restricted"])
def test_restricted_join_by_invited_user_is_allowed(rule: str) -> None:
    """Rule 5.3.5.1: in restricted rooms an invited user may join without an authoriser."""
    room = standard_room("11", join_rule=rule)
    room.member(BOB, "invite", ALICE)
    allowed(room, room.build("m.room.member", BOB, {"membership": "join"}, state_key=BOB))


def _authorised_join(room: RoomBuilder, authoriser: str) -> Event:
    return room.build(
        "m.room.member",
        CAROL,
        {"membership": "join", "join_authorised_via_users_server": authoriser},
        state_key=CAROL,
        extra={"signatures": {"c.example": {}, authoriser.split(":")[1]: {}}},
    )


@pytest.mark.parametrize("version", ALL)
def test_restricted_join_via_joined_authoriser_is_allowed(version: str) -> None:
    """Rule 5.3.5.3: a joined authoriser with the invite level admits the join."""
    room = standard_room(version, join_rule="restricted")
    allowed(room, _authorised_join(room, ALICE))


def test_restricted_join_via_unjoined_authoriser_is_rejected() -> None:
    """Rule 5.3.5.2: the authoriser must be joined."""
    room = standard_room("12", join_rule="restricted")
    rejected(room, _authorised_join(room, BOB), "not a joined member")


def test_restricted_join_via_authoriser_without_invite_level_is_rejected() -> None:
    """Rule 5.3.5.2: the authoriser must have the invite level."""
    room = standard_room("12", join_rule="restricted")
    room.send("m.room.power_levels", ALICE, {"invite": 50}, state_key="")
    room.member(BOB, "join")
    rejected(room, _authorised_join(room, BOB), "lacks the invite level")


@pytest.mark.parametrize("version", ALL)
def test_public_join_is_allowed(version: str) -> None:
    """Rule 5.3.6: anyone not banned may join a public room."""
    room = standard_room(version)
    allowed(room, room.build("m.room.member", BOB, {"membership": "join"}, state_key=BOB))


def test_unknown_join_rule_is_rejected() -> None:
    """Rule 5.3.7: any other join rule (e.g. "private") rejects the join."""
    room = standard_room("12", join_rule="private")
    rejected(
        room, room.build("m.room.member", BOB, {"membership": "join"}, state_key=BOB), "rule 5.3.7"
    )


@pytest.mark.parametrize("version", ALL)
def test_invite_by_a_joined_member_with_invite_level_is_allowed(version: str) -> None:
    """Rule 5.4.4: invite level defaults to 0, so any joined member may invite."""
    room = standard_room(version)
    room.member(BOB, "join")
    allowed(room, room.build("m.room.member", BOB, {"membership": "invite"}, state_key=CAROL))


def test_invite_by_a_non_member_is_rejected() -> None:
    """Rule 5.4.2: the inviter must be joined."""
    room = standard_room("12")
    rejected(
        room,
        room.build("m.room.member", BOB, {"membership": "invite"}, state_key=CAROL),
        "rule 5.4.2",
    )


@pytest.mark.parametrize("membership", ["join", "ban"])
def test_invite_of_joined_or_banned_user_is_rejected(membership: str) -> None:
    """Rule 5.4.3: the invitee must not be joined or banned."""
    room = standard_room("12")
    room.member(BOB, membership, ALICE if membership == "ban" else BOB)
    rejected(
        room,
        room.build("m.room.member", ALICE, {"membership": "invite"}, state_key=BOB),
        "rule 5.4.3",
    )


def test_invite_below_invite_level_is_rejected() -> None:
    """Rule 5.4.5: a sender below the invite level may not invite."""
    room = standard_room("12")
    room.send("m.room.power_levels", ALICE, {"invite": 50}, state_key="")
    room.member(BOB, "join")
    rejected(
        room,
        room.build("m.room.member", BOB, {"membership": "invite"}, state_key=CAROL),
        "rule 5.4.5",
    )


@pytest.mark.parametrize("version", ALL)
def test_leave_of_own_join_is_allowed(version: str) -> None:
    """Rule 5.5.1: a joined user may leave."""
    room = standard_room(version)
    room.member(BOB, "join")
    allowed(room, room.build("m.room.member", BOB, {"membership": "leave"}, state_key=BOB))


@pytest.mark.parametrize("membership", ["invite", "knock"])
def test_rejecting_an_invite_or_rescinding_a_knock_is_allowed(membership: str) -> None:
    """Rule 5.5.1: leaving from invite or knock is allowed."""
    room = standard_room("12", join_rule="knock")
    room.member(BOB, membership, ALICE if membership == "invite" else BOB)
    allowed(room, room.build("m.room.member", BOB, {"membership": "leave"}, state_key=BOB))


@pytest.mark.parametrize("previous", [None, "ban"])
def test_leave_without_membership_or_from_ban_is_rejected(previous: str | None) -> None:
    """Rule 5.5.1: a user who is not in the room, or banned, cannot leave (unban self)."""
    room = standard_room("12")
    if previous:
        room.member(BOB, previous, ALICE)
    rejected(
        room, room.build("m.room.member", BOB, {"membership": "leave"}, state_key=BOB), "rule 5.5.1"
    )


def test_kick_by_non_member_is_rejected() -> None:
    """Rule 5.5.2: a kicker must be joined."""
    room = standard_room("11")
    room.member(BOB, "join")
    rejected(
        room,
        room.build("m.room.member", CAROL, {"membership": "leave"}, state_key=BOB),
        "rule 5.5.2",
    )


@pytest.mark.parametrize("version", ALL)
def test_unban_needs_the_ban_level(version: str) -> None:
    """Rule 5.5.3: unbanning needs the ban level as well as the kick level."""
    room = standard_room(version, users={BOB: 60})
    room.send(
        "m.room.power_levels",
        ALICE,
        {"users": {**({} if version == "12" else {ALICE: 100}), BOB: 60}, "kick": 50, "ban": 70},
        state_key="",
    )
    room.member(BOB, "join")
    room.member(CAROL, "ban", ALICE)
    rejected(
        room,
        room.build("m.room.member", BOB, {"membership": "leave"}, state_key=CAROL),
        "rule 5.5.3",
    )


@pytest.mark.parametrize("version", ALL)
def test_kick_by_higher_user_with_kick_level_is_allowed(version: str) -> None:
    """Rule 5.5.4: kick level and more power than the target allow a kick."""
    room = standard_room(version)
    room.member(BOB, "join")
    allowed(room, room.build("m.room.member", ALICE, {"membership": "leave"}, state_key=BOB))


def test_kick_below_kick_level_is_rejected() -> None:
    """Rule 5.5.4: a sender below the kick level cannot kick."""
    room = standard_room("12")
    room.member(BOB, "join")
    room.member(CAROL, "join")
    rejected(
        room,
        room.build("m.room.member", BOB, {"membership": "leave"}, state_key=CAROL),
        "kick level",
    )


def test_kick_of_equal_power_user_is_rejected() -> None:
    """Rule 5.5.4: the target's level must be below the sender's."""
    room = standard_room("11", users={BOB: 100})
    room.member(BOB, "join")
    rejected(
        room,
        room.build("m.room.member", ALICE, {"membership": "leave"}, state_key=BOB),
        "not below",
    )


def test_ban_by_non_member_is_rejected() -> None:
    """Rule 5.6.1: a banner must be joined."""
    room = standard_room("12", users={BOB: 50})
    rejected(
        room, room.build("m.room.member", BOB, {"membership": "ban"}, state_key=CAROL), "rule 5.6.1"
    )


@pytest.mark.parametrize("version", ALL)
def test_ban_with_ban_level_is_allowed(version: str) -> None:
    """Rule 5.6.2: ban level and more power than the target allow a ban."""
    room = standard_room(version)
    allowed(room, room.build("m.room.member", ALICE, {"membership": "ban"}, state_key=BOB))


def test_ban_below_ban_level_is_rejected() -> None:
    """Rule 5.6.2: a sender below the ban level cannot ban."""
    room = standard_room("12")
    room.member(BOB, "join")
    rejected(
        room, room.build("m.room.member", BOB, {"membership": "ban"}, state_key=CAROL), "ban level"
    )


def test_ban_of_equal_power_user_is_rejected() -> None:
    """Rule 5.6.2: the target's level must be below the banner's."""
    room = standard_room("12", users={BOB: 50, CAROL: 50})
    room.member(BOB, "join")
    rejected(
        room, room.build("m.room.member", BOB, {"membership": "ban"}, state_key=CAROL), "not below"
    )


@pytest.mark.parametrize("rule", ["knock", "knock_restricted"])
def test_knock_is_allowed_in_knock_rooms(rule: str) -> None:
    """Rule 5.7.3: a user not banned, invited or joined may knock."""
    room = standard_room("12", join_rule=rule)
    allowed(room, room.build("m.room.member", BOB, {"membership": "knock"}, state_key=BOB))


@pytest.mark.parametrize("rule", ["public", "invite", "restricted"])
def test_knock_is_rejected_elsewhere(rule: str) -> None:
    """Rule 5.7.1: knocking needs a knock or knock_restricted join rule."""
    room = standard_room("12", join_rule=rule)
    rejected(
        room, room.build("m.room.member", BOB, {"membership": "knock"}, state_key=BOB), "rule 5.7.1"
    )


def test_knock_for_someone_else_is_rejected() -> None:
    """Rule 5.7.2: a knock's sender must be its state_key."""
    room = standard_room("12", join_rule="knock")
    rejected(
        room,
        room.build("m.room.member", BOB, {"membership": "knock"}, state_key=CAROL),
        "rule 5.7.2",
    )


def test_knock_when_invited_is_rejected() -> None:
    """Rule 5.7.4: an invited (or joined, banned) user cannot knock."""
    room = standard_room("12", join_rule="knock")
    room.member(BOB, "invite", ALICE)
    rejected(
        room, room.build("m.room.member", BOB, {"membership": "knock"}, state_key=BOB), "rule 5.7.4"
    )


def test_unknown_membership_is_rejected() -> None:
    """Rule 5.8: any other membership value is rejected."""
    room = standard_room("12")
    rejected(
        room, room.build("m.room.member", BOB, {"membership": "lurk"}, state_key=BOB), "rule 5.8"
    )
