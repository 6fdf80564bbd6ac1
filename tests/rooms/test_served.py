"""What a test peer serves otherwise by its driver's choice (``stubserver.rooms.served``,
``stubserver.rooms.planted``) and sending an event again: refused events, planted PDUs
our canonical JSON refuses, ``resend``. Between two in-memory servers where a server's
behaviour matters, the read endpoints alone where only the answer does."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import canonicaljson
import pytest

from stubserver.rooms.errors import UnbuildableEvent, UnknownRoom
from stubserver.rooms.hashes import compute_event_id
from stubserver.rooms.planted import MAX_PLANTED_CONTENT_BYTES, PlantRefused, plant_event
from stubserver.rooms.routes_read import ReadEndpoints
from stubserver.rooms.served import ServingOverrides, TooManyOverrides
from stubserver.rooms.signing import verify_event_signature
from stubserver.rooms.versions import ROOM_VERSIONS
from stubserver.server.router import MatrixError
from tests.rooms.endpoint_fixtures import parts, signed_in
from tests.rooms.room_fixtures import A_SIGNER, ALICE, BOB, VERSIONS, join, new_room, send
from tests.rooms.service_net import MESSAGE, joined, say, two_peers
from tests.support import failure_now, result_now

ALL = pytest.mark.parametrize("version", VERSIONS)
FLOAT_CONTENT = '{"bad_val":1.1,"body":"Message 1"}'
BIG_INTEGER_CONTENT = '{"bad_val":9007199254740992,"body":"Message 1"}'


def _refused_room() -> tuple[ReadEndpoints, str, list[str]]:
    """a.test's read endpoints over a v12 room with bob joined and three messages of
    alice's (IDs returned, oldest first), the middle one refused."""
    p = parts()
    room = new_room("12").room
    join(room, BOB)
    ids = [send(room, ALICE, MESSAGE, {"body": str(i)}).event.event_id for i in range(3)]
    p.store.add_room(room)
    p.store.serving.refuse(room.room_id, [ids[1]])
    return ReadEndpoints(p), room.room_id, ids


def _status(call: Any) -> int:
    with pytest.raises(MatrixError) as raised:
        call()
    return raised.value.status


def test_a_refused_event_is_404_as_the_subject_of_every_read() -> None:
    """/event, /state, /state_ids and /event_auth of a refused event: 404 (what
    Complement's peer answers for the event it will not hand over)."""
    read, room_id, ids = _refused_room()
    args = {b"event_id": [ids[1].encode()]}
    params = {"roomId": room_id, "eventId": ids[1]}
    assert _status(lambda: read.get_event(signed_in("GET", "/event"), params)) == 404
    assert _status(lambda: read.get_state(signed_in("GET", "/state", args=args), params)) == 404
    assert (
        _status(lambda: read.get_state_ids(signed_in("GET", "/state_ids", args=args), params))
        == 404
    )
    assert _status(lambda: read.event_auth(signed_in("GET", "/event_auth"), params)) == 404


def test_a_refused_event_is_left_out_of_backfill_and_get_missing_events() -> None:
    """/backfill and get_missing_events walk through a refused event (its ancestors are
    still served) but leave it out."""
    read, room_id, ids = _refused_room()
    args = {b"v": [ids[2].encode()], b"limit": [b"3"]}
    backfilled = read.backfill(signed_in("GET", "/backfill", args=args), {"roomId": room_id})
    backfilled_ids = [compute_event_id(p, ROOM_VERSIONS["12"]) for p in backfilled.body["pdus"]]
    assert ids[1] not in backfilled_ids and ids[0] in backfilled_ids
    body = {"earliest_events": [], "latest_events": [ids[2]], "limit": 10}
    missing = read.get_missing_events(
        signed_in("POST", "/get_missing_events", body), {"roomId": room_id}
    )
    missing_ids = [compute_event_id(p, ROOM_VERSIONS["12"]) for p in missing.body["events"]]
    assert ids[1] not in missing_ids and ids[0] in missing_ids


def test_state_ids_still_list_a_refused_event_and_state_leaves_its_pdu_out() -> None:
    """At a later event, /state_ids lists a refused state event's ID (the event exists)
    while /state leaves its PDU out of the state and the auth chain."""
    p = parts()
    room = new_room("12").room
    bob_join = join(room, BOB).event.event_id
    after = send(room, ALICE, MESSAGE, {"body": "after"}).event.event_id
    p.store.add_room(room)
    p.store.serving.refuse(room.room_id, [bob_join])
    read = ReadEndpoints(p)
    args = {b"event_id": [after.encode()]}
    params = {"roomId": room.room_id}
    ids = read.get_state_ids(signed_in("GET", "/state_ids", args=args), params).body
    assert bob_join in ids["pdu_ids"]
    state = read.get_state(signed_in("GET", "/state", args=args), params).body
    served = [compute_event_id(e, room.room_version) for e in state["pdus"] + state["auth_chain"]]
    assert bob_join not in served and len(state["pdus"]) == len(ids["pdu_ids"]) - 1


