"""docs/testing.md's example, run as a user would: pytest with the plugin's options, against
the real Synapse of the interop environment (issue 14) and the real Dendrite (issue 21).

The example (tests/testing/test_example.py) starts its own peer through the plugin; it runs
inside the namespace so that the peer, named ``peer.test:PORT`` (the zone's A record for
127.0.0.40), and the homeserver reach each other through the tests' DNS and CA.
"""

from __future__ import annotations

import sys

import pytest

from tests.interop.dendrite import DendriteEnvironment
from tests.interop.federation_cases import PeerEnvironment
from tests.interop.harness import DNS_ADDRESS, DNS_PORT, REPO_ROOT, InteropEnvironment

pytestmark = pytest.mark.interop


def _run_the_example(env: PeerEnvironment, *credentials: str) -> None:
    """Run the example against ``env``'s homeserver with the ``credentials`` options;
    assert that its one test passed."""
    hs = env.homeserver
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
            hs.spec.client_url,
            "--homeserver-name",
            hs.server_name,
            *credentials,
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


def test_the_documented_example_passes_against_synapse(interop_env: InteropEnvironment) -> None:
    """The example joins Synapse's room and exchanges a message each way: it passes."""
    _, _, token = interop_env.synapse_user
    _run_the_example(interop_env, "--homeserver-token", token)


def test_the_documented_example_passes_against_dendrite(dendrite_env: DendriteEnvironment) -> None:
    """The example, unchanged, passes against Dendrite too, its users registered by the
    plugin through the shared secret (``/_synapse/admin/v1/register``, which Dendrite
    serves) and acting with the access tokens that registration returned."""
    secret = dendrite_env.homeserver.registration_shared_secret
    _run_the_example(dendrite_env, "--registration-shared-secret", secret)


def test_the_documented_example_passes_against_dendrite_with_a_token(
    dendrite_env: DendriteEnvironment,
) -> None:
    """The example, unchanged, passes against Dendrite with the access token of an existing
    user (``--homeserver-token``, checked through ``/account/whoami``), as against Synapse."""
    _, _, token = dendrite_env.homeserver.user
    _run_the_example(dendrite_env, "--homeserver-token", token)
