"""What follows a received transaction or invite, after the endpoint has answered:
:class:`InboundFollowUp`, the server's :class:`~stubserver.rooms.hooks.InboundHooks`.

* a transaction from a server shows it is up: its queued outbound transactions are
  retried now; its EDUs are kept for the control API; its events whose prev or auth
  events we lack are completed with ``get_missing_events``, ``state_ids`` + ``event``,
  or ``event_auth`` (:class:`~stubserver.rooms.gap_fill.GapFiller`, rooms.md 1.2 step
  9): one job per room per transaction, the jobs sharing the transaction's request
  budget, run by a :class:`~stubserver.rooms.gap_queue.GapQueue` (bounded, with slots
  per origin: issue 22 row 7);
* an accepted invite to a room we hold wakes that room's long-polls.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred

from stubserver.rooms.event import Event
from stubserver.rooms.gap_fill import GapFiller, GapJob, RequestBudget
from stubserver.rooms.gap_queue import GapQueue
from stubserver.rooms.room import MissingEvents, Room
from stubserver.rooms.sender import TransactionSender
from stubserver.rooms.store import ReceivedInvite, RoomStore
from stubserver.rooms.transaction import TransactionOutcome
from stubserver.rooms.views import RoomViews


class InboundFollowUp:
    """Implements :class:`~stubserver.rooms.hooks.InboundHooks` (module docstring)."""

    def __init__(
        self, store: RoomStore, sender: TransactionSender, gaps: GapFiller, views: RoomViews
    ) -> None:
        self._store = store
        self._sender = sender
        self._gaps = gaps
        self._views = views
        self.gap_queue = GapQueue(self._complete)

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
        by_room: dict[str, tuple[Room, list[tuple[Event, MissingEvents]]]] = {}
        for room, event, missing in outcome.pending:
            by_room.setdefault(room.room_id, (room, []))[1].append((event, missing))
        budget = RequestBudget()
        for room, pending in by_room.values():
            job = GapJob(origin, room, tuple(pending), budget)
            if not self.gap_queue.submit(job):
                for event, _ in pending:
                    self._gaps.note(event.event_id, "too many gaps waiting to be filled")

    def _complete(self, job: GapJob) -> Deferred[None]:
        return Deferred.fromCoroutine(self._gaps.complete(job))
