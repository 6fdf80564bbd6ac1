"""The event format a PDU must have for its room version, and turning a valid PDU into an
:class:`~stubserver.rooms.event.Event` (spec: Server-Server API, "Checks performed on
receipt of a PDU" step 1; room versions' "Event format"; PDU schemas ``pdu_v4``,
``pdu_v11``, ``pdu_v12``; "Size limits" in the Client-Server API).

A PDU that fails here is dropped, not rejected: it never becomes an event, and the
``/send`` answer leaves it out (rooms.md 1.2 step 4). Each check raises
:class:`InvalidPdu` with the reason.

Limits, against Synapse 1.163.2's (read for behaviour in ``synapse/api/constants.py``
``MAX_PDU_SIZE``/``MAX_REQUEST_SIZE``, ``synapse/event_auth.py`` ``_check_size_limits``,
``synapse/federation/federation_base.py`` ``event_from_pdu_json`` and
``synapse/events/utils.py`` ``validate_canonicaljson``; issue 22 row 2):

* the whole PDU: 65,536 bytes of canonical JSON (:data:`MAX_PDU_BYTES`; Synapse:
  ``MAX_PDU_SIZE``, checked with the auth rules, i.e. after the signatures; we check it
  first, with one encode, before any walk in Python);
* ``sender``, ``room_id``, ``state_key``, ``type``: 255 (:data:`MAX_ID_BYTES`; Synapse:
  255 code points always, 255 bytes from v11);
* ``depth``: an integer in 0..2^53-1 (Synapse: the same, ``MAX_DEPTH``);
* values: no floats, integers within ±(2^53-1) (Synapse: ``validate_canonicaljson``, a
  recursive walk of the whole PDU);
* number of keys: Synapse has no limit of its own beyond the size (65,536 bytes hold at
  most 32,768 values, ``0,`` each); neither do we;
* nesting: Synapse has no limit of its own (its walk recurses: Python's recursion limit,
  1,000 by default); ours is :data:`MAX_JSON_DEPTH`, 100, as for every body we parse;
* a request body: Synapse reads at most 200 x 65,536 bytes (``MAX_REQUEST_SIZE``).

What we store: :func:`event_from_pdu` keeps a copy of the PDU as received *without*
``unsigned`` (a deep copy, unless the caller hands over a PDU nobody else changes: a
parsed request body). ``unsigned`` is covered by no hash and no signature, so the event ID and
every check are unchanged; its values (``age``, ``invite_room_state``) are about the
moment of sending, and the endpoints that need them read them off the request. Storing
none of it means we never re-serve another server's unsigned data.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Mapping
from typing import Any

from stubserver.discovery.server_name import is_valid_server_name
from stubserver.rooms.event import (
    Event,
    content_hash_bytes_of,
    signed_bytes_of,
)
from stubserver.rooms.hashes import (
    SHA256,
    create_event_id_from_room_id,
    event_id_from_signed_bytes,
    room_id_from_create_event_id,
)
from stubserver.rooms.redaction import redact
from stubserver.rooms.versions import RoomVersion
from stubserver.signing.canonical_json import encode_canonical_json, holds_float

#: Largest integer magnitude allowed anywhere in a PDU (strict canonical JSON, v6+).
MAX_SAFE_INTEGER = 2**53 - 1
#: Largest depth (spec ``depth_v6``: "the maximum value for an integer (2^53 - 1)").
MAX_DEPTH = MAX_SAFE_INTEGER
#: Largest PDU, in bytes of canonical JSON (spec "Size limits": 65536 bytes).
MAX_PDU_BYTES = 65_536
#: Largest ``type``, ``state_key``, ``sender`` and ``room_id``, in bytes (or characters
#: before v11, where Synapse counts characters; see ``strict_event_byte_limits``).
MAX_ID_BYTES = 255
#: Most ``prev_events`` and ``auth_events`` a PDU may list (Synapse's sanity limits).
MAX_PREV_EVENTS = 20
MAX_AUTH_EVENTS = 10
#: Deepest nesting of objects and arrays we walk (the network parser already caps at 100).
MAX_JSON_DEPTH = 100

CREATE_EVENT_TYPE = "m.room.create"

#: Fields that must be strings no longer than :data:`MAX_ID_BYTES`.
_SIZED_FIELDS = ("type", "state_key", "sender", "room_id")


class InvalidPdu(ValueError):
    """A PDU does not have its room version's event format; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_create_event(pdu: Mapping[str, Any]) -> bool:
    """True for an ``m.room.create`` event (the type decides; auth rule 1 looks only at
    the type too)."""
    return pdu.get("type") == CREATE_EVENT_TYPE


