"""What follows a received transaction or invite, after the endpoint has answered:
:class:`InboundFollowUp`, the server's :class:`~stubserver.rooms.hooks.InboundHooks`.

* a transaction from a server shows it is up: its queued outbound transactions are
  retried now; its EDUs are kept for the control API; its events whose prev or auth
  events we lack are completed with ``get_missing_events``, ``state_ids`` + ``event``,
  or ``event_auth`` (:class:`~stubserver.rooms.remote.GapFiller`), at most
  :data:`MAX_CONCURRENT_GAP_FILLS` at once (rooms.md 1.2 step 9);
* an accepted invite to a room we hold wakes that room's long-polls.
"""

from __future__ import annotations

from typing import Final

from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.logger import Logger
from twisted.python.failure import Failure

from stubserver.rooms.event import Event
from stubserver.rooms.remote import GapFiller
from stubserver.rooms.room import EventRecord, MissingEvents, Room
from stubserver.rooms.sender import TransactionSender
from stubserver.rooms.store import ReceivedInvite, RoomStore
from stubserver.rooms.transaction import TransactionOutcome
from stubserver.rooms.views import RoomViews

#: Most gap fills (received events waiting for their prev or auth events) at once.
MAX_CONCURRENT_GAP_FILLS: Final = 4

log = Logger()


class InboundFollowUp:
    """Implements :class:`~stubserver.rooms.hooks.InboundHooks` (module docstring)."""

    def __init__(
        self, store: RoomStore, sender: TransactionSender, gaps: GapFiller, views: RoomViews
    ) -> None:
        self._store = store
        self._sender = sender
        self._gaps = gaps
        self._views = views
        self._gap_limit = DeferredSemaphore(MAX_CONCURRENT_GAP_FILLS)

    def on_invite(self, invite: ReceivedInvite) -> None:
        """An invite was accepted (already remembered by the store)."""
        room = self._store.get_room(invite.room_id)
        if room is not None:
            self._views.watch(room)
            self._views.wake(room.room_id)

    def on_transaction(self, origin: str, outcome: TransactionOutcome) -> None:
        """A processed ``/send``: keep its EDUs, complete its pending events."""
        self._sender.retry_now(origin)
        if outcome.edus:
            self._views.add_edus(outcome.edus)
        for room, event, missing in outcome.pending:
            d = self._gap_limit.run(self._complete, origin, room, event, missing)
            d.addErrback(self._complete_failed, event.event_id)

    @staticmethod
    def _complete_failed(failure: Failure, event_id: str) -> None:
        log.failure("Completing {event_id} failed", failure, event_id=event_id)

    def _complete(
        self, origin: str, room: Room, event: Event, missing: MissingEvents
    ) -> Deferred[EventRecord | None]:
        return Deferred.fromCoroutine(self._gaps.complete(origin, room, event, missing))
