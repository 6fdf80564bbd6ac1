"""The membership endpoints, called without a router."""

from __future__ import annotations

from stubserver.rooms.routes_membership import MembershipEndpoints
from stubserver.server.router import MatrixError
from tests.rooms.endpoint_fixtures import no_hooks, parts, signed_in
from tests.rooms.room_fixtures import ALICE, BOB, TS, build, new_room
from tests.support import failure_now


def test_make_join_answers_a_template_for_the_origins_user() -> None:
    """make_join for b.test's user in our public room: 200 with a join template."""
    p = parts()
    room = new_room("12").room
    p.store.add_room(room)
    endpoints = MembershipEndpoints(p, no_hooks(), invites_accept=True)
    request = signed_in("GET", "/make_join", args={b"ver": [b"12"]})
    response = endpoints.make_join(request, {"roomId": room.room_id, "userId": BOB})
    assert response.status == 200
    assert response.body["event"]["state_key"] == BOB
    assert response.body["room_version"] == "12"


def test_send_leave_of_an_unknown_room_is_404() -> None:
    """send_leave for a room we do not hold fails with 404 M_NOT_FOUND."""
    endpoints = MembershipEndpoints(parts(), no_hooks(), invites_accept=True)
    room = new_room("12").room
    leave = build(room, ALICE, "m.room.message", {}, ts=TS + 1).pdu
    request = signed_in("PUT", "/send_leave", {**leave, "room_id": "!gone:a.test"})
    error = failure_now(endpoints.send_leave(request, {"roomId": "!gone:a.test"})).value
    assert isinstance(error, MatrixError)
    assert (error.status, error.errcode) == (404, "M_NOT_FOUND")
