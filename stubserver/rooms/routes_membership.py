"""The membership endpoints: ``make_join``/``send_join`` v2, ``make_leave``/``send_leave``
v2 and ``/v2/invite``, as :class:`MembershipEndpoints` (spec: Server-Server API "Joining
Rooms", "Leaving Rooms", "Inviting to a room"; rooms.md 1.4-1.9 for Synapse's checks and
their order). Received events go through the receive pipeline
(``stubserver.rooms.intake``); the templates are ``stubserver.rooms.membership``'s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, Literal

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from stubserver.auth.filter import require_origin
from stubserver.rooms.event import Event
from stubserver.rooms.format import InvalidPdu, event_from_pdu, is_user_id
from stubserver.rooms.hooks import InboundHooks
from stubserver.rooms.membership import (
    MembershipRefusal,
    make_join_template,
    make_membership_template,
)
from stubserver.rooms.room import MissingEvents, Room, RoomError
from stubserver.rooms.room_queries import state_ids_for_new_event
from stubserver.rooms.routes_common import (
    MEMBER,
    V1,
    V2,
    RoomEndpointParts,
    json_object,
    pdus,
)
from stubserver.rooms.signing import add_signature
from stubserver.rooms.store import ReceivedInvite
from stubserver.rooms.transaction import SignatureFailure
from stubserver.rooms.versions import RoomVersion, UnsupportedRoomVersion, room_version
from stubserver.server.router import JsonResponse, MatrixError, Route
from stubserver.signing.canonical_json import encode_json

#: Most ``ver`` values read from a make_join request (Synapse sends 15).
MAX_MAKE_JOIN_VERSIONS: Final = 100
#: Most ``invite_room_state`` entries kept from one invite.
MAX_INVITE_ROOM_STATE: Final = 100
#: Most bytes (compact JSON) of ``invite_room_state`` kept from one invite (issue 22, row
#: 9): entries are kept in order while they fit, the rest dropped as entries past
#: :data:`MAX_INVITE_ROOM_STATE` are. Synapse sends a handful of events (create, join
#: rules, name, avatar, encryption, alias, the inviter's member event), a few KiB in all;
#: it bounds the state only by its request body cap, and (MSC4311, v12) refuses malformed
#: entries with ``M_INVALID_PARAM``.
MAX_INVITE_ROOM_STATE_BYTES: Final = 65_536

log = Logger()


def kept_invite_state(state: list[Any]) -> tuple[tuple[dict[str, Any], ...], int]:
    """The ``invite_room_state`` entries kept (pure): objects, in order, at most
    :data:`MAX_INVITE_ROOM_STATE` of them and :data:`MAX_INVITE_ROOM_STATE_BYTES` in all;
    and their size in bytes."""
    kept: list[dict[str, Any]] = []
    size = 0
    for entry in state[:MAX_INVITE_ROOM_STATE]:
        if not isinstance(entry, dict):
            continue
        entry_size = len(encode_json(entry))
        if size + entry_size > MAX_INVITE_ROOM_STATE_BYTES:
            break
        kept.append(entry)
        size += entry_size
    return tuple(kept), size


def _refusal(refusal: MembershipRefusal) -> JsonResponse:
    return JsonResponse(refusal.status, refusal.body())


class MembershipEndpoints:
    """Joining, leaving and invites over ``parts``' rooms; ``invites_accept`` False
    refuses every ``/v2/invite`` with 403 ``M_FORBIDDEN``; ``hooks`` hear of each
    accepted invite (also remembered in the store)."""

    def __init__(
        self, parts: RoomEndpointParts, hooks: InboundHooks, *, invites_accept: bool
    ) -> None:
        self._parts = parts
        self._hooks = hooks
        self._invites_accept = invites_accept

    def routes(self) -> list[Route]:
        """The route table."""
        return [
            Route("GET", f"{V1}/make_join/{{roomId}}/{{userId}}", self.make_join),
            Route("PUT", f"{V2}/send_join/{{roomId}}/{{eventId}}", self.send_join),
            Route("GET", f"{V1}/make_leave/{{roomId}}/{{userId}}", self.make_leave),
            Route("PUT", f"{V2}/send_leave/{{roomId}}/{{eventId}}", self.send_leave),
            Route("PUT", f"{V2}/invite/{{roomId}}/{{eventId}}", self.invite),
        ]

    def make_join(self, request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        """``GET /v1/make_join/{roomId}/{userId}?ver=...``: a join template."""
        origin = require_origin(request)
        raw = request.args.get(b"ver")
        versions = (
            None
            if raw is None
            else [v.decode("utf-8", "replace") for v in raw[:MAX_MAKE_JOIN_VERSIONS]]
        )
        room = self._parts.store.get_room(params["roomId"])
        if room is not None and not room.is_server_in_room(self._parts.ours):
            room = None  # we left: Synapse answers 404 when no longer in the room
        try:
            template = make_join_template(
                room, params["userId"], versions, origin=origin, now=self._parts.now()
            )
        except MembershipRefusal as refusal:
            return _refusal(refusal)
        return JsonResponse(200, template.body())

    def make_leave(self, request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        """``GET /v1/make_leave/{roomId}/{userId}``: a leave template."""
        origin = require_origin(request)
        room = self._parts.store.get_room(params["roomId"])
        if room is None or not room.is_server_in_room(self._parts.ours):
            raise MatrixError(404, "M_NOT_FOUND", "Unknown room")
        try:
            template = make_membership_template(
                room,
                user_id=params["userId"],
                origin=origin,
                membership="leave",
                now=self._parts.now(),
            )
        except MembershipRefusal as refusal:
            return _refusal(refusal)
        return JsonResponse(200, template.body())

    async def _send_membership(
        self,
        request: IRequest,
        params: Mapping[str, str],
        membership: Literal["join", "leave"],
        answer: Callable[[Room, Event], JsonResponse],
    ) -> JsonResponse:
        """Checks of send_join / send_leave in Synapse's order (rooms.md 1.5), then
        ``answer(room, event)``, built before the event is added: an answer that cannot
        be built leaves the room as it was (a joiner that got an error is never listed
        as joined here). The event is added (accepted) and the answer returned."""
        origin = require_origin(request)
        body = json_object(request)
        room_id = params["roomId"]
        if body.get("room_id") != room_id:
            raise MatrixError(400, "M_BAD_JSON", "room_id of the event is not the room in the path")
        room = self._parts.store.get_room(room_id)
        if room is None or not room.is_server_in_room(self._parts.ours):
            raise MatrixError(404, "M_NOT_FOUND", f"Unknown room {room_id!r}")
        try:
            event = self._parts.intake.parse(body, room.room_version)
        except InvalidPdu as e:
            raise MatrixError(400, "M_BAD_JSON", f"bad event: {e.reason}") from None
        if event.type != MEMBER or not event.is_state or event.membership != membership:
            raise MatrixError(
                400, "M_BAD_JSON", f"Not an m.room.member event with membership {membership!r}"
            )
        try:
            stored = await self._parts.intake.checked(event)
        except SignatureFailure as e:
            raise MatrixError(403, "M_FORBIDDEN", f"event id {event.event_id}: {e}") from None
        if event.sender.partition(":")[2] != origin:
            raise MatrixError(403, "M_FORBIDDEN", "User not from origin")
        if event.sender != event.state_key:
            raise MatrixError(400, "M_BAD_JSON", "sender and state_key differ")
        unknown: list[tuple[Literal["auth", "prev"], list[str]]] = [
            ("auth", room.missing_auth_events(stored)),
            ("prev", room.missing_prev_events(stored)),
        ]
        for kind, missing in unknown:
            if missing:
                cited = MissingEvents(kind, missing)
                raise MatrixError(400, "M_BAD_JSON", f"the event cites {cited}")
        response = answer(room, stored)
        try:
            record = room.add_event(stored, self._parts.now(), origin=origin)
        except MissingEvents as e:
            raise MatrixError(400, "M_BAD_JSON", f"the event cites {e}") from None
        except RoomError as e:
            raise MatrixError(403, "M_FORBIDDEN", f"{membership} event was rejected: {e}") from None
        if record.outcome != "accepted":
            raise MatrixError(
                403, "M_FORBIDDEN", f"{membership} event was rejected: {record.reason}"
            )
        return response

    def send_join(self, request: IRequest, params: Mapping[str, str]) -> Deferred[JsonResponse]:
        """``PUT /v2/send_join/{roomId}/{eventId}``: the join added, the state before it."""
        return Deferred.fromCoroutine(self._send_join(request, params))

    async def _send_join(self, request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        return await self._send_membership(request, params, "join", self._join_answer)

    def _join_answer(self, room: Room, event: Event) -> JsonResponse:
        """send_join's answer: the join, the state before it and that state's whole auth
        chain (``stubserver.rooms.room_queries`` says why there is no cap: Synapse has
        none), as Synapse answers a joiner that does not ask for partial state; with the
        room's extra state events, when a test asked for some
        (:class:`~stubserver.rooms.join_extras.JoinExtras`)."""
        state_ids, chain_ids = state_ids_for_new_event(room, event)
        state, chain = self._parts.store.join_extras.answer(
            room.room_id, pdus(room, state_ids), pdus(room, chain_ids)
        )
        return JsonResponse(
            200,
            {
                "event": dict(event.pdu),
                "state": state,
                "auth_chain": chain,
                "members_omitted": False,
                "origin": self._parts.ours,
            },
        )

    def send_leave(self, request: IRequest, params: Mapping[str, str]) -> Deferred[JsonResponse]:
        """``PUT /v2/send_leave/{roomId}/{eventId}``: the leave added, ``{}``."""
        return Deferred.fromCoroutine(self._send_leave(request, params))

    async def _send_leave(self, request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        return await self._send_membership(
            request, params, "leave", lambda _room, _event: JsonResponse(200, {})
        )

    def invite(self, request: IRequest, params: Mapping[str, str]) -> Deferred[JsonResponse]:
        """``PUT /v2/invite/{roomId}/{eventId}``: the invite countersigned and kept."""
        return Deferred.fromCoroutine(self._invite(request, params))

    async def _invite(self, request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        origin = require_origin(request)
        body = json_object(request)
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
            event = self._parts.intake.parse(received, version)
        except InvalidPdu as e:
            raise MatrixError(400, "M_BAD_JSON", f"bad event: {e.reason}") from None
        assert isinstance(received, dict)  # the parse checked it is an object
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
            stored = await self._parts.intake.checked(event)
        except SignatureFailure as e:
            raise MatrixError(403, "M_FORBIDDEN", f"event id {event.event_id}: {e}") from None
        self._check_invite(event, origin)
        signed = self._countersigned(received if stored is event else dict(stored.pdu), version)
        countersigned = event_from_pdu(signed, version, owned=True)
        entries, state_size = kept_invite_state(state)
        assert event.state_key is not None  # _check_invite checked it
        invite_record = ReceivedInvite(
            event.room_id,
            event.state_key,
            version,
            countersigned,
            origin,
            entries,
            size=len(encode_json(signed)) + state_size,
        )
        self._parts.store.remember_invite(invite_record)
        room = self._parts.store.get_room(event.room_id)
        if room is not None and room.room_version == version:
            try:
                room.add_event(countersigned, self._parts.now(), origin=origin)
            except RoomError as e:
                # The /send that follows (or a fetch) brings what is missing.
                log.debug(
                    "Invite {event_id} not added yet: {error}", event_id=event.event_id, error=e
                )
        self._hooks.on_invite(invite_record)
        return JsonResponse(200, {"event": signed})

    def _check_invite(self, event: Event, origin: str) -> None:
        """Synapse's checks of a received invite after its signature (rooms.md 1.9).

        Whether the invited local user exists is not checked, as Synapse 1.163.2 does not
        (issue 22, row 9: read in ``FederationHandler.on_invite_request``): it checks the
        state key, the room's block, ``block_non_admin_invites``, the spam checker, that the
        event is a member invite sent by the origin's user, that the invitee is ours (400
        "The invite event must be for this server"), that it is not the server notices
        user, the invitee's invite rules and a per-invitee rate limit, and then stores the
        invite, for a user that was never registered too. Our users are whatever the tests
        driving us name, so an invite for any of ours is taken; what bounds its cost is the
        store (``MAX_INVITES`` invites, ``MAX_INVITE_BYTES`` in all) and
        :data:`MAX_INVITE_ROOM_STATE_BYTES`. A room version we do not support is refused
        before this, with Synapse's 400 ``M_UNSUPPORTED_ROOM_VERSION``.
        """
        if event.type != MEMBER or event.membership != "invite" or event.state_key is None:
            raise MatrixError(400, "M_BAD_JSON", "The event was not an m.room.member invite event")
        if event.sender.partition(":")[2] != origin:
            raise MatrixError(
                403, "M_FORBIDDEN", "The invite event was not from the server sending it"
            )
        ours = self._parts.ours
        if not is_user_id(event.state_key) or event.state_key.partition(":")[2] != ours:
            raise MatrixError(400, "M_BAD_JSON", "The invite event must be for this server")
        if not self._invites_accept:
            raise MatrixError(403, "M_FORBIDDEN", "This server does not accept invites")

    def _countersigned(self, source: Mapping[str, Any], version: RoomVersion) -> dict[str, Any]:
        signer = self._parts.signer
        return add_signature(source, version, signer.server_name, signer.key_id, signer.signing_key)
