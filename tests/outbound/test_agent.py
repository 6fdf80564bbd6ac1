"""The federation agent and its endpoints, without sockets: MemoryReactorClock for the
dials, iosim for a real TLS handshake with a real twisted.web Site in memory."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IOpenSSLContextFactory, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test.iosim import connect, makeFakeClient, makeFakeServer
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IAgent, IAgentEndpointFactory
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from zope.interface import implementer
from zope.interface.verify import verifyObject

from stubserver.client.blocklist import IPBlocklist
from stubserver.client.body import read_body_limited
from stubserver.config import DEFAULT_IP_RANGE_BLOCKLIST
from stubserver.discovery.resolution import Resolution, Target
from stubserver.discovery.unreachable import FederationConnectError, ResolutionFailed
from stubserver.outbound.agent import (
    BlocklistingEndpointFactory,
    MatrixFederationAgent,
    MatrixFederationEndpointFactory,
    TargetsEndpoint,
    pool_netloc,
)
from stubserver.tls.certificates import KeyPair, issue_cert, make_ca
from stubserver.tls.client import FederationTlsPolicy
from tests.support import FakeReactor, failure_now, flush_logged_errors, has_fired, result_now

CA = make_ca("agent test CA")
ALLOW_ALL = IPBlocklist.from_settings(DEFAULT_IP_RANGE_BLOCKLIST, ("0.0.0.0/0",))
BLOCK_PRIVATE = IPBlocklist.from_settings(DEFAULT_IP_RANGE_BLOCKLIST, ())


def target(host: str, port: int, addresses: tuple[str, ...], name: str = "delta.test") -> Target:
    return Target(host, port, addresses, name, name, "srv")


def refused() -> Failure:
    return Failure(ConnectionRefusedError())  # type: ignore[no-untyped-call]


class SpyPolicy(FederationTlsPolicy):
    """Records the names connection creators are asked for."""

    def __init__(self, ca_files: list[Path]) -> None:
        super().__init__(ca_files)
        self.names: list[str] = []

    def creator_for(self, tls_server_name: str) -> Any:
        self.names.append(tls_server_name)
        return super().creator_for(tls_server_name)


class FakeResolver:
    def __init__(self, resolution: Resolution) -> None:
        self.resolution = resolution

    def resolve(self, server_name: str) -> Deferred[Resolution]:
        return succeed(self.resolution)


@implementer(IOpenSSLContextFactory)
class ServerOptions:
    def __init__(self, pair: KeyPair) -> None:
        self.context = SSL.Context(SSL.TLS_SERVER_METHOD)
        self.context.use_certificate(x509.load_pem_x509_certificate(pair.cert_pem))
        self.context.use_privatekey(serialization.load_pem_private_key(pair.key_pem, None))  # type: ignore[arg-type]

    def getContext(self) -> SSL.Context:
        return self.context


class Recorder(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.requests: list[tuple[bytes | None, bytes]] = []

    def render_GET(self, request: Request) -> bytes:
        self.requests.append((request.getHeader(b"host"), request.uri))
        return b'{"ok": true}'


class AgentTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = FakeReactor()
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        tmp = Path(folder.name)
        (tmp / "ca.crt").write_bytes(CA.cert_pem)
        self.tls = SpyPolicy([tmp / "ca.crt"])

    def test_interfaces(self) -> None:
        """The agent is an IAgent; the factories IAgentEndpointFactory; the endpoint too."""
        resolver: Any = FakeResolver(Resolution("x.test"))
        assert verifyObject(
            IAgent, MatrixFederationAgent(self.reactor, resolver, self.tls, ALLOW_ALL)
        )
        assert verifyObject(
            IAgentEndpointFactory,
            MatrixFederationEndpointFactory(self.reactor, self.tls, ALLOW_ALL),
        )
        assert verifyObject(
            IAgentEndpointFactory,
            BlocklistingEndpointFactory(self.reactor, resolver, self.tls, ALLOW_ALL),
        )
        assert verifyObject(
            IStreamClientEndpoint, TargetsEndpoint(self.reactor, "x.test", [], self.tls, ALLOW_ALL)
        )

    def test_targets_tried_in_order(self) -> None:
        """A refused address moves on to the next target; the one that connects is reported."""
        connected: list[Target] = []
        first = target("a.test", 8450, ("192.0.2.1",))
        second = target("b.test", 8451, ("192.0.2.2",))
        endpoint = TargetsEndpoint(
            self.reactor,
            "delta.test",
            [first, second],
            self.tls,
            ALLOW_ALL,
            on_connected=lambda t, a: connected.append(t),
        )
        d = endpoint.connect(Factory.forProtocol(Protocol))
        host, port, factory, _timeout, _bind = self.reactor.tcpClients[0]
        assert (host, port) == ("192.0.2.1", 8450)
        factory.clientConnectionFailed(self.reactor.connectors[0], refused())
        host, port, factory, _timeout, _bind = self.reactor.tcpClients[1]
        assert (host, port) == ("192.0.2.2", 8451)
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        assert protocol is not None
        protocol.makeConnection(makeFakeClient(protocol))  # type: ignore[no-untyped-call]
        assert has_fired(d)
        assert connected == [second]
        assert self.tls.names == ["delta.test", "delta.test"]

    def test_all_refused(self) -> None:
        """When every address fails, the error lists each attempt."""
        endpoint = TargetsEndpoint(
            self.reactor,
            "delta.test",
            [target("a.test", 8450, ("192.0.2.1",))],
            self.tls,
            ALLOW_ALL,
        )
        d = endpoint.connect(Factory.forProtocol(Protocol))
        factory = self.reactor.tcpClients[0][2]
        factory.clientConnectionFailed(self.reactor.connectors[0], refused())
        failure = failure_now(d)
        assert isinstance(failure.value, FederationConnectError)
        assert "a.test:8450 (192.0.2.1): connection refused" in str(failure.value)
        assert failure.value.temporary

    def test_blocked_address_never_dialled(self) -> None:
        """A blocked address is not dialled; the error names it and the setting."""
        endpoint = TargetsEndpoint(
            self.reactor,
            "delta.test",
            [target("a.test", 8450, ("10.0.0.1",))],
            self.tls,
            BLOCK_PRIVATE,
        )
        failure = failure_now(endpoint.connect(Factory.forProtocol(Protocol)))
        assert self.reactor.tcpClients == []
        assert "10.0.0.1" in str(failure.value)
        assert "ip_range_blocklist" in str(failure.value)
        assert isinstance(failure.value, FederationConnectError)
        assert not failure.value.temporary

    def test_all_digit_certificate_name_fails_at_once(self) -> None:
        """A request to an all-digit name ("0", a decimal IP) fails at once with a clear,
        permanent error, dials nothing, and leaves nothing unhandled."""
        for name in ("0", "2130706433"):
            resolution = Resolution(name, targets=(target(name, 8448, ("192.0.2.1",), name),))
            resolver: Any = FakeResolver(resolution)
            agent = MatrixFederationAgent(self.reactor, resolver, self.tls, ALLOW_ALL)
            failure = failure_now(agent.request(b"GET", f"matrix-federation://{name}/x".encode()))
            assert isinstance(failure.value, FederationConnectError)
            assert "neither an IP address nor a valid DNS name" in str(failure.value)
            assert not failure.value.temporary
        assert self.reactor.tcpClients == []
        assert flush_logged_errors(self) == []

    def test_resolution_failure(self) -> None:
        """An unresolvable name fails the request with ResolutionFailed."""
        resolution = Resolution("nowhere.test", error="no such name", failed_step="addresses")
        resolver: Any = FakeResolver(resolution)
        agent = MatrixFederationAgent(self.reactor, resolver, self.tls, ALLOW_ALL)
        failure = failure_now(agent.request(b"GET", b"matrix-federation://nowhere.test/x"))
        assert isinstance(failure.value, ResolutionFailed)
        assert failure.value.resolution is resolution

    def test_request_host_header_and_certificate(self) -> None:
        """A request goes to the SRV target over TLS checked for the delegated name, with
        the delegated name as Host, and the path and query unchanged."""
        resolution = Resolution(
            "delta.test",
            delegated_server_name="delta-fed.test",
            targets=(target("delta-srv.test", 8450, ("192.0.2.24",), "delta-fed.test"),),
        )
        resolver: Any = FakeResolver(resolution)
        agent = MatrixFederationAgent(self.reactor, resolver, self.tls, ALLOW_ALL)
        d = agent.request(b"GET", b"matrix-federation://delta.test/_matrix/key/v2/server?a=1")
        host, port, factory, _timeout, _bind = self.reactor.tcpClients[0]
        assert (host, port) == ("192.0.2.24", 8450)
        recorder = Recorder()
        server_factory = TLSMemoryBIOFactory(
            ServerOptions(issue_cert(["delta-fed.test"], CA)),
            False,
            Site(recorder),  # type: ignore[no-untyped-call]
            clock=self.reactor,
        )
        server = server_factory.buildProtocol(IPv4Address("TCP", "192.0.2.24", 8450))
        client = factory.buildProtocol(IPv4Address("TCP", host, port))
        pump = connect(  # type: ignore[no-untyped-call]
            server,
            makeFakeServer(server),  # type: ignore[no-untyped-call]
            client,
            makeFakeClient(client),  # type: ignore[no-untyped-call]
            clock=self.reactor,
        )
        pump.flush()
        response = result_now(d)
        body = read_body_limited(response, 1024)
        pump.flush()
        assert result_now(body) == b'{"ok": true}'
        assert recorder.requests == [(b"delta-fed.test", b"/_matrix/key/v2/server?a=1")]
        assert self.tls.names == ["delta-fed.test"]
        assert agent.connected_target("delta.test") == resolution.targets[0]


def test_pool_netloc() -> None:
    """Names without a port get ':0' so that they never share a pool key with ':80'."""
    assert pool_netloc("delta.test") == b"delta.test:0"
    assert pool_netloc("delta.test:80") == b"delta.test:80"
    assert pool_netloc("[::1]") == b"[::1]:0"
    assert pool_netloc("[::1]:8448") == b"[::1]:8448"
    assert pool_netloc("192.0.2.1") == b"192.0.2.1:0"
