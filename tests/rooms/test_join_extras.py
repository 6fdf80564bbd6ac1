"""The extra state events a room's send_join answers carry (the control API's
``send_join_extra_state``, ``stubserver.rooms.join_extras``): how they are built and
broken, how an answer carries them, and a joining server of ours keeping the good ones
and dropping the broken ones."""

from __future__ import annotations

from typing import Any

import pytest

from stubserver.rooms.errors import RoomRequestRefused, UnknownRoom
from stubserver.rooms.hashes import ContentHashMismatch, check_content_hash, compute_event_id
from stubserver.rooms.join_extras import (
    MAX_EXTRAS_PER_ROOM,
    ExtraEvent,
    JoinExtras,
    TooManyExtras,
    build_extra,
)
from stubserver.rooms.signing import EventSignatureError, verify_event_signature
from stubserver.rooms.tamper import UNKNOWN_KEY_SUFFIX
from stubserver.rooms.versions import ROOM_VERSIONS
from tests.rooms.room_fixtures import A_SIGNER, ALICE, TS, VERSIONS, new_room
from tests.rooms.service_net import BOB, hosted, two_peers
from tests.rooms.test_routes import Harness, joined_by_send_join
from tests.support import failure_now, result_now

ALL = pytest.mark.parametrize("version", VERSIONS)
CAROL = "@carol:a.test"
MEMBER = "m.room.member"


def extra(
    room: Any, earlier: list[ExtraEvent], membership: str, tamper: str | None = None
) -> ExtraEvent:
    return build_extra(
        room,
        A_SIGNER,
        earlier,
        sender=CAROL,
        event_type=MEMBER,
        content={"membership": membership},
        state_key=CAROL,
        tamper=tamper,
        now=TS,
    )


@ALL
def test_an_extra_is_built_on_the_room_but_not_added(version: str) -> None:
    """An extra cites the room's forward extremities and auth events from its current
    state; a later extra cites an earlier one of the sender's membership as its auth
    event; the room is unchanged (no event, same state)."""
    room = new_room(version).room
    before = (len(room), dict(room.current_state))
    join = extra(room, [], "join")
    leave = extra(room, [join], "leave")
    assert join.key == (MEMBER, CAROL)
    assert join.pdu["prev_events"] == sorted(room.forward_extremities)
    assert room.current_state[("m.room.join_rules", "")] in join.pdu["auth_events"]
    assert join.event_id in leave.pdu["auth_events"]
    assert join.event_id not in join.pdu["auth_events"]
    assert (len(room), dict(room.current_state)) == before
    assert room.get_event(join.event_id) is None


def _verified(pdu: dict[str, Any], version: str, key_id: str = A_SIGNER.key_id) -> None:
    verify_event_signature(
        pdu, ROOM_VERSIONS[version], "a.test", key_id, A_SIGNER.signing_key.verify_key
    )


@ALL
def test_each_tamper_kind_breaks_the_extra_as_named(version: str) -> None:
    """None: signed and hashed right. "unsigned": no signature at all. "unknown_key": our
    right signature under a key ID we do not publish. "signature": our key ID with a
    signature that does not verify. "content": the content hash fails. The event ID is
    what a receiver computes for the PDU as sent."""
    room = new_room(version).room
    good = extra(room, [], "join")
    _verified(good.pdu, version)
    check_content_hash(good.pdu)
    assert extra(room, [], "join", "unsigned").pdu["signatures"] == {}
    unknown = extra(room, [], "join", "unknown_key").pdu
    assert list(unknown["signatures"]["a.test"]) == [A_SIGNER.key_id + UNKNOWN_KEY_SUFFIX]
    _verified(unknown, version, A_SIGNER.key_id + UNKNOWN_KEY_SUFFIX)
    bad = extra(room, [], "join", "signature")
    assert bad.event_id == good.event_id
    with pytest.raises(EventSignatureError):
        _verified(bad.pdu, version)
    changed = extra(room, [], "join", "content")
    assert changed.event_id == compute_event_id(changed.pdu, ROOM_VERSIONS[version])
    with pytest.raises(ContentHashMismatch):
        check_content_hash(changed.pdu)
    with pytest.raises(ValueError, match="tamper"):
        extra(room, [], "join", "scribbled")


def _pdu(event_type: str, state_key: str, name: str) -> dict[str, Any]:
    return {"type": event_type, "state_key": state_key, "content": {"name": name}}


