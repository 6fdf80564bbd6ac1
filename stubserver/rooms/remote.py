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
* the pieces :class:`~stubserver.rooms.gap_fill.GapFiller` completes received events
  with (:func:`parse_events`, :func:`verified`, :func:`add_outliers`, :func:`state_map`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final
from urllib.parse import quote, urlencode

from twisted.internet.defer import CancelledError
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
#: Most IDs read from each list of a state_ids answer, and events of an event_auth one.
MAX_STATE_IDS: Final = 10_000

log = Logger()


def path_segment(value: str) -> str:
    """``value`` quoted as one path segment."""
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
        path = f"{PREFIX}/v1/make_{membership}/{path_segment(room_id)}/{path_segment(user_id)}"
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
        event_id = built.event.event_id
        path = f"{PREFIX}/v2/send_{membership}/{path_segment(room_id)}/{path_segment(event_id)}"
        return await self.json("PUT", server, path, built.pdu, f"send_{membership}")

    async def invite(
        self,
        server: str,
        room_id: str,
        built: BuiltEvent,
        invite_room_state: Sequence[Mapping[str, Any]],
    ) -> Any:
        """``/v2/invite`` with the full-PDU ``invite_room_state`` (MSC4311); the answer."""
        path = f"{PREFIX}/v2/invite/{path_segment(room_id)}/{path_segment(built.event.event_id)}"
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
