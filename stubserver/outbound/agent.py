"""The outbound federation agent: ``IAgent`` for ``matrix-federation://`` URIs.

:class:`MatrixFederationAgent` resolves the server name in the URI with
:class:`~stubserver.discovery.resolution.FederationResolver` (well-known, SRV, addresses,
blocklist), sets the ``Host`` header the spec prescribes, and hands the request to a
Twisted ``Agent`` whose ``IAgentEndpointFactory`` (:class:`MatrixFederationEndpointFactory`)
dials the resolution's targets in order (every address, until one connects) over TLS
checked for the spec's certificate name. Connections are pooled per destination
(``HTTPConnectionPool``, ``retryAutomatically=False``). treq's ``HTTPClient(agent)``
works on top of it (tests and diagnostics only: signed requests do not go through treq, which
re-encodes request URIs, while a signed URI must go out byte for byte)::

    context = build_federation_client(reactor, settings)
    client = treq.client.HTTPClient(context.agent)
    response = await client.get("matrix-federation://example.com/_matrix/federation/v1/version")

:func:`build_federation_client` is the one factory every outbound command uses: it
returns a :class:`FederationContext` ``(agent, resolver, key_fetcher, https_agent,
well_known, tls)`` built from :class:`~stubserver.config.FederationSettings`; pass the
reactor (only ``main`` touches the global one) and, for tests, an RNG.

Other pieces: :class:`BlocklistingEndpointFactory` (plain ``https://`` with the blocklist,
used for .well-known and its redirects), :class:`TargetsEndpoint` (an
``IStreamClientEndpoint`` over a list of targets). Its typed failures,
:class:`~stubserver.discovery.unreachable.FederationConnectError` and
:class:`~stubserver.discovery.unreachable.ResolutionFailed`, live in discovery/ so that the
areas that catch them (server_keys/, check/) need not import this stack.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web.client import URI, Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IAgentEndpointFactory, IBodyProducer, IResponse
from zope.interface import implementer

from stubserver.cache import BoundedCache
from stubserver.client.backoff import destination_of
from stubserver.client.blocklist import BlockedAddress, IPBlocklist
from stubserver.client.body import describe_failure
from stubserver.client.concurrency import OutboundLimiter, ReleasingResponse
from stubserver.discovery.dns import AddressResolver
from stubserver.discovery.resolution import FederationResolver, Resolution, Target
from stubserver.discovery.unreachable import (
    ConnectAttempt,
    FederationConnectError,
    ResolutionFailed,
)
from stubserver.logs.quiet import QuietHTTPConnectionPool
from stubserver.reactor import IReactor
from stubserver.tls.client import FederationTlsPolicy, InvalidTlsServerName

if TYPE_CHECKING:
    pass

#: TCP connect timeout per address, in seconds.
CONNECT_TIMEOUT_SECONDS = 10
#: Most targets (SRV records) of one resolution that are tried (issue 12, row 7).
MAX_TARGETS_TRIED = 10
#: Most addresses dialled for one request, over all its targets (issue 12, row 7).
MAX_ADDRESSES_TRIED = 10
#: Idle pooled connections kept per destination, and how long, in seconds.
POOL_MAX_PER_DESTINATION = 4
POOL_IDLE_TIMEOUT_SECONDS = 60
MATRIX_FEDERATION_SCHEME = b"matrix-federation"
HTTPS_SCHEME = b"https"

log = Logger()


def _tcp_endpoint(reactor: IReactor, address: str, port: int) -> IStreamClientEndpoint:
    if ipaddress.ip_address(address).version == 6:
        return TCP6ClientEndpoint(  # type: ignore[no-untyped-call]
            reactor, address, port, timeout=CONNECT_TIMEOUT_SECONDS
        )
    return TCP4ClientEndpoint(reactor, address, port, timeout=CONNECT_TIMEOUT_SECONDS)


@implementer(IStreamClientEndpoint)
class TargetsEndpoint:
    """Dials ``targets`` in order, each address in order, over TLS for the target's
    ``tls_server_name``, until one connects; every address is checked against the
    blocklist right before dialling. ``on_connected`` learns which target answered."""

    def __init__(
        self,
        reactor: IReactor,
        destination: str,
        targets: Sequence[Target],
        tls: FederationTlsPolicy,
        blocklist: IPBlocklist,
        *,
        on_connected: Callable[[Target, str], None] | None = None,
    ) -> None:
        self._reactor = reactor
        self._destination = destination
        self._targets = tuple(targets)
        self._tls = tls
        self._blocklist = blocklist
        self._on_connected = on_connected

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """Connect to the first target and address that accepts."""
        return Deferred.fromCoroutine(self._connect(protocolFactory))

    async def _connect(self, factory: IProtocolFactory) -> IProtocol:
        attempts: list[ConnectAttempt] = []
        dialled = 0
        not_tried = sum(len(t.addresses) for t in self._targets[MAX_TARGETS_TRIED:])
        for target in self._targets[:MAX_TARGETS_TRIED]:
            if not target.addresses:
                attempts.append(ConnectAttempt(target, None, "no usable address"))
                continue
            try:
                creator = self._tls.creator_for(target.tls_server_name)
            except InvalidTlsServerName as e:
                # Checked before dialling: service_identity would raise inside the handshake.
                attempts.append(ConnectAttempt(target, None, str(e), permanent=True))
                continue
            for address in target.addresses:
                if dialled >= MAX_ADDRESSES_TRIED:
                    not_tried += 1
                    continue
                try:
                    self._blocklist.check(address, target.host)
                    dialled += 1
                    # TLSMemoryBIOFactory gets our reactor as its clock (write aggregation),
                    # not the global one that wrapClientTLS would use.
                    tls_factory = TLSMemoryBIOFactory(creator, True, factory, clock=self._reactor)
                    tcp = _tcp_endpoint(self._reactor, address, target.port)
                    tls_protocol = await tcp.connect(tls_factory)
                    protocol: IProtocol = tls_protocol.wrappedProtocol  # type: ignore[attr-defined]
                except CancelledError:
                    raise
                except BlockedAddress as e:
                    attempts.append(ConnectAttempt(target, address, str(e), permanent=True))
                    continue
                except Exception as e:
                    text, _temporary = describe_failure(e)
                    log.debug(
                        "connect to {host}:{port} ({address}) failed: {error}",
                        host=target.host,
                        port=target.port,
                        address=address,
                        error=text,
                    )
                    attempts.append(ConnectAttempt(target, address, text))
                    continue
                if self._on_connected is not None:
                    self._on_connected(target, address)
                return protocol
        raise FederationConnectError(self._destination, attempts, not_tried=not_tried)


@implementer(IStreamClientEndpoint)
class _HostEndpoint:
    """Looks ``host`` up, applies the blocklist, then dials like :class:`TargetsEndpoint`."""

    def __init__(
        self,
        reactor: IReactor,
        addresses: AddressResolver,
        tls: FederationTlsPolicy,
        blocklist: IPBlocklist,
        *,
        host: str,
        port: int,
    ) -> None:
        self._reactor = reactor
        self._addresses = addresses
        self._tls = tls
        self._blocklist = blocklist
        self._host = host
        self._port = port

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        return Deferred.fromCoroutine(self._connect(protocolFactory))

    async def _connect(self, factory: IProtocolFactory) -> IProtocol:
        found = await self._addresses.resolve_addresses(self._host)
        usable, blocked = self._blocklist.filter_addresses(self._host, found)
        if blocked:
            raise BlockedAddress(blocked[0], self._host)
        target = Target(
            host=self._host,
            port=self._port,
            addresses=usable,
            host_header=self._host,
            tls_server_name=self._host,
            source="https",
        )
        endpoint = TargetsEndpoint(self._reactor, self._host, [target], self._tls, self._blocklist)
        return await endpoint.connect(factory)


@implementer(IAgentEndpointFactory)
class BlocklistingEndpointFactory:
    """Endpoints for ``https://`` URIs (only): address lookup, blocklist, verified TLS for
    the URI's host. Used for .well-known and each of its redirects."""

    def __init__(
        self,
        reactor: IReactor,
        addresses: AddressResolver,
        tls: FederationTlsPolicy,
        blocklist: IPBlocklist,
    ) -> None:
        self._reactor = reactor
        self._addresses = addresses
        self._tls = tls
        self._blocklist = blocklist

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        """The endpoint for ``uri``; only https is allowed."""
        if uri.scheme != HTTPS_SCHEME:
            raise ValueError(f"only https URIs are fetched, not {uri.scheme!r}")
        host = uri.host.decode("ascii")
        if host.startswith("["):
            host = host[1:-1]
        return _HostEndpoint(
            self._reactor, self._addresses, self._tls, self._blocklist, host=host, port=uri.port
        )


