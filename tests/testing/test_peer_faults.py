"""Fault injection on real peers (issue 23): ``stubserver run`` processes on loopback,
switched through ``stubserver.testing.Peer``'s fault methods.

One peer alone shows each mode as a client sees it (a refused connect, a reset, a 502, a
late answer); two peers (a.test and b.test, found through our DNS server) show a
transaction queue backing off while its destination fails and is down, and the event
arriving once it is back.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from stubserver import __version__
from stubserver.testing import Peer
from tests.support import a_and_b_records, dns_server_process, https_request, named_peer

pytestmark = pytest.mark.integration

ADDRESS_ONE: Final = "127.0.0.236"
ADDRESS_A: Final = "127.0.0.237"
ADDRESS_B: Final = "127.0.0.238"
DNS_LISTEN: Final = "127.0.0.239:0"
VERSION: Final = "/_matrix/federation/v1/version"
SEND_GLOB: Final = "/_matrix/federation/v1/send/*"
#: How long a client waits for a connection or an answer here, in seconds.
CLIENT_TIMEOUT_S: Final = 10.0
#: The deadline of the waits on a peer's log, in seconds, and how often it is read.
LOG_WAIT_S: Final = 30.0
LOG_POLL_S: Final = 0.1
#: A's first retry after a failed transaction (stubserver.rooms.sender.RETRY_MIN_SECONDS),
#: in milliseconds, less a margin for the two clocks' rounding.
FIRST_RETRY_MS: Final = 1900


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[Peer]:
    """One peer, named by its address and port."""
    with Peer.start(tmp_path, bind=ADDRESS_ONE) as started:
        yield started


def get_version(peer: Peer) -> tuple[int, Any]:
    """GET the version endpoint over verified TLS: status and JSON body."""
    response = https_request(
        peer.federation_address,
        peer.federation_port,
        VERSION,
        ca_pem=peer.ca_cert_path.read_bytes(),
        server_hostname=peer.federation_address,
        timeout=CLIENT_TIMEOUT_S,
    )
    return response.status, response.json()


def connect(peer: Peer) -> socket.socket:
    """A TCP connection to the peer's federation listener."""
    return socket.create_connection(
        (peer.federation_address, peer.federation_port), timeout=CLIENT_TIMEOUT_S
    )


def test_down_refuses_connections_and_recovers_on_the_same_port(peer: Peer) -> None:
    """Down, the federation listener stops listening: a connection already open is reset
    and a new one is refused (ECONNREFUSED) while the control API still answers; after
    recovery the same port serves again."""
    assert get_version(peer)[0] == 200
    open_before = connect(peer)
    with peer.down() as answer:
        assert answer["listening"] is False
        with pytest.raises(ConnectionResetError):
            open_before.recv(1)
        with pytest.raises(ConnectionRefusedError):
            connect(peer)
        assert peer.faults()["counters"]["connections_closed"] == 1
    open_before.close()
    assert peer.faults()["listening"] is True
    assert get_version(peer) == (200, {"server": {"name": "stubserver", "version": __version__}})


def test_a_peer_stopped_while_down_exits_zero_with_its_log_written(tmp_path: Path) -> None:
    """SIGTERM while the federation listener is closed: the peer stops as usual (exit 0)
    and its request log holds the requests it answered, the failed one included."""
    peer = Peer.start(tmp_path, bind=ADDRESS_ONE)
    try:
        peer.set_faults(fail={"status": 500})
        assert get_version(peer)[0] == 500
        peer.set_faults(down=True)
    finally:
        status = peer.process.stop(CLIENT_TIMEOUT_S)
    assert status == 0
    (line,) = [line for line in peer.request_log_text().splitlines() if VERSION in line]
    assert '"fault":"failed"' in line


def test_reset_mode_resets_each_connection_and_counts_it(peer: Peer) -> None:
    """Down with "reset", the listener stays open but each connection is reset before the
    TLS handshake, and counted; no request reaches the feed."""
    before = len(peer.requests())
    peer.set_faults(down="reset")
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        get_version(peer)
    assert peer.fault_counters()["connections_refused"] == 1
    peer.clear_faults()
    assert get_version(peer)[0] == 200
    assert len(peer.requests()) == before + 1


