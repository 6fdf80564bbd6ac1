"""The federation room endpoints served to other servers, through the router in memory
(rooms.md 1.4-1.10, 2.1, 2.2): joins, leaves, invites, transactions and the read
endpoints, with Synapse's answers and refusals."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import pytest
from nacl.signing import VerifyKey
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.web.iweb import IRequest

from stubserver.auth.authenticator import RequestAuthenticator
from stubserver.auth.filter import XMatrixFilter
from stubserver.devtools.room_attacks import displayname_changes
from stubserver.rooms.create import create_room
from stubserver.rooms.format import event_from_pdu
from stubserver.rooms.hashes import check_content_hash
from stubserver.rooms.membership import build_membership, fill_template
from stubserver.rooms.room import Room
from stubserver.rooms.room_queries import event_auth
from stubserver.rooms.routes import room_routes
from stubserver.rooms.routes_membership import MAX_INVITE_ROOM_STATE_BYTES
from stubserver.rooms.signing import verify_event_signature
from stubserver.rooms.store import RoomStore
from stubserver.rooms.transaction import TransactionMemory
from stubserver.rooms.versions import ROOM_VERSIONS
from stubserver.server.router import FederationRouter, request_annotations
from stubserver.signing.canonical_json import encode_json
from tests.auth.test_authenticator import FakeKeySource
from tests.auth.test_filter import BIG_BODY, send_request
from tests.rooms.room_fixtures import (
    A_SIGNER,
    ALICE,
    B_SIGNER,
    BOB,
    TS,
    VERSIONS,
    build,
    join,
    new_room,
)
from tests.support import result_now, stub_treq

ALL = pytest.mark.parametrize("version", VERSIONS)
BASE = "https://a.test/_matrix/federation"
CAROL = "@carol:a.test"
ORIGIN_HEADER = "X-Test-Origin"
SIGNERS = {s.server_name: s for s in (A_SIGNER, B_SIGNER)}


def fake_xmatrix(request: IRequest) -> None:
    """A filter standing for X-Matrix: the test header names the authenticated origin."""
    notes = request_annotations(request)
    origin = request.requestHeaders.getRawHeaders(ORIGIN_HEADER.encode(), [None])[0]
    notes.update(
        origin=origin.decode() if origin else None,
        authenticated=bool(origin),
        auth_error=None if origin else "Missing Authorization headers",
    )


class Harness:
    """Our server a.test with its store and routes, reached in memory; b.test's and
    a.test's keys are known to the key lookup."""

    def __init__(self, *, invites_accept: bool = True) -> None:
        self.clock = Clock()
        self.clock.advance(TS / 1000)
        self.store = RoomStore("a.test", TransactionMemory(self.clock))
        self.lookups: list[tuple[str, str, int]] = []
        self.hold: Deferred[None] | None = None
        self.transactions: list[Any] = []
        routes = room_routes(
            self.store,
            A_SIGNER,
            self.fetch_key,
            self.clock,
            invites_accept=invites_accept,
            on_transaction=lambda o, outcome: self.transactions.append(outcome),
        )
        self.routes = routes
        self.stub = stub_treq(FederationRouter(routes, filters=[fake_xmatrix]))

    def fetch_key(
        self, server: str, key_id: str, minimum_valid_until_ts: int
    ) -> Deferred[VerifyKey | None]:
        self.lookups.append((server, key_id, minimum_valid_until_ts))
        signer = SIGNERS.get(server)
        key = signer.signing_key.verify_key if signer and signer.key_id == key_id else None
        if self.hold is not None:
            held: Deferred[VerifyKey | None] = Deferred()
            self.hold.addCallback(lambda _: held.callback(key))
            return held
        return succeed(key)

    def host(self, version: str = "12", preset: str = "public_chat", **kwargs: Any) -> Room:
        room = new_room(version, preset, **kwargs).room
        self.store.add_room(room)
        return room

    def request(
        self, method: str, path: str, body: Any = None, origin: str | None = "b.test"
    ) -> Deferred[Any]:
        headers = {ORIGIN_HEADER: origin} if origin else {}
        data = None if body is None else json.dumps(body).encode()
        return self.stub.request(method, BASE + path, data=data, headers=headers)  # type: ignore[no-any-return]

    def answer(self, d: Deferred[Any]) -> tuple[int, Any]:
        response = result_now(d)
        return response.code, result_now(self.stub.json_content(response))

    def call(
        self, method: str, path: str, body: Any = None, origin: str | None = "b.test"
    ) -> tuple[int, Any]:
        return self.answer(self.request(method, path, body, origin))


