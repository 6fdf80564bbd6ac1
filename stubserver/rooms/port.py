"""What the control API needs of the room service: the :class:`RoomControl` port.

The control routes (``stubserver.control.api``) parse and validate the JSON a test sends,
call one of these methods, and answer its result as JSON (DESIGN.md, "Rooms and the
control API"). The room service (``stubserver.rooms.service.RoomService``) implements
it. Every method's result is the JSON body of the answer, exactly as DESIGN.md gives it.

Errors (``stubserver.rooms.errors``): a method raises a
:class:`~stubserver.rooms.errors.RoomRequestRefused` for a request it refuses itself
(unknown room 404 ``M_NOT_FOUND``, a user that is not ours 400 ``M_INVALID_PARAM``, an
event our own auth rules reject 403 ``M_FORBIDDEN``, ...; the codes are
:func:`stubserver.rooms.http_errors.matrix_error`'s),
:class:`~stubserver.rooms.errors.RemoteRefused` when a remote server answered a request
made on the caller's behalf with a non-2xx (the control API answers 502 with
``remote_status`` and ``remote_body`` added), or
:class:`~stubserver.rooms.errors.RemoteUnreachable` when it could not be reached (502, no
remote fields).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from twisted.internet.defer import Deferred

from stubserver.signing.canonical_json import JsonDict


class RoomControl(Protocol):
    """The operations of the control API. ``room`` is a room ID or an alias (``#a:b``)."""

    @property
    def server_name(self) -> str: ...

    def status(self) -> JsonDict:
        """``{"server_name", "room_versions", "rooms": [room_id, ...]}``."""

    def create_room(
        self,
        creator: str,
        *,
        room_version: str | None = None,
        preset: str | None = None,
        alias: str | None = None,
        name: str | None = None,
    ) -> Deferred[JsonDict]:
        """Host a new room; ``creator`` is a localpart.

        → ``{"room_id", "room_version", "event_ids"}``.
        """

    def join(self, room: str, user: str, via: Sequence[str]) -> Deferred[JsonDict]:
        """Join ``room`` as our ``user``.

        A room we hold: a local join. Elsewhere: make_join/send_join through the ``via``
        servers (or the alias's server). → ``{"room_id", "room_version", "event_id"}``.
        """

    def leave(self, room: str, user: str) -> Deferred[JsonDict]:
        """→ ``{"event_id"}``."""

    def invite(self, room: str, sender: str, user_id: str) -> Deferred[JsonDict]:
        """Invite ``user_id`` (any server) as our ``sender``. → ``{"event_id"}``."""

    def send(
        self,
        room: str,
        sender: str,
        event_type: str,
        content: Mapping[str, Any],
        *,
        state_key: str | None = None,
        prev_events: Sequence[str] | None = None,
        auth_events: Sequence[str] | None = None,
        origin_server_ts: int | None = None,
        tamper: str | None = None,
        destinations: Sequence[str] | None = None,
    ) -> Deferred[JsonDict]:
        """Build, sign, add and send an event to every other server in the room.

        ``tamper``: ``"signature"`` (a broken signature) or ``"content"`` (content changed
        after hashing), sent broken on purpose and not added to our room.
        ``destinations`` (our addition to DESIGN.md's table): send only to these servers;
        ``[]`` withholds the event, so that a later one makes the others fetch it with
        ``get_missing_events``. An ``m.room.redaction`` names its target in
        ``content.redacts`` in every room version; in v10 it is built with ``redacts`` at
        the top level instead, as that version requires. → ``{"event_id"}``.
        """

    def set_served(self, room: str, event_ids: Sequence[str], served: bool) -> Deferred[JsonDict]:
        """Refuse (``served`` False) or go back to serving events of the room over
        federation (our addition to DESIGN.md's table, ``stubserver.rooms.served``): a
        refused event is 404 on ``/event``, ``/state``, ``/state_ids`` and
        ``/event_auth`` and left out of the ``/state``, ``/event_auth``, ``/backfill`` and
        ``get_missing_events`` answers. → ``{"refused": [event_id, ...]}`` (all of the
        room's)."""

    def plant(
        self, room: str, sender: str, event_type: str, content_json: str
    ) -> Deferred[JsonDict]:
        """Build our non-state event with ``content_json`` (JSON text, any numbers: a
        float, an integer out of range) as its content, on the room's forward extremities,
        hashed over that text and signed; not added to the room nor sent, but served in
        ``get_missing_events`` answers that walk through it, and ``send``'s
        ``prev_events`` may name it (our addition, ``stubserver.rooms.planted``).
        → ``{"event_id"}``."""

    def resend(
        self, room: str, event_id: str, destinations: Sequence[str] | None = None
    ) -> Deferred[JsonDict]:
        """Send an event of ours in the room again, in a new transaction, to every other
        server in the room or to ``destinations`` (our addition). → ``{"event_id"}``."""

    def send_join_extra_state(
        self,
        room: str,
        sender: str,
        event_type: str,
        content: Mapping[str, Any],
        *,
        state_key: str,
        tamper: str | None = None,
    ) -> Deferred[JsonDict]:
        """Build and sign a state event of our ``sender`` on the room we hold, broken as
        ``tamper`` says (``"signature"``, ``"content"``, ``"unsigned"``, ``"unknown_key"``;
        None: not broken), which every later ``send_join`` answer of the room carries
        (``stubserver.rooms.join_extras``); it is neither added to the room nor sent.
        → ``{"event_id"}``."""

    def send_edu(self, room: str, edu_type: str, content: Mapping[str, Any]) -> Deferred[JsonDict]:
        """Send an EDU to every other server in the room. → ``{}``."""

    def put_device(
        self,
        user: str,
        device_id: str,
        *,
        keys: Mapping[str, Any] | None = None,
        display_name: str | None = None,
    ) -> Deferred[JsonDict]:
        """Add or replace a device of our ``user`` (a localpart) and send the
        ``m.device_list_update`` EDU to every other server in a room the user is joined
        to. → ``{"stream_id"}``."""

    def room_info(self, room: str) -> JsonDict:
        """→ ``{"room_id", "room_version", "state": [pdu, ...], "members", "servers",
        "forward_extremities"}``."""

    def events(self, room: str, start: int, wait_ms: int) -> Deferred[JsonDict]:
        """→ ``{"events": [{"event_id", "pdu", "origin", "outcome", "reason"}], "next"}``,
        every PDU the room gained from position ``start``; waits up to ``wait_ms`` for one."""

    def edus(self, start: int, wait_ms: int) -> Deferred[JsonDict]:
        """→ ``{"edus": [{"origin", "edu_type", "content"}], "next"}``."""

    def federation_request(
        self, destination: str, method: str, path: str, body: Any | None
    ) -> Deferred[JsonDict]:
        """A request signed with our key. → ``{"status", "body"}`` whatever the status."""
