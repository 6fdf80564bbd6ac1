"""Building our copy of a room from a send_join v2 answer (rooms.md 1.8): every PDU of
state and auth_chain verified, the create event's room_version checked against
make_join's, the returned event must be ours, our join must be accepted."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace
from typing import Any

import pytest
from nacl.signing import VerifyKey
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import capturedLogs, formatEvent

from stubserver.rooms.builder import BuiltEvent
from stubserver.rooms.errors import RemoteRefused, RemoteUnreachable
from stubserver.rooms.hashes import compute_event_id
from stubserver.rooms.membership import fill_template, make_membership_template
from stubserver.rooms.remote import BadAnswer, RemoteCaller, room_from_join_answer
from stubserver.rooms.room_queries import state_ids_before
from stubserver.rooms.signing import sign_event
from stubserver.rooms.versions import ROOM_VERSIONS
from tests.rooms.room_fixtures import A_SIGNER, B_SIGNER, BOB, TS, VERSIONS, new_room
from tests.support import failure_now, result_now

ALL = pytest.mark.parametrize("version", VERSIONS)
KEYS = {s.server_name: s for s in (A_SIGNER, B_SIGNER)}


def fetch_key(server: str, key_id: str, minimum_valid_until_ts: int) -> Deferred[VerifyKey | None]:
    signer = KEYS.get(server)
    return succeed(signer.signing_key.verify_key if signer and signer.key_id == key_id else None)


def answer_for(version: str) -> tuple[dict[str, Any], BuiltEvent, str]:
    """What a.test answers to b.test's send_join, and b's join event."""
    room = new_room(version).room
    template = make_membership_template(
        room, user_id=BOB, origin="b.test", membership="join", now=TS
    )
    built = fill_template(
        template.event, ROOM_VERSIONS[version], B_SIGNER, user_id=BOB, membership="join", now=TS
    )
    room.add_event(built.event, TS, origin="b.test")
    state_ids, chain_ids = state_ids_before(room, built.event.event_id)

    def pdus(ids: list[str]) -> list[dict[str, Any]]:
        return [copy.deepcopy(dict(e.pdu)) for e in map(room.get_event, ids) if e]

    answer = {
        "event": built.pdu,
        "state": pdus(state_ids),
        "auth_chain": pdus(chain_ids),
        "members_omitted": False,
    }
    return answer, built, room.room_id


def build(answer: object, built: BuiltEvent, version: str, room_id: str) -> Deferred[Any]:
    return Deferred.fromCoroutine(
        room_from_join_answer(
            answer,
            built,
            version=ROOM_VERSIONS[version],
            room_id=room_id,
            fetch_verify_key=fetch_key,
            now=TS,
            origin="b.test",
        )
    )


@ALL
def test_a_good_answer_gives_the_room_with_our_join_accepted(version: str) -> None:
    """The state and auth chain become outliers; our join is accepted on the returned
    state; the current state is the state before it plus the join."""
    answer, built, room_id = answer_for(version)
    room, record = result_now(build(answer, built, version, room_id))
    assert record.outcome == "accepted" and record.event_id == built.event.event_id
    assert room.members[BOB] == "join"
    assert room.forward_extremities == {built.event.event_id}


@ALL
def test_a_state_event_with_a_bad_signature_is_dropped(version: str) -> None:
    """A join_rules event whose signature fails is dropped like Synapse drops it, so our
    join (which cites it) cannot be added and the answer is unusable."""
    answer, built, room_id = answer_for(version)
    dropped = None
    for pdu in answer["state"]:
        if pdu["type"] == "m.room.join_rules":
            pdu["signatures"]["a.test"][A_SIGNER.key_id] = "A" * 86
            dropped = compute_event_id(pdu, ROOM_VERSIONS[version])
    error = failure_now(build(answer, built, version, room_id)).value
    assert isinstance(error, BadAnswer) and dropped is not None and dropped in str(error)


def test_the_create_event_room_version_must_be_make_joins() -> None:
    """A create event (validly signed) whose room_version differs from the one make_join
    gave is refused."""
    answer, built, room_id = answer_for("11")
    for key in ("state", "auth_chain"):
        for index, pdu in enumerate(answer[key]):
            if pdu["type"] == "m.room.create":
                changed = {k: v for k, v in pdu.items() if k not in ("hashes", "signatures")}
                changed["content"] = {**pdu["content"], "room_version": "10"}
                answer[key][index] = sign_event(
                    changed, ROOM_VERSIONS["11"], "a.test", A_SIGNER.key_id, A_SIGNER.signing_key
                )
    error = failure_now(build(answer, built, "11", room_id)).value
    assert isinstance(error, BadAnswer) and "room_version" in str(error)


def test_a_create_event_that_does_not_parse_is_named_with_its_reason() -> None:
    """A v12 create event that carries a room_id does not parse: the answer is refused
    with the parser's reason, not only "the state has no (valid) m.room.create event"."""
    answer, built, room_id = answer_for("12")
    for pdu in answer["state"]:
        if pdu["type"] == "m.room.create":
            pdu["room_id"] = room_id
    error = failure_now(build(answer, built, "12", room_id)).value
    assert isinstance(error, BadAnswer)
    assert str(error) == (
        "the state has no (valid) m.room.create event (dropped from the state: a PDU that"
        " does not parse: a v12 m.room.create event must not have a room_id)"
    )