def verifies(pdu: dict[str, Any], version: str, server: str) -> None:
    """Assert ``server`` signed ``pdu`` and its content hash holds."""
    signer = SIGNERS[server]
    check_content_hash(pdu)
    verify_event_signature(
        pdu, ROOM_VERSIONS[version], server, signer.key_id, signer.signing_key.verify_key
    )


def joined_by_send_join(h: Harness, room: Room, version: str) -> tuple[int, Any, str]:
    status, template = h.call("GET", f"/v1/make_join/{room.room_id}/{BOB}?ver=10&ver=11&ver=12")
    assert status == 200, template
    built = fill_template(
        template["event"],
        ROOM_VERSIONS[template["room_version"]],
        B_SIGNER,
        user_id=BOB,
        membership="join",
        now=TS,
        content={"displayname": "Bob", "avatar_url": None},
    )
    status, answer = h.call(
        "PUT", f"/v2/send_join/{room.room_id}/{built.event.event_id}", built.pdu
    )
    return status, answer, built.event.event_id


# --- joins and leaves ---------------------------------------------------------------------


@ALL
def test_a_remote_server_joins_our_public_room(version: str) -> None:
    """make_join then send_join v2: the answer has the event, the full state before the
    join with its auth chain (every PDU signed by us, hashes good), members_omitted
    false and origin; the join is in the room's events and Bob is joined."""
    h = Harness()
    room = h.host(version)
    status, answer, event_id = joined_by_send_join(h, room, version)
    assert status == 200, answer
    assert set(answer) == {"event", "state", "auth_chain", "members_omitted", "origin"}
    assert answer["members_omitted"] is False and answer["origin"] == "a.test"
    assert event_from_pdu(answer["event"], ROOM_VERSIONS[version]).event_id == event_id
    types = {p["type"] for p in answer["state"]}
    assert {"m.room.create", "m.room.power_levels", "m.room.join_rules"} <= types
    assert all(p.get("state_key") != BOB for p in answer["state"])
    for pdu in answer["state"] + answer["auth_chain"]:
        verifies(pdu, version, "a.test")
    assert room.members[BOB] == "join"
    assert room.events_since(0)[-1].event_id == event_id


def test_a_room_with_a_10050_event_auth_chain_stays_joinable_and_readable() -> None:
    """Issue 22 row 3: after 10,050 displayname changes of Alice (an auth chain of
    10,050 member events), send_join answers 200 with the whole chain and Bob is joined;
    state_ids, state and event_auth answer 200 with it too (before: each answered 400
    "auth chain passes 10000 events" to everyone, and the failed joiner was listed as
    joined)."""
    h = Harness()
    room = h.host("12")
    last = displayname_changes(room, ALICE, 10_050)
    status, answer, join_id = joined_by_send_join(h, room, "12")
    assert status == 200, answer
    assert len(answer["auth_chain"]) > 10_050
    assert room.members[BOB] == "join"
    path = f"{room.room_id}?event_id={join_id}"
    status, ids = h.call("GET", f"/v1/state_ids/{path}")
    assert status == 200 and len(ids["auth_chain_ids"]) > 10_050
    assert last in ids["pdu_ids"]
    status, state = h.call("GET", f"/v1/state/{path}")
    assert status == 200 and len(state["auth_chain"]) == len(ids["auth_chain_ids"])
    status, chain = h.call("GET", f"/v1/event_auth/{room.room_id}/{last}")
    assert status == 200 and len(chain["auth_chain"]) > 10_000