def test_an_answer_carries_the_last_extra_of_each_key_and_the_replaced_in_the_chain() -> None:
    """Without extras the answer is as given. With them, each (type, state_key) they name
    has its last extra in ``state`` in place of the room's event, and the extras a later
    one replaced go to the end of ``auth_chain``."""
    extras = JoinExtras()
    state = [_pdu("m.room.create", "", "c"), _pdu("m.room.name", "", "room's")]
    chain = [_pdu("m.room.create", "", "c")]
    assert extras.answer("!r:a.test", state, chain) == (state, chain)
    first = ExtraEvent(("m.room.name", ""), "$1", _pdu("m.room.name", "", "first"))
    second = ExtraEvent(("m.room.name", ""), "$2", _pdu("m.room.name", "", "second"))
    member = ExtraEvent((MEMBER, CAROL), "$3", _pdu(MEMBER, CAROL, "carol"))
    for e in (first, member, second):
        extras.add("!r:a.test", e)
    new_state, new_chain = extras.answer("!r:a.test", state, chain)
    assert new_state == [state[0], second.pdu, member.pdu]
    assert new_chain == [*chain, first.pdu]
    assert extras.answer("!other:a.test", state, chain) == (state, chain)


def test_a_room_takes_a_bounded_number_of_extras() -> None:
    """Past MAX_EXTRAS_PER_ROOM extras a room refuses more (TooManyExtras)."""
    extras = JoinExtras()
    one = ExtraEvent(("m.room.name", ""), "$1", _pdu("m.room.name", "", "x"))
    for _ in range(MAX_EXTRAS_PER_ROOM):
        extras.add("!r:a.test", one)
    with pytest.raises(TooManyExtras):
        extras.add("!r:a.test", one)
    assert len(extras.of("!r:a.test")) == MAX_EXTRAS_PER_ROOM


@ALL
def test_our_send_join_answer_carries_the_rooms_extras(version: str) -> None:
    """send_join v2 of a room with extras answers them: the last in ``state``, the
    replaced one in ``auth_chain``; the joiner is joined and the room holds no extra."""
    h = Harness()
    room = h.host(version)
    join = extra(room, [], "join", "unsigned")
    leave = extra(room, [join], "leave")
    h.store.join_extras.add(room.room_id, join)
    h.store.join_extras.add(room.room_id, leave)
    status, answer, _ = joined_by_send_join(h, room, version)
    assert status == 200, answer
    assert leave.pdu in answer["state"] and join.pdu not in answer["state"]
    assert join.pdu in answer["auth_chain"]
    assert [p for p in answer["state"] if p.get("state_key") == CAROL] == [leave.pdu]
    assert room.get_event(join.event_id) is None and CAROL not in room.members


@ALL
@pytest.mark.parametrize("tamper", ["unsigned", "signature", "unknown_key"])
def test_a_joiner_of_ours_keeps_a_good_extra_and_drops_a_broken_one(
    version: str, tamper: str
) -> None:
    """Through the service on both sides: a's good extra (Carol's join) is in b's state
    after b joins; with a broken signature (``tamper``) b still joins and has no Carol."""
    for broken in (None, tamper):
        _, a, b = two_peers()
        room_id = hosted(a, version)
        answer = a.service.send_join_extra_state(
            room_id, "carol", MEMBER, {"membership": "join"}, state_key=CAROL, tamper=broken
        )
        event_id = result_now(answer)["event_id"]
        result_now(b.service.join(room_id, "bob", ["a.test"]))
        members = b.room(room_id).members
        assert members[BOB] == "join"
        assert members.get(CAROL) == (None if broken else "join"), broken
        assert (b.room(room_id).get_event(event_id) is None) == bool(broken)
        assert CAROL not in a.room(room_id).members


def test_the_service_refuses_a_bad_extra() -> None:
    """An unknown tamper kind, a sender of another server, an unknown room: refused
    (400, 400, 404), nothing added."""
    _, a, _ = two_peers()
    room_id = hosted(a)

    def refusal(room: str, sender: str, tamper: str | None) -> BaseException | None:
        d = a.service.send_join_extra_state(
            room, sender, MEMBER, {"membership": "join"}, state_key=CAROL, tamper=tamper
        )
        return failure_now(d).value

    assert isinstance(refusal(room_id, "carol", "scribbled"), RoomRequestRefused)
    assert isinstance(refusal(room_id, "@carol:b.test", None), RoomRequestRefused)
    assert isinstance(refusal("!nowhere:a.test", "carol", None), UnknownRoom)
    assert a.service.store.join_extras.of(room_id) == ()
    assert ALICE in a.room(room_id).members
