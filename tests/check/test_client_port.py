"""``--client`` asks ``https://NAME`` on the configured ``federation_well_known_port``,
in-process (a fake prober records where each request went)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from stubserver.check.checker import FederationChecker
from stubserver.check.client_section import CLIENT_WELL_KNOWN_PATH
from stubserver.config import FederationSettings
from stubserver.discovery.dns import DnsClients
from stubserver.discovery.resolution import Resolution
from tests.check.fakes import Addresses, FakeProber, FakeResolver, NoSrv
from tests.support import FakeReactor, result_now

#: A private test federation's HTTPS port for ``https://NAME`` (not the spec's 443).
TEST_HTTPS_PORT = 8443


class ClientPortTests(SynchronousTestCase):
    """Where the client ``.well-known`` is asked."""

    def test_client_well_known_uses_the_configured_https_port(self) -> None:
        """With ``federation_well_known_port`` set, the client .well-known is fetched on
        that port, with the port in the Host header and in the URL shown (it was always
        443, so --client could not be used in a private test federation)."""
        prober = FakeProber({})
        checker = FederationChecker(
            FakeReactor(),
            FederationSettings(ip_range_allowlist=("10.0.0.0/8",), well_known_port=TEST_HTTPS_PORT),
            dns=DnsClients(srv=NoSrv(), addresses=Addresses({"a.test": ("10.0.0.1",)})),
            prober=prober,
            resolver=FakeResolver({"a.test": Resolution("a.test", error="none")}),
            client=True,
        )
        report = result_now(checker.check("a.test"))
        calls = [c for c in prober.calls if c[4] == CLIENT_WELL_KNOWN_PATH]
        assert calls == [
            (
                "10.0.0.1",
                TEST_HTTPS_PORT,
                "a.test",
                f"a.test:{TEST_HTTPS_PORT}",
                CLIENT_WELL_KNOWN_PATH,
            )
        ]
        assert report.client is not None
        assert f"https://a.test:{TEST_HTTPS_PORT}{CLIENT_WELL_KNOWN_PATH}" in (
            report.client.well_known.error or ""
        )