def test_a_refused_send_join_leaves_the_joiner_out() -> None:
    """A send_join citing an event we lack is refused (400) before anything of it is
    added or answered: the joiner is not listed as joined."""
    h = Harness()
    room = h.host("12")
    status, template = h.call("GET", f"/v1/make_join/{room.room_id}/{BOB}?ver=12")
    assert status == 200
    template["event"]["prev_events"] = ["$unknown"]
    built = fill_template(
        template["event"], ROOM_VERSIONS["12"], B_SIGNER, user_id=BOB, membership="join", now=TS
    )
    status, body = h.call("PUT", f"/v2/send_join/{room.room_id}/{built.event.event_id}", built.pdu)
    assert (status, body["errcode"]) == (400, "M_BAD_JSON")
    assert BOB not in room.members


def test_make_join_without_ver_is_incompatible() -> None:
    """No ``ver`` means ["1"]: 400 M_INCOMPATIBLE_ROOM_VERSION with room_version."""
    h = Harness()
    room = h.host("12")
    status, body = h.call("GET", f"/v1/make_join/{room.room_id}/{BOB}")
    assert status == 400
    assert body["errcode"] == "M_INCOMPATIBLE_ROOM_VERSION" and body["room_version"] == "12"


def test_make_join_refusals() -> None:
    """A user of another server is 403 "User not from origin"; an invite-only room 403
    "You are not invited to this room."; an unknown room 404 M_NOT_FOUND; no X-Matrix
    401."""
    h = Harness()
    public = h.host("12")
    private = h.host("12", "private_chat")
    q = "?ver=12"
    assert h.call("GET", f"/v1/make_join/{public.room_id}/@x:c.test{q}") == (
        403,
        {"errcode": "M_FORBIDDEN", "error": "User not from origin"},
    )
    assert h.call("GET", f"/v1/make_join/{private.room_id}/{BOB}{q}") == (
        403,
        {"errcode": "M_FORBIDDEN", "error": "You are not invited to this room."},
    )
    status, body = h.call("GET", f"/v1/make_join/!nope:a.test/{BOB}{q}")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    status, body = h.call("GET", f"/v1/make_join/{public.room_id}/{BOB}{q}", origin=None)
    assert (status, body["errcode"]) == (401, "M_UNAUTHORIZED")


def test_send_join_refusals() -> None:
    """send_join: a body for another room 400 M_BAD_JSON; a bad signature 403; a join
    sent by a server other than the sender's 403 "User not from origin"; a non-object
    body 400 M_BAD_JSON. Nothing is added."""
    h = Harness()
    room = h.host("12")
    _, template = h.call("GET", f"/v1/make_join/{room.room_id}/{BOB}?ver=12")
    built = fill_template(
        template["event"], room.room_version, B_SIGNER, user_id=BOB, membership="join", now=TS
    )
    path = f"/v2/send_join/{room.room_id}/{built.event.event_id}"
    before = len(room)
    status, body = h.call("PUT", f"/v2/send_join/!other:a.test/{built.event.event_id}", built.pdu)
    assert (status, body["errcode"]) == (400, "M_BAD_JSON")
    forged = copy.deepcopy(built.pdu)
    forged["signatures"]["b.test"][B_SIGNER.key_id] = "A" * 86
    status, body = h.call("PUT", path, forged)
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    assert h.call("PUT", path, built.pdu, origin="c.test") == (
        403,
        {"errcode": "M_FORBIDDEN", "error": "User not from origin"},
    )
    status, body = h.call("PUT", path, [1])
    assert (status, body["errcode"]) == (400, "M_BAD_JSON")
    assert len(room) == before and BOB not in room.members


def test_a_remote_user_leaves_through_make_leave_and_send_leave() -> None:
    """make_leave gives a leave template; send_leave v2 answers {} and Bob has left."""
    h = Harness()
    room = h.host("12")
    assert joined_by_send_join(h, room, "12")[0] == 200
    status, template = h.call("GET", f"/v1/make_leave/{room.room_id}/{BOB}")
    assert status == 200 and template["event"]["content"] == {"membership": "leave"}
    built = fill_template(
        template["event"], room.room_version, B_SIGNER, user_id=BOB, membership="leave", now=TS
    )
    assert h.call("PUT", f"/v2/send_leave/{room.room_id}/{built.event.event_id}", built.pdu) == (
        200,
        {},
    )
    assert room.members[BOB] == "leave"


