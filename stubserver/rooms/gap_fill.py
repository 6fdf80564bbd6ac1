"""Completing received events whose prev or auth events we lack: :class:`GapFiller`.

As a homeserver does (rooms.md 1.2 step 9), for the events of one room that one
transaction left waiting (one :class:`GapJob`):

* one ``get_missing_events`` on the origin for all of them (``latest_events``: the
  heads of the gaps, the events whose missing prevs are not among the job's own events;
  ``limit``: 10 per head, at most 20, as many as Synapse answers), again while an answer
  gains events (at most :data:`MAX_MISSING_EVENTS_ROUNDS`). Synapse asks once per event,
  one event at a time per room; asking for the lot costs us 1 request instead of 50 from
  an origin that divulges nothing, 3 instead of 50 from one that fills 50 gaps (issue 22
  row 7);
* for an event that answer gave us whose own prevs are unknown, ``state_ids`` at the
  missing prev and ``event`` for each ID we lack (at most :data:`MAX_STATE_FILLS_PER_GAP`
  of them); a received event whose prevs are still unknown afterwards is left out, as
  Synapse leaves it ("isn't divulging details about prev_events"), without a
  ``state_ids`` of its own;
* ``event_auth`` for missing auth events.

Bounds (issue 22 row 7): every request has a deadline (:data:`GAP_REQUEST_TIMEOUT_SECONDS`,
Synapse's for ``get_missing_events``); the requests of one transaction share a budget
(:class:`RequestBudget`, :data:`MAX_GAP_REQUESTS_PER_TRANSACTION`); we never dial our
own server. Nothing recurses; a failing peer leaves the event out with a reason
(:attr:`GapFiller.unresolved`). Which jobs run when is
``stubserver.rooms.gap_queue``'s.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlencode

from twisted.internet.defer import Deferred, DeferredSemaphore, TimeoutError, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from stubserver.rooms.errors import RemoteRefused, RemoteUnreachable
from stubserver.rooms.event import Event
from stubserver.rooms.pdu_keys import FetchVerifyKey
from stubserver.rooms.remote import (
    MAX_STATE_IDS,
    PREFIX,
    BadAnswer,
    RemoteCaller,
    add_outliers,
    parse_events,
    path_segment,
    state_map,
    verified,
)
from stubserver.rooms.room import MissingEvents, Room, RoomError

#: ``limit`` we ask get_missing_events for per gap (Synapse's), the most we ask for in
#: one request (several gaps of one job), and the most events we read back per event
#: asked for.
MISSING_EVENTS_LIMIT: Final = 10
MAX_MISSING_EVENTS_LIMIT: Final = 20
MISSING_EVENTS_READ_FACTOR: Final = 2
#: Most get_missing_events requests for one job: asked again only while the previous
#: answer gained events (Synapse answers at most 20 events per request,
#: ``on_get_missing_events``).
MAX_MISSING_EVENTS_ROUNDS: Final = 5
#: Most events fetched (``/event``) to complete one received event's state.
MAX_EVENTS_FETCHED_PER_GAP: Final = 500
#: Most ``/event`` requests in flight at once for one gap.
MAX_CONCURRENT_EVENT_FETCHES: Final = 5
#: Most events of one get_missing_events answer completed with state_ids (the depth of
#: the walk: we never call get_missing_events again for them).
MAX_STATE_FILLS_PER_GAP: Final = 3
#: Most unresolved events remembered with their reason.
MAX_UNRESOLVED: Final = 1_000
#: Deadline of each gap-filling request, in seconds (Synapse gives get_missing_events
#: 60 s, ``_get_missing_events_for_pdu``).
GAP_REQUEST_TIMEOUT_SECONDS: Final = 60.0
#: Most requests the gaps of one received transaction may cost (get_missing_events,
#: state_ids, event, event_auth together): a cooperating origin could make one /send
#: cost 1,504 requests before (issue 22 row 7).
MAX_GAP_REQUESTS_PER_TRANSACTION: Final = 200

log = Logger()


class BudgetSpent(BadAnswer):
    """The transaction's gap-filling requests are spent."""


class RequestBudget:
    """Requests left to the gaps of one transaction (shared by its jobs)."""

    def __init__(self, limit: int = MAX_GAP_REQUESTS_PER_TRANSACTION) -> None:
        self.limit = limit
        self.spent = 0

    def take(self) -> None:
        """Count one request; raise :class:`BudgetSpent` when none is left."""
        if self.spent >= self.limit:
            raise BudgetSpent(f"the transaction's {self.limit} gap-filling requests are spent")
        self.spent += 1


@dataclass(frozen=True)
class GapJob:
    """The events of ``room`` that a transaction from ``origin`` left waiting, with what
    each lacks, and the transaction's request budget."""

    origin: str
    room: Room
    pending: tuple[tuple[Event, MissingEvents], ...]
    budget: RequestBudget