def test_failing_dropped_and_slow_requests(peer: Peer) -> None:
    """A fail rule answers its 5xx and the injected-fault error; a dropped request is
    reset without an answer; a latency delays the answer. The feed shows each request
    with what was done to it, and the counters count them."""
    peer.set_faults(fail={"status": 502, "routes": ["/_matrix/federation/v1/*"]})
    assert get_version(peer) == (502, {"errcode": "M_UNKNOWN", "error": "injected fault"})
    peer.set_faults(drop_share=1.0)
    with pytest.raises((ConnectionResetError, ssl.SSLError, OSError)):
        get_version(peer)
    peer.set_faults(latency_ms=300)
    started = time.monotonic()
    assert get_version(peer)[0] == 200
    assert time.monotonic() - started >= 0.3
    failed, dropped, delayed = [r for r in peer.requests() if r["uri"] == VERSION]
    assert (failed["fault"], failed["status"]) == ("failed", 502)
    assert dropped["fault"] == "dropped"
    assert (delayed["fault"], delayed["delay_ms"], delayed["status"]) == ("delayed", 300, 200)
    counters = peer.fault_counters()
    assert counters["requests_failed"] == counters["requests_dropped"] == 1
    assert counters["requests_delayed"] == 1


# --- two peers: a transaction queue against a failing, then down, destination --------------


@pytest.fixture(scope="module")
def dns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Our DNS server answering a.test and b.test; its HOST:PORT."""
    records = a_and_b_records(ADDRESS_A, ADDRESS_B)
    with dns_server_process(tmp_path_factory.mktemp("dns"), records, DNS_LISTEN) as listen:
        yield listen


def wait_for_log(peer: Peer, what: str, found: Callable[[str], bool]) -> None:
    """Wait (up to LOG_WAIT_S) until ``found`` accepts the peer's log."""
    deadline = time.monotonic() + LOG_WAIT_S
    while not found(peer.stderr_text()):
        assert time.monotonic() < deadline, f"no {what} in {peer.server_name}'s log"
        time.sleep(LOG_POLL_S)


def test_transactions_back_off_while_the_destination_fails_and_is_down_then_arrive(
    tmp_path: Path, dns_server: str
) -> None:
    """A message sent while B answers its transactions 502 is retried by A after its
    backoff (B's feed and counters show each failed attempt, from A, seconds apart); while
    B is down A's attempt is refused; once B is back, A's next retry delivers the event."""
    with (
        named_peer(tmp_path, "a.test", ADDRESS_A, dns_server) as a,
        named_peer(tmp_path, "b.test", ADDRESS_B, dns_server) as b,
    ):
        room = a.create_room(preset="public_chat")
        b.join(room.room_id, via=[a.server_name])
        b.set_faults(fail={"status": 502, "routes": [SEND_GLOB]})
        event_id = a.send_message(room.room_id, "sent while b fails")

        def failed_send(after_ts: int) -> Callable[[dict[str, Any]], bool]:
            return lambda r: r.get("fault") == "failed" and r["ts"] > after_ts

        first = b.wait_for_request("/_matrix/federation/v1/send/", match=failed_send(0))
        second = b.wait_for_request("/_matrix/federation/v1/send/", match=failed_send(first["ts"]))
        assert first["origin"] == second["origin"] == a.server_name
        assert (first["status"], second["status"]) == (502, 502)
        assert second["ts"] - first["ts"] >= FIRST_RETRY_MS
        assert b.fault_counters()["requests_failed"] >= 2

        refusals_before = a.stderr_text().count("connection refused")
        b.set_faults(down=True)
        wait_for_log(
            a,
            "refused transaction",
            lambda text: text.count("connection refused") > refusals_before,
        )
        b.clear_faults()
        received = b.wait_for_event(room.room_id, event_id=event_id, timeout=60)
        assert received.event_id == event_id