# --- invites ------------------------------------------------------------------------------


def _remote_invite(version: str = "12") -> tuple[Room, dict[str, Any], str]:
    """A room hosted by b.test and Bob's invite of our Carol into it."""
    created = create_room(
        ROOM_VERSIONS[version],
        B_SIGNER,
        creator=BOB,
        now=TS,
        rng=random.Random(3),
        preset="private_chat",
    )
    built = build_membership(
        created.room, B_SIGNER, sender=BOB, membership="invite", target=CAROL, now=TS
    )
    return created.room, built.pdu, built.event.event_id


@ALL
def test_an_invite_of_our_user_is_countersigned_and_remembered(version: str) -> None:
    """invites: accept: the answer is the event with our signature added (b.test's kept,
    event ID unchanged); the invite is remembered for a later join."""
    h = Harness()
    room, pdu, event_id = _remote_invite(version)
    status, body = h.call(
        "PUT",
        f"/v2/invite/{room.room_id}/{event_id}",
        {"event": pdu, "room_version": version, "invite_room_state": []},
    )
    assert status == 200, body
    returned = body["event"]
    verifies(returned, version, "a.test")
    verifies(returned, version, "b.test")
    assert event_from_pdu(returned, ROOM_VERSIONS[version]).event_id == event_id
    invite = h.store.invite_for(room.room_id, CAROL)
    assert invite is not None and invite.origin == "b.test"


def test_invite_room_state_is_kept_up_to_its_byte_bound() -> None:
    """Issue 22, row 9: of 100 invite_room_state entries of ~10 KiB (1 MiB), only those
    within MAX_INVITE_ROOM_STATE_BYTES are kept, in order (all 100 were), and the invite
    is still taken; the invite weighs its event and that state."""
    h = Harness()
    room, pdu, event_id = _remote_invite()
    entry = {"type": "m.room.topic", "state_key": "", "content": {"topic": "t" * 10_000}}
    state = [dict(entry, sender=f"@u{i}:b.test") for i in range(100)]
    status, body = h.call(
        "PUT",
        f"/v2/invite/{room.room_id}/{event_id}",
        {"event": pdu, "room_version": "12", "invite_room_state": state},
    )
    assert status == 200, body
    invite = h.store.invite_for(room.room_id, CAROL)
    assert invite is not None
    kept = [len(encode_json(e)) for e in invite.invite_room_state]
    assert len(kept) == MAX_INVITE_ROOM_STATE_BYTES // kept[0] == 6
    assert invite.invite_room_state[5] == state[5]
    assert invite.size == sum(kept) + len(encode_json(body["event"]))


def test_invites_are_refused_when_configured() -> None:
    """invites: reject: 403 M_FORBIDDEN, nothing remembered."""
    h = Harness(invites_accept=False)
    room, pdu, event_id = _remote_invite()
    status, body = h.call(
        "PUT", f"/v2/invite/{room.room_id}/{event_id}", {"event": pdu, "room_version": "12"}
    )
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    assert h.store.invites() == []


def test_invite_refusals() -> None:
    """An event ID not the path's: 400 M_INVALID_PARAM; an unknown room version 400
    M_UNSUPPORTED_ROOM_VERSION; sent by a server not the sender's 403 M_FORBIDDEN; a
    missing event 400 M_BAD_JSON."""
    h = Harness()
    room, pdu, event_id = _remote_invite()
    body = {"event": pdu, "room_version": "12"}
    status, answer = h.call("PUT", f"/v2/invite/{room.room_id}/$other", body)
    assert (status, answer["errcode"]) == (400, "M_INVALID_PARAM")
    status, answer = h.call(
        "PUT", f"/v2/invite/{room.room_id}/{event_id}", {"event": pdu, "room_version": "99"}
    )
    assert (status, answer["errcode"]) == (400, "M_UNSUPPORTED_ROOM_VERSION")
    status, answer = h.call("PUT", f"/v2/invite/{room.room_id}/{event_id}", body, origin="c.test")
    assert (status, answer["errcode"]) == (403, "M_FORBIDDEN")
    status, answer = h.call("PUT", f"/v2/invite/{room.room_id}/{event_id}", {"room_version": "12"})
    assert (status, answer["errcode"]) == (400, "M_BAD_JSON")


