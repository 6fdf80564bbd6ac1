"""Rooms we host: creating one with Synapse's presets, and building our events on a room's
current forward extremities and state.

Spec: Client-Server API ``POST /createRoom`` (presets) and Server-Server API "PDUs"
(prev_events are the sender's forward extremities; auth events selection). The initial
state follows Synapse 1.163.2 (rooms.md 3.8): create, the creator's join, power levels
(v12: the creator is *not* in ``users``, creators have infinite power; v10/v11:
``users: {creator: 100}``), join rules, ``history_visibility: shared`` (so a joining
server can backfill), then optionally a name and a canonical alias.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from stubserver.rooms.auth_events import select_auth_events
from stubserver.rooms.builder import (
    BuiltEvent,
    EventBuildError,
    EventSigner,
    build_create_event,
    build_event,
)
from stubserver.rooms.event import Event
from stubserver.rooms.room import Room
from stubserver.rooms.versions import RoomVersion

Preset = Literal["public_chat", "private_chat"]
PRESETS: Final = ("public_chat", "private_chat")


def preset_power_levels(creator: str, room_version: RoomVersion, preset: Preset) -> dict[str, Any]:
    """Synapse's default power levels content for ``preset`` (rooms.md 3.8)."""
    users = {} if room_version.creators_have_infinite_power else {creator: 100}
    events = {
        "m.room.name": 50,
        "m.room.power_levels": 100,
        "m.room.history_visibility": 100,
        "m.room.canonical_alias": 50,
        "m.room.avatar": 50,
        "m.room.tombstone": 100,
        "m.room.server_acl": 100,
        "m.room.encryption": 100,
    }
    if room_version.creators_have_infinite_power:
        events["m.room.tombstone"] = 150
    return {
        "users": users,
        "users_default": 0,
        "events": events,
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 50 if preset == "public_chat" else 0,
        "historical": 100,
    }


@dataclass(frozen=True)
class CreatedRoom:
    """A new room we host and the events that made it (oldest first, as sent)."""

    room: Room
    events: tuple[BuiltEvent, ...]


class EventRejected(ValueError):
    """An event we built did not pass our own checks (it would be rejected elsewhere)."""

    def __init__(self, event_id: str, outcome: str, reason: str | None) -> None:
        super().__init__(f"our event {event_id} was {outcome}: {reason}")
        self.event_id = event_id
        self.outcome = outcome
        self.reason = reason


def build_in_room(
    room: Room,
    signer: EventSigner,
    *,
    sender: str,
    event_type: str,
    content: Mapping[str, Any],
    now: int,
    state_key: str | None = None,
    redacts: str | None = None,
    prev_event_ids: Sequence[str] | None = None,
    auth_event_ids: Sequence[str] | None = None,
    planted: Mapping[str, Event] | None = None,
) -> BuiltEvent:
    """Our event on ``room``: prev_events its forward extremities (the deepest
    :data:`~stubserver.rooms.room.PREV_EVENTS_FOR_NEW_EVENT`), auth events selected from the
    current state, timestamp ``now`` (ms). ``prev_event_ids`` / ``auth_event_ids``
    override both (negative tests); a prev event may be one of ``planted`` (stand-ins of
    planted PDUs, ``stubserver.rooms.planted``, not in the room). Not added to the room:
    see :func:`add_own_event`."""
    if prev_event_ids is None:
        prevs = room.prev_events_for_new_event()
    else:
        prevs = []
        for event_id in prev_event_ids:
            event = room.get_event(event_id)
            if event is None and planted is not None:
                event = planted.get(event_id)
            if event is None:
                raise EventBuildError(f"prev_event {event_id} is not in room {room.room_id}")
            prevs.append(event)
    if auth_event_ids is None:
        auth_event_ids = select_auth_events(
            room.current_state,
            event_type=event_type,
            state_key=state_key,
            sender=sender,
            content=content,
            room_version=room.room_version,
        )
    return build_event(
        room.room_version,
        room_id=room.room_id,
        sender=sender,
        event_type=event_type,
        content=content,
        prev_events=prevs,
        auth_event_ids=auth_event_ids,
        origin_server_ts=now,
        signer=signer,
        state_key=state_key,
        redacts=redacts,
    )


def add_own_event(room: Room, built: BuiltEvent, now: int, origin: str) -> None:
    """Add our ``built`` event to ``room``; raise :class:`EventRejected` unless accepted."""
    record = room.add_event(built.event, now, origin=origin)
    if record.outcome != "accepted":
        raise EventRejected(built.event.event_id, record.outcome, record.reason)


def create_room(
    room_version: RoomVersion,
    signer: EventSigner,
    *,
    creator: str,
    now: int,
    rng: random.Random,
    preset: Preset = "public_chat",
    name: str | None = None,
    alias: str | None = None,
) -> CreatedRoom:
    """A new room we host, hosted by ``signer``'s server, created by ``creator``.

    ``alias`` is a full room alias (``#local:server``) put in ``m.room.canonical_alias``.
    Every event is checked by the new :class:`Room` as a received one would be; raise
    :class:`EventRejected` if one fails (a bug: the presets are valid).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {PRESETS}")
    create = build_create_event(
        room_version, sender=creator, origin_server_ts=now, signer=signer, rng=rng
    )
    room = Room(create.event.room_id, room_version, local_server=signer.server_name)
    add_own_event(room, create, now, signer.server_name)
    built = [create]
    join_rule = "public" if preset == "public_chat" else "invite"
    initial: list[tuple[str, str, dict[str, Any]]] = [
        ("m.room.member", creator, {"membership": "join"}),
        ("m.room.power_levels", "", preset_power_levels(creator, room_version, preset)),
        ("m.room.join_rules", "", {"join_rule": join_rule}),
        ("m.room.history_visibility", "", {"history_visibility": "shared"}),
    ]
    if preset == "private_chat":
        initial.append(("m.room.guest_access", "", {"guest_access": "can_join"}))
    if name is not None:
        initial.append(("m.room.name", "", {"name": name}))
    if alias is not None:
        initial.append(("m.room.canonical_alias", "", {"alias": alias}))
    for event_type, state_key, content in initial:
        event = build_in_room(
            room,
            signer,
            sender=creator,
            event_type=event_type,
            content=content,
            now=now,
            state_key=state_key,
        )
        add_own_event(room, event, now, signer.server_name)
        built.append(event)
    return CreatedRoom(room, tuple(built))
