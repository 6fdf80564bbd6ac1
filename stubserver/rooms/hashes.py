"""Content hash, reference hash, event ID and v12 room ID (spec: Server-Server API,
"Calculating the content hash for an event", "Calculating the reference hash for an
event"; room versions 4+ "Event IDs"; room version 12 "Room IDs").

All are pure functions of the PDU's JSON. Canonical JSON is ``stubserver.signing``'s
(``canonicaljson``, what Synapse hashes and signs with), over the bytes
``stubserver.rooms.event`` defines; the caller has made sure the PDU holds no floats
(``stubserver.rooms.format``), which have no canonical form. A received
:class:`~stubserver.rooms.event.Event` computes each hash once (``Event.content_hash``,
``Event.signed_bytes``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from stubserver.rooms.event import (
    content_hash_bytes_of,
    create_event_id_for_room,
    signed_bytes_of,
)
from stubserver.rooms.redaction import redact
from stubserver.rooms.versions import RoomVersion
from stubserver.signing.keys import encode_base64 as unpadded_base64

__all__ = [
    "SHA256",
    "ContentHashMismatch",
    "check_content_hash",
    "compute_event_id",
    "content_hash",
    "content_hash_base64",
    "create_event_id_from_room_id",
    "event_id_from_signed_bytes",
    "reference_hash",
    "room_id_from_create_event_id",
    "unpadded_base64",
    "urlsafe_unpadded_base64",
    "with_content_hash",
]
#: The only content-hash algorithm the spec defines, and its key under ``hashes``.
SHA256 = "sha256"


class ContentHashMismatch(ValueError):
    """An event's ``hashes.sha256`` is missing or is not the hash of its content.

    The spec's answer is to use the redacted event instead, not to drop it ("Validating
    hashes and signatures on received events"). ``expected`` is what the content hashes
    to; ``claimed`` what the event says (None when absent or not a string).
    """

    def __init__(self, expected: str, claimed: str | None) -> None:
        super().__init__(f"content hash is {expected}, the event claims {claimed!r}")
        self.expected = expected
        self.claimed = claimed


def urlsafe_unpadded_base64(data: bytes) -> str:
    """URL-safe base64 (``-`` and ``_``) without padding (appendix "URL-safe unpadded
    Base64"): the alphabet of v4+ event IDs."""
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def content_hash(pdu: Mapping[str, Any]) -> bytes:
    """SHA-256 of the canonical JSON of ``pdu`` without ``unsigned``, ``signatures`` and
    ``hashes``. Everything else is covered, unknown top-level keys included."""
    return hashlib.sha256(content_hash_bytes_of(pdu)).digest()


def content_hash_base64(pdu: Mapping[str, Any]) -> str:
    """:func:`content_hash` as stored in ``hashes.sha256``: unpadded standard base64."""
    return unpadded_base64(content_hash(pdu))


def with_content_hash(pdu: Mapping[str, Any]) -> dict[str, Any]:
    """A shallow copy of ``pdu`` with ``hashes`` set to ``{"sha256": <content hash>}``."""
    hashed = dict(pdu)
    hashed["hashes"] = {SHA256: content_hash_base64(pdu)}
    return hashed


def check_content_hash(pdu: Mapping[str, Any], *, digest: bytes | None = None) -> None:
    """Raise :class:`ContentHashMismatch` unless ``hashes.sha256`` is the content hash
    (``digest``, when the caller has it already: ``Event.content_hash``)."""
    actual = content_hash(pdu) if digest is None else digest
    expected = unpadded_base64(actual)
    hashes = pdu.get("hashes")
    claimed = hashes.get(SHA256) if isinstance(hashes, Mapping) else None
    if not isinstance(claimed, str):
        raise ContentHashMismatch(expected, None)
    # Compare the decoded digests, so that a padded encoding of the right hash passes.
    try:
        claimed_digest = base64.b64decode(claimed + "=" * (-len(claimed) % 4), validate=True)
    except ValueError:
        raise ContentHashMismatch(expected, claimed) from None
    if not hmac.compare_digest(claimed_digest, actual):
        raise ContentHashMismatch(expected, claimed)


def reference_hash(pdu: Mapping[str, Any], room_version: RoomVersion) -> bytes:
    """SHA-256 of the canonical JSON of the redacted event without ``signatures`` and
    ``unsigned``. It covers ``hashes``, so any change to the content changes it."""
    return hashlib.sha256(signed_bytes_of(redact(pdu, room_version, copy_values=False))).digest()


def compute_event_id(pdu: Mapping[str, Any], room_version: RoomVersion) -> str:
    """The event ID: ``"$"`` + URL-safe unpadded base64 of the reference hash (v4+)."""
    return "$" + urlsafe_unpadded_base64(reference_hash(pdu, room_version))


def event_id_from_signed_bytes(signed: bytes) -> str:
    """The event ID of the event whose ``Event.signed_bytes`` are ``signed`` (the reference
    hash covers exactly the bytes the signatures cover)."""
    return "$" + urlsafe_unpadded_base64(hashlib.sha256(signed).digest())


def room_id_from_create_event_id(create_event_id: str) -> str:
    """The v12 room ID of the room whose create event has ``create_event_id``: the same
    hash with the ``!`` sigil (room version 12, "Room IDs"). No ``:server`` part."""
    if not create_event_id.startswith("$") or len(create_event_id) < 2:
        raise ValueError(f"{create_event_id!r} is not an event ID")
    return "!" + create_event_id[1:]


def create_event_id_from_room_id(room_id: str) -> str:
    """The event ID of a v12 room's create event, which its room ID implies (v12 events
    never list it in ``auth_events``): ``"$"`` + the room ID without its sigil."""
    if not room_id.startswith("!") or len(room_id) < 2:
        raise ValueError(f"{room_id!r} is not a room ID")
    return create_event_id_for_room(room_id)
