"""The room service between two in-memory servers, a.test and b.test: joins (by ID, by
alias, through an invite), messages both ways, invites both ways, leaves, gaps filled
with get_missing_events and state_ids, tampered events, long-polls, EDUs, and raw
federation requests."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from nacl.signing import SigningKey
from twisted.internet.defer import CancelledError, Deferred

from stubserver.rooms.builder import EventSigner
from stubserver.rooms.create import add_own_event, build_in_room
from stubserver.rooms.errors import (
    BadRemoteAnswer,
    RemoteRefused,
    RemoteUnreachable,
    RoomRequestRefused,
)
from stubserver.rooms.http_errors import matrix_error
from stubserver.rooms.room import Room
from stubserver.rooms.service import RoomService
from stubserver.rooms.store import RoomStore
from stubserver.rooms.transaction import TransactionMemory
from stubserver.server.router import MatrixError
from tests.rooms.room_fixtures import A_SIGNER, VERSIONS
from tests.rooms.service_net import (
    ALICE,
    BOB,
    MESSAGE,
    Network,
    Peer,
    hosted,
    joined,
    say,
    two_peers,
)
from tests.support import failure_now, has_fired, result_now

ALL = pytest.mark.parametrize("version", VERSIONS)


def answered(error: BaseException | None) -> MatrixError:
    """The Matrix error the control API answers ``error`` with (a room refusal)."""
    http = matrix_error(error)
    assert http is not None, f"{error!r} is not a room refusal"
    return http


def outcome(room: Room, event_id: str) -> str | None:
    record = room.record(event_id)
    return None if record is None else record.outcome


@ALL
def test_b_joins_a_room_held_by_a(version: str) -> None:
    """make_join (every version offered as repeated ver) then send_join v2: b builds the
    room from the verified answer, its join is accepted on both sides with the same event
    ID, and both see Bob joined and both servers in the room."""
    network, a, b = two_peers()
    room_id = hosted(a, version)
    answer = result_now(b.service.join(room_id, "bob", ["a.test"]))
    assert answer["room_id"] == room_id and answer["room_version"] == version
    make_join = network.paths("b.test", "/make_join/")
    assert make_join and make_join[0].endswith("?ver=10&ver=11&ver=12")
    assert network.paths("b.test", "/v2/send_join/")
    for peer in (a, b):
        room = peer.room(room_id)
        assert outcome(room, answer["event_id"]) == "accepted"
        assert room.members == {ALICE: "join", BOB: "join"}
        assert room.servers == ["a.test", "b.test"]
    assert a.room(room_id).current_state == b.room(room_id).current_state


@ALL
def test_a_message_each_way_arrives_with_the_same_event_id(version: str) -> None:
    """A message sent on either side reaches the other through /send, accepted, under
    the same event ID; the sender records the receiver's per-PDU answer {}."""
    network, a, b = two_peers()
    room_id = joined(network, a, b, version)
    from_a = say(a, room_id, "alice", "hello b")
    from_b = say(b, room_id, "bob", "hello a")
    for peer in (a, b):
        assert outcome(peer.room(room_id), from_a) == "accepted"
        assert outcome(peer.room(room_id), from_b) == "accepted"
    assert a.room(room_id).forward_extremities == b.room(room_id).forward_extremities == {from_b}
    delivered = {d.event_id: d.result for d in a.service.sender.deliveries("b.test")}
    assert delivered[from_a] == {}


def test_join_by_alias_resolves_it_on_the_alias_server() -> None:
    """A join by ``#alias:a.test`` asks a.test's query/directory and joins through the
    servers it names, with no via."""
    network, a, b = two_peers()
    room_id = hosted(a, alias="lobby")
    answer = result_now(b.service.join("#lobby:a.test", "bob", []))
    assert answer["room_id"] == room_id
    assert network.paths("b.test", "/query/directory?room_alias=%23lobby%3Aa.test")
    assert b.room(room_id).members[BOB] == "join"


