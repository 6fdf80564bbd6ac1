"""The room endpoints other servers call on us, as :class:`~stubserver.server.router.Route`
values: :func:`room_routes`.

Spec: Server-Server API "Joining Rooms", "Leaving Rooms", "Inviting to a room",
"Transactions", "Retrieving events", "Backfilling and retrieving missing events",
"Room state", "Querying for information" (directory). Answers and refusals as Synapse
1.163.2 gives them (rooms.md 1.4-1.10, 2.1, 2.2):

* every endpoint needs X-Matrix (``require_origin``: 401 without);
* read endpoints: an unknown room is 404 ``M_NOT_FOUND``; a room where the origin has no
  joined user is 403 ``M_FORBIDDEN`` "Host not in room." (Synapse's
  ``assert_host_in_room``);
* bodies are read bounded (``read_json_body``) and their shape checked: 400
  ``M_BAD_JSON``, never a 500;
* ``/send`` answers 200 with per-PDU results whatever the PDUs hold (a non-2xx makes the
  sender back off for ten minutes or more), 400 ``{}`` past 50 PDUs or 100 EDUs, 429
  while another transaction from the same origin is being processed.

Received PDUs go through the receive pipeline (``stubserver.rooms.intake``: parse, keys,
signatures, content hash), and bodies are the JSON the X-Matrix filter already parsed
(``stubserver.auth.filter.request_content``): each body is parsed once. Every PDU a room gains is
added to its :class:`~stubserver.rooms.room.Room` (which keeps the ordered list the
control API serves).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from stubserver.auth.filter import request_content, require_origin
from stubserver.rooms.builder import EventSigner
from stubserver.rooms.event import Event
from stubserver.rooms.format import InvalidPdu, event_from_pdu, is_user_id
from stubserver.rooms.intake import Intake
from stubserver.rooms.membership import (
    MembershipRefusal,
    make_join_template,
    make_membership_template,
)
from stubserver.rooms.pdu_keys import FetchVerifyKey
from stubserver.rooms.room import MissingEvents, Room, RoomError
from stubserver.rooms.signing import add_signature
from stubserver.rooms.store import ReceivedInvite, RoomStore
from stubserver.rooms.transaction import (
    SignatureFailure,
    TransactionOutcome,
    TransactionRefused,
)
from stubserver.rooms.versions import UnsupportedRoomVersion, room_version
from stubserver.server.router import (
    JsonResponse,
    MatrixError,
    Route,
    query_arg,
)

PREFIX: Final = "/_matrix/federation"
MEMBER: Final = "m.room.member"
#: Most ``v`` values one backfill request may give, and most IDs in each list of a
#: get_missing_events body.
MAX_BACKFILL_FROM_EVENTS: Final = 100
MAX_MISSING_EVENTS_IDS: Final = 100
#: Most ``ver`` values read from a make_join request (Synapse sends 15).
MAX_MAKE_JOIN_VERSIONS: Final = 100
#: Most ``invite_room_state`` entries kept from one invite.
MAX_INVITE_ROOM_STATE: Final = 100
#: get_missing_events' default limit when the body gives none (Synapse's).
DEFAULT_MISSING_EVENTS_LIMIT: Final = 10
#: Synapse's words for a server with no joined user in the room.
HOST_NOT_IN_ROOM: Final = "Host not in room."

log = Logger()

#: Told about every processed (not replayed) transaction: EDUs, added and pending events.
TransactionHook = Callable[[str, TransactionOutcome], None]
#: Told about every accepted invite.
InviteHook = Callable[[ReceivedInvite], None]


@dataclass
class _InFlight:
    """The origins with a transaction being processed (one at a time per origin)."""

    origins: set[str]


def _now_ms(clock: IReactorTime) -> int:
    return int(clock.seconds() * 1000)


def _json_object(request: IRequest) -> dict[str, Any]:
    body = request_content(request)
    if not isinstance(body, dict):
        raise MatrixError(400, "M_BAD_JSON", "the request body must be a JSON object")
    return body


def _room_or_404(store: RoomStore, room_id: str) -> Room:
    room = store.get_room(room_id)
    if room is None:
        raise MatrixError(404, "M_NOT_FOUND", f"Unknown room {room_id!r}")
    return room


def _room_for_reader(store: RoomStore, room_id: str, origin: str) -> Room:
    """The room, if ``origin`` may read it: 404 unknown, 403 when it has no joined user."""
    room = _room_or_404(store, room_id)
    if not room.is_server_in_room(origin):
        raise MatrixError(403, "M_FORBIDDEN", HOST_NOT_IN_ROOM)
    return room


def _served_event(room: Room, event_id: str) -> Event:
    """An event of ``room`` we serve (not a rejected one), else 404."""
    record = room.record(event_id)
    if record is None or record.outcome == "rejected":
        raise MatrixError(404, "M_NOT_FOUND", f"Unknown event {event_id!r} in {room.room_id}")
    return record.event


def _pdus(room: Room, event_ids: Sequence[str]) -> list[dict[str, Any]]:
    result = []
    for event_id in event_ids:
        event = room.get_event(event_id)
        if event is not None:
            result.append(dict(event.pdu))
    return result


def _string_list(body: Mapping[str, Any], key: str, limit: int) -> list[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MatrixError(400, "M_BAD_JSON", f"{key} must be a list of strings")
    if len(value) > limit:
        raise MatrixError(400, "M_BAD_JSON", f"{key} lists more than {limit} events")
    return value


def _int_field(body: Mapping[str, Any], key: str, default: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MatrixError(400, "M_BAD_JSON", f"{key} must be an integer")
    return value


def _refusal(refusal: MembershipRefusal) -> JsonResponse:
    return JsonResponse(refusal.status, refusal.body())


def room_routes(
    store: RoomStore,
    signer: EventSigner,
    fetch_verify_key: FetchVerifyKey,
    clock: IReactorTime,
    *,
    invites_accept: bool,
    on_transaction: TransactionHook | None = None,
    on_invite: InviteHook | None = None,
) -> list[Route]:
    """The federation room endpoints, served for ``store``'s rooms and signed by ``signer``.

    ``fetch_verify_key(server, key_id, minimum_valid_until_ts)`` finds remote keys;
    ``invites_accept`` False refuses every ``/v2/invite`` with 403 ``M_FORBIDDEN``;
    ``on_transaction(origin, outcome)`` is told about each processed ``/send`` (its EDUs,
    and the events pending on missing prev or auth events, for the caller to fetch);
    ``on_invite`` about each accepted invite (also remembered in ``store``).
    """
    in_flight = _InFlight(set())
    ours = signer.server_name
    intake = Intake(fetch_verify_key)

    def now() -> int:
        return _now_ms(clock)

    # --- joining and leaving ------------------------------------------------------------

    def make_join(request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        origin = require_origin(request)
        raw = request.args.get(b"ver")
        versions = (
            None
            if raw is None
            else [v.decode("utf-8", "replace") for v in raw[:MAX_MAKE_JOIN_VERSIONS]]
        )
        room = store.get_room(params["roomId"])
        if room is not None and not room.is_server_in_room(ours):
            room = None  # we left: Synapse answers 404 when no longer in the room
        try:
            template = make_join_template(
                room, params["userId"], versions, origin=origin, now=now()
            )
        except MembershipRefusal as refusal:
            return _refusal(refusal)
        return JsonResponse(200, template.body())

    def make_leave(request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        origin = require_origin(request)
        room = store.get_room(params["roomId"])
        if room is None or not room.is_server_in_room(ours):
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        try:
            template = make_membership_template(
                room, user_id=params["userId"], origin=origin, membership="leave", now=now()
            )
        except MembershipRefusal as refusal:
            return _refusal(refusal)
        return JsonResponse(200, template.body())

    async def send_membership(
        request: IRequest, params: Mapping[str, str], membership: Literal["join", "leave"]
    ) -> tuple[Room, Event]:
        """Checks of send_join / send_leave in Synapse's order (rooms.md 1.5); the room
        and the event as added (accepted)."""
        origin = require_origin(request)
        body = _json_object(request)
        room_id = params["roomId"]
        if body.get("room_id") != room_id:
            raise MatrixError(400, "M_BAD_JSON", "room_id of the event is not the room in the path")
        room = store.get_room(room_id)
        if room is None or not room.is_server_in_room(ours):
            raise MatrixError(404, "M_NOT_FOUND", f"Unknown room {room_id!r}")
        try:
            event = intake.parse(body, room.room_version)
        except InvalidPdu as e:
            raise MatrixError(400, "M_BAD_JSON", f"bad event: {e.reason}") from None
        if event.type != MEMBER or not event.is_state or event.membership != membership:
            raise MatrixError(
                400, "M_BAD_JSON", f"Not an m.room.member event with membership {membership!r}"
            )
        try:
            stored = await intake.checked(event)
        except SignatureFailure as e:
            raise MatrixError(403, "M_FORBIDDEN", f"event id {event.event_id}: {e}") from None
        if event.sender.partition(":")[2] != origin:
            raise MatrixError(403, "M_FORBIDDEN", "User not from origin")
        if event.sender != event.state_key:
            raise MatrixError(400, "M_BAD_JSON", "sender and state_key differ")
        try:
            record = room.add_event(stored, now(), origin=origin)
        except MissingEvents as e:
            raise MatrixError(400, "M_BAD_JSON", f"the event cites {e}") from None
        except RoomError as e:
            raise MatrixError(403, "M_FORBIDDEN", f"{membership} event was rejected: {e}") from None
        if record.outcome != "accepted":
            raise MatrixError(
                403, "M_FORBIDDEN", f"{membership} event was rejected: {record.reason}"
            )
        return room, record.event

    async def send_join(request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        room, event = await send_membership(request, params, "join")
        try:
            state_ids, chain_ids = room.state_ids_before(event.event_id)
        except RoomError as e:
            raise MatrixError(400, "M_UNKNOWN", str(e)) from None
        return JsonResponse(
            200,
            {
                "event": dict(event.pdu),
                "state": _pdus(room, state_ids),
                "auth_chain": _pdus(room, chain_ids),
                "members_omitted": False,
                "origin": ours,
            },
        )

    async def send_leave(request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        await send_membership(request, params, "leave")
        return JsonResponse(200, {})

    # --- invites ------------------------------------------------------------------------

    async def invite(request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        origin = require_origin(request)
        body = _json_object(request)
        try:
            version = room_version(body.get("room_version"))
        except UnsupportedRoomVersion:
            raise MatrixError(
                400,
                "M_UNSUPPORTED_ROOM_VERSION",
                f"room version {body.get('room_version')!r} is not supported",
            ) from None
        received = body.get("event")
        try:
            event = intake.parse(received, version)
        except InvalidPdu as e:
            raise MatrixError(400, "M_BAD_JSON", f"bad event: {e.reason}") from None
        assert isinstance(received, dict)  # event_from_pdu checked it is an object
        if event.event_id != params["eventId"] or event.room_id != params["roomId"]:
            raise MatrixError(
                400,
                "M_INVALID_PARAM",
                "The event ID or room ID in the path does not match the event",
            )
        state = body.get("invite_room_state", [])
        if not isinstance(state, list):
            raise MatrixError(400, "M_BAD_JSON", "invite_room_state must be a list")
        try:
            stored = await intake.checked(event)
        except SignatureFailure as e:
            raise MatrixError(403, "M_FORBIDDEN", f"event id {event.event_id}: {e}") from None
        if event.type != MEMBER or event.membership != "invite" or event.state_key is None:
            raise MatrixError(400, "M_BAD_JSON", "The event was not an m.room.member invite event")
        if event.sender.partition(":")[2] != origin:
            raise MatrixError(
                403, "M_FORBIDDEN", "The invite event was not from the server sending it"
            )
        if not is_user_id(event.state_key) or event.state_key.partition(":")[2] != ours:
            raise MatrixError(400, "M_BAD_JSON", "The invite event must be for this server")
        if not invites_accept:
            raise MatrixError(403, "M_FORBIDDEN", "This server does not accept invites")
        source = received if stored is event else dict(stored.pdu)
        signed = add_signature(source, version, ours, signer.key_id, signer.signing_key)
        countersigned = event_from_pdu(signed, version, owned=True)
        entries = tuple(e for e in state[:MAX_INVITE_ROOM_STATE] if isinstance(e, dict))
        invite_record = ReceivedInvite(
            event.room_id, event.state_key, version, countersigned, origin, entries
        )
        store.remember_invite(invite_record)
        room = store.get_room(event.room_id)
        if room is not None and room.room_version == version:
            try:
                room.add_event(countersigned, now(), origin=origin)
            except RoomError as e:
                # The /send that follows (or a fetch) brings what is missing.
                log.info(
                    "Invite {event_id} not added yet: {error}", event_id=event.event_id, error=e
                )
        if on_invite is not None:
            on_invite(invite_record)
        return JsonResponse(200, {"event": signed})

    # --- transactions -------------------------------------------------------------------

    def send_transaction(
        request: IRequest, params: Mapping[str, str]
    ) -> JsonResponse | Deferred[JsonResponse]:
        origin = require_origin(request)
        txn_id = params["txnId"]
        stored = store.memory.answer(origin, txn_id)
        if stored is not None:
            return JsonResponse(200, stored)
        if origin in in_flight.origins:
            raise MatrixError(429, "M_UNKNOWN", "Too many concurrent transactions")
        body = request_content(request)
        try:
            parsed = intake.parse_transaction(origin, txn_id, body, store.get_room)
        except TransactionRefused as refused:
            return JsonResponse(refused.status, refused.body)
        in_flight.origins.add(origin)

        async def finish() -> JsonResponse:
            try:
                outcome = await intake.transaction(parsed, now())
                store.memory.remember(origin, txn_id, outcome.response)
            finally:
                in_flight.origins.discard(origin)
            if on_transaction is not None:
                try:
                    on_transaction(origin, outcome)
                except Exception:
                    log.failure(
                        "Transaction hook failed on {txn_id} from {origin}",
                        txn_id=txn_id,
                        origin=origin,
                    )
            return JsonResponse(200, outcome.response)

        return Deferred.fromCoroutine(finish())

    # --- reading ------------------------------------------------------------------------

    def get_event(request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        origin = require_origin(request)
        found = store.find_event(params["eventId"])
        if found is None:
            raise MatrixError(404, "M_NOT_FOUND", f"Unknown event {params['eventId']!r}")
        room, _ = found
        if not room.is_server_in_room(origin):
            raise MatrixError(403, "M_FORBIDDEN", HOST_NOT_IN_ROOM)
        event = _served_event(room, params["eventId"])
        return JsonResponse(
            200, {"origin": ours, "origin_server_ts": now(), "pdus": [dict(event.pdu)]}
        )

    def state_of(request: IRequest, params: Mapping[str, str]) -> tuple[Room, list[str], list[str]]:
        origin = require_origin(request)
        room = _room_for_reader(store, params["roomId"], origin)
        event_id = query_arg(request, "event_id")
        if event_id is None:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing string query parameter event_id")
        _served_event(room, event_id)
        try:
            state_ids, chain_ids = room.state_ids_before(event_id)
        except KeyError:
            raise MatrixError(
                404, "M_NOT_FOUND", f"No state known at {event_id!r} (an outlier)"
            ) from None
        except RoomError as e:
            raise MatrixError(400, "M_UNKNOWN", str(e)) from None
        return room, state_ids, chain_ids

    def get_state(request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        room, state_ids, chain_ids = state_of(request, params)
        return JsonResponse(
            200, {"pdus": _pdus(room, state_ids), "auth_chain": _pdus(room, chain_ids)}
        )

    def get_state_ids(request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        _, state_ids, chain_ids = state_of(request, params)
        return JsonResponse(200, {"pdu_ids": state_ids, "auth_chain_ids": chain_ids})

    def event_auth(request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        origin = require_origin(request)
        room = _room_for_reader(store, params["roomId"], origin)
        _served_event(room, params["eventId"])
        try:
            chain = room.event_auth(params["eventId"])
        except RoomError as e:
            raise MatrixError(400, "M_UNKNOWN", str(e)) from None
        return JsonResponse(200, {"auth_chain": _pdus(room, chain)})

    def backfill(request: IRequest, params: Mapping[str, str]) -> JsonResponse:
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
        room = _room_for_reader(store, params["roomId"], origin)
        events = room.backfill(from_ids, limit)
        return JsonResponse(
            200, {"origin": ours, "origin_server_ts": now(), "pdus": [dict(e.pdu) for e in events]}
        )

    def get_missing_events(request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        origin = require_origin(request)
        body = _json_object(request)
        earliest = _string_list(body, "earliest_events", MAX_MISSING_EVENTS_IDS)
        latest = _string_list(body, "latest_events", MAX_MISSING_EVENTS_IDS)
        limit = _int_field(body, "limit", DEFAULT_MISSING_EVENTS_LIMIT)
        min_depth = _int_field(body, "min_depth", 0)
        room = _room_for_reader(store, params["roomId"], origin)
        events = room.get_missing_events(earliest, latest, limit, min_depth)
        return JsonResponse(200, {"events": [dict(e.pdu) for e in events]})

    def query_directory(request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        require_origin(request)
        alias = query_arg(request, "room_alias")
        if alias is None:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing string query parameter room_alias")
        localpart, sep, server = alias[1:].partition(":")
        if not alias.startswith("#") or not sep or not localpart or not server:
            raise MatrixError(400, "M_INVALID_PARAM", f"{alias[:300]!r} is not a room alias")
        room_id = store.alias_room_id(localpart) if server == ours else None
        room = store.get_room(room_id) if room_id is not None else None
        if room_id is None or room is None:
            raise MatrixError(404, "M_NOT_FOUND", f"Room alias {alias[:300]!r} not found")
        servers = [ours] + [s for s in room.servers if s != ours]
        return JsonResponse(200, {"room_id": room_id, "servers": servers})

    def deferred(
        handler: Callable[[IRequest, Mapping[str, str]], Any],
    ) -> Callable[[IRequest, Mapping[str, str]], Deferred[JsonResponse]]:
        def run(request: IRequest, params: Mapping[str, str]) -> Deferred[JsonResponse]:
            return Deferred.fromCoroutine(handler(request, params))

        return run

    v1 = f"{PREFIX}/v1"
    v2 = f"{PREFIX}/v2"
    return [
        Route("GET", f"{v1}/make_join/{{roomId}}/{{userId}}", make_join),
        Route("PUT", f"{v2}/send_join/{{roomId}}/{{eventId}}", deferred(send_join)),
        Route("GET", f"{v1}/make_leave/{{roomId}}/{{userId}}", make_leave),
        Route("PUT", f"{v2}/send_leave/{{roomId}}/{{eventId}}", deferred(send_leave)),
        Route("PUT", f"{v2}/invite/{{roomId}}/{{eventId}}", deferred(invite)),
        Route("PUT", f"{v1}/send/{{txnId}}", send_transaction),
        Route("GET", f"{v1}/state/{{roomId}}", get_state),
        Route("GET", f"{v1}/state_ids/{{roomId}}", get_state_ids),
        Route("GET", f"{v1}/event/{{eventId}}", get_event),
        Route("GET", f"{v1}/event_auth/{{roomId}}/{{eventId}}", event_auth),
        Route("GET", f"{v1}/backfill/{{roomId}}", backfill),
        Route("POST", f"{v1}/get_missing_events/{{roomId}}", get_missing_events),
        Route("GET", f"{v1}/query/directory", query_directory),
    ]
