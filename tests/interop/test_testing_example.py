"""docs/testing.md's example, run as a user would: pytest with the plugin's options, against
the real Synapse of the interop environment (issue 14).

The example (tests/testing/test_example.py) starts its own peer through the plugin; it runs
inside the namespace so that the peer, named ``peer.test:PORT`` (the zone's A record for
127.0.0.40), and Synapse reach each other through the tests' DNS and CA.
"""

from __future__ import annotations

import sys

import pytest

from tests.interop.harness import DNS_ADDRESS, DNS_PORT, REPO_ROOT, InteropEnvironment

pytestmark = pytest.mark.interop


def test_the_documented_example_passes_against_synapse(interop_env: InteropEnvironment) -> None:
    """The example joins Synapse's room and exchanges a message each way: it passes."""
    env = interop_env
    _, _, token = env.synapse_user
    done = env.ns.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            REPO_ROOT,
            REPO_ROOT / "tests" / "testing" / "test_example.py",
            "--homeserver-url",
            env.synapse.files.spec.client_url,
            "--homeserver-name",
            env.synapse.server_name,
            "--homeserver-token",
            token,
            "--peer-host",
            "peer.test",
            "--peer-bind",
            "127.0.0.40",
            "--peer-dns-server",
            f"{DNS_ADDRESS}:{DNS_PORT}",
            "--peer-ca-cert",
            env.ca.cert_path,
            "--peer-ca-key",
            env.ca.key_path,
            "--peer-ca-file",
            env.ca.cert_path,
            "--peer-allow-ip",
            "127.0.0.0/8",
        ],
        timeout=300,
    )
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
    assert "1 passed" in done.stdout, done.stdout[-2000:]
