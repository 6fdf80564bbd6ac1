"""An X-Matrix ``origin`` naming our own host is never dialled (issue 12, row 1), for real.

A real ``stubserver run`` with the default blocklist and no allowlist uses a real DNS
server (``stubserver.devtools.dns_server``) whose A/AAAA answers spell our own host:
``127.0.0.1``, ``0.0.0.0``, ``::1``, ``::``, ``::ffff:127.0.0.1`` and ``::ffff:0.0.0.0``.
A signed request whose X-Matrix ``origin`` is such a name, with the port of a loopback
listener (``127.0.0.1`` and ``::1``, standing for a service on our host), makes the server
fetch that origin's keys. It must dial nothing: the listener sees no connection, and the
request is answered 401 ``M_UNAUTHORIZED`` at once, the message naming the failed key
fetch and the blocklist. Before ``ALWAYS_BLOCKED_RANGES`` (commit 7daf841), ``0.0.0.0``,
``::`` and ``::ffff:0.0.0.0`` were not in the default blocklist: the key fetch dialled
the listener (Linux treats a connect to them as one to loopback).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import pytest

from stubserver.auth.xmatrix import sign_request
from stubserver.devtools.loopback_listeners import LoopbackListeners
from stubserver.signing.keys import ServerSigningKey
from stubserver.tls.certificates import KeyPair, make_ca
from tests.support import (
    REPO_ROOT,
    StubProcess,
    https_request,
    start_stubserver,
    write_stub,
)

pytestmark = pytest.mark.integration

RECEIVER = "receiver.test"
RECEIVER_BIND = "127.0.0.75"
DNS_LISTEN = "127.0.0.76:0"
#: A path that requires X-Matrix authentication.
PATH = "/_matrix/federation/v1/query/profile?user_id=%40alice%3Areceiver.test"
#: Deadline for the 401 answer, in seconds: far below a connect-and-TLS timeout the old
#: code would wait out after dialling the listener (a deadline, not a measured bound).
ANSWER_DEADLINE_SECONDS = 8.0

#: DNS names whose A/AAAA answer is one spelling of our own host.
ADDRESS_NAMES = {
    "a-127.test": ("A", "127.0.0.1"),
    "a-0.test": ("A", "0.0.0.0"),
    "aaaa-1.test": ("AAAA", "::1"),
    "aaaa-0.test": ("AAAA", "::"),
    "aaaa-m127.test": ("AAAA", "::ffff:127.0.0.1"),
    "aaaa-m0.test": ("AAAA", "::ffff:0.0.0.0"),
}


@dataclass
class Setup:
    port: int
    listeners: LoopbackListeners
    ca: KeyPair
    receiver: StubProcess
    origin_key: ServerSigningKey

    def connections(self) -> int:
        """Connections the listener has been offered so far (each is then closed)."""
        return self.listeners.accept_all()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("origin-blocklist")
    listeners = LoopbackListeners.open()
    port = listeners.port
    zone = {
        "records": [
            {"name": name, "type": kind, "value": value}
            for name, (kind, value) in ADDRESS_NAMES.items()
        ]
    }
    (tmp / "zone.json").write_text(json.dumps(zone))
    with ExitStack() as stack:
        stack.callback(listeners.close)
        dns = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stubserver.devtools.dns_server",
                "--zone",
                str(tmp / "zone.json"),
                "--listen",
                DNS_LISTEN,
            ],
            stdout=subprocess.PIPE,
            cwd=REPO_ROOT,
        )
        stack.callback(dns.wait, 10)
        stack.callback(dns.terminate)
        assert dns.stdout is not None
        dns_address = json.loads(dns.stdout.readline())["listen"][0]
        ca = make_ca("origin blocklist CA")
        # The default blocklist, and no allowlist at all.
        config = write_stub(
            tmp,
            RECEIVER,
            ca,
            bind=RECEIVER_BIND,
            extra_config={"federation_dns_servers": [dns_address]},
        )
        receiver = stack.enter_context(start_stubserver(config))
        yield Setup(port, listeners, ca, receiver, ServerSigningKey.generate("origin"))


@pytest.mark.parametrize("name", sorted(ADDRESS_NAMES))
def test_origin_resolving_to_our_host_is_not_dialled(setup: Setup, name: str) -> None:
    """A signed request whose origin resolves to our own host is answered 401 at once,
    naming the failed key fetch and the blocklist, and nothing is dialled."""
    origin = f"{name}:{setup.port}"
    auth = sign_request("GET", PATH, origin=origin, destination=RECEIVER, key=setup.origin_key)
    response = https_request(
        setup.receiver.address,
        setup.receiver.port,
        PATH,
        ca_pem=setup.ca.cert_pem,
        server_hostname=RECEIVER,
        headers={"Authorization": auth.decode("ascii")},
        timeout=ANSWER_DEADLINE_SECONDS,
    )
    assert setup.connections() == 0
    assert response.status == 401, response.body
    body = response.json()
    assert body["errcode"] == "M_UNAUTHORIZED"
    assert f"Could not fetch the keys of {origin}" in body["error"]
    assert "ip_range_blocklist" in body["error"]
    assert "Traceback" not in setup.receiver.stderr_text()


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "::ffff:127.0.0.1", "::ffff:0.0.0.0"])
def test_control_these_spellings_reach_our_loopback(setup: Setup, address: str) -> None:
    """Dialled directly, each spelling reaches the loopback listener: so a request that
    leaves the listener untouched shows the blocklist stopped it, not the network."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family) as client:
        client.settimeout(5)
        try:
            client.connect((address, setup.port))
        except OSError as e:
            pytest.skip(f"this host does not route {address}: {e}")
    assert setup.connections() == 1
