"""What the room service refuses, as typed errors that speak no HTTP.

The room service (``stubserver.rooms.service``) and the modules it drives raise these;
the endpoint modules and the control API (``stubserver.control.api``) turn them into
Matrix errors in one place, :func:`stubserver.rooms.http_errors.matrix_error`, with the
status codes and errcodes DESIGN.md gives. Each error's ``str()`` is the message answered.

* :class:`RemoteRefused`: a remote server answered a request made on the caller's behalf
  with a non-2xx (the control API answers 502 with ``remote_status`` and ``remote_body``);
* :class:`RemoteUnreachable`: it could not be reached (502, no remote fields);
* :class:`RoomRequestRefused` and its kinds: a request the service refuses itself.
"""

from __future__ import annotations

from typing import Any


class RemoteRefused(Exception):
    """A remote server answered ``status`` (not 2xx) with ``body`` (JSON or None)."""

    def __init__(self, destination: str, status: int, body: Any, what: str) -> None:
        super().__init__(f"{destination} refused {what}: HTTP {status}")
        self.destination = destination
        self.status = status
        self.body = body


class RemoteUnreachable(Exception):
    """A remote server could not be reached (resolution, connection, TLS, timeout)."""

    def __init__(self, destination: str, reason: str) -> None:
        super().__init__(f"{destination} could not be reached: {reason}")
        self.destination = destination
        self.reason = reason


class RoomRequestRefused(Exception):
    """A request the room service refuses itself; ``str()`` says why."""


class InvalidParameter(RoomRequestRefused):
    """A malformed user, room, alias, preset or parameter, or one that is not ours."""


class UnknownRoom(RoomRequestRefused):
    """A room, alias or event we do not know, or no server to reach it through."""


class NotAllowed(RoomRequestRefused):
    """The room's rules refuse the event (our own auth checks)."""


class UnbuildableEvent(RoomRequestRefused):
    """The event asked for cannot be built (a bad type, state key or content)."""


class VersionNotSupported(RoomRequestRefused):
    """A room version we do not support or do not offer."""


class AliasTaken(RoomRequestRefused):
    """An alias localpart of ours that already names a room."""


class BadRemoteAnswer(RoomRequestRefused):
    """A remote server answered 2xx with something we cannot use (a bad template, a
    changed invite, an unusable send_join answer)."""
