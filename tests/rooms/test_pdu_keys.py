"""Fetching the keys received PDUs need before the pure signature checks."""

from __future__ import annotations

import copy

import pytest
from nacl.signing import VerifyKey
from twisted.internet.defer import Deferred, fail, succeed

from stubserver.rooms.builder import BuiltEvent
from stubserver.rooms.format import event_from_pdu
from stubserver.rooms.pdu_keys import (
    MAX_KEY_IDS_PER_SIGNER,
    MAX_KEY_LOOKUPS_PER_REQUEST,
    KeyRequest,
    fetch_keys,
    key_requests,
    verifier_for,
)
from stubserver.rooms.transaction import SignatureFailure
from tests.rooms.room_fixtures import B_SIGNER, BOB, TS, build, join, new_room
from tests.support import has_fired, result_now


def _message(ts: int = TS) -> BuiltEvent:
    room = new_room("12").room
    join(room, BOB)
    return build(room, BOB, "m.room.message", {"body": "x"}, ts=ts)


def test_key_requests_are_the_senders_keys_at_each_timestamp_without_repeats() -> None:
    """One lookup per (sender's server, key ID, origin_server_ts), repeats dropped; other
    servers' signatures are not looked up (only the sender's server must sign)."""
    room = new_room("12").room
    join(room, BOB)
    one = build(room, BOB, "m.room.message", {"body": "1"}, ts=TS + 1).event
    two = build(room, BOB, "m.room.message", {"body": "2"}, ts=TS + 2).event
    pdu = copy.deepcopy(dict(one.pdu))
    pdu["signatures"]["c.test"] = {"ed25519:c": "x"}
    extra = event_from_pdu(pdu, room.room_version)
    assert key_requests([one, two, one, extra]) == [
        ("b.test", B_SIGNER.key_id, TS + 1),
        ("b.test", B_SIGNER.key_id, TS + 2),
    ]


def test_key_requests_are_bounded() -> None:
    """At most MAX_KEY_IDS_PER_SIGNER key IDs per signer and
    MAX_KEY_LOOKUPS_PER_REQUEST lookups in all."""
    room = new_room("12").room
    join(room, BOB)
    events = []
    for n in range(MAX_KEY_LOOKUPS_PER_REQUEST):
        pdu = dict(build(room, BOB, "m.room.message", {"body": str(n)}, ts=TS + n).pdu)
        pdu["signatures"] = {"b.test": {f"ed25519:k{i}": "x" for i in range(10)}}
        events.append(event_from_pdu(pdu, room.room_version))
    requests = key_requests(events)
    assert len(requests) == MAX_KEY_LOOKUPS_PER_REQUEST
    assert len({r for r in requests if r[2] == TS}) == MAX_KEY_IDS_PER_SIGNER


def test_fetch_keys_runs_a_bounded_number_at_once() -> None:
    """With max_concurrent 2, only two lookups are started until one finishes; failed
    lookups and None count as no key."""
    started: list[tuple[KeyRequest, Deferred[VerifyKey | None]]] = []
    key = B_SIGNER.signing_key.verify_key

    def fetch(server: str, key_id: str, ts: int) -> Deferred[VerifyKey | None]:
        d: Deferred[VerifyKey | None] = Deferred()
        started.append(((server, key_id, ts), d))
        return d

    requests = [("b.test", "ed25519:k", n) for n in range(4)]
    result = Deferred.fromCoroutine(fetch_keys(fetch, requests, max_concurrent=2))
    assert len(started) == 2
    started[0][1].callback(key)
    assert len(started) == 3
    started[1][1].errback(RuntimeError("unreachable"))
    started[2][1].callback(None)
    started[3][1].callback(key)
    assert has_fired(result)
    assert result_now(result) == {requests[0]: key, requests[3]: key}


def test_verifier_for_checks_with_the_fetched_keys() -> None:
    """The verifier accepts an event signed with the fetched key, and fails one whose key
    the lookup did not find."""
    event = _message().event
    verify = result_now(
        Deferred.fromCoroutine(
            verifier_for(lambda s, k, t: succeed(B_SIGNER.signing_key.verify_key), [event])
        )
    )
    verify(event)
    missing = result_now(
        Deferred.fromCoroutine(verifier_for(lambda s, k, t: fail(RuntimeError("down")), [event]))
    )
    with pytest.raises(SignatureFailure, match="Failed to find any key"):
        missing(event)


def test_one_lookup_per_server_and_key_at_the_latest_time() -> None:
    """Events of one sender at many timestamps make one lookup of its key, at the latest
    timestamp (Synapse's keyring asks once at the largest minimum_valid_until_ts), and
    that key verifies every one of them."""
    room = new_room("12").room
    join(room, BOB)
    events = [
        build(room, BOB, "m.room.message", {"body": str(i)}, ts=TS + i).event for i in range(50)
    ]
    asked: list[KeyRequest] = []

    def fetch(server: str, key_id: str, ts: int) -> Deferred[VerifyKey | None]:
        asked.append((server, key_id, ts))
        return succeed(B_SIGNER.signing_key.verify_key)

    verify = result_now(Deferred.fromCoroutine(verifier_for(fetch, events)))
    for event in events:
        verify(event)
    assert asked == [("b.test", B_SIGNER.key_id, TS + 49)]


def test_a_key_not_valid_at_the_latest_time_is_still_used_for_earlier_events() -> None:
    """When the lookup at the latest time finds no key (it expired before), each event's
    own time is looked up: the earlier events verify, the later one fails."""
    early, late = _message(TS).event, _message(TS + 10).event
    asked: list[int] = []

    def fetch(server: str, key_id: str, ts: int) -> Deferred[VerifyKey | None]:
        asked.append(ts)
        return succeed(B_SIGNER.signing_key.verify_key if ts <= TS else None)

    verify = result_now(Deferred.fromCoroutine(verifier_for(fetch, [early, late])))
    verify(early)
    with pytest.raises(SignatureFailure, match="Failed to find any key"):
        verify(late)
    assert asked == [TS + 10, TS, TS + 10]