def test_join_without_servers_is_404_and_unreachable_is_typed() -> None:
    """No via and no invite: 404 M_NOT_FOUND; a via server that is down:
    RemoteUnreachable; a refusal (unknown room): RemoteRefused with its status."""
    network, a, b = two_peers()
    room_id = hosted(a)
    error = failure_now(b.service.join(room_id, "bob", [])).value
    assert answered(error).status == 404
    network.down.add("a.test")
    assert isinstance(
        failure_now(b.service.join(room_id, "bob", ["a.test"])).value, RemoteUnreachable
    )
    network.down.clear()
    refused = failure_now(b.service.join("!nope:a.test", "bob", ["a.test"])).value
    assert isinstance(refused, RemoteRefused) and refused.status == 404


def test_a_send_join_refused_by_one_server_is_tried_on_the_next() -> None:
    """make_join succeeds at c but its send_join fails: the join goes on through a, the
    next via server, as Synapse tries each destination in turn."""
    network, a, b = two_peers()
    c = network.add(EventSigner("c.test", "ed25519:c1", SigningKey(b"\x0c" * 32)), 3)
    room_id = hosted(a)
    result_now(c.service.join(room_id, "carol", ["a.test"]))
    network.failing.add(("c.test", "/send_join/"))
    answer = result_now(b.service.join(room_id, "bob", ["c.test", "a.test"]))
    assert answer["room_id"] == room_id
    assert network.paths("b.test", "/send_join/") and b.room(room_id).members[BOB] == "join"
    assert [
        s.destination for s in network.sent if s.origin == "b.test" and "/send_join/" in s.path
    ] == ["c.test", "a.test"]


@ALL
def test_invite_a_remote_user_who_then_joins_through_the_inviter(version: str) -> None:
    """a invites @bob:b.test to a private room (/v2/invite with invite_room_state: create,
    join_rules, the inviter's member, as full PDUs); the returned event, countersigned by
    b, is added to a's room; b remembers the invite and Bob joins with no via."""
    network, a, b = two_peers()
    room_id = hosted(a, version, preset="private_chat")
    invite = result_now(a.service.invite(room_id, "alice", BOB))
    sent = [s for s in network.sent if "/v2/invite/" in s.path]
    assert [p["type"] for p in sent[0].body["invite_room_state"]] == [
        "m.room.create",
        "m.room.join_rules",
        "m.room.member",
    ]
    stored = a.room(room_id).get_event(invite["event_id"])
    assert stored is not None and set(stored.pdu["signatures"]) == {"a.test", "b.test"}
    assert b.store.invite_for(room_id, BOB) is not None
    answer = result_now(b.service.join(room_id, "bob", []))
    assert outcome(a.room(room_id), answer["event_id"]) == "accepted"
    assert b.store.invite_for(room_id, BOB) is None


def _without_b_signature(answer: dict[str, Any]) -> dict[str, Any]:
    answer["event"]["signatures"].pop("b.test")
    return answer


def _with_b_signature_spoilt(answer: dict[str, Any]) -> dict[str, Any]:
    block = answer["event"]["signatures"]["b.test"]
    key_id = next(iter(block))
    block[key_id] = ("A" if block[key_id][0] != "A" else "B") + block[key_id][1:]
    return answer


def _with_extra_field(answer: dict[str, Any]) -> dict[str, Any]:
    answer["event"]["org.example.extra"] = "added by the invitee's server"
    return answer


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (_without_b_signature, "b.test returned the invite without its signature"),
        (_with_b_signature_spoilt, "b.test's signature on the returned invite fails"),
        (_with_extra_field, "b.test changed the invite event"),
    ],
)
def test_an_invite_returned_without_the_invitees_valid_signature_is_refused(
    change: Callable[[dict[str, Any]], dict[str, Any]], reason: str
) -> None:
    """The event /v2/invite returns must be ours unchanged but for signatures, signed by
    the invitee's server ("the invited homeserver ... signs the event and returns it"):
    without b's signature, with b's signature broken, or with a field added, the invite
    fails (502, BadRemoteAnswer naming why) and a's room does not get it."""
    network, a, _b = two_peers()
    room_id = hosted(a, "12", preset="private_chat")
    network.rewrites[("b.test", "/v2/invite/")] = change
    error = failure_now(a.service.invite(room_id, "alice", BOB)).value
    assert isinstance(error, BadRemoteAnswer) and reason in str(error)
    assert answered(error).status == 502
    assert BOB not in a.room(room_id).members


