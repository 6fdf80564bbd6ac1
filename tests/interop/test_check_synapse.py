"""``stubserver check`` against a real Synapse (tests/interop/README.md has the environment).

Each stub checks Synapse with its own identity: Synapse is found through DNS, its keys and
certificate verify, a signed request with percent-escapes passes its authentication, and
its notary fetches the stub's keys through the stub's delegation (the way back).
"""

from __future__ import annotations

import pytest

from tests.interop.harness import DEFAULT_STUBS, InteropEnvironment

pytestmark = pytest.mark.interop

STUB_NAMES = [spec.server_name for spec in DEFAULT_STUBS]
STUB_IDS = [spec.method for spec in DEFAULT_STUBS]


@pytest.mark.parametrize("stub_name", STUB_NAMES, ids=STUB_IDS)
def test_healthy_synapse_is_federation_ok(interop_env: InteropEnvironment, stub_name: str) -> None:
    """A healthy Synapse is FederationOK and AllOK, seen from each stub's identity."""
    env = interop_env
    stub = env.stubs[stub_name]
    report = env.stubserver(
        "check", env.synapse.server_name, "--json", "-c", stub.files.config_path
    )
    assert report["FederationOK"] is True, (report["Hints"], env.synapse_log_tail())
    assert report["SignedRequest"]["OK"] is True, report["SignedRequest"]
    assert report["WayBack"]["OK"] is True, (report["WayBack"], env.synapse_log_tail())
    assert report["AllOK"] is True
    assert report["Version"]["name"] == "Synapse"
    address = f"{env.synapse.files.spec.address}:8448"
    checks = report["ConnectionReports"][address]["Checks"]
    assert checks["AllChecksOK"] is True
    assert checks["ValidCertificates"] is True
    assert report["Hints"] == []


def test_stub_checks_another_stub_through_srv(interop_env: InteropEnvironment) -> None:
    """A stub reached through SRV is FederationOK, with the SRV record in DNSResult."""
    env = interop_env
    report = env.stubserver(
        "check", "srv.test", "--json", "-c", env.stubs["direct.test"].files.config_path
    )
    assert report["FederationOK"] is True, report["Hints"]
    assert report["DNSResult"]["SRVRecords"][0]["Target"] == "srv-host.test."
    assert report["DNSResult"]["SRVCName"] == "_matrix-fed._tcp.srv.test."