def check_canonical_values(value: object) -> None:
    """Raise :class:`InvalidPdu` if ``value`` holds a float, an integer outside
    ±(2^53-1), a non-string object key, a non-JSON value, or nests too deep.

    Room versions 6+ require strict canonical JSON; ``canonicaljson`` would happily
    encode ``1.0``, so this runs before anything is hashed.
    """
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if item is None or isinstance(item, (bool, str)):
            continue
        if isinstance(item, int):
            if not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                raise InvalidPdu(f"integer {item} is outside ±(2^53-1)")
            continue
        if isinstance(item, float):
            raise InvalidPdu(f"float {item!r}: strict canonical JSON has no floats")
        if depth >= MAX_JSON_DEPTH:
            raise InvalidPdu(f"nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(item, Mapping):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise InvalidPdu(f"object key {key!r} is not a string")
                stack.append((child, depth + 1))
        elif isinstance(item, (list, tuple)):
            stack.extend((child, depth + 1) for child in item)
        else:
            raise InvalidPdu(f"{type(item).__name__} is not a JSON value")


def is_user_id(value: object) -> bool:
    """True when ``value`` looks like a user ID, ``@localpart:server_name``.

    The localpart is only required to be non-empty: historical user IDs allow more than
    today's grammar, and other servers' users are not ours to police.
    """
    if not isinstance(value, str) or not value.startswith("@"):
        return False
    localpart, sep, server_name = value[1:].partition(":")
    return bool(localpart) and bool(sep) and is_valid_server_name(server_name)


def _id_length(value: str, room_version: RoomVersion) -> int:
    # Synapse counts bytes from v11 on and characters before (strict_event_byte_limits).
    return len(value.encode("utf-8")) if room_version.strict_event_byte_limits else len(value)


def _check_event_id_list(pdu: Mapping[str, Any], key: str, limit: int) -> list[str]:
    value = pdu.get(key)
    if not isinstance(value, list):
        raise InvalidPdu(f"{key} must be a list of event IDs")
    if not all(isinstance(item, str) for item in value):
        # Also what a v1-style [[id, hashes], ...] list looks like.
        raise InvalidPdu(f"{key} must hold only event ID strings")
    if len(value) > limit:
        raise InvalidPdu(f"{key} lists {len(value)} events; at most {limit} are allowed")
    return value


def _check_required(pdu: Mapping[str, Any]) -> None:
    if not isinstance(pdu.get("type"), str):
        raise InvalidPdu("type must be a string")
    if not isinstance(pdu.get("content"), Mapping):
        raise InvalidPdu("content must be an object")
    if "state_key" in pdu and not isinstance(pdu["state_key"], str):
        raise InvalidPdu("state_key must be a string when present")
    if not is_user_id(pdu.get("sender")):
        raise InvalidPdu("sender must be a user ID, @localpart:server")
    depth = pdu.get("depth")
    if not isinstance(depth, int) or isinstance(depth, bool):
        raise InvalidPdu("depth must be an integer")
    if not 0 <= depth <= MAX_DEPTH:
        raise InvalidPdu(f"depth {depth} is outside 0..2^53-1")
    ts = pdu.get("origin_server_ts")
    if not isinstance(ts, int) or isinstance(ts, bool):
        raise InvalidPdu("origin_server_ts must be an integer")
    hashes = pdu.get("hashes")
    if not isinstance(hashes, Mapping) or not isinstance(hashes.get(SHA256), str):
        raise InvalidPdu("hashes.sha256 must be a string")
    if not isinstance(pdu.get("signatures"), Mapping):
        raise InvalidPdu("signatures must be an object")


def _check_room_id(pdu: Mapping[str, Any], room_version: RoomVersion) -> None:
    room_id = pdu.get("room_id")
    if room_version.room_id_is_create_hash and is_create_event(pdu):
        # v12: the create event's ID makes the room ID, so it cannot carry one.
        if "room_id" in pdu:
            raise InvalidPdu("a v12 m.room.create event must not have a room_id")
        return
    if not isinstance(room_id, str):
        raise InvalidPdu("room_id must be a string")
    if room_version.room_id_is_create_hash:
        if not room_id.startswith("!") or len(room_id) < 2:
            raise InvalidPdu(f"room_id {room_id!r} does not start with '!'")
        # v12: the create event is implied by room_id and "MUST NOT be selected".
        if create_event_id_from_room_id(room_id) in pdu.get("auth_events", ()):
            raise InvalidPdu("auth_events must not contain the create event")


def _check_sizes(pdu: Mapping[str, Any], room_version: RoomVersion) -> tuple[bytes, list[bytes]]:
    """Check the sizes; the bytes the content hash covers and the encoded ``hashes`` and
    ``signatures`` (encoded once here, for the size and the float check both)."""
    for key in _SIZED_FIELDS:
        value = pdu.get(key)
        if isinstance(value, str) and _id_length(value, room_version) > MAX_ID_BYTES:
            raise InvalidPdu(f"{key} is longer than {MAX_ID_BYTES} bytes")
    hashed = content_hash_bytes_of(pdu)
    # The PDU without ``unsigned`` is the hashed object plus ``hashes`` and ``signatures``:
    # each adds ``,"key":value`` to canonical JSON's sorted object (``type`` and
    # ``content`` are always in the hashed part, so it is never empty). Both are encoded
    # in one object, ``{"hashes":…,"signatures":…}``: its braces and comma are one byte
    # less than the two ``,"key":value`` (issue 22: one encoder call per PDU fewer).
    extra = {key: pdu[key] for key in ("hashes", "signatures") if key in pdu}
    encoded = [encode_canonical_json(extra, checked=True)] if extra else []
    size = len(hashed) + sum(len(part) - 1 for part in encoded)
    if size > MAX_PDU_BYTES:
        raise InvalidPdu(f"the PDU is {size} bytes of canonical JSON; at most {MAX_PDU_BYTES}")
    return hashed, encoded


def validate_pdu(pdu: object, room_version: RoomVersion) -> None:
    """Raise :class:`InvalidPdu` unless ``pdu`` has ``room_version``'s event format.

    Checked: an object; no ``event_id`` key (v3+ events carry none); strict canonical
    values everywhere (``unsigned`` included); ``type``, ``content``, ``sender`` (a user
    ID), ``depth``, ``origin_server_ts``, ``hashes.sha256``, ``signatures``,
    ``prev_events`` (≤ 20) and ``auth_events`` (≤ 10); ``room_id`` (v12: absent on the
    create event, ``!``-prefixed elsewhere, and its create event not in
    ``auth_events``); v10's top-level ``redacts`` a string; the size limits.

    Signatures, the content hash and the auth rules are later steps.
    """
    _validated(pdu, room_version)


def _check_parsed_values(pdu: Mapping[str, Any], encoded: list[bytes]) -> None:
    """:func:`check_canonical_values` for a PDU parsed by ``parse_json_bytes``, which has
    refused integers out of range, nesting past 100 and non-JSON already, and whose keys
    are strings: only floats are left to find, on the encoded bytes (about 1 ms for a
    64 KB PDU of small objects, where the walk takes 20 ms; issue 22 row 2). ``encoded``:
    the PDU's parts encoded so far (the hashed part, ``hashes``, ``signatures``);
    ``unsigned`` is encoded here, and all are searched at once (issue 22: one encoding
    per part, one search per PDU)."""
    if "unsigned" in pdu:
        encoded = [*encoded, encode_canonical_json(pdu["unsigned"], checked=True)]
    # Each part is whole JSON, so no string runs from one part into the next.
    if holds_float(b",".join(encoded)):
        raise InvalidPdu("a float: strict canonical JSON has no floats")


def _validated(
    pdu: object, room_version: RoomVersion, *, parsed: bool = False, float_free: bool = False
) -> bytes:
    """:func:`validate_pdu`; the bytes the content hash covers. ``parsed``: ``pdu`` comes
    from ``parse_json_bytes`` (:func:`_check_parsed_values` replaces the walk);
    ``float_free``: and it was encoded whole and found without a float already (no search)."""
    if not isinstance(pdu, Mapping):
        raise InvalidPdu("a PDU must be a JSON object")
    if "event_id" in pdu:
        raise InvalidPdu("v3+ events must not have an event_id key")
    # The size first (one encode, in C): an oversized PDU costs no walk in Python
    # (issue 22 row 2). The encoder fails on what is not JSON; the walk below then
    # rejects what JSON allows and canonical JSON does not (floats, big integers).
    try:
        hashed, extra = _check_sizes(pdu, room_version)
    except (TypeError, ValueError, RecursionError) as e:
        if isinstance(e, InvalidPdu):
            raise
        raise InvalidPdu(f"not encodable as canonical JSON: {e}") from None
    if float_free:
        pass  # parse_json_bytes's guarantees and the caller's search leave nothing to check
    elif parsed:
        _check_parsed_values(pdu, [hashed, *extra])
    else:
        check_canonical_values(pdu)
    _check_required(pdu)
    _check_event_id_list(pdu, "prev_events", MAX_PREV_EVENTS)
    _check_event_id_list(pdu, "auth_events", MAX_AUTH_EVENTS)
    _check_room_id(pdu, room_version)
    if (
        not room_version.redacts_in_content
        and "redacts" in pdu
        and not isinstance(pdu["redacts"], str)
    ):
        raise InvalidPdu("redacts must be an event ID string when present")
    return hashed


def event_from_pdu(
    pdu: object, room_version: RoomVersion, *, owned: bool = False, float_free: bool = False
) -> Event:
    """Validate ``pdu`` (:func:`validate_pdu`) and make its :class:`Event`.

    The event ID is computed (v4+ reference hash); the room ID is the PDU's, or for a v12
    create event ``"!"`` + its event ID without the sigil. The stored PDU is a deep copy
    without ``unsigned`` (see the module docstring), so later changes to ``pdu`` do not
    reach the Event; with ``owned`` the caller hands ``pdu``'s values over (nobody
    changes them later: a body parsed by ``parse_json_bytes``, whose guarantees let the
    canonical values be checked on the encoded bytes) and they are kept without a copy.
    Treat ``Event.pdu`` as read-only. With ``float_free`` (only with ``owned``) the caller
    also vouches that the body was encoded whole and held no float: an authenticated
    request body, whose X-Matrix signature check did exactly that (issue 22: the search
    per PDU was the second over the same bytes); the floats are not searched again.

    What the checks compute is kept on the Event (``Event.derived``): the content hash,
    the redacted form and the bytes the signatures and the event ID cover.
    """
    hashed = _validated(pdu, room_version, parsed=owned, float_free=owned and float_free)
    assert isinstance(pdu, Mapping)  # _validated has checked it
    keep = _kept if owned else copy.deepcopy
    stored = {key: keep(value) for key, value in pdu.items() if key != "unsigned"}
    redacted = redact(stored, room_version, copy_values=False)
    signed = signed_bytes_of(redacted)
    event_id = event_id_from_signed_bytes(signed)
    if room_version.room_id_is_create_hash and is_create_event(stored):
        room_id = room_id_from_create_event_id(event_id)
    else:
        room_id = str(stored["room_id"])
    event = Event(event_id=event_id, room_version=room_version, pdu=stored, room_id=room_id)
    event.derived.redacted = redacted
    event.derived.signed_bytes = signed
    event.derived.content_hash = hashlib.sha256(hashed).digest()
    return event


def _kept(value: Any) -> Any:
    return value
