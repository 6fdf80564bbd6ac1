"""Building the events we send: fields, depth, hashes, signature (spec: Server-Server API,
"PDUs" and "Signing Events"; rooms.md 3.1, 3.6, 3.7).

The builder never sets ``event_id`` (v3+ PDUs carry none) and puts ``redacts`` where the
room version wants it. Every built PDU goes through the same format checks as a received
one (``stubserver.rooms.format.validate_pdu``), so we cannot send what we would drop.
Randomness (room IDs, create-event entropy) comes from a ``random.Random`` the caller
passes in, never the module-level generator.
"""

from __future__ import annotations

import random
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nacl.signing import SigningKey

from stubserver.rooms.auth_events import CREATE
from stubserver.rooms.event import Event
from stubserver.rooms.format import (
    MAX_DEPTH,
    MAX_PREV_EVENTS,
    event_from_pdu,
    is_user_id,
)
from stubserver.rooms.signing import sign_event
from stubserver.rooms.versions import RoomVersion
from stubserver.signing.canonical_json import JsonDict

REDACTION = "m.room.redaction"
#: Create-content key holding random entropy in v12, so that two rooms created with the
#: same content, sender and timestamp get different room IDs (Complement does the same
#: with ``complement_entropy``). Namespaced, as custom keys should be.
CREATE_ENTROPY_KEY = "org.stubserver.entropy"
#: Length of the random parts, in characters of ``[A-Za-z0-9]`` (~95 bits each).
CREATE_ENTROPY_LENGTH = 16
ROOM_ID_OPAQUE_LENGTH = 18
_OPAQUE_ALPHABET = string.ascii_letters + string.digits


class EventBuildError(ValueError):
    """The caller asked for an event we must not build; ``str()`` says why."""


@dataclass(frozen=True)
class EventSigner:
    """Who signs the events we build: our server name, key ID (``ed25519:<version>``)
    and the ed25519 signing key."""

    server_name: str
    key_id: str
    signing_key: SigningKey


@dataclass(frozen=True)
class BuiltEvent:
    """A signed PDU ready to send, and its :class:`Event`. ``pdu`` is the caller's own
    copy; ``event.pdu`` is a separate one."""

    pdu: JsonDict
    event: Event


def next_depth(prev_events: Sequence[Event]) -> int:
    """The depth of an event citing ``prev_events``: the largest of theirs plus one,
    capped at 2^53-1 (spec ``depth_v6``: "If the room's depth is already at the limit,
    the depth must be set to the limit")."""
    if not prev_events:
        raise EventBuildError("an event other than m.room.create needs prev_events")
    return min(max(event.depth for event in prev_events) + 1, MAX_DEPTH)


def random_opaque(rng: random.Random, length: int) -> str:
    """``length`` random characters of ``[A-Za-z0-9]`` from ``rng``."""
    return "".join(rng.choice(_OPAQUE_ALPHABET) for _ in range(length))


def _check_sender(sender: str, signer: EventSigner) -> None:
    # Only the sender's server may sign for it (v3+: "the originating server").
    if not is_user_id(sender):
        raise EventBuildError(f"sender {sender!r} is not a user ID")
    if sender.split(":", 1)[1] != signer.server_name:
        raise EventBuildError(f"sender {sender!r} is not on our server {signer.server_name}")


def _sign_and_check(
    unsigned_pdu: JsonDict, room_version: RoomVersion, signer: EventSigner
) -> BuiltEvent:
    signed = sign_event(
        unsigned_pdu, room_version, signer.server_name, signer.key_id, signer.signing_key
    )
    # The same checks as on receipt: an event we would drop is not sent.
    event = event_from_pdu(signed, room_version)
    return BuiltEvent(pdu=signed, event=event)


def build_event(
    room_version: RoomVersion,
    *,
    room_id: str,
    sender: str,
    event_type: str,
    content: Mapping[str, Any],
    prev_events: Sequence[Event],
    auth_event_ids: Sequence[str],
    origin_server_ts: int,
    signer: EventSigner,
    state_key: str | None = None,
    redacts: str | None = None,
) -> BuiltEvent:
    """A new event in an existing room, hashed and signed by ``signer``.

    ``prev_events`` are the events it follows (the room's forward extremities, 1 to 20);
    ``depth`` is computed from them. ``auth_event_ids`` come from
    ``stubserver.rooms.auth_events.select_auth_events``. ``redacts`` (for
    ``m.room.redaction``) goes top-level in v10 and into ``content`` from v11 on.
    Raise :class:`EventBuildError` for a create event (use :func:`build_create_event`)
    or bad prev_events, and ``InvalidPdu`` for anything the format checks refuse
    (floats, oversize, a v12 create event in ``auth_events``, ...).
    """
    if event_type == CREATE:
        raise EventBuildError("build m.room.create events with build_create_event")
    _check_sender(sender, signer)
    if len(prev_events) > MAX_PREV_EVENTS:
        raise EventBuildError(f"{len(prev_events)} prev_events; at most {MAX_PREV_EVENTS}")
    if any(event.room_id != room_id for event in prev_events):
        raise EventBuildError(f"a prev_event is not in room {room_id}")
    pdu: JsonDict = {
        "room_id": room_id,
        "sender": sender,
        "type": event_type,
        "content": dict(content),
        "prev_events": [event.event_id for event in prev_events],
        "auth_events": list(auth_event_ids),
        "depth": next_depth(prev_events),
        "origin_server_ts": origin_server_ts,
    }
    if state_key is not None:
        pdu["state_key"] = state_key
    if redacts is not None:
        if room_version.redacts_in_content:
            pdu["content"]["redacts"] = redacts
        else:
            pdu["redacts"] = redacts
    return _sign_and_check(pdu, room_version, signer)


def build_create_event(
    room_version: RoomVersion,
    *,
    sender: str,
    origin_server_ts: int,
    signer: EventSigner,
    rng: random.Random,
    extra_content: Mapping[str, Any] | None = None,
) -> BuiltEvent:
    """The ``m.room.create`` event of a new room, hashed and signed by ``signer``.

    Content: ``room_version``, ``creator`` (v10 only; v11+ take the creator from
    ``sender``) and ``extra_content`` (``m.federate``, v12 ``additional_creators``, ...).
    v10/v11: ``room_id`` is ``!<random>:<sender's server>`` (auth rule: the room ID's
    domain is the sender's). v12: no ``room_id`` (the event's ID makes it,
    ``event.room_id``) and a random :data:`CREATE_ENTROPY_KEY` so that rooms differ.
    Always ``prev_events: []``, ``auth_events: []``, ``depth: 1``, ``state_key: ""``.
    """
    _check_sender(sender, signer)
    content: JsonDict = dict(extra_content or {})
    content["room_version"] = room_version.identifier
    if room_version.implicit_room_creator:
        content.pop("creator", None)
    else:
        content["creator"] = sender
    pdu: JsonDict = {
        "sender": sender,
        "type": CREATE,
        "state_key": "",
        "content": content,
        "prev_events": [],
        "auth_events": [],
        "depth": 1,
        "origin_server_ts": origin_server_ts,
    }
    if room_version.room_id_is_create_hash:
        content[CREATE_ENTROPY_KEY] = random_opaque(rng, CREATE_ENTROPY_LENGTH)
    else:
        pdu["room_id"] = f"!{random_opaque(rng, ROOM_ID_OPAQUE_LENGTH)}:{signer.server_name}"
    return _sign_and_check(pdu, room_version, signer)