def test_invite_from_b_to_a_user() -> None:
    """The other way: b hosts a private room, invites @alice:a.test, Alice joins it."""
    _network, a, b = two_peers()
    room_id = hosted(b, "11", creator="bob", preset="private_chat")
    result_now(b.service.invite(room_id, "bob", ALICE))
    assert a.store.invite_for(room_id, ALICE) is not None
    result_now(a.service.join(room_id, "alice", []))
    assert b.room(room_id).members == {BOB: "join", ALICE: "join"}


def test_a_join_not_invited_to_a_private_room_is_refused_remotely() -> None:
    """make_join on an invite-only room without an invite: RemoteRefused 403."""
    _network, a, b = two_peers()
    room_id = hosted(a, preset="private_chat")
    refused = failure_now(b.service.join(room_id, "bob", ["a.test"])).value
    assert isinstance(refused, RemoteRefused) and refused.status == 403


@ALL
def test_leave_a_remote_room_with_make_leave_and_send_leave(version: str) -> None:
    """b leaves a's room through make_leave / send_leave v2: a's member list has Bob
    left, and b's copy too."""
    network, a, b = two_peers()
    room_id = joined(network, a, b, version)
    answer = result_now(b.service.leave(room_id, "bob"))
    assert network.paths("b.test", "/make_leave/") and network.paths("b.test", "/send_leave/")
    assert a.room(room_id).members[BOB] == "leave"
    assert outcome(b.room(room_id), answer["event_id"]) == "accepted"


def test_leave_of_our_own_room_is_local_and_sent_to_the_others() -> None:
    """Alice leaving the room a hosts is built locally and reaches b by /send."""
    network, a, b = two_peers()
    room_id = joined(network, a, b)
    answer = result_now(a.service.leave(room_id, "alice"))
    assert outcome(b.room(room_id), answer["event_id"]) == "accepted"
    assert b.room(room_id).members[ALICE] == "leave"


def _unsent(peer: Peer, room_id: str, count: int) -> list[str]:
    """``count`` messages added to ``peer``'s room and never sent."""
    room = peer.room(room_id)
    ids = []
    for n in range(count):
        built = build_in_room(
            room,
            A_SIGNER,
            sender=ALICE,
            event_type=MESSAGE,
            content={"msgtype": "m.text", "body": f"unsent {n}"},
            now=int(peer.network.clock.seconds() * 1000),
        )
        add_own_event(room, built, int(peer.network.clock.seconds() * 1000), "a.test")
        ids.append(built.event.event_id)
    return ids


@ALL
def test_a_gap_in_prev_events_is_filled_with_get_missing_events(version: str) -> None:
    """b receives an event whose prev event it lacks: it asks a's get_missing_events
    (earliest: its forward extremities, latest: the event, limit 10), adds the missing
    event, then the received one, both accepted."""
    network, a, b = two_peers()
    room_id = joined(network, a, b, version)
    extremities = sorted(b.room(room_id).forward_extremities)
    missing = _unsent(a, room_id, 2)
    latest = say(a, room_id, "alice", "after the gap")
    asked = [s for s in network.sent if s.origin == "b.test" and "get_missing_events" in s.path]
    assert asked and asked[0].body["earliest_events"] == extremities
    assert asked[0].body["latest_events"] == [latest] and asked[0].body["limit"] == 10
    for event_id in [*missing, latest]:
        assert outcome(b.room(room_id), event_id) == "accepted"
    assert b.service.unresolved == {}


