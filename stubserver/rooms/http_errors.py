"""The one mapping from the room service's typed errors to Matrix errors (HTTP).

The room domain (``stubserver.rooms.errors``, ``stubserver.rooms.store.StoreFull``,
``stubserver.rooms.room.RoomError``) speaks no HTTP; the control API
(``stubserver.control.api``) and the federation endpoints answer what it raises through
:func:`matrix_error`, with DESIGN.md's status codes and errcodes and the error's text as
the message. Remote failures (:class:`~stubserver.rooms.errors.RemoteRefused`,
:class:`~stubserver.rooms.errors.RemoteUnreachable`) carry more than a Matrix error holds
and are answered by the control API itself (502 with the remote's status and body).
"""

from __future__ import annotations

from typing import Final

from stubserver.rooms.devices import TooManyDevices
from stubserver.rooms.errors import (
    AliasTaken,
    BadRemoteAnswer,
    InvalidParameter,
    NotAllowed,
    UnbuildableEvent,
    UnknownRoom,
    VersionNotSupported,
)
from stubserver.rooms.room import RoomError
from stubserver.rooms.served import TooManyOverrides
from stubserver.rooms.store import StoreFull
from stubserver.server.router import MatrixError

#: Error type -> (HTTP status, errcode), tried in order (the first ``isinstance`` wins).
HTTP_ANSWERS: Final[tuple[tuple[type[Exception], int, str], ...]] = (
    (InvalidParameter, 400, "M_INVALID_PARAM"),
    (UnbuildableEvent, 400, "M_BAD_JSON"),
    (VersionNotSupported, 400, "M_UNSUPPORTED_ROOM_VERSION"),
    (NotAllowed, 403, "M_FORBIDDEN"),
    (UnknownRoom, 404, "M_NOT_FOUND"),
    (AliasTaken, 409, "M_ROOM_IN_USE"),
    (BadRemoteAnswer, 502, "M_UNKNOWN"),
    (StoreFull, 503, "M_RESOURCE_LIMIT_EXCEEDED"),
    (TooManyDevices, 503, "M_RESOURCE_LIMIT_EXCEEDED"),
    (TooManyOverrides, 503, "M_RESOURCE_LIMIT_EXCEEDED"),
    # The room's own consistency failed (full, or a state resolution that cannot run).
    (RoomError, 500, "M_UNKNOWN"),
)


def matrix_error(error: object) -> MatrixError | None:
    """The Matrix error answering ``error``, or None when it is not a room refusal."""
    for kind, status, errcode in HTTP_ANSWERS:
        if isinstance(error, kind):
            return MatrixError(status, errcode, str(error))
    return None
