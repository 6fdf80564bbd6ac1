"""Shared pieces for the in-memory room tests: two servers' signers and helpers that
build signed events on a :class:`Room` as its members would."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from nacl.signing import SigningKey

from stubserver.rooms.builder import BuiltEvent, EventSigner
from stubserver.rooms.create import CreatedRoom, build_in_room, create_room
from stubserver.rooms.room import EventRecord, Room
from stubserver.rooms.versions import ROOM_VERSIONS

A_SIGNER = EventSigner("a.test", "ed25519:a1", SigningKey(b"\x0a" * 32))
B_SIGNER = EventSigner("b.test", "ed25519:b1", SigningKey(b"\x0b" * 32))
ALICE = "@alice:a.test"
BOB = "@bob:b.test"
TS = 1_700_000_000_000
VERSIONS = ("10", "11", "12")


def signer_for(user_id: str) -> EventSigner:
    return A_SIGNER if user_id.endswith(":a.test") else B_SIGNER


def new_room(version: str = "12", preset: Any = "public_chat", **kwargs: Any) -> CreatedRoom:
    return create_room(
        ROOM_VERSIONS[version],
        A_SIGNER,
        creator=ALICE,
        now=TS,
        rng=random.Random(7),
        preset=preset,
        **kwargs,
    )


def build(
    room: Room,
    sender: str,
    event_type: str,
    content: Mapping[str, Any],
    *,
    state_key: str | None = None,
    prev: Sequence[str] | None = None,
    auth: Sequence[str] | None = None,
    ts: int = TS,
) -> BuiltEvent:
    return build_in_room(
        room,
        signer_for(sender),
        sender=sender,
        event_type=event_type,
        content=content,
        now=ts,
        state_key=state_key,
        prev_event_ids=prev,
        auth_event_ids=auth,
    )


def add(room: Room, built: BuiltEvent) -> EventRecord:
    origin = built.event.sender.partition(":")[2]
    return room.add_event(built.event, TS, origin=origin)


def send(
    room: Room, sender: str, event_type: str, content: Mapping[str, Any], **kwargs: Any
) -> EventRecord:
    return add(room, build(room, sender, event_type, content, **kwargs))


def join(room: Room, user: str) -> EventRecord:
    return send(room, user, "m.room.member", {"membership": "join"}, state_key=user)
