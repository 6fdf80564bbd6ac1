"""The receive pipeline for PDUs other servers give us: parse, fetch keys, verify, check
the content hash, add (spec: Server-Server API "Checks performed on receipt of a PDU";
rooms.md 1.2, 1.3 for Synapse's order and answers).

Every way a PDU arrives goes through :class:`Intake`: a ``/send`` transaction
(:meth:`Intake.transaction`), a ``send_join``/``send_leave``/``invite`` body
(:meth:`Intake.parse` then :meth:`Intake.checked`), and the PDUs of other servers'
answers (a send_join answer, get_missing_events, state, event_auth: :meth:`Intake.verified`).
The steps are the pure functions of ``stubserver.rooms.format``,
``stubserver.rooms.transaction`` and ``stubserver.rooms.pdu_keys``; what they compute per
event (the content hash, the redacted form, the bytes the signatures and the event ID
cover) is computed once and kept on the :class:`~stubserver.rooms.event.Event`
(``Event.derived``), so each PDU is encoded twice (its content for the hash and the size
check, its redacted form for the ID and the signatures) and copied once at most.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.logger import Logger

from stubserver.rooms.event import Event
from stubserver.rooms.format import event_from_pdu
from stubserver.rooms.pdu_keys import FetchVerifyKey, verifier_for
from stubserver.rooms.transaction import (
    ParsedTransaction,
    RoomLookup,
    SignatureFailure,
    TransactionOutcome,
    apply_transaction,
    checked_copy,
    parse_transaction,
    signature_errors,
)
from stubserver.rooms.versions import RoomVersion

log = Logger()


class Intake:
    """The receive pipeline over ``fetch_verify_key`` (module docstring)."""

    def __init__(self, fetch_verify_key: FetchVerifyKey) -> None:
        self.fetch_verify_key = fetch_verify_key

    @staticmethod
    def parse(pdu: object, version: RoomVersion) -> Event:
        """A PDU of a parsed request body as an Event (its values are kept, not copied:
        nobody changes a parsed body); raise ``InvalidPdu``."""
        return event_from_pdu(pdu, version, owned=True)

    @staticmethod
    def parse_transaction(
        origin: str, txn_id: str, body: object, rooms: RoomLookup
    ) -> ParsedTransaction:
        """``stubserver.rooms.transaction.parse_transaction`` over a parsed request body."""
        return parse_transaction(origin, txn_id, body, rooms, owned=True)

    async def checked(self, event: Event) -> Event:
        """``event`` once its signatures verify (keys fetched first; raise
        :class:`~stubserver.rooms.transaction.SignatureFailure`), after the content hash
        check: itself, or its redacted copy on a mismatch."""
        verify = await verifier_for(self.fetch_verify_key, [event])
        verify(event)
        return checked_copy(event)

    async def verified(self, events: Sequence[Event]) -> list[Event]:
        """The events whose signatures verify (keys fetched first), each after the
        content hash check (a mismatch gives the redacted copy, rooms.md 1.2 step 7);
        the others are dropped and logged."""
        verify = await verifier_for(self.fetch_verify_key, events)
        kept: list[Event] = []
        for event in events:
            try:
                verify(event)
            except SignatureFailure as e:
                log.info("Dropped {event_id}: {error}", event_id=event.event_id, error=e)
                continue
            kept.append(checked_copy(event))
        return kept

    async def transaction(self, parsed: ParsedTransaction, now: int) -> TransactionOutcome:
        """Verify a parsed transaction's PDUs (keys fetched first) and add each to its
        room: ``stubserver.rooms.transaction.apply_transaction``'s outcome."""
        verify = await verifier_for(self.fetch_verify_key, [e for _, e in parsed.pdus])
        return apply_transaction(parsed, signature_errors(parsed, verify), now)
