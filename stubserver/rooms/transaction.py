"""Processing an inbound ``PUT /_matrix/federation/v1/send/{txnId}`` body, pure.

Spec: Server-Server API "Transactions" and "Checks performed on receipt of a PDU";
rooms.md 1.2 for what Synapse 1.163.2 answers, which we answer the same way:

* more than :data:`MAX_PDUS_PER_TRANSACTION` PDUs or :data:`MAX_EDUS_PER_TRANSACTION`
  EDUs: 400 ``{}``, nothing processed (:class:`TransactionRefused`);
* a transaction ID seen before from the same origin: the stored answer, the new body
  ignored (:class:`TransactionMemory`, bounded by count and by age);
* an EDU without a string ``edu_type``, or whose content is over
  :data:`MAX_EDU_CONTENT_BYTES`, is dropped (the others are kept for the control API);
* per PDU: one that fails to parse, or names a room we do not know, is *absent* from the
  answer; so is one from an origin with no joined user in the room that is not one of
  the origin's own membership events (:func:`may_send_into`, issue 22 row 2), dropped
  before it is parsed; a signature failure is ``{"error": "..."}``; anything else is
  ``{}``, whatever the auth checks decide later (they show only in the room's outcomes).

Signature and key checks are injected (:data:`VerifyPdu`), so the Twisted shell can fetch
keys first (:func:`parse_transaction`, verify, then :func:`apply_transaction`), while
tests and in-process peers call :func:`process_transaction` in one go.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from nacl.signing import VerifyKey
from twisted.internet.interfaces import IReactorTime

from stubserver.cache import BoundedCache
from stubserver.rooms.event import Event
from stubserver.rooms.format import InvalidPdu, event_from_pdu
from stubserver.rooms.hashes import ContentHashMismatch, check_content_hash
from stubserver.rooms.room import EventRecord, MissingEvents, Room, RoomError
from stubserver.rooms.signing import EventSignatureError, verify_signed_event
from stubserver.signing.canonical_json import encode_json

#: Synapse's limits on one transaction (rooms.md 1.2 step 1).
MAX_PDUS_PER_TRANSACTION: Final = 50
MAX_EDUS_PER_TRANSACTION: Final = 100
#: Largest EDU content kept, in bytes of compact JSON (issue 22, row 9). The spec bounds
#: PDUs (65,536 bytes) but not EDUs, and Synapse has no EDU limit beyond its request body
#: cap: it keeps only what it understands of an EDU (a typing flag per user and room, a
#: receipt's event ID per user), never the EDU. We keep EDUs whole for the control API's
#: ``edus`` feed, so each is bounded as a PDU is; a typing EDU is ~100 bytes, a receipt
#: map for one event a few hundred. A larger EDU is dropped like a malformed one.
MAX_EDU_CONTENT_BYTES: Final = 65_536
#: How long, and how many, answered transactions are remembered for deduplication.
TRANSACTION_MEMORY_SECONDS: Final = 24 * 60 * 60
MAX_REMEMBERED_TRANSACTIONS: Final = 10_000

RoomLookup = Callable[[str], "Room | None"]


class SignatureFailure(Exception):
    """The PDU's signatures do not verify; ``str()`` is the per-PDU error text."""


#: Check an event's signatures (keys valid at its ``origin_server_ts``); raise
#: :class:`SignatureFailure`. Content hashes are checked here, not by the callable.
VerifyPdu = Callable[[Event], None]


