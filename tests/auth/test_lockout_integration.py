"""Issue 12, the lock-out, against two real ``stubserver run`` processes on loopback.

The origin is down when its first signed request reaches the receiver; it comes back; its
next signed requests are accepted within seconds (Synapse remembers no key-fetch failures
and ignores the backoff for key fetches). The old code refused them for five minutes.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from stubserver.auth.authenticator import NEGATIVE_CACHE_SECONDS
from stubserver.auth.xmatrix import sign_request
from stubserver.tls.certificates import make_ca
from tests.support import https_request, start_stubserver, write_stub, write_stub_files

pytestmark = pytest.mark.integration

RECEIVER = "receiver.test"
PATH = "/_matrix/federation/v1/version"
#: How long the origin back up may wait for acceptance (a deadline, not a measured bound):
#: several times the failure memory, far below the old five-minute lock-out.
ACCEPT_DEADLINE_SECONDS = NEGATIVE_CACHE_SECONDS + 25
#: Pause between two attempts while waiting for the deadline.
POLL_SECONDS = 0.25


def free_port() -> int:
    """A port free on 127.0.0.1 now (the origin's server name must carry it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_origin_back_up_is_accepted_within_seconds(tmp_path: Path) -> None:
    """A signed request from an origin that is down answers 401; once the origin is back,
    a signed request from it is accepted (200) within seconds, not refused for minutes."""
    ca = make_ca("stubserver lock-out test CA")
    ca_path = tmp_path / "ca.crt"
    ca_path.write_bytes(ca.cert_pem)
    port = free_port()
    origin_name = f"127.0.0.1:{port}"
    origin = write_stub_files(tmp_path, origin_name, ca, port=port)
    receiver_config = write_stub(
        tmp_path,
        RECEIVER,
        ca,
        extra_config={
            "federation_custom_ca_list": [str(ca_path)],
            "ip_range_allowlist": ["127.0.0.0/8"],
        },
    )

    def send() -> int:
        auth = sign_request(
            "GET", PATH, origin=origin_name, destination=RECEIVER, key=origin.signing_key
        )
        response = https_request(
            receiver.address,
            receiver.port,
            PATH,
            ca_pem=ca.cert_pem,
            server_hostname=RECEIVER,
            headers={"Authorization": auth.decode("ascii")},
        )
        return response.status

    with start_stubserver(receiver_config) as receiver:
        assert send() == 401  # the origin is down: its keys cannot be fetched
        with start_stubserver(origin.config_path):
            deadline = time.monotonic() + ACCEPT_DEADLINE_SECONDS
            statuses = [send()]
            while statuses[-1] != 200 and time.monotonic() < deadline:
                time.sleep(POLL_SECONDS)
                statuses.append(send())
            assert statuses[-1] == 200, (statuses[-5:], receiver.stderr_text()[-2000:])
