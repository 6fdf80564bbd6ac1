"""The reading endpoints, called without a router."""

from __future__ import annotations

import pytest

from stubserver.rooms.routes_read import ReadEndpoints
from stubserver.server.router import MatrixError
from tests.rooms.endpoint_fixtures import parts, signed_in
from tests.rooms.room_fixtures import BOB, join, new_room


def test_the_directory_answers_our_alias_with_us_first() -> None:
    """query_directory gives the room ID of our alias and its servers, ours first."""
    p = parts()
    room = new_room("12").room
    join(room, BOB)
    p.store.add_room(room)
    p.store.add_alias("lobby", room.room_id)
    request = signed_in(
        "GET", "/_matrix/federation/v1/query/directory", args={b"room_alias": [b"#lobby:a.test"]}
    )
    response = ReadEndpoints(p).query_directory(request, {})
    assert (response.status, response.body) == (
        200,
        {"room_id": room.room_id, "servers": ["a.test", "b.test"]},
    )


def test_reading_a_room_the_origin_is_not_in_is_403() -> None:
    """event_auth for a server with no joined user: 403 Host not in room."""
    p = parts()
    room = new_room("12").room
    p.store.add_room(room)
    request = signed_in("GET", "/_matrix/federation/v1/event_auth/x/y")
    with pytest.raises(MatrixError) as raised:
        ReadEndpoints(p).event_auth(request, {"roomId": room.room_id, "eventId": "$e"})
    assert (raised.value.status, raised.value.message) == (403, "Host not in room.")
