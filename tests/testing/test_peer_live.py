"""Two real peers on loopback talking to each other through ``stubserver.testing.Peer``.

They find each other through our DNS server (``stubserver.devtools.dns_server``) with A
records ``a.test`` and ``b.test``; their server names carry their ports, and both may
dial 127.0.0.0/8. Both certificates come from one CA made in-process (``ca=None``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stubserver.testing import (
    ControlError,
    Peer,
    PeerStartFailed,
    StrictModeViolation,
    WaitTimeout,
)
from tests.support import a_and_b_records, dns_server_process, named_peer

pytestmark = pytest.mark.integration

ADDRESS_A = "127.0.0.141"
ADDRESS_B = "127.0.0.142"
DNS_LISTEN = "127.0.0.143:0"
UNKNOWN_PATH = "/_matrix/federation/v1/no_such_endpoint"


@pytest.fixture(scope="module")
def dns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Our DNS server answering a.test and b.test; its HOST:PORT."""
    records = a_and_b_records(ADDRESS_A, ADDRESS_B)
    with dns_server_process(tmp_path_factory.mktemp("dns"), records, DNS_LISTEN) as listen:
        yield listen


@pytest.fixture
def peers(tmp_path: Path, dns_server: str) -> Iterator[tuple[Peer, Peer]]:
    """Peers a.test and b.test, sharing the CA made in ``tmp_path``."""
    with (
        named_peer(tmp_path, "a.test", ADDRESS_A, dns_server) as a,
        named_peer(tmp_path, "b.test", ADDRESS_B, dns_server) as b,
    ):
        yield a, b


def test_a_room_created_on_one_peer_is_joined_by_the_other_and_messages_cross_both_ways(
    peers: tuple[Peer, Peer],
) -> None:
    """B joins A's public room; each side receives the other's message with the same event ID."""
    a, b = peers
    room = a.create_room(preset="public_chat")

    joined = b.join(room.room_id, via=[a.server_name])
    assert joined.room_id == room.room_id
    a.wait_for_event(room.room_id, type="m.room.member", sender=b.user_id(), timeout=20)

    from_b = b.send_message(room.room_id, "hello from b")
    seen_by_a = a.wait_for_event(room.room_id, event_id=from_b, timeout=20)
    assert seen_by_a.content["body"] == "hello from b"
    assert seen_by_a.origin == b.server_name
    assert seen_by_a.outcome == "accepted"

    from_a = a.send_message(room.room_id, "hello from a")
    seen_by_b = b.wait_for_event(
        room.room_id, type="m.room.message", sender=a.user_id(), timeout=20
    )
    assert seen_by_b.event_id == from_a
    assert b.room_state(room.room_id)["members"] == {a.user_id(): "join", b.user_id(): "join"}
    assert a.wait_for_request("/_matrix/federation/v1/make_join/", timeout=5)["origin"] == (
        b.server_name
    )


def test_a_wait_that_times_out_lists_what_did_arrive(peers: tuple[Peer, Peer]) -> None:
    """The timeout error names what was awaited and lists the room's events."""
    a, _ = peers
    room = a.create_room()
    a.send_message(room.room_id, "the only message")
    with pytest.raises(WaitTimeout) as caught:
        a.wait_for_event(room.room_id, type="m.no.such.type", timeout=0.5)
    text = str(caught.value)
    assert "type='m.no.such.type'" in text
    assert "m.room.create" in text
    assert "'the only message'" in text
    assert len(caught.value.arrived) == len(room.event_ids) + 1


def test_a_refused_remote_join_raises_control_error_with_the_remote_answer(
    peers: tuple[Peer, Peer],
) -> None:
    """Joining a room A does not have: 502 from the control API, with A's refusal inside."""
    a, b = peers
    with pytest.raises(ControlError) as caught:
        b.join(f"!nothere:{a.server_name}", via=[a.server_name])
    assert caught.value.status == 502
    assert caught.value.remote_status is not None
    assert caught.value.remote_status >= 400
    assert "remote answered" in str(caught.value)


def test_a_strict_peer_fails_at_the_end_on_a_request_to_a_path_it_does_not_serve(
    tmp_path: Path, dns_server: str
) -> None:
    """A request to an unknown path (answered 404 M_UNRECOGNIZED) fails the strict peer's exit."""
    with named_peer(tmp_path, "a.test", ADDRESS_A, dns_server) as a:
        b = named_peer(tmp_path, "b.test", ADDRESS_B, dns_server, strict=True)
        answer = a.federation_request(b.server_name, "GET", UNKNOWN_PATH)
        assert answer.status == 404
        b.wait_for_request(UNKNOWN_PATH, timeout=10)
        with pytest.raises(StrictModeViolation) as caught:
            b.close()
    assert UNKNOWN_PATH in str(caught.value)
    assert [r["uri"] for r in caught.value.requests] == [UNKNOWN_PATH]
    assert not b.process.running


def test_a_strict_peer_fails_on_a_prefix_the_test_declared_unexpected(
    tmp_path: Path, dns_server: str
) -> None:
    """A served path under a declared-unexpected prefix fails the strict peer too."""
    with named_peer(tmp_path, "a.test", ADDRESS_A, dns_server) as a:
        b = named_peer(
            tmp_path,
            "b.test",
            ADDRESS_B,
            dns_server,
            strict=True,
            unexpected=["/_matrix/federation/v1/version"],
        )
        assert (
            a.federation_request(b.server_name, "GET", "/_matrix/federation/v1/version").status
            == 200
        )
        b.wait_for_request("/_matrix/federation/v1/version", timeout=10)
        with pytest.raises(StrictModeViolation):
            b.close()


def test_a_lenient_peer_ignores_unknown_paths(tmp_path: Path, dns_server: str) -> None:
    """Without strict mode, the same request leaves the peer's exit silent."""
    with named_peer(tmp_path, "a.test", ADDRESS_A, dns_server) as a:
        with named_peer(tmp_path, "b.test", ADDRESS_B, dns_server) as b:
            assert a.federation_request(b.server_name, "GET", UNKNOWN_PATH).status == 404
            b.wait_for_request(UNKNOWN_PATH, timeout=10)
        assert not b.process.running


def test_a_failure_inside_the_block_gets_the_peers_report(tmp_path: Path) -> None:
    """An exception leaving ``with Peer`` carries a note with its requests and stderr."""
    with pytest.raises(RuntimeError) as caught, Peer.start(tmp_path) as peer:
        raise RuntimeError("the test failed")
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert f"peer {peer.server_name}" in notes
    assert "stderr" in notes
    assert not peer.process.running


def test_the_control_port_is_discovered_from_the_ready_line(tmp_path: Path) -> None:
    """The control listener binds port 0; the peer reads its port off the ready line."""
    with Peer.start(tmp_path) as peer:
        assert peer.control_port != 0
        assert peer.status()["server_name"] == peer.server_name
        assert peer.server_name == f"127.0.0.1:{peer.federation_port}"


def test_a_bad_config_fails_the_start_with_its_stderr(tmp_path: Path) -> None:
    """An unknown config key: PeerStartFailed with exit status 2 and the line naming it."""
    with pytest.raises(PeerStartFailed) as caught:
        Peer.start(tmp_path, extra_config={"no_such_key": 1})
    assert caught.value.returncode == 2
    assert "no_such_key" in caught.value.stderr
