"""One resolution's work is bounded (issue 12, row 7): a name with 100 SRV targets costs
at most MAX_SRV_TARGETS address lookups and MAX_ADDRESSES_TRIED dials, and the error that
comes back is at most MAX_ERROR_MESSAGE_CHARS long. Fake DNS and MemoryReactorClock only."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.names import dns
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from stubserver.client.blocklist import IPBlocklist
from stubserver.discovery.dns import NamesAddressResolver
from stubserver.discovery.resolution import MAX_SRV_TARGETS, FederationResolver
from stubserver.discovery.srv import SrvResolver
from stubserver.discovery.unreachable import MAX_ERROR_MESSAGE_CHARS, FederationConnectError
from stubserver.discovery.well_known import WellKnownResult
from stubserver.outbound.agent import MAX_ADDRESSES_TRIED, MatrixFederationAgent
from stubserver.tls.certificates import make_ca
from stubserver.tls.client import FederationTlsPolicy
from tests.support import FakeReactor, failure_now, has_fired

SRV_TARGET_COUNT = 100
ADDRESSES_PER_TARGET = 4


class NoDelegation:
    def get_well_known(self, host: str) -> Deferred[WellKnownResult]:
        url = f"https://{host}/.well-known/matrix/server"
        return succeed(WellKnownResult(url, 404, None, "HTTP 404", 3600.0))


class HostileDns:
    """A DNS server whose SRV name has 100 targets, each with 4 A records; counts queries."""

    def __init__(self) -> None:
        self.queries: list[tuple[str, str]] = []

    def lookupService(self, name: str, timeout: Any = None) -> Deferred[Any]:
        self.queries.append(("SRV", name))
        answers = [
            dns.RRHeader(
                name=name.encode(),
                type=dns.SRV,
                ttl=300,
                payload=dns.Record_SRV(10, 5, 8448, f"t{i}.evil.test".encode(), 300),  # type: ignore[no-untyped-call]
            )
            for i in range(SRV_TARGET_COUNT)
        ]
        return succeed((answers, [], []))

    def lookupAddress(self, name: str, timeout: Any = None) -> Deferred[Any]:
        self.queries.append(("A", name))
        index = int(name.split(".", maxsplit=1)[0][1:])
        answers = [
            dns.RRHeader(
                name=name.encode(),
                type=dns.A,
                ttl=300,
                payload=dns.Record_A(f"198.51.{index}.{n}", 300),  # type: ignore[no-untyped-call]
            )
            for n in range(ADDRESSES_PER_TARGET)
        ]
        return succeed((answers, [], []))

    def lookupIPV6Address(self, name: str, timeout: Any = None) -> Deferred[Any]:
        self.queries.append(("AAAA", name))
        return succeed(([], [], []))


class FanOutTests(SynchronousTestCase):
    def test_hundred_srv_targets_are_bounded(self) -> None:
        """A name with 100 SRV targets of 4 addresses each: at most MAX_SRV_TARGETS hosts
        are looked up, at most MAX_ADDRESSES_TRIED addresses are dialled, and the error is
        at most 1 KiB, counting what was not tried."""
        reactor = FakeReactor()
        fake_dns = HostileDns()
        resolver = FederationResolver(
            clock=reactor,
            well_known=NoDelegation(),
            srv=SrvResolver(fake_dns, reactor),
            addresses=NamesAddressResolver(fake_dns, reactor),
            blocklist=IPBlocklist.from_settings((), ()),
            rng=random.Random(0),
            default_port=8448,
        )
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        ca_file = Path(folder.name) / "ca.crt"
        ca_file.write_bytes(make_ca("fan-out CA").cert_pem)
        agent = MatrixFederationAgent(
            reactor, resolver, FederationTlsPolicy([ca_file]), IPBlocklist.from_settings((), ())
        )
        d = agent.request(b"GET", b"matrix-federation://evil.test/_matrix/key/v2/server")
        dialled = 0
        while not has_fired(d):
            assert dialled < len(reactor.tcpClients)
            factory = reactor.tcpClients[dialled][2]
            factory.clientConnectionFailed(
                reactor.connectors[dialled],
                Failure(ConnectionRefusedError()),  # type: ignore[no-untyped-call]
            )
            dialled += 1
        failure = failure_now(d)
        assert isinstance(failure.value, FederationConnectError)
        assert dialled == MAX_ADDRESSES_TRIED
        srv_queries = [q for q in fake_dns.queries if q[0] == "SRV"]
        address_queries = [q for q in fake_dns.queries if q[0] != "SRV"]
        assert len(srv_queries) == 1
        assert len(address_queries) == 2 * MAX_SRV_TARGETS
        message = str(failure.value)
        assert len(message) <= MAX_ERROR_MESSAGE_CHARS
        assert "more" in message