# --- authentication before parsing (issue 22, row 1) ------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/_matrix/federation/v1/send/t1",
        "/_matrix/federation/v2/send_join/!r:a.test/$e",
        "/_matrix/federation/v2/send_leave/!r:a.test/$e",
        "/_matrix/federation/v2/invite/!r:a.test/$e",
    ],
)
def test_the_room_endpoints_refuse_an_unsigned_body_unread(path: str) -> None:
    """Behind the real X-Matrix filter, /send, send_join, send_leave and invite answer an
    8 MiB body without an Authorization header 401 M_UNAUTHORIZED having read none of it
    (it was parsed whole first)."""
    h = Harness()
    clock = Clock()
    auth = RequestAuthenticator("a.test", FakeKeySource(), clock)
    router = FederationRouter(h.routes, filters=[XMatrixFilter(auth)])
    request, body = send_request(BIG_BODY, None)
    request.uri = request.path = path.encode()
    router.render(request)
    answer = json.loads(b"".join(request.written))
    assert (request.responseCode, answer["errcode"], body.bytes_read) == (
        401,
        "M_UNAUTHORIZED",
        0,
    )


# --- transactions -------------------------------------------------------------------------


def _joined_room(h: Harness, version: str = "12") -> Room:
    room = h.host(version)
    join(room, BOB)
    return room


def test_a_message_from_a_joined_remote_user_is_accepted() -> None:
    """/send with Bob's message: 200 {"pdus": {id: {}}}, the event is in the room's
    events as accepted, the key was looked up valid at its origin_server_ts."""
    h = Harness()
    room = _joined_room(h)
    built = build(room, BOB, "m.room.message", {"body": "hi"}, ts=TS + 1)
    status, body = h.call(
        "PUT", "/v1/send/t1", {"origin": "b.test", "origin_server_ts": TS, "pdus": [built.pdu]}
    )
    assert (status, body) == (200, {"pdus": {built.event.event_id: {}}})
    record = room.events_since(0)[-1]
    assert (record.event_id, record.outcome) == (built.event.event_id, "accepted")
    assert h.lookups == [("b.test", B_SIGNER.key_id, TS + 1)]
    assert len(h.transactions) == 1


def test_a_bad_signature_is_a_per_pdu_error() -> None:
    """A PDU whose signature does not verify: 200 with {"error": "ERROR 403: ..."} for
    it; it is not added."""
    h = Harness()
    room = _joined_room(h)
    pdu = build(room, BOB, "m.room.message", {"body": "hi"}).pdu
    pdu["signatures"]["b.test"][B_SIGNER.key_id] = "A" * 86
    event_id = event_from_pdu(pdu, room.room_version).event_id
    before = len(room)
    status, body = h.call("PUT", "/v1/send/t1", {"pdus": [pdu]})
    assert status == 200
    assert body["pdus"][event_id]["error"].startswith("ERROR 403: unable to verify signature")
    assert len(room) == before


def test_more_than_50_pdus_is_400_empty() -> None:
    """51 PDUs: 400 {} and nothing processed."""
    h = Harness()
    room = _joined_room(h)
    pdu = build(room, BOB, "m.room.message", {"body": "x"}).pdu
    before = len(room)
    assert h.call("PUT", "/v1/send/t1", {"pdus": [pdu] * 51}) == (400, {})
    assert len(room) == before


def test_a_second_transaction_while_one_is_processed_is_429() -> None:
    """While keys for a transaction are being fetched, another from the same origin is
    429 M_UNKNOWN; another origin's goes on; the first then completes with 200."""
    h = Harness()
    room = _joined_room(h)
    pdu = build(room, BOB, "m.room.message", {"body": "x"}).pdu
    h.hold = Deferred()
    first = h.request("PUT", "/v1/send/t1", {"pdus": [pdu]})
    status, body = h.call("PUT", "/v1/send/t2", {"pdus": []})
    assert (status, body["errcode"]) == (429, "M_UNKNOWN")
    assert h.call("PUT", "/v1/send/t2", {"pdus": []}, origin="c.test") == (200, {"pdus": {}})
    h.hold.callback(None)
    h.stub.flush()
    event_id = event_from_pdu(pdu, room.room_version).event_id
    assert h.answer(first) == (200, {"pdus": {event_id: {}}})


