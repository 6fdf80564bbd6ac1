"""What the room service asks of other servers, and what it does with their answers.

* :class:`RemoteCaller`: the signed requests (alias query, ``make_join``/``make_leave``,
  ``send_join``/``send_leave`` v2, ``/v2/invite``) with their failures turned into
  :class:`~stubserver.rooms.errors.RemoteRefused` (a non-2xx answer) and
  :class:`~stubserver.rooms.errors.RemoteUnreachable` (no answer);
* :func:`room_from_join_answer`: a :class:`~stubserver.rooms.room.Room` from a
  ``send_join`` v2 answer, after verifying every PDU in ``state`` and ``auth_chain``
  (signature of the sender's server with a key valid at the event's time, content hash
  with a redacted copy on mismatch, the room version's format), as Synapse does
  (rooms.md 1.8);
* :class:`GapFiller`: completing a received event whose prev or auth events we lack, as
  a homeserver does (rooms.md 1.2 step 9): ``get_missing_events`` on the origin, then for
  an event whose prevs are still unknown ``state_ids`` at the missing prev and ``event``
  for each ID we lack; ``event_auth`` for missing auth events. Everything is bounded by
  the named constants below; nothing recurses; a failing peer leaves the event out with a
  reason (:attr:`GapFiller.unresolved`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import quote, urlencode

from twisted.internet.defer import CancelledError, DeferredSemaphore, gatherResults
from twisted.logger import Logger

from stubserver.rooms.builder import BuiltEvent
from stubserver.rooms.errors import InvalidParameter, RemoteRefused, RemoteUnreachable
from stubserver.rooms.event import Event
from stubserver.rooms.format import InvalidPdu, event_from_pdu
from stubserver.rooms.hashes import ContentHashMismatch, check_content_hash
from stubserver.rooms.intake import Intake
from stubserver.rooms.pdu_keys import FetchVerifyKey
from stubserver.rooms.room import EventRecord, MissingEvents, Room, RoomError
from stubserver.rooms.sender import SignedRequester
from stubserver.rooms.state_store import StateKey
from stubserver.rooms.versions import RoomVersion, UnsupportedRoomVersion, room_version
from stubserver.server.refusals import refusal_reason, shorten
from stubserver.signing.canonical_json import BadJson, parse_json_bytes

PREFIX: Final = "/_matrix/federation"
CREATE: Final = ("m.room.create", "")
#: Most events read from each list of a send_join answer (``state``, ``auth_chain``).
MAX_JOIN_ANSWER_EVENTS: Final = 50_000
#: Most servers read from an alias query answer.
MAX_ALIAS_SERVERS: Final = 20
#: ``limit`` we ask get_missing_events for (Synapse's), and most events we read back.
MISSING_EVENTS_LIMIT: Final = 10
MAX_MISSING_EVENTS_READ: Final = 20
#: Most events fetched (``/event``) to complete one received event's state.
MAX_EVENTS_FETCHED_PER_GAP: Final = 500
#: Most ``/event`` requests in flight at once for one gap.
MAX_CONCURRENT_EVENT_FETCHES: Final = 5
#: Most events of one get_missing_events answer completed with state_ids (the depth of
#: the walk: we never call get_missing_events again for them).
MAX_STATE_FILLS_PER_GAP: Final = 3
#: Most IDs read from each list of a state_ids answer, and events of an event_auth one.
MAX_STATE_IDS: Final = 10_000
#: Most unresolved events remembered with their reason.
MAX_UNRESOLVED: Final = 1_000

log = Logger()


def _segment(value: str) -> str:
    return quote(value, safe="")


class BadAnswer(ValueError):
    """A remote answer we cannot use; ``str()`` says why."""


class RemoteCaller:
    """Signed requests through ``client``, with failures as typed exceptions."""

    def __init__(self, client: SignedRequester) -> None:
        self._client = client

    async def raw(
        self, method: str, destination: str, path: str, body: Any = None
    ) -> tuple[int, Any]:
        """``(status, body)``: the body parsed as JSON, or as text when it is not JSON.
        Raise :class:`RemoteUnreachable` when no answer came, and
        :class:`~stubserver.rooms.errors.InvalidParameter` for a path that cannot be sent
        as given."""
        try:
            pending = self._client.request(method, destination, path, body)
        except ValueError as e:
            raise InvalidParameter(str(e)) from None
        try:
            response = await pending
        except CancelledError:
            raise
        except Exception as e:
            reason = str(e) or type(e).__name__
            log.info(
                "{method} {path} to {destination} failed: {reason}",
                method=method,
                path=shorten(path),
                destination=destination,
                reason=reason,
            )
            raise RemoteUnreachable(destination, reason) from e
        raw: bytes = response.body
        try:
            parsed = parse_json_bytes(raw)
        except BadJson:
            parsed = raw.decode("utf-8", "replace")
        return int(response.status), parsed

    async def json(self, method: str, destination: str, path: str, body: Any, what: str) -> Any:
        """The 2xx answer's JSON; raise :class:`RemoteRefused` on any other status."""
        status, answer = await self.raw(method, destination, path, body)
        if not 200 <= status < 300:
            log.info(
                "{method} {path} to {destination} refused: {reason}",
                method=method,
                path=shorten(path),
                destination=destination,
                reason=refusal_reason(status, answer),
            )
            raise RemoteRefused(destination, status, answer, what)
        return answer

    async def query_alias(self, alias: str) -> tuple[str, list[str]]:
        """``query/directory`` on the alias's server: the room ID and its servers."""
        server = alias[1:].partition(":")[2]
        query = urlencode({"room_alias": alias})
        answer = await self.json(
            "GET", server, f"{PREFIX}/v1/query/directory?{query}", None, f"the alias {alias}"
        )
        room_id = answer.get("room_id") if isinstance(answer, dict) else None
        servers = answer.get("servers") if isinstance(answer, dict) else None
        if not isinstance(room_id, str) or not isinstance(servers, list):
            raise RemoteRefused(server, 200, answer, f"the alias {alias} (no room_id/servers)")
        return room_id, [s for s in servers[:MAX_ALIAS_SERVERS] if isinstance(s, str)] or [server]

    async def make_membership(
        self, server: str, room_id: str, user_id: str, membership: str, versions: Sequence[str]
    ) -> tuple[dict[str, Any], RoomVersion]:
        """``make_join`` (offering every version in ``versions``, repeated ``ver``) or
        ``make_leave``: the template and the room version."""
        path = f"{PREFIX}/v1/make_{membership}/{_segment(room_id)}/{_segment(user_id)}"
        if membership == "join":
            path += "?" + urlencode([("ver", v) for v in versions])
        answer = await self.json("GET", server, path, None, f"make_{membership}")
        template = answer.get("event") if isinstance(answer, dict) else None
        # Absent, the version is "1" (rooms.md 1.8), which we do not support.
        identifier = answer.get("room_version", "1") if isinstance(answer, dict) else None
        if not isinstance(template, dict):
            raise RemoteRefused(server, 200, answer, f"make_{membership} (no event)")
        try:
            version = room_version(identifier)
        except UnsupportedRoomVersion:
            raise RemoteRefused(
                server, 200, answer, f"make_{membership} (room version {identifier!r})"
            ) from None
        if identifier not in versions:
            raise RemoteRefused(
                server, 200, answer, f"make_{membership} (room version {identifier!r} not offered)"
            )
        return template, version

    async def send_membership(
        self, server: str, room_id: str, built: BuiltEvent, membership: str
    ) -> Any:
        """``send_join`` / ``send_leave`` v2 with our signed event; the answer."""
        path = f"{PREFIX}/v2/send_{membership}/{_segment(room_id)}/{_segment(built.event.event_id)}"
        return await self.json("PUT", server, path, built.pdu, f"send_{membership}")

    async def invite(
        self,
        server: str,
        room_id: str,
        built: BuiltEvent,
        invite_room_state: Sequence[Mapping[str, Any]],
    ) -> Any:
        """``/v2/invite`` with the full-PDU ``invite_room_state`` (MSC4311); the answer."""
        path = f"{PREFIX}/v2/invite/{_segment(room_id)}/{_segment(built.event.event_id)}"
        body = {
            "event": built.pdu,
            "room_version": built.event.room_version.identifier,
            "invite_room_state": [dict(p) for p in invite_room_state],
        }
        return await self.json("PUT", server, path, body, "the invite")


