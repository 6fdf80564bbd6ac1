"""Fault injection against a real Synapse 1.163.2 (issue 23): Synapse's requests to a peer
that is down, then failing, are counted by the peer, and Synapse catches up once the peer
is back.

Synapse backs a destination off for minutes after a failure (``retryutils``), and resets
that as soon as the destination sends it a valid signed request (its federation
``Authenticator``): so the stub "comes back" by signing a request to Synapse, which then
retries its transaction queue at once (Synapse's catch-up sends the room's latest event).
The stubs are shared by the session: the faults are cleared, and Synapse woken, whatever
happens.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.interop.harness import InteropEnvironment
from tests.interop.rooms import ControlApi, HomeserverUser, quote, wait_until
from tests.interop.rooms_cases import join_homeserver_room, world_of

pytestmark = pytest.mark.interop

SEND = "/_matrix/federation/v1/send/"


def counters(us: ControlApi) -> dict[str, int]:
    """The stub's fault counters."""
    answer: dict[str, int] = us.call("GET", "/faults")["counters"]
    return answer


def come_back(us: ControlApi, bob: HomeserverUser) -> None:
    """A signed request from the stub to Synapse: Synapse marks the stub up again."""
    path = f"/_matrix/federation/v1/query/profile?user_id={quote(bob.user_id)}"
    body = {"destination": bob.server_name, "method": "GET", "path": path}
    assert us.call("POST", "/federation/request", body)["status"] == 200


def test_synapse_requests_to_a_down_then_failing_peer_are_counted_and_it_catches_up(
    interop_env: InteropEnvironment,
) -> None:
    """While the stub resets every connection, Synapse's attempt to deliver its user's
    message is refused (counted); once the stub signs a request to it, Synapse retries at
    once and its /send is answered 502 (seen in the feed, from Synapse); once the faults
    are cleared and the stub signs again, the message arrives, accepted."""
    version, us, bob = world_of(interop_env, "12", "direct.test")
    room_id = join_homeserver_room(version, us, bob)
    refused_before = counters(us)["connections_refused"]
    since_ms = int(time.time() * 1000)
    try:
        us.call("PUT", "/faults", {"down": "reset"})
        event_id = bob.send(room_id, "sent while the stub is down")
        refused = wait_until(
            "Synapse's refused connection",
            lambda: counters(us)["connections_refused"] - refused_before or None,
        )
        assert refused >= 1
        us.call("PUT", "/faults", {"fail": {"status": 502, "routes": [SEND + "*"]}})
        come_back(us, bob)

        def failed_send(entry: Any) -> bool:
            return bool(entry.get("fault") == "failed" and entry["ts"] >= since_ms)

        failed = us.wait_for_request(SEND, "Synapse's failed /send", failed_send)
        assert (failed["origin"], failed["status"]) == (bob.server_name, 502)
        us.call("DELETE", "/faults")
        come_back(us, bob)
        entry = us.wait_for_event(room_id, lambda e: e["event_id"] == event_id, "its message")
        assert entry["outcome"] == "accepted", entry
    finally:
        us.call("DELETE", "/faults")
        come_back(us, bob)
