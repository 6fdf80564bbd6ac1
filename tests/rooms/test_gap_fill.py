"""Gap filling is bounded (issue 22 row 7): requests per received transaction, a
deadline per request, slots per origin so that a silent origin cannot starve other
rooms, a bounded queue, and never a request to ourselves."""

from __future__ import annotations

from typing import Any

from nacl.signing import SigningKey

from stubserver.rooms.builder import BuiltEvent, EventSigner
from stubserver.rooms.create import add_own_event, build_in_room
from stubserver.rooms.gap_fill import GAP_REQUEST_TIMEOUT_SECONDS
from stubserver.rooms.gap_queue import MAX_GAP_FILLS_PER_ORIGIN
from tests.rooms.room_fixtures import A_SIGNER
from tests.rooms.service_net import (
    ALICE,
    BOB,
    MESSAGE,
    FakeClient,
    Network,
    Peer,
    hosted,
    joined,
    say,
    two_peers,
)
from tests.support import result_now

C_SIGNER = EventSigner("c.test", "ed25519:c1", SigningKey(b"\x0c" * 32))


def _now(network: Network) -> int:
    return int(network.clock.seconds() * 1000)


def _forks_over_unsent(
    a: Peer, room_id: str, count: int, signer: EventSigner = A_SIGNER, sender: str = ALICE
) -> list[dict[str, Any]]:
    """``count`` events of ``sender``, each on its own unsent event (added to a's room
    only): a transaction of them leaves the receiver ``count`` separate gaps."""
    room = a.room(room_id)
    base = sorted(room.forward_extremities)
    pdus = []

    def added(body: str, prevs: list[str]) -> BuiltEvent:
        now = _now(a.network)
        built = build_in_room(
            room,
            signer,
            sender=sender,
            event_type=MESSAGE,
            content={"body": body},
            now=now,
            prev_event_ids=prevs,
        )
        add_own_event(room, built, now, signer.server_name)
        return built

    for n in range(count):
        unsent = added(f"u{n}", base)
        after = added(f"e{n}", [unsent.event.event_id])
        pdus.append(dict(after.pdu))
    return pdus


def _deliver(network: Network, origin: str, txn_id: str, pdus: list[dict[str, Any]]) -> None:
    """``origin`` sends ``pdus`` to b.test in one transaction."""
    body = {"origin": origin, "origin_server_ts": _now(network), "pdus": pdus}
    response = result_now(
        FakeClient(network, origin).request(
            "PUT", "b.test", f"/_matrix/federation/v1/send/{txn_id}", body
        )
    )
    assert response.status == 200


def _asked(network: Network, origin: str, destination: str) -> int:
    """Requests ``origin`` made to ``destination`` (transactions not counted)."""
    return sum(
        1
        for s in network.sent
        if s.origin == origin and s.destination == destination and "/send/" not in s.path
    )


def test_one_transaction_of_fifty_gaps_costs_three_requests() -> None:
    """50 events on 50 separate gaps in one /send: b asks a's get_missing_events for
    them together (latest_events: the 50, limit 20, the most Synapse answers), again
    while answers gain events: 3 requests (it was one per event: 50), and all 100 events
    are accepted."""
    network, a, b = two_peers()
    room_id = joined(network, a, b)
    pdus = _forks_over_unsent(a, room_id, 50)
    before = _asked(network, "b.test", "a.test")
    _deliver(network, "a.test", "gaps", pdus)
    assert _asked(network, "b.test", "a.test") - before == 3
    first = next(s for s in network.sent if "get_missing_events" in s.path)
    assert (len(first.body["latest_events"]), first.body["limit"]) == (50, 20)
    room = b.room(room_id)
    assert all(room.record(r) is not None for r in a.room(room_id).forward_extremities)
    assert b.service.unresolved == {}


def test_an_origin_that_divulges_nothing_costs_one_request_per_transaction() -> None:
    """Issue 22 row 7: the origin answers get_missing_events with no events: b leaves the
    50 events out after 1 request (it made 100: get_missing_events, then state_ids, for
    each) and says why for each."""
    network, a, b = two_peers()
    room_id = joined(network, a, b)
    pdus = _forks_over_unsent(a, room_id, 50)
    network.canned[("a.test", "get_missing_events")] = (200, {"events": []})
    before = _asked(network, "b.test", "a.test")
    _deliver(network, "a.test", "gaps", pdus)
    assert _asked(network, "b.test", "a.test") - before == 1
    assert len(b.service.unresolved) == 50
    assert all("divulging" in why for why in b.service.unresolved.values())


def _gap_in(peer: Peer, room_id: str, user: str) -> str:
    """A message of ``user`` on an unsent one of ``peer``, sent to the others: a gap at
    each receiver."""
    room = peer.room(room_id)
    now = _now(peer.network)
    unsent = build_in_room(
        room,
        peer.signer,
        sender=f"@{user}:{peer.name}",
        event_type=MESSAGE,
        content={"body": "unsent"},
        now=now,
    )
    add_own_event(room, unsent, now, peer.name)
    return say(peer, room_id, user, "after a gap")


def test_a_silent_origin_holds_only_its_own_slots() -> None:
    """a never answers get_missing_events; five transactions of a with a gap each (in
    five rooms) hold at most MAX_GAP_FILLS_PER_ORIGIN requests toward a; meanwhile c's
    gap in another room is filled at once (with four global slots, a's held them all
    and c's gap waited for ever)."""
    network, a, b = two_peers()
    c = network.add(C_SIGNER, 3)
    a_rooms = [joined(network, a, b) for _ in range(5)]
    c_room = hosted(c, creator="carol")
    result_now(b.service.join(c_room, "bob", ["c.test"]))
    network.silent.add(("a.test", "get_missing_events"))
    for room_id in a_rooms:
        _gap_in(a, room_id, "alice")
    assert network.waiting() == MAX_GAP_FILLS_PER_ORIGIN
    latest = _gap_in(c, c_room, "carol")
    record = b.room(c_room).record(latest)
    assert record is not None and record.outcome == "accepted"


def test_each_gap_request_has_a_deadline() -> None:
    """A silent origin's request is given up after GAP_REQUEST_TIMEOUT_SECONDS: the
    event is left out with the reason, and its slot goes to the next waiting gap."""
    network, a, b = two_peers()
    rooms = [joined(network, a, b) for _ in range(MAX_GAP_FILLS_PER_ORIGIN + 1)]
    network.silent.add(("a.test", "get_missing_events"))
    events = [_gap_in(a, room_id, "alice") for room_id in rooms]
    assert network.waiting() == MAX_GAP_FILLS_PER_ORIGIN
    network.clock.advance(GAP_REQUEST_TIMEOUT_SECONDS)
    assert all("no answer within" in b.service.unresolved[e] for e in events[:2])
    assert network.waiting() == 1  # the third gap got a slot


def test_we_never_ask_ourselves() -> None:
    """A transaction under our own server name whose event has a gap makes no request
    to ourselves; the event is left out with the reason."""
    network, a, b = two_peers()
    room_id = joined(network, a, b)
    (pdu,) = _forks_over_unsent(a, room_id, 1, signer=b.signer, sender=BOB)
    _deliver(network, "b.test", "ours", [pdu])
    assert _asked(network, "b.test", "b.test") == 0
    assert list(b.service.unresolved.values()) == ["sent by our own server name: not asked"]
