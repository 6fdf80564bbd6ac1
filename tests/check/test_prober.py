"""The report's prober never dials a blocked address (issue 12, row 1: the report part).

A name whose A/AAAA records point at our own host (loopback, ``0.0.0.0``, ``::``, their
IPv6 forms) is refused before any connection is made, with the default blocklist, so the
report never carries the body or certificate of a service on our own host. In-process: a
fake DNS answer and a MemoryReactorClock, whose ``tcpClients`` lists every dial.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.names import error as dns_error
from twisted.trial.unittest import SynchronousTestCase

from stubserver.check.checker import FederationChecker, with_this_host_blocked
from stubserver.check.prober import AddressProber, ProbeFailed
from stubserver.client.blocklist import IPBlocklist
from stubserver.config import FederationSettings
from stubserver.discovery.dns import DnsClients
from tests.support import FakeReactor, failure_now, result_now

#: Every spelling of our own host an A or AAAA answer can carry.
OWN_HOST_ADDRESSES = (
    "127.0.0.1",
    "127.1.2.3",
    "0.0.0.0",
    "0.1.2.3",
    "::1",
    "::",
    "::ffff:0.0.0.0",
    "::ffff:127.0.0.1",
    "::127.0.0.1",
)


class FakeSrv:
    """No SRV record and no CNAME for any name."""

    def lookupService(self, name: str, timeout: Any = None) -> Deferred[Any]:
        return fail(dns_error.DNSNameError(name))

    def lookupCanonicalName(self, name: str, timeout: Any = None) -> Deferred[Any]:
        return fail(dns_error.DNSNameError(name))


class FakeAddresses:
    """Answers every host with the same addresses, and records the hosts asked."""

    def __init__(self, addresses: tuple[str, ...]) -> None:
        self._addresses = addresses
        self.asked: list[str] = []

    def resolve_addresses(self, host: str) -> Deferred[tuple[str, ...]]:
        self.asked.append(host)
        return succeed(self._addresses)


def _default_blocklist(allow: tuple[str, ...] = ()) -> IPBlocklist:
    settings = with_this_host_blocked(FederationSettings(ip_range_allowlist=allow))
    return IPBlocklist.from_settings(settings.ip_range_blocklist, settings.ip_range_allowlist)


class AddressProberTests(SynchronousTestCase):
    def test_refuses_own_host_before_connecting(self) -> None:
        """Every spelling of our own host fails with ProbeFailed naming the blocklist, and
        nothing is dialled."""
        reactor = FakeReactor()
        prober = AddressProber(reactor, (), _default_blocklist(), use_system_store=False)
        for address in OWN_HOST_ADDRESSES:
            with self.subTest(address=address):
                d = prober.probe(
                    address,
                    8448,
                    tls_server_name="evil.test",
                    host_header="evil.test",
                    path="/_matrix/key/v2/server",
                )
                error = failure_now(d).value
                assert isinstance(error, ProbeFailed)
                assert "ip_range_blocklist" in str(error)
        assert reactor.tcpClients == []

    def test_allowlist_wins(self) -> None:
        """An address in ip_range_allowlist is dialled."""
        reactor = FakeReactor()
        prober = AddressProber(
            reactor, (), _default_blocklist(allow=("127.0.0.0/8",)), use_system_store=False
        )
        d = prober.probe(
            "127.0.0.1", 8448, tls_server_name="a.test", host_header="a.test", path="/"
        )
        assert [(host, port) for host, port, *_ in reactor.tcpClients] == [("127.0.0.1", 8448)]
        d.cancel()
        failure_now(d)


class CheckerBlocklistTests(SynchronousTestCase):
    def _check(self, addresses: tuple[str, ...]) -> tuple[MemoryReactorClock, dict[str, Any]]:
        reactor = FakeReactor()
        dns = DnsClients(srv=FakeSrv(), addresses=FakeAddresses(addresses))
        checker = FederationChecker(reactor, FederationSettings(), dns=dns)
        report = result_now(checker.check("evil.test"))
        return reactor, report.to_json()

    def test_own_host_records_are_never_dialled(self) -> None:
        """With the default settings, a name whose A/AAAA records point at our own host
        (loopback, 0.0.0.0, ::, ::ffff:0.0.0.0) gets a report without any connection: no
        ConnectionReports (no body, no certificate), every address a blocklist error."""
        for addresses in [
            ("127.0.0.1",),
            ("0.0.0.0",),
            ("::",),
            ("::ffff:0.0.0.0",),
            ("0.0.0.0", "::"),
        ]:
            with self.subTest(addresses=addresses):
                reactor, report = self._check(addresses)
                assert reactor.tcpClients == []
                assert report["ConnectionReports"] == {}
                assert report["FederationOK"] is False
                errors = report["ConnectionErrors"]
                assert errors
                assert all("ip_range_blocklist" in e["Message"] for e in errors.values())
                for family in report["WellKnownByFamily"].values():
                    for attempt in family["Addrs"].values():
                        assert "ip_range_blocklist" in attempt["result"]
                        assert attempt["Status"] is None
                assert report["Version"].get("error")
