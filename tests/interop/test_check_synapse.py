"""``stubserver check`` against a real Synapse (tests/interop/README.md has the environment).

Each stub checks Synapse with its own identity: Synapse is found through DNS, its keys and
certificate verify, a signed request with percent-escapes passes its authentication, and
its notary fetches the stub's keys through the stub's delegation (the way back).
"""

from __future__ import annotations

import pytest
import yaml

from stubserver.check.hints import HINT_CANNOT_FETCH_OUR_KEYS
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


def test_synapse_that_cannot_reach_us(interop_env: InteropEnvironment) -> None:
    """An identity Synapse cannot resolve fails the way back, and Synapse's 401 on the
    signed request is named as "cannot fetch our keys", not as a proxy problem."""
    env = interop_env
    config = yaml.safe_load(env.stubs["direct.test"].files.config_path.read_text())
    config["server_name"] = "unreachable.test"  # not in the environment's DNS
    path = env.directory / "unreachable.yaml"
    path.write_text(yaml.safe_dump(config))
    report = env.stubserver("check", env.synapse.server_name, "--json", "-c", path)
    assert report["FederationOK"] is True, report["Hints"]
    assert report["WayBack"]["OK"] is False
    assert report["SignedRequest"]["Status"] == 401
    assert report["SignedRequest"]["Hint"] == HINT_CANNOT_FETCH_OUR_KEYS
    assert report["AllOK"] is False
    assert [h["Step"] for h in report["Hints"]] == ["signed request", "way back"]
