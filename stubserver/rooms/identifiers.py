"""User IDs, room IDs and room aliases as the control API accepts them: a user is a full
user ID of ours or a localpart; a room is a room ID or an alias. The errors are the
control API's answers: :class:`~stubserver.rooms.errors.InvalidParameter` (400
``M_INVALID_PARAM``) and :class:`~stubserver.rooms.errors.UnknownRoom` (404
``M_NOT_FOUND``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from stubserver.rooms.errors import InvalidParameter, UnknownRoom
from stubserver.rooms.format import is_user_id

#: A localpart as we accept them (the spec's historical grammar, lower case).
LOCALPART: Final = re.compile(r"^[a-z0-9._=\-/+]{1,255}$")


def invalid(message: str) -> InvalidParameter:
    """The refusal of a malformed parameter."""
    return InvalidParameter(message)


def local_user_id(user: str, server_name: str) -> str:
    """The user ID for ``user`` (a user ID of ``server_name``, or a localpart)."""
    if user.startswith("@"):
        if not is_user_id(user) or user.partition(":")[2] != server_name:
            raise invalid(f"{user[:300]!r} is not a user of {server_name}")
        return user
    if not LOCALPART.match(user):
        raise invalid(f"{user[:300]!r} is not a valid localpart")
    return f"@{user}:{server_name}"


def local_room_id(
    room: str,
    server_name: str,
    alias_room_id: Callable[[str], str | None],
    room_with_alias: Callable[[str], str | None],
) -> str:
    """A room ID for ``room`` (ID or alias) from our own data, without asking anyone:
    ``alias_room_id`` maps one of our alias localparts to its room ID, and
    ``room_with_alias`` finds a room we hold by another server's alias (its
    ``m.room.canonical_alias``), so that a joined room is found by the alias it was joined by.
    """
    if room.startswith("#"):
        localpart, sep, server = room[1:].partition(":")
        if not sep or not localpart or not server:
            raise invalid(f"{room[:300]!r} is not a room alias")
        room_id = alias_room_id(localpart) if server == server_name else room_with_alias(room)
        if room_id is None:
            raise UnknownRoom(f"Unknown room alias {room[:300]!r}")
        return room_id
    if not room.startswith("!"):
        raise invalid(f"{room[:300]!r} is neither a room ID nor an alias")
    return room
