"""Many servers in one ``stubserver run`` (issue 23), driven through
``stubserver.testing.Peer.start_many``: they federate with each other and with a third,
ordinary ``stubserver run``, each signing as itself.

Two set-ups: servers on listeners of their own, named ``127.0.0.1:<port>`` (no DNS),
and servers ``s1.test``/``s2.test`` on one shared listener told apart by SNI and Host,
found through our DNS server.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from stubserver.testing import Peer, PeerGroup, StrictModeViolation, free_port
from tests.support import LOOPBACK_RANGE, dns_server_process, named_peer

pytestmark = pytest.mark.integration

SHARED_ADDRESS = "127.0.0.211"
THIRD_ADDRESS = "127.0.0.212"
DNS_LISTEN = "127.0.0.213:0"


@pytest.fixture(scope="module")
def dns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Our DNS server answering s1.test, s2.test (the shared listener) and c.test."""
    records = [
        {"name": "s1.test", "type": "A", "value": SHARED_ADDRESS},
        {"name": "s2.test", "type": "A", "value": SHARED_ADDRESS},
        {"name": "c.test", "type": "A", "value": THIRD_ADDRESS},
    ]
    with dns_server_process(tmp_path_factory.mktemp("dns"), records, DNS_LISTEN) as listen:
        yield listen


def federate(group: PeerGroup, third: Peer) -> None:
    """A room of the group's first server, joined by its second and by ``third``; a
    message of the second reaches ``third`` and the first, and the requests each received
    were signed by the server that sent them and answered by the one addressed."""
    first, second = group.peers
    room = first.create_room(preset="public_chat")
    second.join(room.room_id, via=[first.server_name])
    third.join(room.room_id, via=[first.server_name])
    first.wait_for_event(room.room_id, type="m.room.member", sender=third.user_id(), timeout=20)
    # The sender sends to the servers of the room as it knows it: only once the host has
    # passed it the third's join does its message go to the third too.
    second.wait_for_event(room.room_id, type="m.room.member", sender=third.user_id(), timeout=20)
    sent = second.send_message(room.room_id, "hello from the second server")
    seen = third.wait_for_event(room.room_id, event_id=sent, timeout=20)
    assert (seen.origin, seen.outcome) == (second.server_name, "accepted")
    assert first.wait_for_event(room.room_id, event_id=sent, timeout=20).outcome == "accepted"
    members = third.room_state(room.room_id)["members"]
    assert members == {p.user_id(): "join" for p in (first, second, third)}
    transaction = third.wait_for_request("/_matrix/federation/v1/send/", timeout=10)
    assert transaction["origin"] in (first.server_name, second.server_name)
    make_join = first.wait_for_request("/_matrix/federation/v1/make_join/", timeout=10)
    assert make_join["server"] == first.server_name
    joins = [r for r in first.requests() if "/make_join/" in r["uri"]]
    assert {r["origin"] for r in joins} == {second.server_name, third.server_name}
    assert all(r["authenticated"] for r in joins)
    to_second = second.wait_for_request("/_matrix/federation/v1/send/", timeout=10)
    assert to_second["server"] == second.server_name
    logged = [json.loads(line) for line in first.request_log_text().splitlines()]
    assert {entry["server"] for entry in logged} <= {first.server_name, second.server_name}
    assert any(entry["server"] == first.server_name for entry in logged)


def test_servers_on_listeners_of_their_own_federate_with_each_other_and_a_third(
    tmp_path: Path,
) -> None:
    """Two servers of one process (named by their own listeners' addresses) and an
    ordinary peer share a room: joins, a message, signed requests with the right origin."""
    with (
        Peer.start_many(tmp_path / "group", 2, allow_ips=[LOOPBACK_RANGE]) as group,
        Peer.start(
            tmp_path / "third",
            ca=(tmp_path / "group" / "ca.crt", tmp_path / "group" / "ca.key"),
            allow_ips=[LOOPBACK_RANGE],
        ) as third,
    ):
        assert len(group) == 2
        assert group.process.ready["servers"] == group.server_names
        assert [p.status()["server_name"] for p in group] == group.server_names
        federate(group, third)