@implementer(IAgentEndpointFactory)
class MatrixFederationEndpointFactory:
    """Endpoints for ``matrix-federation://`` URIs: the resolution that
    :class:`MatrixFederationAgent` has just made for the URI's destination."""

    def __init__(
        self,
        reactor: IReactor,
        tls: FederationTlsPolicy,
        blocklist: IPBlocklist,
    ) -> None:
        self._reactor = reactor
        self._tls = tls
        self._blocklist = blocklist
        # Not a cache: the resolution handed from the agent to the endpoint of one request.
        self._pending: dict[bytes, Resolution] = {}
        self.connected: BoundedCache[str, Target] = BoundedCache(
            reactor, max_entries=POOL_MAX_DESTINATIONS
        )

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        """The endpoint for a destination the agent resolved just before."""
        if uri.scheme != MATRIX_FEDERATION_SCHEME:
            raise ValueError(f"not a matrix-federation URI: {uri.scheme!r}")
        resolution = self._pending.pop(uri.netloc, None)
        if resolution is None:
            raise ValueError(f"no resolution for {uri.netloc!r}")
        server_name = resolution.server_name

        def record(target: Target, address: str) -> None:
            self.connected.set(server_name, target, math.inf)

        return TargetsEndpoint(
            self._reactor,
            server_name,
            resolution.targets,
            self._tls,
            self._blocklist,
            on_connected=record,
        )

    def expect(self, netloc: bytes, resolution: Resolution) -> None:
        """Remember ``resolution`` for the next ``endpointForURI`` of ``netloc``."""
        self._pending[netloc] = resolution


