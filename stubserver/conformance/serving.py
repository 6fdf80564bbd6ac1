"""Judging what a homeserver serves of a room over federation, against the peer's own
copy of the room (pure).

Server-Server API v1.19: a PDU it serves must have the room version's format, be signed
by its sender's server and, where nothing was redacted, match its content hash ("PDUs",
"Validating hashes and signatures on received events"); the event IDs it lists are
compared as sets with what the peer computes from its own events: the state at an event,
the auth chain (``auth_events``, recursively; in v12 the create event is implied by the
room ID: "Room version 12", "Event format"), the events before an event by
``prev_events``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from nacl.signing import VerifyKey

from stubserver.conformance.runner import CheckFailed
from stubserver.rooms.format import InvalidPdu, validate_pdu
from stubserver.rooms.hashes import (
    ContentHashMismatch,
    check_content_hash,
    compute_event_id,
    create_event_id_from_room_id,
)
from stubserver.rooms.signing import EventSignatureError, verify_event_signature
from stubserver.rooms.versions import RoomVersion

#: ``{server_name: {key_id: verify key}}``: the keys a served PDU's signature is checked with.
Keys = Mapping[str, Mapping[str, VerifyKey]]
#: ``{event_id: pdu}``.
Pdus = Mapping[str, Mapping[str, Any]]


def _id_list(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def served_pdus(
    what: str, pdus: object, version: RoomVersion, keys: Keys, *, intact: bool = True
) -> dict[str, dict[str, Any]]:
    """``{event_id: pdu}`` of a list of served PDUs, after checking each: the room
    version's format, a valid signature of its sender's server and (``intact``) its
    content hash. CheckFailed naming the first PDU that fails (pure)."""
    if not isinstance(pdus, list):
        raise CheckFailed(what, "a list of PDUs", pdus)
    result: dict[str, dict[str, Any]] = {}
    for pdu in pdus:
        try:
            validate_pdu(pdu, version)
        except InvalidPdu as e:
            raise CheckFailed(f"{what}: a PDU's format", "the room version's", e) from None
        assert isinstance(pdu, dict)  # validate_pdu checked it is an object
        event_id = compute_event_id(pdu, version)
        server = str(pdu.get("sender", "")).partition(":")[2]
        signer = _check_signed(pdu, version, server, keys.get(server) or {})
        if signer is not None:
            raise CheckFailed(f"{what}: {event_id}'s signature by {server}", "valid", signer)
        if intact:
            try:
                check_content_hash(pdu)
            except ContentHashMismatch as e:
                raise CheckFailed(f"{what}: {event_id}'s content hash", "matching", e) from None
        if event_id in result:
            raise CheckFailed(what, "each PDU once", f"{event_id} twice")
        result[event_id] = pdu
    return result


def _check_signed(
    pdu: Mapping[str, Any], version: RoomVersion, server: str, keys: Mapping[str, VerifyKey]
) -> str | None:
    """Why ``server``'s signature on ``pdu`` is not valid under one of ``keys``; None
    when it is."""
    signed = (pdu.get("signatures") or {}).get(server)
    usable = [k for k in signed or {} if k in keys]
    if not usable:
        return f"no signature by a key we know ({sorted(signed or {})}, known {sorted(keys)})"
    try:
        verify_event_signature(pdu, version, server, usable[0], keys[usable[0]])
    except EventSignatureError as e:
        return f"invalid ({e})"
    return None


def auth_events_of(event_id: str, pdu: Mapping[str, Any], version: RoomVersion) -> list[str]:
    """An event's auth events; in v12 its create event (implied by the room ID) too,
    but for the create event itself (pure)."""
    listed = _id_list(pdu.get("auth_events"))
    if version.room_id_is_create_hash and pdu.get("type") != "m.room.create":
        create = create_event_id_from_room_id(str(pdu.get("room_id", "")))
        if create != event_id and create not in listed:
            listed.append(create)
    return listed


def auth_chain(events: Pdus, roots: Iterable[str], version: RoomVersion) -> set[str]:
    """The auth chain of ``roots``: their auth events, and theirs, recursively (the
    roots themselves only where one is an auth event of another). CheckFailed when an
    event of the chain is not in ``events`` (pure)."""
    chain: set[str] = set()
    todo = list(roots)
    seen: set[str] = set()
    while todo:
        event_id = todo.pop()
        if event_id in seen:
            continue
        seen.add(event_id)
        pdu = events.get(event_id)
        if pdu is None:
            raise CheckFailed("the auth chain we compute", f"{event_id} known to us", "unknown")
        for auth in auth_events_of(event_id, pdu, version):
            chain.add(auth)
            todo.append(auth)
    return chain


def ancestors(events: Pdus, start: Iterable[str], *, stop: Iterable[str] = ()) -> set[str]:
    """The events before ``start`` by ``prev_events``, recursively, not walking past
    ``stop`` (which are left out too); those we do not hold end the walk (pure)."""
    stopped = set(stop)
    found: set[str] = set()
    todo = [p for s in start for p in _id_list((events.get(s) or {}).get("prev_events"))]
    while todo:
        event_id = todo.pop()
        if event_id in found or event_id in stopped:
            continue
        found.add(event_id)
        todo += _id_list((events.get(event_id) or {}).get("prev_events"))
    return found


def expect_ids(
    what: str, expected: Iterable[str], got: object, *, also_allowed: Iterable[str] = ()
) -> list[str]:
    """``got`` (a list of event IDs) is the set ``expected``, plus at most
    ``also_allowed``, each once; CheckFailed naming what is missing and what is extra
    (pure). The IDs, as given."""
    if not isinstance(got, list) or not all(isinstance(g, str) for g in got):
        raise CheckFailed(what, "a list of event IDs", got)
    want, allowed = set(expected), set(also_allowed)
    missing = sorted(want - set(got))
    extra = sorted(set(got) - want - allowed)
    doubled = sorted({g for g in got if got.count(g) > 1})
    if missing or extra or doubled:
        parts = [f"missing {missing}" if missing else "", f"not expected {extra}" if extra else ""]
        parts.append(f"listed twice {doubled}" if doubled else "")
        raise CheckFailed(what, f"{len(want)} events", "; ".join(p for p in parts if p))
    return list(got)


def state_ids(state: Sequence[Mapping[str, Any]], version: RoomVersion) -> set[str]:
    """The event IDs of a list of state PDUs (pure)."""
    return {compute_event_id(pdu, version) for pdu in state}


def same_event(what: str, ours: Mapping[str, Any], served: Mapping[str, Any]) -> None:
    """The served PDU is ours but for ``unsigned`` (which servers may change in
    transit, "Calculating the content hash for an event") (pure)."""
    mine = {k: v for k, v in ours.items() if k != "unsigned"}
    theirs = {k: v for k, v in served.items() if k != "unsigned"}
    if mine != theirs:
        differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        raise CheckFailed(what, "the event as we hold it", f"different {differ}")


def leaks(text: str, answer: Any) -> bool:
    """Whether ``text`` appears anywhere in a JSON answer's strings (pure)."""
    if isinstance(answer, str):
        return text in answer
    if isinstance(answer, dict):
        return any(leaks(text, v) for v in answer.values())
    if isinstance(answer, list):
        return any(leaks(text, v) for v in answer)
    return False
