"""Membership events and make_join / make_leave templates (rooms.md 1.4, 1.8, 2.2)."""

from __future__ import annotations

import pytest

from stubserver.rooms.builder import EventBuildError
from stubserver.rooms.create import add_own_event
from stubserver.rooms.hashes import check_content_hash
from stubserver.rooms.membership import (
    MembershipRefusal,
    build_membership,
    fill_template,
    make_join_template,
    make_membership_template,
)
from stubserver.rooms.signing import verify_event_signature
from tests.rooms.room_fixtures import (
    A_SIGNER,
    ALICE,
    B_SIGNER,
    BOB,
    TS,
    VERSIONS,
    new_room,
)

ALL = pytest.mark.parametrize("version", VERSIONS)
TEMPLATE_KEYS = {
    "auth_events",
    "content",
    "depth",
    "origin_server_ts",
    "prev_events",
    "room_id",
    "sender",
    "state_key",
    "type",
}


@ALL
def test_a_template_filled_in_by_the_joiner_is_accepted(version: str) -> None:
    """make_join's template has exactly Synapse's keys; the joiner's filled-in, signed
    event keeps its depth and timestamp and is accepted by the room."""
    room = new_room(version).room
    template = make_join_template(room, BOB, ["10", "11", "12"], origin="b.test", now=TS + 5)
    assert set(template.event) == TEMPLATE_KEYS
    assert template.body()["room_version"] == version
    built = fill_template(
        template.event,
        room.room_version,
        B_SIGNER,
        user_id=BOB,
        membership="join",
        now=TS,
        content={"displayname": "Bob", "avatar_url": None},
    )
    assert built.pdu["depth"] == template.event["depth"]
    assert built.pdu["origin_server_ts"] == TS + 5
    assert built.pdu["content"]["membership"] == "join"
    check_content_hash(built.pdu)
    verify_event_signature(
        built.pdu, room.room_version, "b.test", B_SIGNER.key_id, B_SIGNER.signing_key.verify_key
    )
    assert room.add_event(built.event, TS, origin="b.test").outcome == "accepted"
    assert room.members[BOB] == "join"


@pytest.mark.parametrize("membership", ["join", "leave"])
def test_a_template_without_a_timestamp_gets_our_clock(membership: str) -> None:
    """A template without ``origin_server_ts`` (Dendrite 0.13's make_join and make_leave
    carry none) is filled in with our clock's time, the origin's creation time, and the
    event is accepted; one with a timestamp keeps it (above)."""
    room = new_room("11").room
    template = dict(make_join_template(room, BOB, ["11"], origin="b.test", now=TS).event)
    del template["origin_server_ts"]
    built = fill_template(
        template, room.room_version, B_SIGNER, user_id=BOB, membership=membership, now=TS + 7
    )
    assert built.pdu["origin_server_ts"] == TS + 7
    assert built.pdu["content"]["membership"] == membership
    check_content_hash(built.pdu)
    if membership == "join":
        assert room.add_event(built.event, TS + 7, origin="b.test").outcome == "accepted"


def test_make_join_refuses_a_version_the_joiner_lacks() -> None:
    """A room version outside ``ver`` is 400 M_INCOMPATIBLE_ROOM_VERSION with
    room_version; no ``ver`` at all means ["1"]."""
    room = new_room("12").room
    for versions in (["10", "11"], None):
        with pytest.raises(MembershipRefusal) as caught:
            make_join_template(room, BOB, versions, origin="b.test", now=TS)
        refusal = caught.value
        assert (refusal.status, refusal.errcode) == (400, "M_INCOMPATIBLE_ROOM_VERSION")
        assert refusal.body()["room_version"] == "12"


def test_make_join_refuses_an_uninvited_user_in_an_invite_only_room() -> None:
    """private_chat: 403 M_FORBIDDEN "You are not invited to this room."."""
    room = new_room("12", "private_chat").room
    with pytest.raises(MembershipRefusal) as caught:
        make_join_template(room, BOB, ["12"], origin="b.test", now=TS)
    assert caught.value.body() == {
        "errcode": "M_FORBIDDEN",
        "error": "You are not invited to this room.",
    }
    assert caught.value.status == 403


def test_make_join_for_a_user_of_another_origin_is_forbidden() -> None:
    """The user's domain must be the requesting origin: 403 "User not from origin"."""
    room = new_room("12").room
    with pytest.raises(MembershipRefusal) as caught:
        make_join_template(room, BOB, ["12"], origin="c.test", now=TS)
    assert (caught.value.status, caught.value.error) == (403, "User not from origin")


def test_make_join_on_an_unknown_room_is_404() -> None:
    """No such room: 404 M_NOT_FOUND."""
    with pytest.raises(MembershipRefusal) as caught:
        make_join_template(None, BOB, ["12"], origin="b.test", now=TS)
    assert (caught.value.status, caught.value.errcode) == (404, "M_NOT_FOUND")


@ALL
def test_an_invited_user_can_join_an_invite_only_room(version: str) -> None:
    """After our invite, make_join succeeds for the invitee and the join is accepted."""
    room = new_room(version, "private_chat").room
    invite = build_membership(room, A_SIGNER, sender=ALICE, membership="invite", target=BOB, now=TS)
    add_own_event(room, invite, TS, "a.test")
    assert room.members[BOB] == "invite"
    template = make_join_template(room, BOB, [version], origin="b.test", now=TS)
    built = fill_template(
        template.event, room.room_version, B_SIGNER, user_id=BOB, membership="join", now=TS
    )
    assert room.add_event(built.event, TS, origin="b.test").outcome == "accepted"


@ALL
def test_make_leave_and_our_leave(version: str) -> None:
    """A joined user gets a leave template; our own leave is accepted."""
    room = new_room(version).room
    template = make_join_template(room, BOB, [version], origin="b.test", now=TS)
    room.add_event(
        fill_template(
            template.event, room.room_version, B_SIGNER, user_id=BOB, membership="join", now=TS
        ).event,
        TS,
    )
    leave_template = make_membership_template(
        room, user_id=BOB, origin="b.test", membership="leave", now=TS
    )
    assert leave_template.event["content"] == {"membership": "leave"}
    leave = build_membership(room, A_SIGNER, sender=ALICE, membership="leave", now=TS)
    add_own_event(room, leave, TS, "a.test")
    assert room.members[ALICE] == "leave"


def test_a_template_for_someone_else_is_refused() -> None:
    """fill_template refuses a template whose sender is not our user."""
    room = new_room("12").room
    template = make_join_template(room, BOB, ["12"], origin="b.test", now=TS)
    with pytest.raises(EventBuildError):
        fill_template(
            template.event, room.room_version, A_SIGNER, user_id=ALICE, membership="join", now=TS
        )
