"""The one mapping of the room service's typed errors to Matrix errors."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from stubserver.rooms.errors import (
    AliasTaken,
    BadRemoteAnswer,
    InvalidParameter,
    NotAllowed,
    RemoteRefused,
    UnbuildableEvent,
    UnknownRoom,
    VersionNotSupported,
)
from stubserver.rooms.http_errors import matrix_error
from stubserver.rooms.room import MissingEvents, RoomFull
from stubserver.rooms.store import StoreFull

ROOMS = Path(__file__).resolve().parents[2] / "stubserver" / "rooms"


@pytest.mark.parametrize(
    ("error", "status", "errcode"),
    [
        (InvalidParameter("bad user"), 400, "M_INVALID_PARAM"),
        (UnbuildableEvent("cannot build the event: x"), 400, "M_BAD_JSON"),
        (VersionNotSupported("room version '9'"), 400, "M_UNSUPPORTED_ROOM_VERSION"),
        (NotAllowed("refused"), 403, "M_FORBIDDEN"),
        (UnknownRoom("Unknown room '!x:a'"), 404, "M_NOT_FOUND"),
        (AliasTaken("#a:a.test is taken"), 409, "M_ROOM_IN_USE"),
        (BadRemoteAnswer("b.test changed the invite event"), 502, "M_UNKNOWN"),
        (StoreFull("too many rooms"), 503, "M_RESOURCE_LIMIT_EXCEEDED"),
        (RoomFull("the room is full"), 500, "M_UNKNOWN"),
    ],
)
def test_each_refusal_has_its_status_and_errcode(
    error: Exception, status: int, errcode: str
) -> None:
    """Each room refusal is answered with its status and errcode, its text the message."""
    answer = matrix_error(error)
    assert answer is not None
    assert (answer.status, answer.errcode, answer.message) == (status, errcode, str(error))


def test_other_errors_are_not_room_refusals() -> None:
    """Errors the mapping does not know (a remote refusal, a bug) give None."""
    assert matrix_error(RemoteRefused("b.test", 403, {}, "make_join")) is None
    assert matrix_error(KeyError("x")) is None
    assert matrix_error(MissingEvents("prev", ["$a"])) is not None  # a RoomError: 500


def test_rooms_imports_neither_control_nor_its_wiring() -> None:
    """No module of stubserver/rooms imports stubserver.control (control/ drives rooms/,
    never the reverse)."""
    offenders = []
    for path in sorted(ROOMS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            offenders += [f"{path.name}: {n}" for n in names if n.startswith("stubserver.control")]
    assert offenders == []
