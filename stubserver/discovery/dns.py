"""DNS clients for outbound federation: SRV lookups and address (A/AAAA) lookups.

By default SRV goes through a :mod:`twisted.names` client built from ``/etc/resolv.conf``
and addresses through the reactor's own name resolver (``getaddrinfo``, so ``/etc/hosts``
and nsswitch apply). With ``federation_dns_servers`` / ``--dns-server`` both SRV and
address lookups go to those servers through :mod:`twisted.names`.

Public surface:

- :class:`AddressResolver` (protocol): ``resolve_addresses(host) -> Deferred[tuple[str, ...]]``
- :class:`SystemAddressResolver`, :class:`NamesAddressResolver`: its two implementations
- :class:`AddressLookupError` (``temporary`` says whether a retry may help)
- :func:`build_dns_clients` → :class:`DnsClients` ``(srv: IResolver, addresses: AddressResolver)``
- :func:`is_name_error`: true for NXDOMAIN in any of twisted.names' spellings
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred, DeferredList, succeed
from twisted.internet.interfaces import (
    IHostnameResolver,
    IHostResolution,
    IReactorTime,
    IResolutionReceiver,
)
from twisted.names import client, dns
from twisted.names import error as dns_error
from twisted.python.failure import Failure
from zope.interface import implementer

from stubserver.cache import BoundedCache
from stubserver.logs.legacy import at_debug_level
from stubserver.logs.quiet import quiet_udp_reactor
from stubserver.reactor import IReactor

#: twisted.names retry schedule for one query, in seconds (total: their sum, 4 s).
DNS_QUERY_TIMEOUTS_SECONDS = (1, 3)
#: Address answers from twisted.names are cached for their TTL, at most this long.
MAX_ADDRESS_CACHE_SECONDS = 3600
#: Longest CNAME chain we follow for an address lookup.
MAX_CNAME_HOPS = 8
#: Most names whose addresses we cache at once.
MAX_ADDRESS_CACHE_ENTRIES = 100_000
RESOLV_CONF = b"/etc/resolv.conf"
DNS_PORT = 53


class AddressLookupError(Exception):
    """A host name has no usable address; ``temporary`` is True for timeouts and SERVFAIL."""

    def __init__(self, host: str, reason: str, *, temporary: bool) -> None:
        super().__init__(f"address lookup of {host} failed: {reason}")
        self.host = host
        self.reason = reason
        self.temporary = temporary


class AddressResolver(Protocol):
    """Looks up the IP addresses of a host name."""

    def resolve_addresses(self, host: str) -> Deferred[tuple[str, ...]]:
        """The host's addresses (IPv6 first if the resolver says so), or AddressLookupError."""


def is_name_error(exc: BaseException) -> bool:
    """True when ``exc`` says the name does not exist (NXDOMAIN)."""
    return isinstance(exc, dns_error.DNSNameError | dns_error.AuthoritativeDomainError) or (
        type(exc) is dns_error.DomainError
    )


def describe_dns_error(exc: BaseException) -> tuple[str, bool]:
    """``(text, temporary)`` for a twisted.names failure."""
    if is_name_error(exc):
        return "no such name (NXDOMAIN)", False
    if isinstance(exc, dns_error.DNSServerError):
        return "the DNS server failed (SERVFAIL)", True
    if isinstance(exc, dns_error.DNSQueryRefusedError):
        return "the DNS server refused the query (REFUSED)", True
    if isinstance(exc, dns_error.DNSQueryTimeoutError | TimeoutError | defer.TimeoutError):
        return "the DNS query timed out", True
    if isinstance(exc, dns_error.DNSFormatError):
        return "the DNS server rejected the query (FORMERR)", False
    if isinstance(exc, dns_error.DomainError):
        return f"DNS error: {type(exc).__name__}", True
    return f"DNS error: {exc or type(exc).__name__}", True


def _literal(host: str) -> str | None:
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        return None


@implementer(IResolutionReceiver)
class _Collector:
    def __init__(self) -> None:
        self.addresses: list[str] = []
        self.done: Deferred[list[str]] = Deferred()

    def resolutionBegan(self, resolutionInProgress: IHostResolution) -> None:
        pass

    def addressResolved(self, address: Any) -> None:
        host = str(address.host)
        if host not in self.addresses:
            self.addresses.append(host)

    def resolutionComplete(self) -> None:
        self.done.callback(self.addresses)