class GapFiller:
    """Completes received events whose prev or auth events we lack (module docstring).
    ``server_name`` is ours (never asked); ``clock`` runs the request deadlines."""

    def __init__(
        self,
        remote: RemoteCaller,
        fetch_verify_key: FetchVerifyKey,
        now: Callable[[], int],
        *,
        clock: IReactorTime,
        server_name: str,
    ) -> None:
        self._remote = remote
        self._fetch_verify_key = fetch_verify_key
        self._now = now
        self._clock = clock
        self._server_name = server_name
        self.unresolved: OrderedDict[str, str] = OrderedDict()

    def note(self, event_id: str, reason: str) -> None:
        """Remember why ``event_id`` was left out (bounded: :data:`MAX_UNRESOLVED`)."""
        log.info("Received event {event_id} left out: {reason}", event_id=event_id, reason=reason)
        self.unresolved[event_id] = reason
        while len(self.unresolved) > MAX_UNRESOLVED:
            self.unresolved.popitem(last=False)

    async def complete(self, job: GapJob) -> None:
        """Fetch what ``job``'s events lack from its origin and add them, oldest first;
        each one left out has its reason in :attr:`unresolved`."""
        origin, room = job.origin, job.room
        events = sorted((event for event, _ in job.pending), key=lambda e: e.depth)
        if origin == self._server_name:
            for event in events:
                self.note(event.event_id, "sent by our own server name: not asked")
            return
        waiting = await self._add_or_wait(job, events)
        # Fixed before the first round: later rounds' extremities are the events the
        # earlier ones filled in, deeper than the gaps left (Synapse asks from the room's
        # least depth).
        depths = [e.depth for e in map(room.get_event, room.forward_extremities) if e is not None]
        min_depth = min(depths, default=0)
        rounds = 0
        while waiting and rounds < MAX_MISSING_EVENTS_ROUNDS:
            rounds += 1
            try:
                gained = await self._missing_events(job, waiting, min_depth)
            except (RemoteRefused, RemoteUnreachable, BadAnswer) as e:
                for event in waiting:
                    self.note(event.event_id, str(e))
                return
            waiting = await self._add_or_wait(job, waiting)
            if not gained:
                break
        for event in waiting:
            missing = ", ".join(room.missing_prev_events(event))
            self.note(
                event.event_id, f"{origin} isn't divulging details about prev_events ({missing})"
            )

    async def _add_or_wait(self, job: GapJob, events: Sequence[Event]) -> list[Event]:
        """Add each of ``events`` in order (an event lacking auth events gets its auth
        chain); the ones still lacking prev events."""
        waiting: list[Event] = []
        for event in events:
            try:
                job.room.add_event(event, self._now(), origin=job.origin)
            except MissingEvents as e:
                if e.kind == "prev":
                    waiting.append(event)
                else:
                    await self._try_add(job, event, pulled=False)
            except RoomError as e:
                self.note(event.event_id, str(e))
        return waiting

    async def _try_add(self, job: GapJob, event: Event, *, pulled: bool) -> None:
        try:
            await self._add(job, event, pulled=pulled)
        except (RemoteRefused, RemoteUnreachable, BadAnswer, RoomError) as e:
            self.note(event.event_id, str(e))

    async def _json(self, job: GapJob, method: str, path: str, body: Any, what: str) -> Any:
        """One request to the job's origin, counted against its budget, with a deadline."""
        job.budget.take()
        pending = Deferred.fromCoroutine(self._remote.json(method, job.origin, path, body, what))
        pending.addTimeout(GAP_REQUEST_TIMEOUT_SECONDS, self._clock)
        try:
            return await pending
        except TimeoutError:
            raise RemoteUnreachable(
                job.origin, f"{what}: no answer within {GAP_REQUEST_TIMEOUT_SECONDS:g} s"
            ) from None

    async def _add(self, job: GapJob, event: Event, *, pulled: bool) -> None:
        """Add ``event``; fetch its auth chain once; for an event get_missing_events gave
        us (``pulled``), the state at its missing prev."""
        room, origin = job.room, job.origin
        try:
            room.add_event(event, self._now(), origin=origin)
            return
        except MissingEvents as e:
            if e.kind == "auth":
                await self._auth_chain(job, event)
                try:
                    room.add_event(event, self._now(), origin=origin)
                    return
                except MissingEvents as still:
                    if still.kind == "auth":
                        raise BadAnswer(f"{origin} did not give the auth events: {still}") from None
        if not pulled:
            missing = ", ".join(room.missing_prev_events(event))
            raise BadAnswer(f"{origin} isn't divulging details about prev_events ({missing})")
        await self._with_state(job, event)

    async def _missing_events(self, job: GapJob, latest: Sequence[Event], min_depth: int) -> int:
        """``get_missing_events`` between our forward extremities and ``latest``; the
        answer's events added oldest first (those whose prevs are still unknown through
        ``state_ids``, at most :data:`MAX_STATE_FILLS_PER_GAP`). How many the answer
        held that we lacked."""
        room = job.room
        extremities = sorted(room.forward_extremities)
        asked = {e.event_id for e in latest}
        heads = [
            e.event_id for e in latest if any(p not in asked for p in room.missing_prev_events(e))
        ]
        limit = min(MISSING_EVENTS_LIMIT * len(heads), MAX_MISSING_EVENTS_LIMIT)
        body = {
            "earliest_events": extremities,
            "latest_events": heads,
            "limit": limit,
            "min_depth": min_depth,
        }
        path = f"{PREFIX}/v1/get_missing_events/{path_segment(room.room_id)}"
        answer = await self._json(job, "POST", path, body, "get_missing_events")
        pdus = answer.get("events") if isinstance(answer, dict) else None
        found = await verified(
            self._fetch_verify_key,
            parse_events(pdus, room.room_version, room.room_id, limit * MISSING_EVENTS_READ_FACTOR),
        )
        fills = 0
        gained = 0
        for missing in sorted(found, key=lambda e: e.depth):
            if missing.event_id in asked:
                continue
            record = room.record(missing.event_id)
            if record is not None and not record.outlier:
                continue
            gained += 1
            try:
                room.add_event(missing, self._now(), origin=job.origin)
                continue
            except MissingEvents as e:
                if fills >= MAX_STATE_FILLS_PER_GAP:
                    self.note(missing.event_id, f"gap too deep: {e}")
                    continue
            except RoomError as e:
                self.note(missing.event_id, str(e))
                continue
            fills += 1
            await self._try_add(job, missing, pulled=True)
        return gained

    async def _auth_chain(self, job: GapJob, event: Event) -> None:
        room = job.room
        path = f"{PREFIX}/v1/event_auth/{path_segment(room.room_id)}/{path_segment(event.event_id)}"
        answer = await self._json(job, "GET", path, None, "event_auth")
        chain = answer.get("auth_chain") if isinstance(answer, dict) else None
        events = await verified(
            self._fetch_verify_key,
            parse_events(chain, room.room_version, room.room_id, MAX_STATE_IDS),
        )
        add_outliers(room, events, self._now(), job.origin)

    async def _with_state(self, job: GapJob, event: Event) -> None:
        """Add ``event`` with the state after its (first) missing prev, from
        ``state_ids`` and ``event`` fetches. With several prev events, the state of the
        first missing one is used (no resolution against the others)."""
        room, origin = job.room, job.origin
        missing = room.missing_prev_events(event)
        if not missing:
            room.add_event(event, self._now(), origin=origin)
            return
        prev_id = missing[0]
        path = f"{PREFIX}/v1/state_ids/{path_segment(room.room_id)}?" + urlencode(
            {"event_id": prev_id}
        )
        answer = await self._json(job, "GET", path, None, "state_ids")
        if not isinstance(answer, dict):
            raise BadAnswer(f"{origin}'s state_ids answer is not an object")
        pdu_ids = _id_list(answer.get("pdu_ids"))
        chain_ids = _id_list(answer.get("auth_chain_ids"))
        wanted = [
            i for i in dict.fromkeys([*chain_ids, *pdu_ids, prev_id]) if room.get_event(i) is None
        ]
        if len(wanted) > MAX_EVENTS_FETCHED_PER_GAP:
            raise BadAnswer(
                f"completing {event.event_id} needs {len(wanted)} events; at most "
                f"{MAX_EVENTS_FETCHED_PER_GAP} are fetched"
            )
        fetched = await self._fetch_events(job, wanted)
        add_outliers(room, fetched, self._now(), origin)
        after = state_map(room, pdu_ids)
        prev = room.record(prev_id)
        if prev is None:
            raise BadAnswer(f"{origin} did not give the prev event {prev_id}")
        if prev.event.is_state and prev.outcome != "rejected":
            after[prev.event.state_tuple()] = prev_id
        room.add_event(event, self._now(), origin=origin, state_before=after)

    async def _fetch_events(self, job: GapJob, event_ids: Sequence[str]) -> list[Event]:
        """``GET /event/{id}`` for each ID, :data:`MAX_CONCURRENT_EVENT_FETCHES` at a
        time; the events that came back (right ID, room and signature)."""
        room, origin = job.room, job.origin
        semaphore = DeferredSemaphore(MAX_CONCURRENT_EVENT_FETCHES)
        found: list[Event] = []

        async def one(event_id: str) -> None:
            path = f"{PREFIX}/v1/event/{path_segment(event_id)}"
            try:
                answer = await self._json(job, "GET", path, None, "event")
            except (RemoteRefused, RemoteUnreachable, BudgetSpent) as e:
                # A failed request has its line already (RemoteCaller).
                log.debug(
                    "No event {event_id} from {origin}: {error}",
                    event_id=event_id,
                    origin=origin,
                    error=e,
                )
                return
            pdus = answer.get("pdus") if isinstance(answer, dict) else None
            events = [
                e
                for e in parse_events(pdus, room.room_version, room.room_id, 1)
                if e.event_id == event_id
            ]
            found.extend(await verified(self._fetch_verify_key, events))

        def start(event_id: str) -> Deferred[None]:
            return Deferred.fromCoroutine(one(event_id))

        pending = [semaphore.run(start, event_id) for event_id in event_ids]
        if pending:
            await gatherResults(pending, consumeErrors=True)
        return found


def _id_list(value: object) -> list[str]:
    if not isinstance(value, list):
        raise BadAnswer("a state_ids list is missing")
    return [v for v in value[:MAX_STATE_IDS] if isinstance(v, str)]