def test_servers_on_a_shared_listener_federate_through_sni_and_host(
    tmp_path: Path, dns_server: str
) -> None:
    """``s1.test`` and ``s2.test`` on one listener (SNI chooses the certificate, Host the
    server) federate with each other and with ``c.test``, an ordinary peer."""
    port = free_port(SHARED_ADDRESS)
    with (
        Peer.start_many(
            tmp_path,
            2,
            template=f"s{{i}}.test:{port}",
            bind=SHARED_ADDRESS,
            dns_servers=[dns_server],
            allow_ips=[LOOPBACK_RANGE],
        ) as group,
        named_peer(tmp_path, "c.test", THIRD_ADDRESS, dns_server) as third,
    ):
        assert group.server_names == [f"s1.test:{port}", f"s2.test:{port}"]
        assert {p.federation_port for p in group} == {port}
        assert group.by_name(f"s2.test:{port}") is group[1]
        federate(group, third)


def test_a_message_of_one_server_reaches_nine_others_of_the_same_process(tmp_path: Path) -> None:
    """Ten servers of one process: nine join the first's room, and its message reaches
    all nine, each seeing it as the first server's (README's example)."""
    with Peer.start_many(tmp_path, 10, allow_ips=["127.0.0.0/8"]) as group:
        host, *others = group
        room = host.create_room(preset="public_chat")
        for peer in others:
            peer.join(room.room_id, via=[host.server_name])
        sent = host.send_message(room.room_id, "hello, nine servers")
        for peer in others:
            assert peer.wait_for_event(room.room_id, event_id=sent).origin == host.server_name


def test_a_strict_group_fails_at_the_end_on_a_request_to_a_path_no_server_serves(
    tmp_path: Path,
) -> None:
    """In strict mode, closing the group fails when one of its servers received a request
    to a path it does not serve, naming that server."""
    unknown = "/_matrix/federation/v1/no_such_endpoint"
    group = Peer.start_many(tmp_path, 2, allow_ips=[LOOPBACK_RANGE], strict=True)
    first, second = group
    assert first.federation_request(second.server_name, "GET", unknown).status == 404
    second.wait_for_request(unknown, timeout=10)
    with pytest.raises(StrictModeViolation) as caught:
        group.close()
    assert second.server_name in str(caught.value)
    assert [r["uri"] for r in caught.value.requests] == [unknown]
    assert not group.process.running


def connects(port: int) -> bool:
    """Whether a TCP connection to 127.0.0.1:``port`` is accepted."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return False
    return True


def test_one_server_of_a_process_goes_down_alone(tmp_path: Path) -> None:
    """The second of two servers with listeners of their own goes down through its own
    faults: its port refuses connections while the first's still answers; back up, it
    listens again on the same port."""
    with Peer.start_many(tmp_path, 2, allow_ips=[LOOPBACK_RANGE]) as group:
        first, second = group
        with second.down() as answer:
            assert answer["listening"] is False
            assert not connects(second.federation_port)
            assert connects(first.federation_port)
            assert first.faults()["listening"] is True
        assert second.faults()["listening"] is True
        assert connects(second.federation_port)


def config_with_bound_control_port(group: PeerGroup) -> Path:
    """A copy of ``group``'s config (next to it) naming the control port its process
    bound (the group's asks for any port, which ``attach`` cannot follow)."""
    raw = yaml.safe_load(group[0].config_path.read_text())
    for listener in raw["listeners"]:
        if "control" in listener["resources"]:
            listener["port"] = group[0].control_port
    path = group[0].config_path.with_name("attach.yaml")
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_an_attached_peer_finds_the_other_servers_of_its_process(tmp_path: Path) -> None:
    """``Peer.attach`` on a group's config drives the primary; its ``siblings()`` are the
    other servers, in order, each driving its own server (a room each creates is its
    own), and a sibling's siblings start with the primary."""
    with Peer.start_many(tmp_path, 3, allow_ips=[LOOPBACK_RANGE]) as group:
        attached = Peer.attach(config_with_bound_control_port(group))
        siblings = attached.siblings()
        assert [p.server_name for p in siblings] == group.server_names[1:]
        for sibling in siblings:
            room = sibling.create_room()
            assert sibling.status()["server_name"] == sibling.server_name
            assert room.room_id in str(sibling.status()["rooms"])
            assert room.room_id not in str(attached.status()["rooms"])
        assert [p.server_name for p in siblings[0].siblings()] == [
            group.server_names[0],
            group.server_names[2],
        ]
        assert attached.status()["server_name"] == group.server_names[0]
    with Peer.start_many(tmp_path / "alone", 1, allow_ips=[LOOPBACK_RANGE]) as alone:
        assert Peer.attach(config_with_bound_control_port(alone)).siblings() == []