def test_a_create_event_with_a_bad_signature_is_named() -> None:
    """A create event whose signature fails: the reason names it and its signature."""
    answer, built, room_id = answer_for("11")
    create_id = None
    for pdu in answer["state"]:
        if pdu["type"] == "m.room.create":
            pdu["signatures"]["a.test"][A_SIGNER.key_id] = "A" * 86
            create_id = compute_event_id(pdu, ROOM_VERSIONS["11"])
    error = failure_now(build(answer, built, "11", room_id)).value
    assert isinstance(error, BadAnswer)
    assert f"dropped from the state: {create_id} (m.room.create): bad signature" in str(error)


def test_a_returned_event_that_is_not_ours_is_refused() -> None:
    """The answer's ``event``, when given, must have our join's event ID."""
    answer, built, room_id = answer_for("12")
    answer["event"] = {**answer["event"], "content": {"membership": "join", "x": 1}}
    error = failure_now(build(answer, built, "12", room_id)).value
    assert isinstance(error, BadAnswer) and "not ours" in str(error)


def test_an_answer_that_is_not_an_object_is_refused() -> None:
    """Garbage is a BadAnswer, never a crash."""
    _, built, room_id = answer_for("12")
    assert isinstance(failure_now(build([1, 2], built, "12", room_id)).value, BadAnswer)
    assert isinstance(failure_now(build({"state": "x"}, built, "12", room_id)).value, BadAnswer)


class _Answering:
    """A signed requester answering every request with one status and JSON body, or
    failing with ``error``."""

    def __init__(self, status: int, body: Any, error: Exception | None = None) -> None:
        self.status, self.body, self.error = status, body, error

    def request(self, method: str, destination: str, path: str, content: Any = None) -> Any:
        if self.error is not None:
            return fail(self.error)
        return succeed(SimpleNamespace(status=self.status, body=json.dumps(self.body).encode()))


@pytest.mark.parametrize(
    ("requester", "line"),
    [
        (
            _Answering(403, {"errcode": "M_FORBIDDEN", "error": "not invited"}),
            "GET /_matrix/federation/v1/x to b.test refused: 403 M_FORBIDDEN: not invited",
        ),
        (
            _Answering(0, None, ConnectionError("connection refused")),
            "GET /_matrix/federation/v1/x to b.test failed: connection refused",
        ),
    ],
)
def test_a_refused_or_failed_outbound_request_is_one_line(requester: Any, line: str) -> None:
    """A non-2xx answer or no answer at all is logged once, with the destination and the
    reason (issue 24), and raised to the caller."""
    with capturedLogs() as events:
        d = Deferred.fromCoroutine(
            RemoteCaller(requester).json("GET", "b.test", "/_matrix/federation/v1/x", None, "x")
        )
    assert isinstance(failure_now(d).value, RemoteRefused | RemoteUnreachable)
    assert [formatEvent(e) for e in events] == [line]
