"""What the room endpoint groups share (``routes_membership``, ``routes_send``,
``routes_read``): :class:`RoomEndpointParts`, the answers every endpoint gives alike, and
the path prefix.

Answers and refusals are Synapse 1.163.2's (rooms.md 1.4-1.10, 2.1, 2.2): every endpoint
needs X-Matrix (``require_origin``: 401 without); a read endpoint answers an unknown room
with 404 ``M_NOT_FOUND`` and a room where the origin has no joined user with 403
``M_FORBIDDEN`` "Host not in room." (Synapse's ``assert_host_in_room``); bodies are the
JSON the X-Matrix filter parsed (``request_content``), their shape checked: 400
``M_BAD_JSON``, never a 500.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from stubserver.auth.filter import request_content
from stubserver.rooms.builder import EventSigner
from stubserver.rooms.event import Event
from stubserver.rooms.intake import Intake
from stubserver.rooms.room import Room
from stubserver.rooms.store import RoomStore
from stubserver.rooms.visibility import redacted_pdu
from stubserver.server.router import MatrixError

PREFIX: Final = "/_matrix/federation"
V1: Final = f"{PREFIX}/v1"
V2: Final = f"{PREFIX}/v2"
MEMBER: Final = "m.room.member"
#: Synapse's words for a server with no joined user in the room.
HOST_NOT_IN_ROOM: Final = "Host not in room."


@dataclass(frozen=True)
class RoomEndpointParts:
    """What every endpoint group is built from: the rooms (``store``), who signs
    (``signer``), the receive pipeline (``intake``) and the clock."""

    store: RoomStore
    signer: EventSigner
    intake: Intake
    clock: IReactorTime

    @property
    def ours(self) -> str:
        """Our server name."""
        return self.signer.server_name

    def now(self) -> int:
        """Milliseconds since the epoch."""
        return int(self.clock.seconds() * 1000)

    def room_or_404(self, room_id: str) -> Room:
        """The room, else 404."""
        room = self.store.get_room(room_id)
        if room is None:
            raise MatrixError(404, "M_NOT_FOUND", f"Unknown room {room_id!r}")
        return room

    def room_for_reader(self, room_id: str, origin: str) -> Room:
        """The room, if ``origin`` may read it: 404 unknown, 403 when it has no joined user."""
        room = self.room_or_404(room_id)
        if not room.is_server_in_room(origin):
            raise MatrixError(403, "M_FORBIDDEN", HOST_NOT_IN_ROOM)
        return room


def json_object(request: IRequest) -> dict[str, Any]:
    """The request's JSON body, which must be an object (400 ``M_BAD_JSON``)."""
    body = request_content(request)
    if not isinstance(body, dict):
        raise MatrixError(400, "M_BAD_JSON", "the request body must be a JSON object")
    return body


def served_event(room: Room, event_id: str, ours: str) -> Event:
    """An event of ``room`` we serve, else 404: not one we rejected, unless we (``ours``)
    sent it. Our own events are served whatever our checks said of them: we sent them,
    so to the others they are part of the room's graph (the spec's "events may be
    included in the room DAG even though they should be rejected"), and a server that
    must judge an event naming them (the test peer's negative tests) fetches them here."""
    record = room.record(event_id)
    if record is None or (record.outcome == "rejected" and record.origin != ours):
        raise MatrixError(404, "M_NOT_FOUND", f"Unknown event {event_id!r} in {room.room_id}")
    return record.event


def pdus(room: Room, event_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The PDUs of the events of ``room`` among ``event_ids``, in order, redacted where
    a redaction takes effect (``stubserver.rooms.visibility``)."""
    result = []
    for event_id in event_ids:
        event = room.get_event(event_id)
        if event is not None:
            result.append(redacted_pdu(room, event))
    return result


def string_list(body: Mapping[str, Any], key: str, limit: int) -> list[str]:
    """``body[key]``, a list of at most ``limit`` strings (400 otherwise)."""
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MatrixError(400, "M_BAD_JSON", f"{key} must be a list of strings")
    if len(value) > limit:
        raise MatrixError(400, "M_BAD_JSON", f"{key} lists more than {limit} events")
    return value


def int_field(body: Mapping[str, Any], key: str, default: int) -> int:
    """``body[key]``, an integer (400 otherwise)."""
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MatrixError(400, "M_BAD_JSON", f"{key} must be an integer")
    return value