def test_a_deeper_gap_is_completed_with_state_ids_and_event() -> None:
    """A gap longer than get_missing_events' limit: the oldest returned event still
    lacks its prev, so b asks state_ids at that prev and fetches what it lacks with
    /event, then adds the events; the received event is accepted."""
    network, a, b = two_peers()
    room_id = joined(network, a, b)
    _unsent(a, room_id, 14)
    latest = say(a, room_id, "alice", "far after the gap")
    assert network.paths("b.test", "/state_ids/")
    assert network.paths("b.test", "/v1/event/")
    assert outcome(b.room(room_id), latest) == "accepted"


def test_a_failing_peer_leaves_the_event_out_with_a_reason() -> None:
    """When the origin cannot answer get_missing_events, the event is not added, the
    reason is kept, and nothing raises."""
    network, a, b = two_peers()
    room_id = joined(network, a, b)
    _unsent(a, room_id, 1)
    original = a.router
    a.router = type(original)([])  # a answers every request 404 from now on
    latest = say(a, room_id, "alice", "unreachable history")
    assert outcome(b.room(room_id), latest) is None
    assert "get_missing_events" in b.service.unresolved[latest]
    a.router = original


def test_tampered_events_are_sent_but_not_added() -> None:
    """tamper "signature": b answers the PDU with an error and drops it; tamper
    "content": b keeps a redacted copy (content hash mismatch). Neither is in a's room."""
    network, a, b = two_peers()
    room_id = joined(network, a, b)
    bad_sig = result_now(
        a.service.send(room_id, "alice", MESSAGE, {"body": "x"}, tamper="signature")
    )["event_id"]
    bad_content = result_now(
        a.service.send(room_id, "alice", MESSAGE, {"body": "y"}, tamper="content")
    )["event_id"]
    assert a.room(room_id).get_event(bad_sig) is None
    assert a.room(room_id).get_event(bad_content) is None
    results = {d.event_id: d.result for d in a.service.sender.deliveries("b.test")}
    assert "error" in (results[bad_sig] or {})
    assert b.room(room_id).get_event(bad_sig) is None
    kept = b.room(room_id).get_event(bad_content)
    assert kept is not None and kept.content == {}


def test_a_withheld_event_is_fetched_by_the_other_server() -> None:
    """send with destinations=[] adds the event to a's room but sends it to nobody; the next
    event names it in prev_events, so b fetches it with get_missing_events and has both."""
    network, a, b = two_peers()
    room_id = joined(network, a, b)
    withheld = result_now(
        a.service.send(room_id, "alice", MESSAGE, {"body": "held"}, destinations=[])
    )["event_id"]
    assert a.room(room_id).get_event(withheld) is not None
    assert b.room(room_id).get_event(withheld) is None
    after = say(a, room_id, "alice", "after")
    assert b.room(room_id).get_event(after) is not None
    assert b.room(room_id).get_event(withheld) is not None


def test_overrides_choose_prev_events_and_timestamp() -> None:
    """send with prev_events and origin_server_ts builds on the chosen events at that
    time, and b receives it."""
    network, a, b = two_peers()
    room_id = joined(network, a, b)
    first = say(a, room_id, "alice", "one")
    say(a, room_id, "alice", "two")
    answer = result_now(
        a.service.send(
            room_id, "alice", MESSAGE, {"body": "fork"}, prev_events=[first], origin_server_ts=1234
        )
    )
    event = b.room(room_id).get_event(answer["event_id"])
    assert event is not None and event.prev_event_ids == (first,)
    assert event.origin_server_ts == 1234


def test_events_long_poll_returns_when_an_event_arrives() -> None:
    """A long-poll at the end of the room waits, and answers as soon as an event
    arrives (from the other server), with that event and the next position."""
    network, a, b = two_peers()
    room_id = joined(network, a, b)
    start = len(b.room(room_id))
    poll = b.service.events(room_id, start, 30_000)
    assert not has_fired(poll)
    event_id = say(a, room_id, "alice", "wake up")
    network.clock.advance(0)  # woken at the end of the turn that added it (issue 22)
    answer = result_now(poll)
    assert [e["event_id"] for e in answer["events"]] == [event_id]
    assert answer["events"][0]["outcome"] == "accepted" and answer["next"] == start + 1
    assert not network.clock.getDelayedCalls()