def parse_events(
    pdus: object, version: RoomVersion, room_id: str, limit: int, dropped: list[str] | None = None
) -> list[Event]:
    """The PDUs of ``pdus`` (a list) that parse under ``version`` and belong to
    ``room_id``, at most ``limit`` read; others are dropped (as Synapse drops them), each
    with its reason added to ``dropped`` when given."""
    if not isinstance(pdus, list):
        return []
    events: list[Event] = []
    for pdu in pdus[:limit]:
        try:
            event = Intake.parse(pdu, version)
        except InvalidPdu as e:
            log.info("Dropped a PDU that does not parse: {reason}", reason=e)
            if dropped is not None:
                dropped.append(f"a PDU that does not parse: {e}")
            continue
        if event.room_id == room_id:
            events.append(event)
        elif dropped is not None:
            dropped.append(f"{event.event_id} is of room {event.room_id}")
    return events


async def verified(fetch_verify_key: FetchVerifyKey, events: Sequence[Event]) -> list[Event]:
    """The events whose signatures verify, after the content hash check:
    :meth:`stubserver.rooms.intake.Intake.verified`."""
    return await Intake(fetch_verify_key).verified(events)


def add_outliers(room: Room, events: Iterable[Event], now: int, origin: str | None) -> list[Event]:
    """Add ``events`` as outliers, oldest first, each once its auth events are known
    (bounded passes: each pass must add one); the events that could not be added."""
    remaining = sorted(
        {e.event_id: e for e in events}.values(), key=lambda e: (e.depth, e.type != "m.room.create")
    )
    progress = True
    while remaining and progress:
        progress = False
        left: list[Event] = []
        for event in remaining:
            if room.get_event(event.event_id) is not None:
                progress = True
                continue
            try:
                room.add_outlier(event, now, origin=origin)
            except MissingEvents:
                left.append(event)
                continue
            except RoomError as e:
                log.info("Outlier {event_id} not added: {error}", event_id=event.event_id, error=e)
                continue
            progress = True
        remaining = left
    return remaining