class TransactionRefused(Exception):
    """The whole transaction is refused: answer ``status`` with ``body``."""

    def __init__(self, status: int, body: Mapping[str, Any], reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.body = dict(body)


@dataclass(frozen=True)
class Edu:
    """One EDU as received; ``size``: its content's bytes as compact JSON (0: not measured)."""

    origin: str
    edu_type: str
    content: Any
    size: int = 0


def kept_edus(origin: str, edus: Iterable[Any]) -> tuple[Edu, ...]:
    """The EDUs of a transaction worth keeping (pure): those with a string ``edu_type`` and
    content of at most :data:`MAX_EDU_CONTENT_BYTES`, each measured."""
    kept = []
    for edu in edus:
        if not isinstance(edu, Mapping) or not isinstance(edu.get("edu_type"), str):
            continue
        content = edu.get("content")
        size = len(encode_json(content))
        if size <= MAX_EDU_CONTENT_BYTES:
            kept.append(Edu(origin, edu["edu_type"], content, size))
    return tuple(kept)


@dataclass(frozen=True)
class ParsedTransaction:
    """A transaction within the limits: its PDUs that parsed, each with its room, and
    its EDUs (malformed EDUs are dropped)."""

    origin: str
    txn_id: str
    pdus: tuple[tuple[Room, Event], ...]
    edus: tuple[Edu, ...]


@dataclass(frozen=True)
class TransactionOutcome:
    """The answer body and what happened: events added (with their outcome), events
    waiting for missing prev or auth events (the shell fetches, then re-adds), EDUs."""

    response: dict[str, Any]
    added: tuple[EventRecord, ...] = ()
    pending: tuple[tuple[Room, Event, MissingEvents], ...] = ()
    edus: tuple[Edu, ...] = ()
    replayed: bool = False


MEMBER_EVENT_TYPE: Final = "m.room.member"


def may_send_into(room: Room, origin: str, pdu: Mapping[str, Any]) -> bool:
    """True when ``origin`` may send ``pdu`` (not yet parsed) into ``room``: it has a
    joined user there, or ``pdu`` is a membership event of one of its own users (its way
    in: a join, a knock, a leave declining an invite).

    Anything else from a server outside the room could only be rejected by the auth rules
    (its senders are not joined), so it is dropped before it costs a parse, a key fetch
    or a signature check, and nothing of it is kept (issue 22 row 2). Synapse stages and
    then rejects such events; what it answers is the same ``/send`` 200, and a rejected
    event is invisible to clients either way.
    """
    if room.is_server_in_room(origin):
        return True
    state_key = pdu.get("state_key")
    return (
        pdu.get("type") == MEMBER_EVENT_TYPE
        and isinstance(state_key, str)
        and state_key.partition(":")[2] == origin
    )


def transaction_lists(body: object) -> tuple[list[Any], list[Any]]:
    """The PDUs and EDUs of a ``/send`` body within the limits; raise
    :class:`TransactionRefused`."""
    if not isinstance(body, Mapping):
        raise TransactionRefused(
            400, {"errcode": "M_BAD_JSON", "error": "transaction must be an object"}, "not object"
        )
    pdus = body.get("pdus", [])
    edus = body.get("edus", [])
    if not isinstance(pdus, list) or not isinstance(edus, list):
        raise TransactionRefused(
            400, {"errcode": "M_BAD_JSON", "error": "pdus and edus must be lists"}, "not lists"
        )
    if len(pdus) > MAX_PDUS_PER_TRANSACTION or len(edus) > MAX_EDUS_PER_TRANSACTION:
        # Synapse answers exactly 400 {} (rooms.md 1.2 step 1).
        raise TransactionRefused(400, {}, f"{len(pdus)} PDUs, {len(edus)} EDUs: too many")
    return pdus, edus


def parse_pdu(
    origin: str, pdu: object, rooms: RoomLookup, *, owned: bool = False, float_free: bool = False
) -> tuple[Room, Event] | None:
    """One PDU of ``origin``'s transaction parsed under its room's version, with its room;
    None when it fails to parse, names a room we do not know, or ``origin`` may not send it
    there (:func:`may_send_into`). ``owned``, ``float_free``: the body's values are handed
    over, and were found without a float (``event_from_pdu``)."""
    room_id = pdu.get("room_id") if isinstance(pdu, Mapping) else None
    room = rooms(room_id) if isinstance(room_id, str) else None
    if room is None:
        # A v12 create event has no room_id: it never arrives by /send for a room
        # we hold, so it is dropped like any unknown room.
        return None
    assert isinstance(pdu, Mapping)  # it has a room_id
    if not may_send_into(room, origin, pdu):
        return None
    try:
        return room, event_from_pdu(pdu, room.room_version, owned=owned, float_free=float_free)
    except InvalidPdu:
        return None


def parse_transaction(
    origin: str, txn_id: str, body: object, rooms: RoomLookup, *, owned: bool = False
) -> ParsedTransaction:
    """Apply the limits (:func:`transaction_lists`) and parse each PDU
    (:func:`parse_pdu`: those that fail, name an unknown room, or that ``origin`` may not
    send there are left out). Raise :class:`TransactionRefused`. ``owned``: the body's
    values are handed over (``event_from_pdu``)."""
    pdus, edus = transaction_lists(body)
    parsed = [parse_pdu(origin, pdu, rooms, owned=owned) for pdu in pdus]
    return ParsedTransaction(
        origin, txn_id, tuple(p for p in parsed if p is not None), kept_edus(origin, edus)
    )


def checked_copy(event: Event) -> Event:
    """The event to store after the content hash check: itself, or on a mismatch its
    redacted copy (same event ID), as Synapse stores (rooms.md 1.2 step 7). The hash, the
    redacted form and its signed bytes are the ones computed for ``event``."""
    try:
        check_content_hash(event.pdu, digest=event.content_hash())
    except ContentHashMismatch:
        redacted = Event(
            event_id=event.event_id,
            room_version=event.room_version,
            pdu=event.redacted(),
            room_id=event.room_id,
        )
        # Redacting a redacted event changes nothing: the same form, the same bytes.
        redacted.derived.redacted = event.redacted()
        redacted.derived.signed_bytes = event.signed_bytes()
        return redacted
    return event


@dataclass
class TransactionResults:
    """The answer and outcome of a transaction of ``origin``, built PDU by PDU
    (:meth:`add`), so that a caller may hand the reactor back between PDUs."""

    origin: str
    now: int
    results: dict[str, dict[str, str]] = field(default_factory=dict)
    added: list[EventRecord] = field(default_factory=list)
    pending: list[tuple[Room, Event, MissingEvents]] = field(default_factory=list)

    def add(self, room: Room, event: Event, signature_error: str | None) -> None:
        """Answer ``event`` and, without a signature error, add it to ``room`` (content
        hash checked here)."""
        if signature_error is not None:
            self.results[event.event_id] = {"error": signature_error}
            return
        stored = checked_copy(event)
        self.results[event.event_id] = {}
        try:
            self.added.append(room.add_event(stored, self.now, origin=self.origin))
        except MissingEvents as missing:
            self.pending.append((room, stored, missing))
        except RoomError:
            # RoomFull or a failed state resolution: the event is not stored, but the
            # answer stays {} as Synapse's (it stages first, decides later).
            pass

    def outcome(self, edus: tuple[Edu, ...]) -> TransactionOutcome:
        """The answer ``{"pdus": {event_id: {} | {"error": ...}}}`` and what happened."""
        return TransactionOutcome(
            {"pdus": self.results}, tuple(self.added), tuple(self.pending), edus
        )


def apply_transaction(
    parsed: ParsedTransaction,
    signature_errors: Mapping[str, str],
    now: int,
) -> TransactionOutcome:
    """Add each parsed PDU without a signature error to its room (content hash checked
    here), and build the answer ``{"pdus": {event_id: {} | {"error": ...}}}``."""
    results = TransactionResults(parsed.origin, now)
    for room, event in parsed.pdus:
        results.add(room, event, signature_errors.get(event.event_id))
    return results.outcome(parsed.edus)


KeyLookup = Callable[[str, str, int], "VerifyKey | None"]


def required_signers(event: Event) -> list[str]:
    """The servers that must sign ``event`` (v3+): the sender's, and for a join with
    ``join_authorised_via_users_server`` that user's (rooms.md 1.3)."""
    servers = [event.sender.partition(":")[2]]
    authoriser = event.content.get("join_authorised_via_users_server")
    if event.type == "m.room.member" and event.membership == "join" and isinstance(authoriser, str):
        servers.append(authoriser.partition(":")[2])
    return list(dict.fromkeys(servers))


def verify_with_keys(lookup: KeyLookup) -> VerifyPdu:
    """A :data:`VerifyPdu` over ``lookup(server, key_id, minimum_valid_until_ts)``, which
    answers a key valid at the event's ``origin_server_ts`` or None (enforce_key_validity,
    rooms.md 1.3). Each required server needs one ed25519 signature that verifies."""

    def verify(event: Event) -> None:
        signatures = event.pdu.get("signatures")
        for server in required_signers(event):
            block = signatures.get(server) if isinstance(signatures, Mapping) else None
            key_ids = (
                sorted(k for k in block if k.startswith("ed25519:"))
                if isinstance(block, Mapping)
                else []
            )
            failure = "no signature"
            for key_id in key_ids:
                key = lookup(server, key_id, event.origin_server_ts)
                if key is None:
                    failure = "Failed to find any key to satisfy"
                    continue
                try:
                    verify_signed_event(event, server, key_id, key)
                    break
                except EventSignatureError as e:
                    failure = e.reason
            else:
                raise SignatureFailure(
                    f"unable to verify signature for sender domain {server}: {failure}"
                )

    return verify


def signature_error(event: Event, verify: VerifyPdu) -> str | None:
    """Run ``verify`` on ``event``; the per-PDU error text (Synapse's wording) or None."""
    try:
        verify(event)
    except SignatureFailure as e:
        return f"ERROR 403: {e}"
    return None


def signature_errors(parsed: ParsedTransaction, verify: VerifyPdu) -> dict[str, str]:
    """:func:`signature_error` of each parsed PDU, by event ID (those with one)."""
    errors: dict[str, str] = {}
    for _, event in parsed.pdus:
        error = signature_error(event, verify)
        if error is not None:
            errors[event.event_id] = error
    return errors


@dataclass
class TransactionMemory:
    """Answers already given, by ``(origin, txn_id)``: bounded in count and age."""

    clock: IReactorTime
    max_entries: int = MAX_REMEMBERED_TRANSACTIONS
    seconds: float = TRANSACTION_MEMORY_SECONDS
    _cache: BoundedCache[tuple[str, str], dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self._cache = BoundedCache(self.clock, max_entries=self.max_entries)

    def answer(self, origin: str, txn_id: str) -> dict[str, Any] | None:
        """The stored answer, or None."""
        return self._cache.get((origin, txn_id))

    def remember(self, origin: str, txn_id: str, response: dict[str, Any]) -> None:
        """Store the answer given to ``(origin, txn_id)``."""
        self._cache.set((origin, txn_id), response, self.seconds)

    def __len__(self) -> int:
        return len(self._cache)


def process_transaction(
    origin: str,
    txn_id: str,
    body: object,
    *,
    rooms: RoomLookup,
    verify: VerifyPdu,
    memory: TransactionMemory,
    now: int,
) -> TransactionOutcome:
    """The whole inbound ``/send``: replay a remembered answer, else parse, verify,
    apply and remember. Raise :class:`TransactionRefused` (not remembered, as Synapse
    stores only answered transactions)."""
    stored = memory.answer(origin, txn_id)
    if stored is not None:
        return TransactionOutcome(stored, replayed=True)
    parsed = parse_transaction(origin, txn_id, body, rooms)
    outcome = apply_transaction(parsed, signature_errors(parsed, verify), now)
    memory.remember(origin, txn_id, outcome.response)
    return outcome