def test_events_long_poll_answers_empty_at_the_deadline() -> None:
    """With nothing new the long-poll answers an empty list once wait_ms has passed on
    the clock, not before."""
    network, a, _b = two_peers()
    room_id = hosted(a)
    start = len(a.room(room_id))
    poll = a.service.events(room_id, start, 2_000)
    network.clock.advance(1.999)
    assert not has_fired(poll)
    network.clock.advance(0.001)
    assert result_now(poll) == {"events": [], "next": start}


def test_a_cancelled_long_poll_leaves_no_timer_or_waiter() -> None:
    """Cancelling a long-poll fails it with CancelledError and removes its timer; a later
    event does not touch it."""
    network, a, _b = two_peers()
    room_id = hosted(a)
    poll = a.service.events(room_id, len(a.room(room_id)), 5_000)
    poll.cancel()
    assert isinstance(failure_now(poll).value, CancelledError)
    assert not network.clock.getDelayedCalls()
    say(a, room_id, "alice", "nobody listens")


def test_edus_reach_the_other_server_and_its_long_poll() -> None:
    """An EDU sent to the room reaches b, whose edus long-poll wakes with it."""
    network, a, b = two_peers()
    room_id = joined(network, a, b)
    poll = b.service.edus(0, 10_000)
    result_now(
        a.service.send_edu(
            room_id, "m.typing", {"room_id": room_id, "user_id": ALICE, "typing": True}
        )
    )
    answer = result_now(poll)
    assert answer["edus"] == [
        {
            "origin": "a.test",
            "edu_type": "m.typing",
            "content": {"room_id": room_id, "user_id": ALICE, "typing": True},
        }
    ]
    assert answer["next"] == 1
    assert result_now(b.service.edus(1, 0)) == {"edus": [], "next": 1}


def test_federation_request_answers_any_status() -> None:
    """A raw signed request answers {status, body} for a refusal too; no answer at all
    is RemoteUnreachable."""
    network, a, _b = two_peers()
    answer = result_now(
        a.service.federation_request(
            "b.test", "GET", "/_matrix/federation/v1/state_ids/!x:b.test?event_id=%24e", None
        )
    )
    assert answer["status"] == 404 and answer["body"]["errcode"] == "M_NOT_FOUND"
    network.down.add("b.test")
    assert isinstance(
        failure_now(
            a.service.federation_request("b.test", "GET", "/_matrix/federation/v1/version", None)
        ).value,
        RemoteUnreachable,
    )


def test_federation_request_with_an_unsendable_path_is_400() -> None:
    """A path the signed-request client refuses (ValueError, as FederationClient does)
    is a local 400, not an unreachable server."""
    network = Network()

    class RefusingClient:
        def request(
            self, method: str, destination: str, path_and_query: str, content: object = None
        ) -> Deferred[object]:
            raise ValueError(f"the path must start with '/': {path_and_query!r}")

    service = RoomService(
        clock=network.clock,
        signer=A_SIGNER,
        store=RoomStore("a.test", TransactionMemory(network.clock)),
        client=RefusingClient(),
        fetch_verify_key=network.fetch_key,
        rng=random.Random(1),
    )
    error = failure_now(service.federation_request("b.test", "GET", "nope", None)).value
    assert answered(error).status == 400


