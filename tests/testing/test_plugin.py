"""The pytest plugin, as a user meets it: pytest run on a test file in a fresh directory.

The plugin is loaded through its ``pytest11`` entry point (the installed package), not
through a conftest.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

#: Bound on one inner pytest run, in seconds.
PYTEST_TIMEOUT_SECONDS = 120.0

TESTS = """
from stubserver.testing import Peer, PeerFactory


def test_factory_starts_peers_that_trust_each_other(stubserver_peer: PeerFactory) -> None:
    a = stubserver_peer(allow_ips=["127.0.0.0/8"])
    b = stubserver_peer(allow_ips=["127.0.0.0/8"])
    room = a.create_room(preset="public_chat")
    b.join(room.room_id, via=[a.server_name])
    a.wait_for_event(room.room_id, sender=b.user_id(), timeout=20)


def test_strict_violation_fails_at_teardown(stubserver_peer: PeerFactory) -> None:
    a = stubserver_peer(allow_ips=["127.0.0.0/8"])
    b = stubserver_peer(strict=True)
    a.federation_request(b.server_name, "GET", "/_matrix/federation/v1/surprise")
    b.wait_for_request("/_matrix/federation/v1/surprise", timeout=10)


def test_a_failing_test_shows_the_peer_report(stubserver_peer: PeerFactory) -> None:
    peer = stubserver_peer()
    assert peer.status()["rooms"] == ["!not-there"]


def test_needs_a_homeserver(homeserver_user: object) -> None:
    raise AssertionError("not reached without --homeserver-url")
"""


def _run_pytest(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (directory / "test_user.py").write_text(TESTS)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-rA",
            *args,
            str(directory / "test_user.py"),
        ],
        capture_output=True,
        text=True,
        cwd=directory,
        timeout=PYTEST_TIMEOUT_SECONDS,
        check=False,
    )


def test_the_plugin_serves_peers_strict_checks_and_homeserver_skips(tmp_path: Path) -> None:
    """Factory peers federate; strict fails at teardown; failures carry the peer's report;
    homeserver tests skip with the reason."""
    result = _run_pytest(tmp_path)
    out = result.stdout
    assert "PASSED test_user.py::test_factory_starts_peers_that_trust_each_other" in out, out
    assert "ERROR test_user.py::test_strict_violation_fails_at_teardown" in out, out
    assert "StrictModeViolation" in out and "/_matrix/federation/v1/surprise" in out, out
    assert "FAILED test_user.py::test_a_failing_test_shows_the_peer_report" in out, out
    assert "stubserver peer 127.0.0.1:" in out, out
    assert "no homeserver under test: pass --homeserver-url" in out, out


def test_the_options_are_listed_in_help(tmp_path: Path) -> None:
    """``pytest --help`` lists the homeserver and peer options."""
    result = _run_pytest(tmp_path, "--help")
    for option in (
        "--homeserver-url",
        "--homeserver-name",
        "--homeserver-token",
        "--registration-shared-secret",
        "--registration-token",
        "--peer-dns-server",
        "--peer-ca-cert",
        "--peer-ca-key",
        "--peer-bind",
    ):
        assert option in result.stdout