class SystemAddressResolver:
    """Addresses from the reactor's name resolver (getaddrinfo in a thread by default)."""

    def __init__(self, name_resolver: IHostnameResolver) -> None:
        self._resolver = name_resolver

    def resolve_addresses(self, host: str) -> Deferred[tuple[str, ...]]:
        """All TCP addresses of ``host``; an IP literal is its own address."""
        literal = _literal(host)
        if literal is not None:
            return succeed((literal,))
        collector = _Collector()
        self._resolver.resolveHostName(collector, host, 0, None, "TCP")

        def done(addresses: list[str]) -> tuple[str, ...]:
            if not addresses:
                raise AddressLookupError(host, "no address found", temporary=False)
            return tuple(addresses)

        return collector.done.addCallback(done)


class NamesAddressResolver:
    """A and AAAA lookups through a twisted.names resolver, cached for their TTL."""

    def __init__(self, resolver: Any, clock: IReactorTime) -> None:
        self._resolver = resolver
        self._clock = clock
        self._cache: BoundedCache[str, tuple[str, ...]] = BoundedCache(
            clock, max_entries=MAX_ADDRESS_CACHE_ENTRIES
        )

    def resolve_addresses(self, host: str) -> Deferred[tuple[str, ...]]:
        """IPv6 then IPv4 addresses of ``host``, following CNAMEs."""
        literal = _literal(host)
        if literal is not None:
            return succeed((literal,))
        cached = self._cache.get(host.lower())
        if cached is not None:
            return succeed(cached)
        return Deferred.fromCoroutine(self._lookup(host))

    async def _lookup(self, host: str) -> tuple[str, ...]:
        name = host
        for _ in range(MAX_CNAME_HOPS):
            results = await DeferredList(
                [
                    self._resolver.lookupIPV6Address(name, timeout=DNS_QUERY_TIMEOUTS_SECONDS),
                    self._resolver.lookupAddress(name, timeout=DNS_QUERY_TIMEOUTS_SECONDS),
                ],
                consumeErrors=True,
            )
            addresses: list[str] = []
            ttls: list[int] = []
            cname: str | None = None
            errors: list[BaseException] = []
            for ok, value in results:
                if not ok:
                    assert isinstance(value, Failure) and value.value is not None
                    if isinstance(value.value, CancelledError):
                        raise value.value
                    errors.append(value.value)
                    continue
                answers = value[0]
                for rr in answers:
                    if rr.type in (dns.A, dns.AAAA):
                        address = rr.payload.dottedQuad() if rr.type == dns.A else None
                        if address is None:
                            address = str(ipaddress.IPv6Address(rr.payload.address))
                        if address not in addresses:
                            addresses.append(address)
                            ttls.append(rr.ttl)
                    elif rr.type == dns.CNAME:
                        cname = rr.payload.name.name.decode("ascii", "replace")
            if addresses:
                ttl = min(*ttls, MAX_ADDRESS_CACHE_SECONDS)
                if ttl > 0:
                    self._cache.set(host.lower(), tuple(addresses), ttl)
                return tuple(addresses)
            if cname is not None and cname.rstrip(".").lower() != name.rstrip(".").lower():
                name = cname
                continue
            temporary = [e for e in errors if not is_name_error(e)]
            if temporary:
                reason, is_temporary = describe_dns_error(temporary[0])
                raise AddressLookupError(host, reason, temporary=is_temporary)
            if len(errors) == len(results):
                raise AddressLookupError(host, "no such name (NXDOMAIN)", temporary=False)
            raise AddressLookupError(host, "no A or AAAA record", temporary=False)
        raise AddressLookupError(host, f"more than {MAX_CNAME_HOPS} CNAMEs", temporary=False)


@dataclass(frozen=True)
class DnsClients:
    """The DNS side of outbound federation: an IResolver for SRV and an AddressResolver."""

    srv: Any
    addresses: AddressResolver


def build_dns_clients(reactor: IReactor, dns_servers: Sequence[tuple[str, int]]) -> DnsClients:
    """System DNS (resolv.conf for SRV, the reactor's resolver for addresses) or, when
    ``dns_servers`` is given, twisted.names against those servers for both."""
    if dns_servers:
        names = _names_client(reactor, servers=list(dns_servers))
        return DnsClients(srv=names, addresses=NamesAddressResolver(names, reactor))
    try:
        system = _names_client(reactor, resolv=RESOLV_CONF)
    except ValueError:
        system = _names_client(reactor, servers=[("127.0.0.1", DNS_PORT)])
    return DnsClients(srv=system, addresses=SystemAddressResolver(reactor.nameResolver))


def _names_client(reactor: IReactor, **kwargs: Any) -> Any:
    # It opens a UDP port with a protocol per query: made quiet, or each query writes four
    # lines; and it reads resolv.conf with two lines ("changed, reparsing", "Resolver
    # added"): at debug level (issue 24).
    return at_debug_level(
        partial(
            client.Resolver,
            reactor=quiet_udp_reactor(reactor),
            timeout=DNS_QUERY_TIMEOUTS_SECONDS,
            **kwargs,
        )
    )
