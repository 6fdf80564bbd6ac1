"""What two real peers write to their logs while they federate (issue 24).

Peers ``a.test`` and ``b.test`` (real ``stubserver run`` processes, started with
``stubserver.testing.Peer``) find each other through our DNS server
(``stubserver.devtools.dns_server``) with records of TTL 0, so every request A sends is
resolved again with real twisted.names queries (a UDP port and protocol per query), and
travel over real verified TLS on loopback through Twisted's HTTP connection pool; B fetches
A's keys (its own resolution and connection) to authenticate A's first signed request.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from stubserver.testing import ControlError, Peer
from stubserver.tls.certificates import make_ca
from tests.support import dns_server_process, named_peer, start_stubserver, write_stub

pytestmark = pytest.mark.integration

ADDRESS_A = "127.0.0.171"
ADDRESS_B = "127.0.0.172"
DNS_LISTEN = "127.0.0.173:0"
#: Rounds of resolve, fetch keys and send a signed request.
ROUNDS = 100
#: A handful: what a peer may write at the default level over ROUNDS good rounds, start
#: and stop included (it writes 7: two "Listening on", and the stop's five lines).
HANDFUL = 10
#: Twisted's start/stop chatter: DNS protocols, client factories, UDP ports, listeners.
CHATTER = re.compile(
    r"Starting factory|Stopping factory|Starting protocol|Stopping protocol"
    r"| starting on \d+|\(UDP Port \d+ Closed\)"
)
PROFILE_USER = "alice"


@pytest.fixture(scope="module")
def dns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Our DNS server answering a.test and b.test with TTL 0; its HOST:PORT."""
    records = [
        {"name": "a.test", "type": "A", "value": ADDRESS_A, "ttl": 0},
        {"name": "b.test", "type": "A", "value": ADDRESS_B, "ttl": 0},
    ]
    with dns_server_process(tmp_path_factory.mktemp("dns"), records, DNS_LISTEN) as listen:
        yield listen


def _peer(directory: Path, host: str, address: str, dns: str, **kwargs: object) -> Peer:
    users = {PROFILE_USER: {"displayname": "Alice"}}
    return named_peer(directory, host, address, dns, users=users, **kwargs)


def _profile_path(peer: Peer, localpart: str = PROFILE_USER) -> str:
    user_id = quote(peer.user_id(localpart), safe="")
    return f"/_matrix/federation/v1/query/profile?user_id={user_id}"


def _one_round(a: Peer, b: Peer) -> None:
    """A resolves B, fetches B's keys and sends B a signed request (each must succeed)."""
    keys = a.federation_request(b.server_name, "GET", "/_matrix/key/v2/server")
    assert keys.status == 200, keys
    profile = a.federation_request(b.server_name, "GET", _profile_path(b))
    assert (profile.status, profile.body) == (200, {"displayname": "Alice"})


def test_a_hundred_rounds_of_federation_write_a_handful_of_lines_and_no_chatter(
    tmp_path: Path, dns_server: str
) -> None:
    """Resolving, fetching keys and sending a signed request 100 times (400 DNS queries,
    real TLS connections) leaves at most HANDFUL lines in each peer's log at the default
    level, start and stop included, and not one of Twisted's start/stop lines."""
    a = _peer(tmp_path, "a.test", ADDRESS_A, dns_server)
    with a, _peer(tmp_path, "b.test", ADDRESS_B, dns_server) as b:
        for _ in range(ROUNDS):
            _one_round(a, b)
        assert len(b.requests()) == 2 * ROUNDS
    for peer in (a, b):
        lines = peer.stderr_text().splitlines()
        chatter = [line for line in lines if CHATTER.search(line)]
        assert chatter == [], f"{peer.server_name}: {len(chatter)} chatter lines: {chatter[:6]}"
        assert len(lines) <= HANDFUL, f"{peer.server_name} wrote {len(lines)} lines: {lines}"


def test_at_log_level_debug_twisted_lines_come_back(tmp_path: Path, dns_server: str) -> None:
    """With ``log_level: debug`` the per-query UDP port lines are in the log again."""
    debug = {"extra_config": {"log_level": "debug"}}
    with (
        _peer(tmp_path, "a.test", ADDRESS_A, dns_server, **debug) as a,
        _peer(tmp_path, "b.test", ADDRESS_B, dns_server) as b,
    ):
        _one_round(a, b)
        text = a.stderr_text()
    assert re.search(r"DNSDatagramProtocol starting on \d+", text), text[-2000:]
    assert re.search(r"\(UDP Port \d+ Closed\)", text), text[-2000:]


def test_an_inbound_refusal_is_one_line_naming_the_peer_and_the_reason(
    tmp_path: Path, dns_server: str
) -> None:
    """B refusing A's request (an unknown user: 404) adds exactly one line to B's log,
    with A's name, the status, the errcode and the error."""
    with (
        _peer(tmp_path, "a.test", ADDRESS_A, dns_server) as a,
        _peer(tmp_path, "b.test", ADDRESS_B, dns_server) as b,
    ):
        _one_round(a, b)
        before = b.stderr_text().splitlines()
        answer = a.federation_request(b.server_name, "GET", _profile_path(b, "nobody"))
        assert answer.status == 404
        added = b.stderr_text().splitlines()[len(before) :]
    assert len(added) == 1, added
    assert "Refused GET /_matrix/federation/v1/query/profile?user_id=" in added[0]
    assert f"from {a.server_name}: 404 M_NOT_FOUND: Profile was not found" in added[0]


def test_an_outbound_failure_is_one_line_naming_the_peer_and_the_reason(
    tmp_path: Path, dns_server: str
) -> None:
    """A request to a name that does not resolve adds exactly one line to the sender's log,
    with the destination and the reason."""
    with _peer(tmp_path, "a.test", ADDRESS_A, dns_server) as a:
        before = a.stderr_text().splitlines()
        with pytest.raises(ControlError) as caught:
            a.federation_request("nowhere.test", "GET", "/_matrix/federation/v1/version")
        added = a.stderr_text().splitlines()[len(before) :]
    assert caught.value.status == 502
    assert len(added) == 1, added
    assert "GET /_matrix/federation/v1/version to nowhere.test failed:" in added[0]
    assert "NXDOMAIN" in added[0]


@pytest.mark.parametrize(("extra_args", "shown"), [((), False), (("--verbose",), True)])
def test_run_verbose_logs_from_debug_level(
    tmp_path: Path, extra_args: tuple[str, ...], shown: bool
) -> None:
    """``stubserver run --verbose`` writes the debug lines (Twisted's own "starting on" of
    each listener); without it they are left out."""
    config = write_stub(tmp_path, "verbose.test", make_ca("verbose CA"), bind=ADDRESS_A)
    with start_stubserver(config, extra_args=extra_args) as stub:
        assert stub.terminate() == 0
        text = stub.stderr_text()
    assert "Listening on" in text
    assert bool(re.search(r"LimitedSite \(TLS\) starting on \d+", text)) is shown, text