def test_local_refusals_are_matrix_errors() -> None:
    """Unknown room: 404; a user of another server: 400; an unsupported version: 400
    M_UNSUPPORTED_ROOM_VERSION; a message by a non-member: 403."""
    _network, a, _b = two_peers()
    room_id = hosted(a)
    cases = [
        a.service.send("!nope:a.test", "alice", MESSAGE, {}),
        a.service.send(room_id, "@bob:b.test", MESSAGE, {}),
        a.service.create_room("alice", room_version="9"),
        a.service.send(room_id, "carol", MESSAGE, {}),
    ]
    codes = []
    for d in cases:
        error = failure_now(d).value
        http = answered(error)
        codes.append((http.status, http.errcode))
    assert codes == [
        (404, "M_NOT_FOUND"),
        (400, "M_INVALID_PARAM"),
        (400, "M_UNSUPPORTED_ROOM_VERSION"),
        (403, "M_FORBIDDEN"),
    ]


def test_status_and_room_info() -> None:
    """status lists our rooms and versions; room_info gives the state, members, servers
    and forward extremities."""
    network, a, b = two_peers()
    room_id = joined(network, a, b)
    assert a.service.status() == {
        "server_name": "a.test",
        "room_versions": ["10", "11", "12"],
        "rooms": [room_id],
    }
    info = b.service.room_info(room_id)
    assert info["members"] == {ALICE: "join", BOB: "join"}
    assert info["servers"] == ["a.test", "b.test"]
    assert info["state"][0]["type"] == "m.room.create"
    assert info["forward_extremities"] == sorted(b.room(room_id).forward_extremities)


def test_a_joined_room_is_found_by_its_canonical_alias_on_another_server() -> None:
    """b.test, once joined, reads a.test's room by ``#lobby:a.test`` (its canonical
    alias) without asking anyone; an alias no held room names is still 404."""
    _network, a, b = two_peers()
    room_id = hosted(a, alias="lobby")
    result_now(b.service.join(room_id, "bob", ["a.test"]))
    assert b.service.room_info("#lobby:a.test")["room_id"] == room_id
    with pytest.raises(RoomRequestRefused) as unknown:
        b.service.room_info("#other:a.test")
    assert answered(unknown.value).status == 404


@ALL
def test_a_redaction_names_its_target_where_the_version_wants(version: str) -> None:
    """send of an ``m.room.redaction`` with ``content.redacts``: v11+ keep it in content,
    v10 builds it with a top-level ``redacts`` (and no ``redacts`` in content); b receives
    it and redacts the target in its copy's eyes (the redaction names it)."""
    network, a, b = two_peers()
    room_id = joined(network, a, b, version)
    target = say(a, room_id, "alice", "to be redacted")
    redaction = result_now(
        a.service.send(room_id, "alice", "m.room.redaction", {"redacts": target})
    )["event_id"]
    received = b.room(room_id).get_event(redaction)
    assert received is not None and received.redacts == target
    if version == "10":
        assert received.pdu["redacts"] == target and "redacts" not in received.content
    else:
        assert received.content == {"redacts": target} and "redacts" not in received.pdu


def test_a_new_device_is_announced_to_the_servers_sharing_a_room_and_served() -> None:
    """put_device: b (in a room with alice) gets an m.device_list_update with the next
    stream_id and no prev_id first; a's /user/devices and /user/keys/query then give the
    device; an unknown localpart is refused."""
    network, a, b = two_peers()
    joined(network, a, b)
    poll = b.service.edus(0, 10_000)
    keys = {"user_id": ALICE, "device_id": "D1", "keys": {"ed25519:D1": "k"}}
    assert result_now(a.service.put_device("alice", "D1", keys=keys)) == {"stream_id": 1}
    [edu] = result_now(poll)["edus"]
    assert (edu["origin"], edu["edu_type"]) == ("a.test", "m.device_list_update")
    assert edu["content"] == {
        "user_id": ALICE,
        "device_id": "D1",
        "stream_id": 1,
        "prev_id": [],
        "keys": keys,
    }
    assert a.service.store.devices.devices_answer(ALICE)["devices"] == [
        {"device_id": "D1", "keys": keys}
    ]
    assert isinstance(
        failure_now(a.service.put_device("Not Valid!", "D1")).value, RoomRequestRefused
    )
    assert isinstance(failure_now(a.service.put_device("alice", "")).value, RoomRequestRefused)
