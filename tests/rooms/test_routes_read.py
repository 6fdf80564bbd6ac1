"""The reading endpoints, called without a router."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from stubserver.rooms.routes_read import ReadEndpoints
from stubserver.server.router import MatrixError
from tests.rooms.endpoint_fixtures import parts, signed_in
from tests.rooms.room_fixtures import BOB, join, new_room, send


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


def test_state_answers_are_kept_30_seconds_per_room_and_event() -> None:
    """state and state_ids at one event walk the state and its auth chain once in 30 s,
    as Synapse keeps its answers (issue 22 row 3: the walk costs the whole auth chain);
    after 30 s the next answer walks again."""
    p = parts()
    room = new_room("12").room
    join(room, BOB)
    p.store.add_room(room)
    read = ReadEndpoints(p)
    event_id = sorted(room.forward_extremities)[0]
    args = {b"event_id": [event_id.encode()]}
    params = {"roomId": room.room_id}
    first = read.get_state_ids(signed_in("GET", "/state_ids", args=args), params).body
    assert read.get_state_ids(signed_in("GET", "/state_ids", args=args), params).body == first
    state = read.get_state(signed_in("GET", "/state", args=args), params).body
    assert len(state["pdus"]) == len(first["pdu_ids"])
    assert read.state_walks == 1
    clock = p.clock
    assert isinstance(clock, Clock)
    clock.advance(30)
    read.get_state_ids(signed_in("GET", "/state_ids", args=args), params)
    assert read.state_walks == 2


def test_an_event_we_sent_is_served_even_when_we_rejected_it() -> None:
    """/event and /event_auth serve an event of ours our own checks rejected (we sent it:
    to others it is in the room's graph), not another server's that we rejected."""
    p = parts()
    room = new_room("12").room
    join(room, BOB)
    p.store.add_room(room)
    ours = send(room, "@carol:a.test", "m.room.message", {"body": "not joined"})
    theirs = send(room, "@dave:b.test", "m.room.message", {"body": "not joined"})
    assert ours.outcome == theirs.outcome == "rejected"
    endpoints = ReadEndpoints(p)
    served = endpoints.get_event(
        signed_in("GET", "/_matrix/federation/v1/event/x"), {"eventId": ours.event.event_id}
    )
    assert served.body["pdus"] == [dict(ours.event.pdu)]
    chain = endpoints.event_auth(
        signed_in("GET", "/_matrix/federation/v1/event_auth/x/y"),
        {"roomId": room.room_id, "eventId": ours.event.event_id},
    )
    assert chain.status == 200
    with pytest.raises(MatrixError) as raised:
        endpoints.get_event(
            signed_in("GET", "/_matrix/federation/v1/event/x"), {"eventId": theirs.event.event_id}
        )
    assert raised.value.status == 404