def test_served_again_after_serving_is_turned_back_on() -> None:
    """set_served(..., True) ends the refusal: /event serves the event."""
    network, a, b = two_peers()
    room_id = joined(network, a, b)
    event_id = say(a, room_id, "alice", "hello")
    answer = result_now(a.service.set_served(room_id, [event_id], False))
    assert answer == {"refused": [event_id]}
    assert result_now(a.service.set_served(room_id, [event_id], True)) == {"refused": []}
    assert not a.store.serving.is_refused(room_id, event_id)


def test_refusing_an_unknown_event_is_404() -> None:
    """set_served for an event the room does not hold: UnknownRoom (404)."""
    network, a, b = two_peers()
    room_id = joined(network, a, b)
    failure = failure_now(a.service.set_served(room_id, ["$nope"], False))
    assert isinstance(failure.value, UnknownRoom)


def test_the_bounds_of_the_overrides() -> None:
    """Past max_refused refused events or max_planted planted PDUs: TooManyOverrides."""
    overrides = ServingOverrides(max_refused=2, max_planted=0)
    overrides.refuse("!r", ["$a", "$b"])
    overrides.refuse("!r", ["$a"])  # already refused: no more room needed
    with pytest.raises(TooManyOverrides):
        overrides.refuse("!s", ["$c"])
    network, a, b = two_peers()
    room_id = joined(network, a, b)
    planted = plant_event(
        a.room(room_id), A_SIGNER, sender=ALICE, event_type=MESSAGE, content_text="{}", now=1
    )
    with pytest.raises(TooManyOverrides):
        overrides.plant(room_id, planted)


@ALL
@pytest.mark.parametrize("content", [FLOAT_CONTENT, BIG_INTEGER_CONTENT])
def test_a_planted_pdu_is_hashed_over_its_text_and_signed(version: str, content: str) -> None:
    """The planted PDU's text holds the content as given (a float, an integer above
    2**53-1), its content hash
    is the SHA-256 of the canonical encoding a receiver that did not check numbers would
    make (canonicaljson encodes floats), its signature verifies and its ID is the
    reference hash of the PDU (whose redaction keeps no content)."""
    network, a, b = two_peers()
    room_id = joined(network, a, b, version)
    room = a.room(room_id)
    planted = plant_event(
        room, A_SIGNER, sender=ALICE, event_type=MESSAGE, content_text=content, now=5
    )
    assert '"content":' + content in planted.text
    pdu = json.loads(planted.text)
    assert pdu["content"] == json.loads(content)
    hashed = {k: v for k, v in pdu.items() if k not in ("hashes", "signatures", "unsigned")}
    digest = hashlib.sha256(canonicaljson.encode_canonical_json(hashed)).digest()
    assert pdu["hashes"]["sha256"] == base64.b64encode(digest).decode().rstrip("=")
    verify_event_signature(
        pdu, room.room_version, "a.test", A_SIGNER.key_id, A_SIGNER.signing_key.verify_key
    )
    assert planted.event_id == compute_event_id(pdu, room.room_version)
    assert pdu["prev_events"] == sorted(room.forward_extremities)
    assert room.get_event(planted.event_id) is None


@pytest.mark.parametrize(
    ("event_type", "content", "words"),
    [
        ("m.room.redaction", "{}", "redacts"),
        (MESSAGE, "[1.5]", "JSON object"),
        (MESSAGE, "{1.5", "not JSON"),
        (MESSAGE, '{"x":"' + "y" * MAX_PLANTED_CONTENT_BYTES + '"}', "over"),
    ],
)
def test_what_cannot_be_planted(event_type: str, content: str, words: str) -> None:
    """A redaction (its redaction keeps content), content that is not a JSON object, or
    too long: PlantRefused naming why."""
    room = new_room("12").room
    with pytest.raises(PlantRefused, match=words):
        plant_event(
            room, A_SIGNER, sender=ALICE, event_type=event_type, content_text=content, now=1
        )


def test_plant_through_the_service_refuses_with_400() -> None:
    """The service answers a refused plant with UnbuildableEvent (400 M_BAD_JSON)."""
    network, a, b = two_peers()
    room_id = joined(network, a, b)
    failure = failure_now(a.service.plant(room_id, "alice", "m.room.redaction", "{}"))
    assert isinstance(failure.value, UnbuildableEvent)