def test_a_repeated_transaction_is_answered_from_memory() -> None:
    """The same transaction ID again gets the first answer; its new PDUs are ignored."""
    h = Harness()
    room = _joined_room(h)
    first = build(room, BOB, "m.room.message", {"body": "1"}, ts=TS + 1)
    second = build(room, BOB, "m.room.message", {"body": "2"}, ts=TS + 2)
    answer = h.call("PUT", "/v1/send/t1", {"pdus": [first.pdu]})
    assert h.call("PUT", "/v1/send/t1", {"pdus": [second.pdu]}) == answer
    assert room.get_event(second.event.event_id) is None


def test_a_transaction_body_of_the_wrong_shape_is_400() -> None:
    """A body that is not an object, or pdus that is not a list: 400 M_BAD_JSON."""
    h = Harness()
    _joined_room(h)
    bodies: list[Any] = [[1], {"pdus": {}}]
    for body in bodies:
        status, answer = h.call("PUT", "/v1/send/t1", body)
        assert (status, answer["errcode"]) == (400, "M_BAD_JSON")


# --- reading ------------------------------------------------------------------------------


def _room_with_history(h: Harness) -> tuple[Room, list[str]]:
    room = _joined_room(h)
    ids = []
    for n in range(3):
        built = build(room, ALICE, "m.room.message", {"body": str(n)}, ts=TS + n)
        room.add_event(built.event, TS, origin="a.test")
        ids.append(built.event.event_id)
    return room, ids


def test_backfill_answers_the_v_events_and_their_ancestors_deepest_first() -> None:
    """backfill: a transaction of the v events and their ancestors, depth-descending, at
    most limit; no limit 400; a server not in the room 403; an unknown room 404."""
    h = Harness()
    room, ids = _room_with_history(h)
    status, body = h.call("GET", f"/v1/backfill/{room.room_id}?v={ids[-1]}&limit=2")
    assert status == 200 and set(body) == {"origin", "origin_server_ts", "pdus"}
    got = [event_from_pdu(p, room.room_version).event_id for p in body["pdus"]]
    assert got == [ids[2], ids[1]]
    status, body = h.call("GET", f"/v1/backfill/{room.room_id}?v={ids[-1]}")
    assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")
    status, body = h.call(
        "GET", f"/v1/backfill/{room.room_id}?v={ids[-1]}&limit=2", origin="c.test"
    )
    assert (status, body) == (403, {"errcode": "M_FORBIDDEN", "error": "Host not in room."})
    status, body = h.call("GET", f"/v1/backfill/!nope:a.test?v={ids[-1]}&limit=2")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")


def test_get_missing_events_answers_ancestors_oldest_first() -> None:
    """get_missing_events: the ancestors of latest_events after earliest_events, oldest
    first; a badly shaped body 400 M_BAD_JSON; a server not in the room 403."""
    h = Harness()
    room, ids = _room_with_history(h)
    path = f"/v1/get_missing_events/{room.room_id}"
    status, body = h.call(
        "POST",
        path,
        {"earliest_events": [ids[0]], "latest_events": [ids[2]], "limit": 10, "min_depth": 0},
    )
    assert status == 200
    assert [event_from_pdu(p, room.room_version).event_id for p in body["events"]] == [ids[1]]
    for bad in ({"latest_events": "x"}, {"latest_events": [], "limit": 1.5}, [1]):
        status, body = h.call("POST", path, bad)
        assert (status, body["errcode"]) == (400, "M_BAD_JSON")
    status, body = h.call("POST", path, {"latest_events": [ids[2]]}, origin="c.test")
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")