#: Most destinations whose last connected target we remember.
POOL_MAX_DESTINATIONS = 100_000


def pool_netloc(server_name: str) -> bytes:
    """The netloc of the inner URI: the server name, with ``:0`` when it has no port so
    that ``example.com`` and ``example.com:80`` get separate pool keys."""
    text = server_name
    if not (text.rsplit(":", 1)[-1].isdigit() and (":" in text) and not text.endswith("]")):
        text = f"{text}:0"
    return text.encode("ascii")


@implementer(IAgent)
class MatrixFederationAgent:
    """``IAgent`` for ``matrix-federation://<server_name>/<path>`` (see module docstring).

    Fails with :class:`ResolutionFailed` when the name does not resolve and
    :class:`FederationConnectError` when no target connects.
    """

    def __init__(
        self,
        reactor: IReactor,
        resolver: FederationResolver,
        tls: FederationTlsPolicy,
        blocklist: IPBlocklist,
        pool: HTTPConnectionPool | None = None,
        *,
        limiter: OutboundLimiter | None = None,
    ) -> None:
        self._resolver = resolver
        self.limiter = limiter if limiter is not None else OutboundLimiter()
        if pool is None:
            pool = QuietHTTPConnectionPool(reactor, persistent=True)  # type: ignore[no-untyped-call]
            pool.maxPersistentPerHost = POOL_MAX_PER_DESTINATION
            pool.cachedConnectionTimeout = POOL_IDLE_TIMEOUT_SECONDS
        pool.retryAutomatically = False
        self.pool = pool
        self._endpoints = MatrixFederationEndpointFactory(reactor, tls, blocklist)
        self._agent = Agent.usingEndpointFactory(  # type: ignore[no-untyped-call]
            reactor, self._endpoints, pool=pool
        )

    def connected_target(self, server_name: str) -> Target | None:
        """The target the last new connection to ``server_name`` was made to."""
        return self._endpoints.connected.get(server_name)

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        """Resolve the URI's server name, then send the request with the spec's Host.

        The request holds a slot of :attr:`limiter` from before its resolution until its
        response body has been delivered, or it failed.
        """
        return Deferred.fromCoroutine(self._limited(method, uri, headers, bodyProducer))

    async def _limited(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None,
        bodyProducer: IBodyProducer | None,
    ) -> IResponse:
        destination = destination_of(uri)
        await self.limiter.acquire(destination)
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.limiter.release(destination)

        try:
            response = await self._request(method, uri, headers, bodyProducer)
        except BaseException:
            release()
            raise
        return ReleasingResponse(response, release)

    async def _request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None,
        bodyProducer: IBodyProducer | None,
    ) -> IResponse:
        parsed = URI.fromBytes(uri)  # type: ignore[no-untyped-call]
        if parsed.scheme != MATRIX_FEDERATION_SCHEME:
            raise ValueError(f"not a matrix-federation URI: {uri!r}")
        server_name = parsed.netloc.decode("ascii")
        resolution = await self._resolver.resolve(server_name)
        if resolution.error is not None:
            raise ResolutionFailed(resolution)
        headers = Headers() if headers is None else headers.copy()
        if not headers.hasHeader(b"host"):
            headers.addRawHeader(b"host", resolution.targets[0].host_header.encode("ascii"))
        netloc = pool_netloc(server_name)
        inner = URI(  # type: ignore[no-untyped-call]
            scheme=MATRIX_FEDERATION_SCHEME,
            netloc=netloc,
            host=netloc.rsplit(b":", 1)[0],
            port=int(netloc.rsplit(b":", 1)[1]),
            path=parsed.path,
            params=parsed.params,
            query=parsed.query,
            fragment=b"",
        ).toBytes()
        self._endpoints.expect(netloc, resolution)
        try:
            response: IResponse = await self._agent.request(method, inner, headers, bodyProducer)
            return response
        finally:
            self._endpoints._pending.pop(netloc, None)
