"""The room store: rooms, aliases and received invites, each bounded."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from stubserver.rooms.store import ReceivedInvite, RoomStore, StoreFull
from stubserver.rooms.transaction import TransactionMemory
from tests.rooms.room_fixtures import ALICE, join, new_room


def _store(**limits: int) -> RoomStore:
    return RoomStore("a.test", TransactionMemory(Clock()), **limits)


def test_rooms_are_found_by_id_and_events_across_rooms() -> None:
    """A room added is found by its ID; an event is found with the room holding it."""
    store = _store()
    room = new_room("12").room
    store.add_room(room)
    assert store.get_room(room.room_id) is room and store.room_ids() == [room.room_id]
    event_id = join(room, "@bob:b.test").event_id
    found = store.find_event(event_id)
    assert found is not None and found[0] is room
    assert store.find_event("$nope") is None and store.get_room("!nope") is None


def test_aliases_point_at_rooms() -> None:
    """An alias localpart resolves to its room ID; an unknown one to None."""
    store = _store()
    store.add_alias("lobby", "!r:a.test")
    assert store.alias_room_id("lobby") == "!r:a.test" and store.alias_room_id("x") is None
    assert store.aliases == {"lobby": "!r:a.test"}


def test_the_room_and_alias_limits_hold() -> None:
    """Past max_rooms / max_aliases a new room or alias raises StoreFull; replacing an
    existing one is allowed."""
    store = _store(max_rooms=1, max_aliases=1)
    room = new_room("12").room
    store.add_room(room)
    store.add_room(room)
    with pytest.raises(StoreFull):
        store.add_room(new_room("11").room)
    store.add_alias("a", "!r")
    store.add_alias("a", "!s")
    with pytest.raises(StoreFull):
        store.add_alias("b", "!r")


def test_invites_are_remembered_oldest_forgotten_first() -> None:
    """Invites are kept by (room, user); past max_invites the oldest goes; forget drops."""
    store = _store(max_invites=2)
    room = new_room("12").room
    create = room.events_since(0)[0].event

    def invite(room_id: str) -> ReceivedInvite:
        return ReceivedInvite(room_id, ALICE, room.room_version, create, "b.test")

    for room_id in ("!1", "!2", "!3"):
        store.remember_invite(invite(room_id))
    assert [i.room_id for i in store.invites()] == ["!2", "!3"]
    assert store.invite_for("!3", ALICE) is not None and store.invite_for("!1", ALICE) is None
    store.forget_invite("!3", ALICE)
    assert [i.room_id for i in store.invites()] == ["!2"]


def test_invites_are_bounded_in_bytes() -> None:
    """Issue 22, row 9: past max_invite_bytes the oldest invites are forgotten; replacing
    or forgetting an invite gives its bytes back."""
    store = _store(max_invite_bytes=250)
    room = new_room("12").room
    create = room.events_since(0)[0].event

    def invite(room_id: str, size: int = 100) -> ReceivedInvite:
        return ReceivedInvite(room_id, ALICE, room.room_version, create, "b.test", size=size)

    for room_id in ("!1", "!2", "!3"):
        store.remember_invite(invite(room_id))
    assert ([i.room_id for i in store.invites()], store.invite_bytes) == (["!2", "!3"], 200)
    store.remember_invite(invite("!3", 50))
    store.forget_invite("!2", ALICE)
    assert ([i.room_id for i in store.invites()], store.invite_bytes) == (["!3"], 50)