def state_map(room: Room, event_ids: Iterable[str]) -> dict[StateKey, str]:
    """``{(type, state_key): event_id}`` of the known, not rejected, state events."""
    result: dict[StateKey, str] = {}
    for event_id in event_ids:
        record = room.record(event_id)
        if record is not None and record.outcome != "rejected" and record.event.is_state:
            result[record.event.state_tuple()] = event_id
    return result


async def room_from_join_answer(
    answer: object,
    built: BuiltEvent,
    *,
    version: RoomVersion,
    room_id: str,
    fetch_verify_key: FetchVerifyKey,
    now: int,
    origin: str,
) -> tuple[Room, EventRecord]:
    """Our copy of a room from a ``send_join`` v2 answer and our join ``built``.

    Every PDU of ``state`` and ``auth_chain`` is verified (failures dropped, as Synapse
    does); the create event must be in ``state`` with ``room_version`` equal to
    ``version`` and no other create event may appear; the events are added as outliers
    oldest first, then our join with the returned state as the state before it, which
    must be accepted. Raise :class:`BadAnswer` otherwise.
    """
    if not isinstance(answer, dict):
        raise BadAnswer("not a JSON object")
    dropped: list[str] = []
    parsed = parse_events(answer.get("state"), version, room_id, MAX_JOIN_ANSWER_EVENTS, dropped)
    state = await verified(fetch_verify_key, parsed)
    kept = {e.event_id for e in state}
    dropped += [f"{e.event_id} ({e.type}): bad signature" for e in parsed if e.event_id not in kept]
    chain = await verified(
        fetch_verify_key,
        parse_events(answer.get("auth_chain"), version, room_id, MAX_JOIN_ANSWER_EVENTS),
    )
    creates = {e.event_id for e in [*state, *chain] if e.is_state and e.state_tuple() == CREATE}
    state_create = [e for e in state if e.is_state and e.state_tuple() == CREATE]
    if not state_create:
        # The reasons are what a developer of the other server needs (issue 20).
        why = f" (dropped from the state: {'; '.join(dropped)})" if dropped else ""
        raise BadAnswer(f"the state has no (valid) m.room.create event{why}")
    if len(creates) != 1:
        raise BadAnswer("the answer holds more than one m.room.create event")
    if state_create[0].content.get("room_version") != version.identifier:
        raise BadAnswer(
            f"the create event's room_version is "
            f"{state_create[0].content.get('room_version')!r}, make_join said "
            f"{version.identifier!r}"
        )
    join = built.event
    returned = answer.get("event")
    if returned is not None:
        try:
            event = event_from_pdu(returned, version)
        except InvalidPdu as e:
            raise BadAnswer(f"the returned join event does not parse: {e}") from None
        if event.event_id != join.event_id:
            raise BadAnswer("the returned join event is not ours")
        # Synapse: the returned event must pass the signature and hash checks (v8+).
        try:
            check_content_hash(event.pdu, digest=event.content_hash())
        except ContentHashMismatch:
            raise BadAnswer("the returned join event is not ours (content hash)") from None
        if not await verified(fetch_verify_key, [event]):
            raise BadAnswer("the returned join event is not ours (signature)")
        join = event
    # Our join's sender is one of our users: its server is ours.
    room = Room(room_id, version, local_server=built.event.sender.partition(":")[2])
    left = add_outliers(room, [*chain, *state], now, None)
    if left:
        log.info("{count} events of the join answer lack their auth events", count=len(left))
    before = state_map(room, [e.event_id for e in state])
    try:
        record = room.add_event(join, now, origin=origin, state_before=before)
    except RoomError as e:
        raise BadAnswer(f"our join cannot be added: {e}") from None
    if record.outcome != "accepted":
        raise BadAnswer(f"our join was {record.outcome}: {record.reason}")
    return room, record


