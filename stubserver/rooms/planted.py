"""Planted PDUs: an event of ours whose content is JSON text our canonical JSON refuses (a
float, an integer outside ``[-(2**53)+1, 2**53-1]``), hashed and signed as a homeserver
that did not check would, and carried as text: what a negative test serves another server
to see it discarded (room versions 6 and later, "Canonical JSON": "Servers MUST strictly
enforce the JSON format ... or discarding of events over federation"; Complement's
TestOutboundFederationIgnoresMissingEventWithBadJSONForRoomVersion6).

Nothing here parses or checks data from the network, and nothing of it enters a
:class:`~stubserver.rooms.room.Room`: the planted event is kept beside the room
(:class:`~stubserver.rooms.served.ServingOverrides`) and only ever written out as the text
built here. Our own checks of what we receive are untouched.

How it is built (spec: Server-Server API "Calculating the content hash for an event",
"Signing Events"): the event is built on the room's forward extremities as any of ours,
with a placeholder for its content; the content hash is the SHA-256 of the canonical JSON
of the event with the placeholder replaced by the given text (kept as given: give it
sorted and compact, as a receiver's own encoding would write it, for its hash check to
match). Only non-state events other than ``m.room.redaction`` may be planted: the
redaction algorithm keeps none of their content, so the signature and the event ID
(which cover the redacted event) are those of the event with its content emptied, and
our encoder never sees the planted text.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from stubserver.rooms.builder import REDACTION, EventSigner
from stubserver.rooms.create import build_in_room
from stubserver.rooms.event import NOT_IN_CONTENT_HASH, Event
from stubserver.rooms.format import MAX_PDU_BYTES
from stubserver.rooms.hashes import SHA256, compute_event_id
from stubserver.rooms.room import Room
from stubserver.rooms.signing import add_signature
from stubserver.signing.canonical_json import encode_canonical_json

#: Longest planted content text, in bytes of UTF-8 (a PDU is at most 65,536 bytes).
MAX_PLANTED_CONTENT_BYTES: Final = 32_768


class PlantRefused(ValueError):
    """The planted event cannot be built as asked; ``str()`` says why."""


@dataclass(frozen=True)
class PlantedPdu:
    """A planted event: its ID, the event it stands for in our walks (``stand_in``: the
    PDU with its content emptied, for its room, depth and prev_events) and the PDU as
    text (``text``), which is what we serve."""

    event_id: str
    stand_in: Event
    text: str


def content_text_object(text: str) -> None:
    """Raise :class:`PlantRefused` unless ``text`` is a JSON object (any numbers: that is
    the point) of at most :data:`MAX_PLANTED_CONTENT_BYTES`. The text comes from the
    control API's caller, never from the network."""
    if len(text.encode("utf-8")) > MAX_PLANTED_CONTENT_BYTES:
        raise PlantRefused(f"content_json is over {MAX_PLANTED_CONTENT_BYTES} bytes")
    try:
        value = json.loads(text)
    except ValueError as e:
        raise PlantRefused(f"content_json is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise PlantRefused("content_json must be a JSON object")


def _spliced(pdu: Mapping[str, Any], content_text: str) -> str:
    """The canonical JSON of ``pdu`` with its ``content`` written as ``content_text``."""
    placeholder = f"org.stubserver.planted.{secrets.token_hex(16)}"
    encoded = encode_canonical_json({**pdu, "content": placeholder}).decode("utf-8")
    marker = f'"content":"{placeholder}"'
    if encoded.count(marker) != 1:  # the placeholder is random: never twice
        raise PlantRefused("the placeholder of the planted content is not unique")
    return encoded.replace(marker, f'"content":{content_text}')


def plant_event(
    room: Room,
    signer: EventSigner,
    *,
    sender: str,
    event_type: str,
    content_text: str,
    now: int,
) -> PlantedPdu:
    """Build our event of ``event_type`` in ``room`` with ``content_text`` (JSON text, kept
    as given) as its content, on the room's forward extremities, hashed over that text and
    signed. Not added to the room. Raise :class:`PlantRefused` (or the builder's errors)."""
    if event_type == REDACTION:
        raise PlantRefused("an m.room.redaction keeps content.redacts through redaction")
    content_text_object(content_text)
    built = build_in_room(room, signer, sender=sender, event_type=event_type, content={}, now=now)
    unsigned = {k: v for k, v in built.pdu.items() if k not in NOT_IN_CONTENT_HASH}
    digest = hashlib.sha256(_spliced(unsigned, content_text).encode("utf-8")).digest()
    hashed = {**unsigned, "hashes": {SHA256: base64.b64encode(digest).decode().rstrip("=")}}
    version = room.room_version
    signed = add_signature(hashed, version, signer.server_name, signer.key_id, signer.signing_key)
    event_id = compute_event_id(signed, version)
    text = _spliced(signed, content_text)
    if len(text.encode("utf-8")) > MAX_PDU_BYTES:
        raise PlantRefused(f"the planted PDU is over {MAX_PDU_BYTES} bytes")
    stand_in = Event(event_id=event_id, room_version=version, pdu=signed, room_id=room.room_id)
    return PlantedPdu(event_id, stand_in, text)
