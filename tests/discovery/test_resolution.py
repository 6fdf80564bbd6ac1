"""Server name resolution: one test per branch of the spec's algorithm, without sockets."""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.names import dns
from twisted.names import error as dns_error
from twisted.trial.unittest import SynchronousTestCase

from stubserver.client.blocklist import IPBlocklist
from stubserver.config import DEFAULT_IP_RANGE_BLOCKLIST
from stubserver.discovery.dns import AddressLookupError
from stubserver.discovery.resolution import FederationResolver, Resolution, Target
from stubserver.discovery.srv import SrvResolver
from stubserver.discovery.well_known import WellKnownResult


class FakeWellKnown:
    def __init__(self) -> None:
        self.delegations: dict[str, str] = {}
        self.asked: list[str] = []

    def get_well_known(self, host: str) -> Deferred[WellKnownResult]:
        self.asked.append(host)
        url = f"https://{host}/.well-known/matrix/server"
        if host in self.delegations:
            return succeed(WellKnownResult(url, 200, self.delegations[host], None, 86400.0))
        return succeed(WellKnownResult(url, 404, None, "HTTP 404", 3600.0))


class FakeDns:
    """SRV answers by name; anything else is NXDOMAIN, or a scripted exception."""

    def __init__(self) -> None:
        self.srv: dict[str, list[tuple[int, int, int, str]]] = {}
        self.errors: dict[str, Exception] = {}
        self.asked: list[str] = []

    def lookupService(self, name: str, timeout: Any = None) -> Deferred[Any]:
        self.asked.append(name)
        if name in self.errors:
            return fail(self.errors[name])
        if name not in self.srv:
            return fail(dns_error.DNSNameError(name))
        answers = [
            dns.RRHeader(
                name=name.encode(),
                type=dns.SRV,
                ttl=300,
                payload=dns.Record_SRV(p, w, port, t.encode(), 300),  # type: ignore[no-untyped-call]
            )
            for p, w, port, t in self.srv[name]
        ]
        return succeed((answers, [], []))


class FakeAddresses:
    def __init__(self) -> None:
        self.hosts: dict[str, tuple[str, ...]] = {}

    def resolve_addresses(self, host: str) -> Deferred[tuple[str, ...]]:
        if host in self.hosts:
            return succeed(self.hosts[host])
        try:
            import ipaddress

            return succeed((str(ipaddress.ip_address(host)),))
        except ValueError:
            return fail(AddressLookupError(host, "no such name (NXDOMAIN)", temporary=False))


class ResolutionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.well_known = FakeWellKnown()
        self.dns = FakeDns()
        self.addresses = FakeAddresses()
        self.allow = ("0.0.0.0/0", "::/0")

    def resolve(self, name: str, *, allow: tuple[str, ...] | None = None) -> Resolution:
        resolver = FederationResolver(
            clock=self.clock,
            well_known=self.well_known,
            srv=SrvResolver(self.dns, self.clock),
            addresses=self.addresses,
            blocklist=IPBlocklist.from_settings(
                DEFAULT_IP_RANGE_BLOCKLIST, self.allow if allow is None else allow
            ),
            rng=random.Random(0),
            default_port=8448,
        )
        return self.successResultOf(resolver.resolve(name))

    def only_target(self, resolution: Resolution) -> Target:
        assert resolution.error is None
        assert len(resolution.targets) == 1
        return resolution.targets[0]

    def test_1_ipv4_literal(self) -> None:
        """Step 1: an IPv4 literal is dialled on 8448; Host is the name; cert for the IP."""
        r = self.resolve("192.0.2.5")
        assert self.only_target(r) == Target(
            "192.0.2.5", 8448, ("192.0.2.5",), "192.0.2.5", "192.0.2.5", "ip_literal"
        )
        assert r.well_known is None
        assert self.well_known.asked == []

    def test_1_ipv6_literal_with_port(self) -> None:
        """Step 1: an IPv6 literal's host is bare; Host keeps brackets and port."""
        r = self.resolve("[2001:db8::1]:8453")
        assert self.only_target(r) == Target(
            "2001:db8::1",
            8453,
            ("2001:db8::1",),
            "[2001:db8::1]:8453",
            "2001:db8::1",
            "ip_literal",
        )

    def test_2_explicit_port(self) -> None:
        """Step 2: an explicit port skips .well-known and SRV; Host includes the port."""
        self.addresses.hosts["delta.test"] = ("192.0.2.9",)
        r = self.resolve("delta.test:8450")
        assert self.only_target(r) == Target(
            "delta.test", 8450, ("192.0.2.9",), "delta.test:8450", "delta.test", "explicit_port"
        )
        assert (self.well_known.asked, self.dns.asked) == ([], [])

    def test_3_1_delegated_ip_literal(self) -> None:
        """Step 3.1: delegation to an IP literal; Host is the delegated name; cert for the IP."""
        self.well_known.delegations["delta.test"] = "192.0.2.7:8453"
        r = self.resolve("delta.test")
        assert self.only_target(r) == Target(
            "192.0.2.7", 8453, ("192.0.2.7",), "192.0.2.7:8453", "192.0.2.7", "ip_literal"
        )
        assert r.delegated_server_name == "192.0.2.7:8453"
        assert self.dns.asked == []

    def test_3_2_delegated_explicit_port(self) -> None:
        """Step 3.2: delegation with a port; Host is delegated name:port; cert for it."""
        self.well_known.delegations["delta.test"] = "delta-fed.test:8450"
        self.addresses.hosts["delta-fed.test"] = ("192.0.2.8",)
        r = self.resolve("delta.test")
        assert self.only_target(r) == Target(
            "delta-fed.test",
            8450,
            ("192.0.2.8",),
            "delta-fed.test:8450",
            "delta-fed.test",
            "explicit_port",
        )

    def test_3_3_delegated_srv(self) -> None:
        """Step 3.3: delegated name's _matrix-fed SRV; cert and Host the delegated name."""
        self.well_known.delegations["delta.test"] = "delta-fed.test"
        self.dns.srv["_matrix-fed._tcp.delta-fed.test"] = [(10, 5, 8450, "delta-srv.test")]
        self.addresses.hosts["delta-srv.test"] = ("192.0.2.24",)
        r = self.resolve("delta.test")
        assert self.only_target(r) == Target(
            "delta-srv.test", 8450, ("192.0.2.24",), "delta-fed.test", "delta-fed.test", "srv"
        )
        assert self.dns.asked == ["_matrix-fed._tcp.delta-fed.test"]

    def test_3_4_delegated_legacy_srv(self) -> None:
        """Step 3.4: delegated name's _matrix._tcp SRV when _matrix-fed has none."""
        self.well_known.delegations["delta.test"] = "delta-fed.test"
        self.dns.srv["_matrix._tcp.delta-fed.test"] = [(10, 5, 8451, "old-srv.test")]
        self.addresses.hosts["old-srv.test"] = ("192.0.2.25",)
        r = self.resolve("delta.test")
        assert self.only_target(r) == Target(
            "old-srv.test",
            8451,
            ("192.0.2.25",),
            "delta-fed.test",
            "delta-fed.test",
            "legacy_srv",
        )

    def test_3_5_delegated_default_port(self) -> None:
        """Step 3.5: delegated name on 8448 when it has no SRV."""
        self.well_known.delegations["delta.test"] = "delta-fed.test"
        self.addresses.hosts["delta-fed.test"] = ("192.0.2.26",)
        r = self.resolve("delta.test")
        assert self.only_target(r) == Target(
            "delta-fed.test",
            8448,
            ("192.0.2.26",),
            "delta-fed.test",
            "delta-fed.test",
            "default_port",
        )
        assert r.well_known and r.well_known.m_server == "delta-fed.test"

    def test_4_srv(self) -> None:
        """Step 4: without delegation, _matrix-fed SRV; cert and Host the server name."""
        self.dns.srv["_matrix-fed._tcp.delta.test"] = [(10, 5, 8450, "delta-srv.test")]
        self.addresses.hosts["delta-srv.test"] = ("192.0.2.24",)
        r = self.resolve("delta.test")
        assert self.only_target(r) == Target(
            "delta-srv.test", 8450, ("192.0.2.24",), "delta.test", "delta.test", "srv"
        )
        assert r.well_known and r.well_known.error == "HTTP 404"
        assert r.delegated_server_name is None

    def test_4_srv_excludes_legacy_and_default(self) -> None:
        """When _matrix-fed has records, _matrix._tcp is not asked and 8448 not added."""
        self.dns.srv["_matrix-fed._tcp.delta.test"] = [
            (10, 5, 8450, "a.test"),
            (20, 5, 8451, "b.test"),
        ]
        self.dns.srv["_matrix._tcp.delta.test"] = [(10, 5, 8452, "c.test")]
        self.addresses.hosts.update({"a.test": ("192.0.2.1",), "b.test": ("192.0.2.2",)})
        r = self.resolve("delta.test")
        assert [t.host for t in r.targets] == ["a.test", "b.test"]
        assert self.dns.asked == ["_matrix-fed._tcp.delta.test"]

    def test_5_legacy_srv(self) -> None:
        """Step 5: _matrix._tcp SRV when _matrix-fed has none."""
        self.dns.srv["_matrix._tcp.delta.test"] = [(10, 5, 8451, "old-srv.test")]
        self.addresses.hosts["old-srv.test"] = ("192.0.2.25",)
        r = self.resolve("delta.test")
        assert self.only_target(r).source == "legacy_srv"
        assert self.only_target(r).tls_server_name == "delta.test"

    def test_6_default_port(self) -> None:
        """Step 6: hostname on 8448 when there is no delegation and no SRV."""
        self.addresses.hosts["delta.test"] = ("192.0.2.3",)
        r = self.resolve("delta.test")
        assert self.only_target(r) == Target(
            "delta.test", 8448, ("192.0.2.3",), "delta.test", "delta.test", "default_port"
        )
        assert [s.name for s in r.srv_lookups] == [
            "_matrix-fed._tcp.delta.test",
            "_matrix._tcp.delta.test",
        ]

    def test_srv_servfail_fails(self) -> None:
        """A SERVFAIL with nothing cached fails resolution at the SRV step."""
        self.dns.errors["_matrix-fed._tcp.delta.test"] = dns_error.DNSServerError("x")
        r = self.resolve("delta.test")
        assert r.failed_step == "srv"
        assert "SERVFAIL" in (r.error or "")
        assert r.temporary

    def test_srv_dot_target_fails(self) -> None:
        """A '.' SRV answer means the service is refused; nothing is tried."""
        self.dns.srv["_matrix-fed._tcp.delta.test"] = [(0, 0, 0, "")]
        r = self.resolve("delta.test")
        assert r.failed_step == "srv"
        assert "not available" in (r.error or "")
        assert r.targets == ()

    def test_srv_target_without_address(self) -> None:
        """An SRV target that does not resolve leaves no usable address: an error."""
        self.dns.srv["_matrix-fed._tcp.delta.test"] = [(10, 5, 8450, "nothing.test")]
        r = self.resolve("delta.test")
        assert r.failed_step == "addresses"
        assert "nothing.test" in (r.error or "")
        assert r.targets[0].addresses == ()

    def test_blocked_address_named(self) -> None:
        """A blocked address fails with the address and the setting named."""
        self.addresses.hosts["delta.test"] = ("127.0.0.1",)
        r = self.resolve("delta.test", allow=())
        assert r.failed_step == "addresses"
        assert "127.0.0.1" in (r.error or "")
        assert "ip_range_blocklist" in (r.error or "")
        assert r.address_lookups[0].blocked == ("127.0.0.1",)

    def test_invalid_server_name(self) -> None:
        """A malformed server name fails at the server_name step."""
        r = self.resolve("https://delta.test")
        assert r.failed_step == "server_name"

    def test_json_shape(self) -> None:
        """to_json has exactly DESIGN.md's keys."""
        self.well_known.delegations["delta.test"] = "delta-fed.test"
        self.dns.srv["_matrix-fed._tcp.delta-fed.test"] = [(10, 5, 8450, "delta-srv.test")]
        self.addresses.hosts["delta-srv.test"] = ("192.0.2.24",)
        assert self.resolve("delta.test").to_json() == {
            "server_name": "delta.test",
            "well_known": {
                "url": "https://delta.test/.well-known/matrix/server",
                "status": 200,
                "m.server": "delta-fed.test",
                "error": None,
                "cache_seconds": 86400,
            },
            "delegated_server_name": "delta-fed.test",
            "targets": [
                {
                    "host": "delta-srv.test",
                    "port": 8450,
                    "addresses": ["192.0.2.24"],
                    "host_header": "delta-fed.test",
                    "tls_server_name": "delta-fed.test",
                    "source": "srv",
                }
            ],
            "error": None,
        }
