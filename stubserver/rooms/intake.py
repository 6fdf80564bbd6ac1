"""The receive pipeline for PDUs other servers give us: parse, fetch keys, verify, check
the content hash, add (spec: Server-Server API "Checks performed on receipt of a PDU";
rooms.md 1.2, 1.3 for Synapse's order and answers).

Every way a PDU arrives goes through :class:`Intake`: a ``/send`` transaction
(:meth:`Intake.receive`, in slices of time), a ``send_join``/``send_leave``/``invite`` body
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
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from stubserver.rooms.event import Event
from stubserver.rooms.format import event_from_pdu
from stubserver.rooms.pdu_keys import FetchVerifyKey, verifier_for
from stubserver.rooms.transaction import (
    RoomLookup,
    SignatureFailure,
    TransactionOutcome,
    TransactionResults,
    checked_copy,
    kept_edus,
    parse_pdu,
    signature_error,
)
from stubserver.rooms.versions import RoomVersion
from stubserver.slices import SLICE_SECONDS, TimeSlices

log = Logger()


class Intake:
    """The receive pipeline over ``fetch_verify_key`` (module docstring). With ``clock``,
    :meth:`receive` hands the reactor back between PDUs once a slice of time is spent
    (``stubserver.slices``); without, it never does (in-process callers)."""

    def __init__(self, fetch_verify_key: FetchVerifyKey, clock: IReactorTime | None = None) -> None:
        self.fetch_verify_key = fetch_verify_key
        self.clock = clock
        #: Times :meth:`receive` handed the reactor back, over all transactions.
        self.pauses = 0

    @staticmethod
    def parse(pdu: object, version: RoomVersion) -> Event:
        """A PDU of a parsed request body as an Event (its values are kept, not copied:
        nobody changes a parsed body); raise ``InvalidPdu``."""
        return event_from_pdu(pdu, version, owned=True)

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

    async def receive(
        self,
        origin: str,
        pdus: Sequence[Any],
        edus: Sequence[Any],
        rooms: RoomLookup,
        now: int,
        *,
        slice_seconds: float = SLICE_SECONDS,
    ) -> TransactionOutcome:
        """A transaction's PDUs and EDUs (``transaction_lists`` of an authenticated request
        body: parsed by ``parse_json_bytes``, and encoded whole without a float by its
        signature check): parse each PDU (``parse_pdu``), fetch the keys, then verify and
        add each to its room, in order, handing the reactor back between PDUs whenever a
        slice of time is spent (issue 22: a /send of 50 PDUs of 63 KB held the reactor
        for 0.5-0.8 s). The outcome is ``stubserver.rooms.transaction.apply_transaction``'s.
        ``slice_seconds``: the slice (``stubserver.slices.slice_seconds_for`` the body).
        """
        slices = TimeSlices(self.clock, slice_seconds) if self.clock is not None else None
        parsed = []
        for pdu in pdus:
            one = parse_pdu(origin, pdu, rooms, owned=True, float_free=True)
            if one is not None:
                parsed.append(one)
            # due() first: a coroutine awaited per PDU, twice, only to return at once
            # cost ~1 us a PDU (issue 22).
            if slices is not None and slices.due():
                await slices.pause_now()
        verify = await verifier_for(self.fetch_verify_key, [e for _, e in parsed])
        results = TransactionResults(origin, now)
        for room, event in parsed:
            results.add(room, event, signature_error(event, verify))
            if slices is not None and slices.due():
                await slices.pause_now()
        if slices is not None:
            self.pauses += slices.pauses
        return results.outcome(kept_edus(origin, edus))
