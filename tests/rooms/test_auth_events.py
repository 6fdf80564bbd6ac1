"""Auth events selection (spec: "Auth events selection"; rooms.md 3.3)."""

from __future__ import annotations

from typing import Any

import pytest

from stubserver.rooms.auth_events import auth_event_types, select_auth_events
from stubserver.rooms.versions import ROOM_VERSIONS, RoomVersion

V10 = ROOM_VERSIONS["10"]
V11 = ROOM_VERSIONS["11"]
V12 = ROOM_VERSIONS["12"]
ALL = pytest.mark.parametrize("version", [V10, V11, V12], ids=["10", "11", "12"])

CREATE = ("m.room.create", "")
PL = ("m.room.power_levels", "")
JR = ("m.room.join_rules", "")


def member(user: str) -> tuple[str, str]:
    return ("m.room.member", user)


@ALL
def test_create_event_cites_nothing(version: RoomVersion) -> None:
    """The create event's auth_events are empty."""
    assert auth_event_types("m.room.create", "", "@a:a", {}, version) == []


@pytest.mark.parametrize("version", [V10, V11], ids=["10", "11"])
def test_message_cites_create_power_levels_sender_v10_v11(version: RoomVersion) -> None:
    """In v10/v11 a message cites the create event, power levels and sender's member."""
    types = auth_event_types("m.room.message", None, "@a:a", {"body": "x"}, version)
    assert types == [CREATE, PL, member("@a:a")]


def test_v12_never_cites_the_create_event() -> None:
    """In v12 the create event is implied by room_id and not selected."""
    types = auth_event_types("m.room.message", None, "@a:a", {}, V12)
    assert types == [PL, member("@a:a")]


@ALL
def test_non_member_state_event_needs_no_join_rules(version: RoomVersion) -> None:
    """A non-member state event (m.room.name) does not cite the join rules."""
    assert JR not in auth_event_types("m.room.name", "", "@a:a", {"name": "x"}, version)


@ALL
@pytest.mark.parametrize("membership", ["join", "invite", "knock"])
def test_member_join_invite_knock_cite_join_rules(version: RoomVersion, membership: str) -> None:
    """Member events with membership join, invite or knock cite the join rules."""
    types = auth_event_types("m.room.member", "@b:b", "@a:a", {"membership": membership}, version)
    assert types[-2:] == [member("@b:b"), JR]


@ALL
@pytest.mark.parametrize("membership", ["leave", "ban"])
def test_member_leave_ban_do_not_cite_join_rules(version: RoomVersion, membership: str) -> None:
    """Leave and ban member events cite the target's membership but not the join rules."""
    types = auth_event_types("m.room.member", "@b:b", "@a:a", {"membership": membership}, version)
    assert types[-1] == member("@b:b")
    assert JR not in types


@ALL
def test_own_join_lists_the_member_pair_once(version: RoomVersion) -> None:
    """When sender and target are the same user, their member pair appears once."""
    types = auth_event_types("m.room.member", "@a:a", "@a:a", {"membership": "join"}, version)
    assert types.count(member("@a:a")) == 1


@ALL
def test_third_party_invite_cites_the_token(version: RoomVersion) -> None:
    """A 3pid invite cites the m.room.third_party_invite whose state_key is the token."""
    content = {"membership": "invite", "third_party_invite": {"signed": {"token": "tok"}}}
    types = auth_event_types("m.room.member", "@b:b", "@a:a", content, version)
    assert ("m.room.third_party_invite", "tok") in types


@ALL
@pytest.mark.parametrize(
    "invite",
    [{}, {"signed": {}}, {"signed": {"token": 5}}, "x"],
    ids=["empty", "no-token", "int", "str"],
)
def test_malformed_third_party_invite_cites_nothing_more(version: RoomVersion, invite: Any) -> None:
    """A third_party_invite without a string signed.token adds no pair."""
    content = {"membership": "invite", "third_party_invite": invite}
    types = auth_event_types("m.room.member", "@b:b", "@a:a", content, version)
    assert not any(t == "m.room.third_party_invite" for t, _ in types)


@ALL
def test_third_party_invite_only_for_invites(version: RoomVersion) -> None:
    """A third_party_invite on a join is not cited (the rule is for invites)."""
    content = {"membership": "join", "third_party_invite": {"signed": {"token": "tok"}}}
    types = auth_event_types("m.room.member", "@b:b", "@b:b", content, version)
    assert not any(t == "m.room.third_party_invite" for t, _ in types)


@ALL
def test_restricted_join_cites_the_authorising_user(version: RoomVersion) -> None:
    """A join with join_authorised_via_users_server cites that user's member event."""
    content = {"membership": "join", "join_authorised_via_users_server": "@c:c"}
    types = auth_event_types("m.room.member", "@b:b", "@b:b", content, version)
    assert types[-1] == member("@c:c")


@ALL
def test_authorising_user_only_for_joins(version: RoomVersion) -> None:
    """join_authorised_via_users_server on a non-join cites nothing more."""
    content = {"membership": "invite", "join_authorised_via_users_server": "@c:c"}
    types = auth_event_types("m.room.member", "@b:b", "@a:a", content, version)
    assert member("@c:c") not in types


STATE = {
    CREATE: "$create",
    PL: "$pl",
    JR: "$jr",
    member("@a:a"): "$a",
    ("m.room.name", ""): "$name",
}


def test_select_picks_from_state_in_order() -> None:
    """select_auth_events looks the pairs up in the state map, in selection order."""
    chosen = select_auth_events(
        STATE,
        event_type="m.room.member",
        state_key="@b:b",
        sender="@a:a",
        content={"membership": "invite"},
        room_version=V11,
    )
    assert chosen == ["$create", "$pl", "$a", "$jr"]


def test_select_skips_what_the_state_lacks() -> None:
    """Pairs absent from the state (no power levels yet, no member) are skipped."""
    chosen = select_auth_events(
        {CREATE: "$create"},
        event_type="m.room.member",
        state_key="@a:a",
        sender="@a:a",
        content={"membership": "join"},
        room_version=V10,
    )
    assert chosen == ["$create"]


def test_select_never_adds_unrelated_state() -> None:
    """State outside the selection (m.room.name, join rules on a message) is not cited."""
    chosen = select_auth_events(
        STATE, event_type="m.room.message", state_key=None, sender="@a:a", content={},
        room_version=V12,
    )  # fmt: skip
    assert chosen == ["$pl", "$a"]
