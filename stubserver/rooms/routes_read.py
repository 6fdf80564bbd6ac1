"""The room endpoints that read: ``event``, ``state``, ``state_ids``, ``event_auth``,
``backfill``, ``get_missing_events`` and the ``query/directory`` alias lookup, as
:class:`ReadEndpoints` (spec: Server-Server API "Retrieving events", "Backfilling and
retrieving missing events", "Room state", "Querying for information"; answers as
``stubserver.rooms.routes_common`` says). ``event``, ``backfill`` and
``get_missing_events`` serve each event as the asking server may see it, redacted
events redacted everywhere (``stubserver.rooms.visibility``, Synapse's rule). The
driver's ``serving`` overrides (``stubserver.rooms.served``) refuse chosen events (404, or
left out of answers) and add planted PDUs to ``get_missing_events`` answers, written as
their text (:func:`planted_answer`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from twisted.web.iweb import IRequest

from stubserver.auth.filter import require_origin
from stubserver.cache import BoundedCache
from stubserver.rooms.event import Event
from stubserver.rooms.planted import PlantedPdu
from stubserver.rooms.room import Room
from stubserver.rooms.room_queries import backfill, event_auth, get_missing_events, state_ids_before
from stubserver.rooms.routes_common import (
    HOST_NOT_IN_ROOM,
    V1,
    RoomEndpointParts,
    int_field,
    json_object,
    pdus,
    served_event,
    string_list,
)
from stubserver.rooms.visibility import pdu_for_server
from stubserver.server.router import JsonResponse, MatrixError, Route, query_arg
from stubserver.signing.canonical_json import encode_json

#: Most ``v`` values one backfill request may give, and most IDs in each list of a
#: get_missing_events body.
MAX_BACKFILL_FROM_EVENTS: Final = 100
MAX_MISSING_EVENTS_IDS: Final = 100
#: get_missing_events' default limit when the body gives none (Synapse's).
DEFAULT_MISSING_EVENTS_LIMIT: Final = 10
#: ``state`` / ``state_ids`` answers (the IDs) are kept this long per room and event, as
#: Synapse keeps them (its response caches, 30 s): state and auth chain before an event
#: never change, and a chain walk costs the whole chain (issue 22 row 3).
STATE_ANSWER_TTL_SECONDS: Final = 30.0
#: Most answers kept, and most event IDs they hold together (about 64 bytes each).
MAX_STATE_ANSWERS: Final = 256
MAX_STATE_ANSWER_IDS: Final = 500_000

_StateAnswer = tuple[Room, list[str], list[str]]


class ReadEndpoints:
    """The reading endpoints over ``parts``' rooms, one method each."""

    def __init__(self, parts: RoomEndpointParts) -> None:
        self._parts = parts
        self._state_answers: BoundedCache[tuple[str, str], _StateAnswer] = BoundedCache(
            parts.clock,
            max_entries=MAX_STATE_ANSWERS,
            max_weight=MAX_STATE_ANSWER_IDS,
            weigh=lambda answer: len(answer[1]) + len(answer[2]),
        )
        #: How many state / auth chain walks the state answers took (the rest came
        #: from the kept answers).
        self.state_walks = 0

    def routes(self) -> list[Route]:
        """The route table."""
        return [
            Route("GET", f"{V1}/state/{{roomId}}", self.get_state),
            Route("GET", f"{V1}/state_ids/{{roomId}}", self.get_state_ids),
            Route("GET", f"{V1}/event/{{eventId}}", self.get_event),
            Route("GET", f"{V1}/event_auth/{{roomId}}/{{eventId}}", self.event_auth),
            Route("GET", f"{V1}/backfill/{{roomId}}", self.backfill),
            Route("POST", f"{V1}/get_missing_events/{{roomId}}", self.get_missing_events),
            Route("GET", f"{V1}/query/directory", self.query_directory),
        ]

    def get_event(self, request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        """``GET /v1/event/{eventId}``: the event, from whichever room holds it."""
        origin = require_origin(request)
        found = self._parts.store.find_event(params["eventId"])
        if found is None:
            raise MatrixError(404, "M_NOT_FOUND", f"Unknown event {params['eventId']!r}")
        room, _ = found
        if not room.is_server_in_room(origin):
            raise MatrixError(403, "M_FORBIDDEN", HOST_NOT_IN_ROOM)
        event = self._served_event(room, params["eventId"])
        return JsonResponse(
            200,
            {
                "origin": self._parts.ours,
                "origin_server_ts": self._parts.now(),
                "pdus": [pdu_for_server(room, event, origin)],
            },
        )

    def _state_of(
        self, request: IRequest, params: Mapping[str, str]
    ) -> tuple[Room, list[str], list[str]]:
        origin = require_origin(request)
        room = self._parts.room_for_reader(params["roomId"], origin)
        event_id = query_arg(request, "event_id")
        if event_id is None:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing string query parameter event_id")
        self._served_event(room, event_id)
        key = (room.room_id, event_id)
        kept = self._state_answers.get(key)
        # A re-joined room is a new Room under the same ID: its answers are its own.
        if kept is not None and kept[0] is room:
            return kept
        try:
            state_ids, chain_ids = state_ids_before(room, event_id)
        except KeyError:
            raise MatrixError(
                404, "M_NOT_FOUND", f"No state known at {event_id!r} (an outlier)"
            ) from None
        self.state_walks += 1
        answer = (room, state_ids, chain_ids)
        self._state_answers.set(key, answer, STATE_ANSWER_TTL_SECONDS)
        return answer

    def get_state(self, request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        """``GET /v1/state/{roomId}?event_id=``: the state before the event, as PDUs."""
        room, state_ids, chain_ids = self._state_of(request, params)
        return JsonResponse(
            200, {"pdus": self._pdus(room, state_ids), "auth_chain": self._pdus(room, chain_ids)}
        )

    def get_state_ids(self, request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        """``GET /v1/state_ids/{roomId}?event_id=``: the same, as event IDs."""
        _, state_ids, chain_ids = self._state_of(request, params)
        return JsonResponse(200, {"pdu_ids": state_ids, "auth_chain_ids": chain_ids})

    def event_auth(self, request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        """``GET /v1/event_auth/{roomId}/{eventId}``: the event's auth chain."""
        origin = require_origin(request)
        room = self._parts.room_for_reader(params["roomId"], origin)
        self._served_event(room, params["eventId"])
        chain = event_auth(room, params["eventId"])
        return JsonResponse(200, {"auth_chain": self._pdus(room, chain)})

    def backfill(self, request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        """``GET /v1/backfill/{roomId}?v=&limit=``: events before the ``v`` events."""
        origin = require_origin(request)
        raw_limit = query_arg(request, "limit")
        if raw_limit is None:
            raise MatrixError(400, "M_MISSING_PARAM", "Did not include limit param")
        try:
            limit = int(raw_limit)
        except ValueError:
            raise MatrixError(400, "M_INVALID_PARAM", "limit must be an integer") from None
        raw_from = request.args.get(b"v") or []
        if not raw_from:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing string query parameter v")
        if len(raw_from) > MAX_BACKFILL_FROM_EVENTS:
            raise MatrixError(
                400, "M_INVALID_PARAM", f"more than {MAX_BACKFILL_FROM_EVENTS} v parameters"
            )
        from_ids = [v.decode("utf-8", "replace") for v in raw_from]
        room = self._parts.room_for_reader(params["roomId"], origin)
        events = backfill(room, from_ids, limit, self._refused(room))
        return JsonResponse(
            200,
            {
                "origin": self._parts.ours,
                "origin_server_ts": self._parts.now(),
                "pdus": [pdu_for_server(room, e, origin) for e in events],
            },
        )

    def get_missing_events(self, request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        """``POST /v1/get_missing_events/{roomId}``: events between earliest and latest."""
        origin = require_origin(request)
        body = json_object(request)
        earliest = string_list(body, "earliest_events", MAX_MISSING_EVENTS_IDS)
        latest = string_list(body, "latest_events", MAX_MISSING_EVENTS_IDS)
        limit = int_field(body, "limit", DEFAULT_MISSING_EVENTS_LIMIT)
        min_depth = int_field(body, "min_depth", 0)
        room = self._parts.room_for_reader(params["roomId"], origin)
        planted = self._parts.store.serving.planted(room.room_id)
        events = get_missing_events(
            room,
            earliest,
            latest,
            limit,
            min_depth,
            unserved=self._refused(room),
            planted={event_id: p.stand_in for event_id, p in planted.items()},
        )
        served = [planted.get(e.event_id) or pdu_for_server(room, e, origin) for e in events]
        if not any(isinstance(p, PlantedPdu) for p in served):
            return JsonResponse(200, {"events": served})
        return planted_answer(served)

    def _refused(self, room: Room) -> frozenset[str]:
        return self._parts.store.serving.refused(room.room_id)

    def _served_event(self, room: Room, event_id: str) -> Event:
        """:func:`served_event`, and 404 for an event the driver told us not to serve."""
        if self._parts.store.serving.is_refused(room.room_id, event_id):
            raise MatrixError(404, "M_NOT_FOUND", f"Unknown event {event_id!r} in {room.room_id}")
        return served_event(room, event_id, self._parts.ours)

    def _pdus(self, room: Room, event_ids: Sequence[str]) -> list[dict[str, Any]]:
        """:func:`pdus` without the events the driver told us not to serve."""
        refused = self._refused(room)
        return pdus(room, [e for e in event_ids if e not in refused] if refused else event_ids)

    def query_directory(self, request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        """``GET /v1/query/directory?room_alias=``: the room ID and servers of our alias."""
        require_origin(request)
        alias = query_arg(request, "room_alias")
        if alias is None:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing string query parameter room_alias")
        localpart, sep, server = alias[1:].partition(":")
        if not alias.startswith("#") or not sep or not localpart or not server:
            raise MatrixError(400, "M_INVALID_PARAM", f"{alias[:300]!r} is not a room alias")
        ours = self._parts.ours
        store = self._parts.store
        room_id = store.alias_room_id(localpart) if server == ours else None
        room = store.get_room(room_id) if room_id is not None else None
        if room_id is None or room is None:
            raise MatrixError(404, "M_NOT_FOUND", f"Room alias {alias[:300]!r} not found")
        servers = [ours] + [s for s in room.servers if s != ours]
        return JsonResponse(200, {"room_id": room_id, "servers": servers})


def planted_answer(served: Sequence[dict[str, Any] | PlantedPdu]) -> JsonResponse:
    """A ``get_missing_events`` answer holding planted PDUs (``stubserver.rooms.served``):
    each written as its text, the others as JSON; ``body`` (what the request log's
    observers see) names the planted ones instead."""
    parts = [p.text if isinstance(p, PlantedPdu) else encode_json(p).decode() for p in served]
    body = {"events": [{"planted": p.event_id} if isinstance(p, PlantedPdu) else p for p in served]}
    encoded = ('{"events":[' + ",".join(parts) + "]}").encode("utf-8")
    return JsonResponse(200, body, encoded=encoded)
