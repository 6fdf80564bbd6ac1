"""``/send``, called without a router; and behind the real X-Matrix filter."""

from __future__ import annotations

import io
import json
from typing import Any, cast

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.web.iweb import IRequest
from twisted.web.test.requesthelper import DummyRequest

from stubserver.auth.authenticator import RequestAuthenticator
from stubserver.auth.filter import XMatrixFilter
from stubserver.auth.xmatrix import sign_request
from stubserver.rooms.hooks import CallbackHooks
from stubserver.rooms.intake import Intake
from stubserver.rooms.room import Room
from stubserver.rooms.routes_common import RoomEndpointParts
from stubserver.rooms.routes_send import SendEndpoint
from stubserver.rooms.transaction import TransactionOutcome
from stubserver.server.router import JsonResponse, MatrixError
from stubserver.signing.keys import ServerSigningKey
from stubserver.slices import SLICE_SECONDS, SMALL_BODY_BYTES, SMALL_BODY_SLICE_SECONDS
from tests.auth.test_authenticator import Keys
from tests.rooms.endpoint_fixtures import parts, signed_in
from tests.rooms.room_fixtures import B_SIGNER, BOB, TS, add, build, join, new_room
from tests.support import WorkClock, result_now

PATH = "/_matrix/federation/v1/send/t1"


def test_a_transaction_is_added_and_the_hooks_are_told() -> None:
    """A /send of one PDU: 200 with {} for it, the event in the room, the hook told."""
    p = parts()
    room = new_room("12").room
    join(room, BOB)
    p.store.add_room(room)
    built = build(room, BOB, "m.room.message", {"body": "hi"}, ts=TS + 1)
    told: list[tuple[str, TransactionOutcome]] = []
    endpoint = SendEndpoint(p, CallbackHooks(transaction=lambda o, t: told.append((o, t))))
    answer = endpoint.send_transaction(
        signed_in("PUT", PATH, {"pdus": [built.pdu]}), {"txnId": "t1"}
    )
    assert isinstance(answer, Deferred)
    response = result_now(answer)
    assert (response.status, response.body) == (200, {"pdus": {built.event.event_id: {}}})
    assert room.get_event(built.event.event_id) is not None
    assert [origin for origin, _ in told] == ["b.test"]


def test_a_second_transaction_while_one_is_in_flight_is_429() -> None:
    """While a transaction of b.test is in flight, another from b.test is 429."""
    endpoint = SendEndpoint(parts(), CallbackHooks())
    endpoint.in_flight.add("b.test")
    with pytest.raises(MatrixError) as raised:
        endpoint.send_transaction(signed_in("PUT", PATH, {"pdus": []}), {"txnId": "t2"})
    assert (raised.value.status, raised.value.errcode) == (429, "M_UNKNOWN")


class CountingBody(io.BytesIO):
    """A request body that counts how often it is read whole (a JSON parse reads it
    whole; the filter's "is there a body?" peek reads one byte)."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.whole_reads = 0

    def read(self, size: int | None = -1, /) -> bytes:
        if size is None or size < 0 or size > 1:
            self.whole_reads += 1
        return super().read(size)


class KeysOfB:
    """The key source of the authenticator: b.test's key, valid for long."""

    def fetch_cached_or_fresh(self, server_name: str) -> Deferred[Keys]:
        return succeed(Keys({B_SIGNER.key_id: B_SIGNER.signing_key.verify_key}, 2**52))

    fetch = fetch_cached_or_fresh


def behind_the_filter(
    p: RoomEndpointParts, signed: Any, body: io.BytesIO
) -> tuple[IRequest, Deferred[None]]:
    """A /send of ``body`` signed by b.test over ``signed``, through the real
    XMatrixFilter: the request and the filter's Deferred."""
    key = ServerSigningKey(version=B_SIGNER.key_id.partition(":")[2], key=B_SIGNER.signing_key)
    header = sign_request(
        "PUT", PATH, origin="b.test", destination="a.test", key=key, content=signed
    )
    dummy: Any = DummyRequest([])
    dummy.method = b"PUT"
    dummy.uri = dummy.path = PATH.encode()
    dummy.requestHeaders.setRawHeaders(b"authorization", [header])
    dummy.content = body
    request = cast(IRequest, dummy)
    filtered = XMatrixFilter(RequestAuthenticator("a.test", KeysOfB(), p.clock))(request)
    assert filtered is not None
    return request, filtered


def test_behind_the_real_xmatrix_filter_the_body_is_parsed_once() -> None:
    """Behind the real XMatrixFilter (the signature covers the body), /send answers from
    the body the filter parsed: the body is read and parsed once."""
    p = parts()
    room = new_room("12").room
    join(room, BOB)
    p.store.add_room(room)
    built = build(room, BOB, "m.room.message", {"body": "hi"}, ts=TS + 1)
    content = {"origin": "b.test", "origin_server_ts": TS, "pdus": [built.pdu]}
    body = CountingBody(json.dumps(content).encode())
    request, filtered = behind_the_filter(p, content, body)
    result_now(filtered)
    answer = SendEndpoint(p, CallbackHooks()).send_transaction(request, {"txnId": "t1"})
    response = answer if isinstance(answer, JsonResponse) else result_now(answer)
    assert (response.status, response.body) == (200, {"pdus": {built.event.event_id: {}}})
    assert body.whole_reads == 1


