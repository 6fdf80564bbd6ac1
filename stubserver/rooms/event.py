"""One PDU, as a frozen record over its JSON (spec: Server-Server API, "PDUs").

An :class:`Event` keeps the PDU exactly as built or received (``pdu``, never with an
``event_id`` key: v3+ events carry none, the receiver computes it) beside the event ID and
the room version it was checked under. Accessors read the fields the algorithms need; the
format rules that make those accessors safe are applied before an Event is made (see
``stubserver.rooms.format``), so they do not re-validate.

What the checks compute from the PDU (the content hash, the redacted form, the bytes the
signatures and the event ID cover) is kept on the event while it is checked
(:class:`Derived`), so that each is computed once. The encoders below skip the range
walk of ``stubserver.signing.canonical_json``: the values are a PDU past the format
checks (which walk it once) or one we build (and check before sending).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from stubserver.rooms.auth_events import CREATE
from stubserver.rooms.redaction import redact
from stubserver.rooms.versions import RoomVersion
from stubserver.signing.canonical_json import JsonDict, encode_canonical_json

#: Keys the content hash leaves out: they change in transit or depend on the hash.
NOT_IN_CONTENT_HASH = frozenset({"unsigned", "signatures", "hashes"})
#: Keys the reference hash and the signatures leave out of the redacted event.
NOT_SIGNED = frozenset({"unsigned", "signatures"})


def signed_bytes_of(redacted: Mapping[str, Any]) -> bytes:
    """The canonical JSON of a redacted event without ``signatures`` and ``unsigned``:
    what the event's signatures and its reference hash (so its ID) cover."""
    signed = {k: v for k, v in redacted.items() if k not in NOT_SIGNED}
    return encode_canonical_json(signed, checked=True)


def content_hash_bytes_of(pdu: Mapping[str, Any]) -> bytes:
    """The canonical JSON the content hash covers: ``pdu`` without ``unsigned``,
    ``signatures`` and ``hashes``."""
    hashed = {k: v for k, v in pdu.items() if k not in NOT_IN_CONTENT_HASH}
    return encode_canonical_json(hashed, checked=True)


def create_event_id_for_room(room_id: str) -> str:
    """v12: the create event's ID implied by a room ID (``!`` swapped for ``$``; pure,
    unchecked: :func:`stubserver.rooms.hashes.create_event_id_from_room_id` checks)."""
    return "$" + room_id[1:]


@dataclass(slots=True)
class Derived:
    """What is computed from an event's PDU, each at most once (the PDU never changes):
    its redacted form, the bytes its signatures cover, its content hash. The receive
    pipeline (``stubserver.rooms.intake``) and the format checks fill it as they go."""

    redacted: JsonDict | None = None
    signed_bytes: bytes | None = None
    content_hash: bytes | None = None

    def release(self) -> None:
        """Forget all of it (about 1 kB an event): a room calls it once the event is
        checked and stored; anything asked for later is computed again."""
        self.redacted = None
        self.signed_bytes = None
        self.content_hash = None


@dataclass(frozen=True)
class Event:
    """A PDU with its computed event ID and room version."""

    event_id: str
    room_version: RoomVersion
    pdu: Mapping[str, Any]
    # The room the event belongs to: the PDU's room_id, or for a v12 create event (which
    # has none) "!" + its event ID without the sigil.
    room_id: str
    # Not a field of the record: a cache over ``pdu`` (dataclasses.replace starts afresh).
    derived: Derived = field(default_factory=Derived, init=False, repr=False, compare=False)

    def redacted(self) -> JsonDict:
        """The redacted form of the PDU (computed once; treat as read-only)."""
        if self.derived.redacted is None:
            self.derived.redacted = redact(self.pdu, self.room_version, copy_values=False)
        return self.derived.redacted

    def signed_bytes(self) -> bytes:
        """What the signatures and the reference hash cover (computed once):
        :func:`signed_bytes_of` the redacted form."""
        if self.derived.signed_bytes is None:
            self.derived.signed_bytes = signed_bytes_of(self.redacted())
        return self.derived.signed_bytes

    def content_hash(self) -> bytes:
        """SHA-256 of :func:`content_hash_bytes_of` the PDU (computed once)."""
        if self.derived.content_hash is None:
            self.derived.content_hash = hashlib.sha256(content_hash_bytes_of(self.pdu)).digest()
        return self.derived.content_hash

    # The fields the checks read most (a received message: ``state_key`` ~30 times, ``type``
    # ~20, by the auth rules and the auth maps) are read from the PDU once and kept on
    # the instance (issue 22); the PDU never changes.
    @cached_property
    def type(self) -> str:
        return str(self.pdu["type"])

    @cached_property
    def state_key(self) -> str | None:
        value = self.pdu.get("state_key")
        return value if isinstance(value, str) else None

    @property
    def is_state(self) -> bool:
        return self.state_key is not None

    @cached_property
    def sender(self) -> str:
        return str(self.pdu["sender"])

    @cached_property
    def content(self) -> Mapping[str, Any]:
        value = self.pdu.get("content")
        return value if isinstance(value, dict) else {}

    @property
    def prev_event_ids(self) -> tuple[str, ...]:
        return tuple(self.pdu.get("prev_events", ()))

    # Read once, as the fields above (issue 23: state resolution's walks read an event's
    # auth events again for every state set and every walk).
    @cached_property
    def auth_event_ids(self) -> tuple[str, ...]:
        """The auth_events as listed in the PDU (in v12 the create event is implied, not
        listed: :attr:`auth_event_ids_with_create` adds it)."""
        return tuple(self.pdu.get("auth_events", ()))

    @cached_property
    def auth_event_ids_with_create(self) -> tuple[str, ...]:
        """:attr:`auth_event_ids` with v12's implied create event (``"$" + room_id[1:]``)
        added, for every event but the create event itself: the auth events the graph
        walks follow."""
        ids = self.auth_event_ids
        if not self.room_version.room_id_is_create_hash or (
            self.type == CREATE and self.state_key == ""
        ):
            return ids
        # One string per room, not one per event that holds it.
        create_id = sys.intern(create_event_id_for_room(self.room_id))
        return ids if create_id in ids else (*ids, create_id)

    @property
    def depth(self) -> int:
        return int(self.pdu["depth"])

    @property
    def origin_server_ts(self) -> int:
        return int(self.pdu["origin_server_ts"])

    @property
    def redacts(self) -> str | None:
        """The redacted event ID: top-level in v10, in ``content`` from v11 on."""
        value = self.pdu.get("redacts")
        if value is None:
            value = self.content.get("redacts")
        return value if isinstance(value, str) else None

    @property
    def membership(self) -> str | None:
        value = self.content.get("membership")
        return value if isinstance(value, str) else None

    def state_tuple(self) -> tuple[str, str]:
        """The (type, state_key) this state event sets; only for state events."""
        state_key = self.state_key
        if state_key is None:
            raise ValueError(f"{self.event_id} is not a state event")
        return (self.type, state_key)