class GapFiller:
    """Completes received events whose prev or auth events we lack (module docstring)."""

    def __init__(
        self, remote: RemoteCaller, fetch_verify_key: FetchVerifyKey, now: Callable[[], int]
    ) -> None:
        self._remote = remote
        self._fetch_verify_key = fetch_verify_key
        self._now = now
        self.unresolved: OrderedDict[str, str] = OrderedDict()

    def _note(self, event_id: str, reason: str) -> None:
        log.info("Received event {event_id} left out: {reason}", event_id=event_id, reason=reason)
        self.unresolved[event_id] = reason
        while len(self.unresolved) > MAX_UNRESOLVED:
            self.unresolved.popitem(last=False)

    async def complete(
        self, origin: str, room: Room, event: Event, missing: MissingEvents
    ) -> EventRecord | None:
        """Fetch what ``event`` lacks from ``origin`` and add it; its record, or None
        (the reason is in :attr:`unresolved`)."""
        try:
            if missing.kind == "prev":
                await self._missing_events(origin, room, event)
            return await self._add(origin, room, event)
        except (RemoteRefused, RemoteUnreachable, BadAnswer, RoomError) as e:
            self._note(event.event_id, str(e))
            return None

    async def _add(self, origin: str, room: Room, event: Event) -> EventRecord:
        """Add ``event``; fetch its auth chain, or the state at its missing prev, once."""
        try:
            return room.add_event(event, self._now(), origin=origin)
        except MissingEvents as e:
            if e.kind == "auth":
                await self._auth_chain(origin, room, event)
                try:
                    return room.add_event(event, self._now(), origin=origin)
                except MissingEvents as still:
                    if still.kind == "auth":
                        raise BadAnswer(f"{origin} did not give the auth events: {still}") from None
            return await self._with_state(origin, room, event)

    async def _missing_events(self, origin: str, room: Room, event: Event) -> None:
        """``get_missing_events`` between our forward extremities and ``event``; the
        answer's events added oldest first (those whose prevs are still unknown through
        ``state_ids``, at most :data:`MAX_STATE_FILLS_PER_GAP`)."""
        extremities = sorted(room.forward_extremities)
        depths = [e.depth for e in (room.get_event(x) for x in extremities) if e is not None]
        body = {
            "earliest_events": extremities,
            "latest_events": [event.event_id],
            "limit": MISSING_EVENTS_LIMIT,
            "min_depth": min(depths, default=0),
        }
        path = f"{PREFIX}/v1/get_missing_events/{_segment(room.room_id)}"
        answer = await self._remote.json("POST", origin, path, body, "get_missing_events")
        pdus = answer.get("events") if isinstance(answer, dict) else None
        found = await verified(
            self._fetch_verify_key,
            parse_events(pdus, room.room_version, room.room_id, MAX_MISSING_EVENTS_READ),
        )
        fills = 0
        for missing in sorted(found, key=lambda e: e.depth):
            if missing.event_id == event.event_id:
                continue
            record = room.record(missing.event_id)
            if record is not None and not record.outlier:
                continue
            try:
                room.add_event(missing, self._now(), origin=origin)
                continue
            except MissingEvents as e:
                if fills >= MAX_STATE_FILLS_PER_GAP:
                    self._note(missing.event_id, f"gap too deep: {e}")
                    continue
            fills += 1
            try:
                await self._add(origin, room, missing)
            except (BadAnswer, RemoteRefused, RemoteUnreachable, RoomError) as e:
                self._note(missing.event_id, str(e))

    async def _auth_chain(self, origin: str, room: Room, event: Event) -> None:
        path = f"{PREFIX}/v1/event_auth/{_segment(room.room_id)}/{_segment(event.event_id)}"
        answer = await self._remote.json("GET", origin, path, None, "event_auth")
        chain = answer.get("auth_chain") if isinstance(answer, dict) else None
        events = await verified(
            self._fetch_verify_key,
            parse_events(chain, room.room_version, room.room_id, MAX_STATE_IDS),
        )
        add_outliers(room, events, self._now(), origin)

    async def _with_state(self, origin: str, room: Room, event: Event) -> EventRecord:
        """Add ``event`` with the state after its (first) missing prev, from
        ``state_ids`` and ``event`` fetches. With several prev events, the state of the
        first missing one is used (no resolution against the others)."""
        missing = room.missing_prev_events(event)
        if not missing:
            return room.add_event(event, self._now(), origin=origin)
        prev_id = missing[0]
        path = f"{PREFIX}/v1/state_ids/{_segment(room.room_id)}?" + urlencode({"event_id": prev_id})
        answer = await self._remote.json("GET", origin, path, None, "state_ids")
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
        fetched = await self._fetch_events(origin, room, wanted)
        add_outliers(room, fetched, self._now(), origin)
        after = state_map(room, pdu_ids)
        prev = room.record(prev_id)
        if prev is None:
            raise BadAnswer(f"{origin} did not give the prev event {prev_id}")
        if prev.event.is_state and prev.outcome != "rejected":
            after[prev.event.state_tuple()] = prev_id
        return room.add_event(event, self._now(), origin=origin, state_before=after)

    async def _fetch_events(self, origin: str, room: Room, event_ids: Sequence[str]) -> list[Event]:
        """``GET /event/{id}`` for each ID, :data:`MAX_CONCURRENT_EVENT_FETCHES` at a
        time; the events that came back (right ID, room and signature)."""
        semaphore = DeferredSemaphore(MAX_CONCURRENT_EVENT_FETCHES)
        found: list[Event] = []

        async def one(event_id: str) -> None:
            path = f"{PREFIX}/v1/event/{_segment(event_id)}"
            try:
                answer = await self._remote.json("GET", origin, path, None, "event")
            except (RemoteRefused, RemoteUnreachable) as e:
                # The failed request has its line already (RemoteCaller).
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

        pending = [semaphore.run(one, event_id) for event_id in event_ids]
        if pending:
            await gatherResults(pending, consumeErrors=True)
        return found


def _id_list(value: object) -> list[str]:
    if not isinstance(value, list):
        raise BadAnswer("a state_ids list is missing")
    return [v for v in value[:MAX_STATE_IDS] if isinstance(v, str)]