def slow_send(
    step: float, texts: list[str]
) -> tuple[SendEndpoint, Intake, Room, list[Any], WorkClock]:
    """A /send endpoint and its intake, on a clock each reading of which costs ``step``
    seconds, a room it holds (BOB joined), and messages of BOB with ``texts`` built in a
    copy of it (not yet sent); the clock."""
    base = parts()
    clock = WorkClock(step)
    clock.advance(TS / 1000)
    intake = Intake(base.intake.fetch_verify_key, clock)
    p = RoomEndpointParts(base.store, base.signer, intake, clock)
    room = new_room("12").room
    join(room, BOB)
    sender = new_room("12").room
    join(sender, BOB)
    built = []
    for i, text in enumerate(texts):
        built.append(build(sender, BOB, "m.room.message", {"body": text}, ts=TS + 1 + i))
        add(sender, built[-1])
    p.store.add_room(room)
    return SendEndpoint(p, CallbackHooks()), intake, room, built, clock


def test_a_long_transaction_is_processed_in_slices_and_answered_after_the_last() -> None:
    """Issue 22 (/version stall): when each PDU takes a slice's time, /send hands the
    reactor back between PDUs: the PDUs are added in order, one slice at a time, the
    origin's next transaction meanwhile is 429, and the answer (every PDU) comes only once
    the last is processed."""
    # Every PDU a slice's work at least.
    endpoint, intake, room, built, clock = slow_send(2 * SMALL_BODY_SLICE_SECONDS, ["0", "1", "2"])
    answer = endpoint.send_transaction(
        signed_in("PUT", PATH, {"pdus": [b.pdu for b in built]}), {"txnId": "t1"}
    )
    assert isinstance(answer, Deferred)
    added_per_turn: list[int] = []
    while not answer.called and len(added_per_turn) < 20:
        added_per_turn.append(sum(room.get_event(b.event.event_id) is not None for b in built))
        with pytest.raises(MatrixError) as raised:
            endpoint.send_transaction(signed_in("PUT", PATH, {"pdus": []}), {"txnId": "t2"})
        assert raised.value.status == 429
        clock.advance(0)
    response = result_now(answer)
    assert response.body == {"pdus": {b.event.event_id: {} for b in built}}
    # Three parsed in three slices (nothing added yet), then added one per slice.
    assert added_per_turn == [0, 0, 0, 1, 2, 3]
    assert intake.pauses == len(added_per_turn)


def pauses_for(pdu_body: str) -> int:
    """The pauses of a /send of 5 messages with ``pdu_body`` as their text, each reading
    of the clock costing 10 ms (work of a 5 ms slice and more, not of a 20 ms one)."""
    endpoint, intake, _, built, clock = slow_send(2 * SLICE_SECONDS, [pdu_body] * 5)
    answer = endpoint.send_transaction(
        signed_in("PUT", PATH, {"pdus": [b.pdu for b in built]}), {"txnId": "t1"}
    )
    while isinstance(answer, Deferred) and not answer.called:
        clock.advance(0)
    response = answer if isinstance(answer, JsonResponse) else result_now(answer)
    assert response.body == {"pdus": {b.event.event_id: {} for b in built}}
    return intake.pauses


def test_a_body_of_megabytes_is_worked_on_in_short_slices() -> None:
    """The slice follows the body's size (issue 22): a /send over SMALL_BODY_BYTES
    (5 PDUs of 64,000 characters) is cut in 5 ms slices, a pause after each of its 10
    steps (5 parses, 5 adds); an ordinary one in 20 ms slices, so that its few
    milliseconds of work take fewer reactor turns (each lets the control API's
    long-polls answer): 3 pauses."""
    assert SMALL_BODY_BYTES < 5 * 64_000
    assert pauses_for("x" * 64_000) == 10
    assert pauses_for("x") == 3


def test_a_body_with_a_float_never_reaches_the_rooms() -> None:
    """The X-Matrix filter refuses a /send whose body holds a float anywhere (its
    signature check encodes the body whole as canonical JSON, which has no floats): what
    lets the intake take an authenticated body's PDUs as float-free (issue 22)."""
    p = parts()
    room = new_room("12").room
    join(room, BOB)
    built = build(room, BOB, "m.room.message", {"body": "hi"}, ts=TS + 1)
    content = {"origin": "b.test", "pdus": [dict(built.pdu, unsigned={"age": 1.5})]}
    # Our signer refuses floats too: a signature over the body with an integer instead.
    signed = {"origin": "b.test", "pdus": [dict(built.pdu, unsigned={"age": 1})]}
    _, filtered = behind_the_filter(p, signed, io.BytesIO(json.dumps(content).encode()))
    failures: list[Any] = []
    filtered.addErrback(failures.append)
    assert failures and isinstance(failures[0].value, MatrixError)
    assert failures[0].value.status == 401
    assert "no canonical form" in str(failures[0].value)