def test_state_ids_and_state_are_the_state_before_the_event() -> None:
    """state_ids: the state IDs before the event and their auth chain IDs; state: the
    same as PDUs; a missing event_id 400; an unknown event 404; not in room 403."""
    h = Harness()
    room, ids = _room_with_history(h)
    expected = sorted(room.state_before(ids[1]).values())
    status, body = h.call("GET", f"/v1/state_ids/{room.room_id}?event_id={ids[1]}")
    assert status == 200 and sorted(body["pdu_ids"]) == expected
    assert set(body["auth_chain_ids"]) <= set(room.state_before(ids[1]).values())
    status, state = h.call("GET", f"/v1/state/{room.room_id}?event_id={ids[1]}")
    assert status == 200 and set(state) == {"pdus", "auth_chain"}
    assert sorted(event_from_pdu(p, room.room_version).event_id for p in state["pdus"]) == expected
    status, body = h.call("GET", f"/v1/state_ids/{room.room_id}")
    assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")
    status, body = h.call("GET", f"/v1/state_ids/{room.room_id}?event_id=$nope")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    status, body = h.call("GET", f"/v1/state/{room.room_id}?event_id={ids[1]}", origin="c.test")
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")


def test_event_answers_one_pdu_as_a_transaction() -> None:
    """event: {"origin", "origin_server_ts", "pdus": [pdu]}; unknown 404; a server not in
    its room 403."""
    h = Harness()
    room, ids = _room_with_history(h)
    status, body = h.call("GET", f"/v1/event/{ids[0]}")
    assert status == 200 and body["origin"] == "a.test"
    (pdu,) = body["pdus"]
    assert event_from_pdu(pdu, room.room_version).event_id == ids[0]
    status, body = h.call("GET", "/v1/event/$nope")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    status, body = h.call("GET", f"/v1/event/{ids[0]}", origin="c.test")
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")


def test_event_auth_answers_the_auth_chain_with_the_auth_events() -> None:
    """event_auth: the auth chain of the event, its own auth events included; unknown
    event 404; not in room 403."""
    h = Harness()
    room, ids = _room_with_history(h)
    status, body = h.call("GET", f"/v1/event_auth/{room.room_id}/{ids[0]}")
    assert status == 200
    got = {event_from_pdu(p, room.room_version).event_id for p in body["auth_chain"]}
    event = room.get_event(ids[0])
    assert event is not None and set(event.auth_event_ids) <= got
    assert got == set(event_auth(room, ids[0]))
    status, body = h.call("GET", f"/v1/event_auth/{room.room_id}/$nope")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    status, body = h.call("GET", f"/v1/event_auth/{room.room_id}/{ids[0]}", origin="c.test")
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")


def test_directory_answers_our_aliases() -> None:
    """query/directory: our alias gives room_id and servers (ours first); an unknown
    alias or another server's 404 M_NOT_FOUND; a malformed one 400."""
    h = Harness()
    room = _joined_room(h)
    h.store.add_alias("lobby", room.room_id)
    assert h.call("GET", "/v1/query/directory?room_alias=%23lobby%3Aa.test") == (
        200,
        {"room_id": room.room_id, "servers": ["a.test", "b.test"]},
    )
    for alias in ("%23nope%3Aa.test", "%23lobby%3Ab.test"):
        status, body = h.call("GET", f"/v1/query/directory?room_alias={alias}")
        assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    status, body = h.call("GET", "/v1/query/directory?room_alias=lobby")
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")


def test_an_invite_into_a_room_we_hold_is_added_to_it() -> None:
    """Bob (b.test, joined) invites our Carol into our private room: the countersigned
    invite is among the room's events, accepted, and Carol is invited."""
    h = Harness()
    room = h.host("12", "private_chat")
    invite_bob = build_membership(
        room, A_SIGNER, sender=ALICE, membership="invite", target=BOB, now=TS
    )
    room.add_event(invite_bob.event, TS, origin="a.test")
    join(room, BOB)
    built = build_membership(room, B_SIGNER, sender=BOB, membership="invite", target=CAROL, now=TS)
    status, body = h.call(
        "PUT",
        f"/v2/invite/{room.room_id}/{built.event.event_id}",
        {"event": built.pdu, "room_version": "12"},
    )
    assert status == 200, body
    record = room.record(built.event.event_id)
    assert record is not None and record.outcome == "accepted"
    assert room.members[CAROL] == "invite"