@ALL
def test_a_planted_pdu_is_served_as_text_and_dropped_by_a_strict_receiver(version: str) -> None:
    """An event built on a planted PDU (prev_events naming it) is added to our room with
    the state the planted event's prevs give and sent; the receiver's get_missing_events
    answer carries the planted text verbatim; a receiver that checks canonical JSON (a
    stubserver) never takes the planted event, and the room goes on: a later event built
    beside it is accepted."""
    network, a, b = two_peers()
    room_id = joined(network, a, b, version)
    before = sorted(a.room(room_id).forward_extremities)
    planted_id = result_now(a.service.plant(room_id, "alice", MESSAGE, FLOAT_CONTENT))["event_id"]
    after = result_now(
        a.service.send(room_id, "alice", MESSAGE, {"body": "Message 2"}, prev_events=[planted_id])
    )["event_id"]
    assert a.room(room_id).record(after) is not None
    assert a.room(room_id).get_event(planted_id) is None
    asked = [s for s in network.sent if s.origin == "b.test" and "get_missing_events" in s.path]
    assert asked, "b did not ask for the missing event"
    assert b.room(room_id).get_event(planted_id) is None
    marker = result_now(
        a.service.send(room_id, "alice", MESSAGE, {"body": "marker"}, prev_events=before)
    )["event_id"]
    record = b.room(room_id).record(marker)
    assert record is not None and record.outcome == "accepted"


def test_the_get_missing_events_answer_holds_the_planted_text() -> None:
    """get_missing_events through a's router: the raw body holds the planted PDU's text,
    the other events as JSON; the body the request log sees names it."""
    network, a, b = two_peers()
    room_id = joined(network, a, b)
    before = sorted(a.room(room_id).forward_extremities)
    planted_id = result_now(a.service.plant(room_id, "alice", MESSAGE, FLOAT_CONTENT))["event_id"]
    after = result_now(
        a.service.send(
            room_id, "alice", MESSAGE, {"body": "2"}, prev_events=[planted_id], destinations=[]
        )
    )["event_id"]
    p = parts()
    p.store.add_room(a.room(room_id))
    p.store.serving.plant(room_id, a.store.serving.planted(room_id)[planted_id])
    body = {"earliest_events": before, "latest_events": [after], "limit": 10}
    response = ReadEndpoints(p).get_missing_events(
        signed_in("POST", "/get_missing_events", body), {"roomId": room_id}
    )
    assert response.encoded is not None
    assert FLOAT_CONTENT in response.encoded.decode()
    assert response.body == {"events": [{"planted": planted_id}]}


def test_resend_sends_the_same_pdu_in_a_new_transaction() -> None:
    """resend queues our event again for the room's other servers: a second /send with a
    new transaction ID carries the same PDU; an event not of ours, or unknown: 404."""
    network, a, b = two_peers()
    room_id = joined(network, a, b)
    event_id = say(a, room_id, "alice", "twice")
    sends = len(network.paths("a.test", "/send/"))
    assert result_now(a.service.resend(room_id, event_id)) == {"event_id": event_id}
    txns = [s for s in network.sent if s.origin == "a.test" and "/send/" in s.path]
    assert len(txns) == sends + 1 and txns[-1].path != txns[-2].path
    assert [compute_event_id(p, ROOM_VERSIONS["12"]) for p in txns[-1].body["pdus"]] == [event_id]
    bobs = say(b, room_id, "bob", "not ours")
    assert isinstance(failure_now(a.service.resend(room_id, bobs)).value, UnknownRoom)
    assert isinstance(failure_now(a.service.resend(room_id, "$nope")).value, UnknownRoom)


def test_a_prev_event_refused_then_both_sent_again() -> None:
    """Complement's TestUnrejectRejectedEvents between two stubservers: b gets an event
    whose prev a refuses to serve and cannot take it; a sends the prev (withheld so far),
    then the event again: b takes both."""
    network, a, b = two_peers()
    room_id = joined(network, a, b)
    first = result_now(a.service.send(room_id, "alice", MESSAGE, {"body": "A"}, destinations=[]))[
        "event_id"
    ]
    result_now(a.service.set_served(room_id, [first], False))
    second = say(a, room_id, "alice", "B")
    assert b.room(room_id).record(second) is None
    result_now(a.service.resend(room_id, first, destinations=["b.test"]))
    result_now(a.service.resend(room_id, second))
    for event_id in (first, second):
        record = b.room(room_id).record(event_id)
        assert record is not None and record.outcome == "accepted"
