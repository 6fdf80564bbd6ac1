"""Server name resolution (spec: Server-Server API, "Resolving server names").

The decisions are pure functions over parsed names and DNS answers
(:func:`direct_target`, :func:`srv_targets`, :func:`default_target`); the
:class:`FederationResolver` shell only fetches (.well-known, SRV, addresses) and calls
them. Steps and what each prescribes (Host header / certificate name; SNI is the
certificate name except for IP literals, which get no SNI):

====  ===========================================  ==========================  =============
step  when                                         Host header                 certificate
====  ===========================================  ==========================  =============
1     IP literal                                   server name (+port)         the IP
2     explicit port                                server name with port       hostname
3.1   .well-known → IP literal                     delegated name (+port)      the IP
3.2   .well-known → explicit port                  delegated name with port    delegated host
3.3   .well-known → ``_matrix-fed._tcp`` SRV       delegated hostname          delegated host
3.4   .well-known → ``_matrix._tcp`` SRV           delegated hostname          delegated host
3.5   .well-known → default port                   delegated hostname          delegated host
4     ``_matrix-fed._tcp`` SRV                     hostname                    hostname
5     ``_matrix._tcp`` SRV (deprecated)            hostname                    hostname
6     default port (8448)                          hostname                    hostname
====  ===========================================  ==========================  =============

The certificate is never checked against an SRV target. If ``_matrix-fed._tcp`` has
records, neither ``_matrix._tcp`` nor the default port is tried. Addresses of every
target are looked up and passed through the IP blocklist (any blocked address drops all
of the name's addresses); a resolution whose targets have no usable address has an
``error``.

Public surface: :class:`Target`, :class:`AddressLookup`, :class:`Resolution`
(``to_json()`` is exactly ``resolve --json``; ``srv_lookups``, ``address_lookups`` and
``well_known`` carry the per-step detail ``stubserver check`` needs),
:class:`FederationResolver` (``resolve(server_name) -> Deferred[Resolution]``, never
fails), and the pure step functions.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime

from stubserver.client.blocklist import BlockedAddress, IPBlocklist
from stubserver.discovery.dns import AddressLookupError, AddressResolver
from stubserver.discovery.server_name import InvalidServerName, ServerName, parse_server_name
from stubserver.discovery.srv import SrvLookup, SrvRecord, order_srv_records
from stubserver.discovery.well_known import WellKnownResult

SOURCE_IP_LITERAL = "ip_literal"
SOURCE_EXPLICIT_PORT = "explicit_port"
SOURCE_SRV = "srv"
SOURCE_LEGACY_SRV = "legacy_srv"
SOURCE_DEFAULT_PORT = "default_port"
#: Most SRV records of one name turned into targets (in RFC 2782 order): with 100 records,
#: one resolution made 200 address queries and 800 connection attempts (issue 12, row 7).
#: With it, one resolution makes at most 2 SRV queries and MAX_SRV_TARGETS address
#: lookups of 2 queries per CNAME hop (``discovery.dns.MAX_CNAME_HOPS``).
MAX_SRV_TARGETS = 10
SRV_FED_PREFIX = "_matrix-fed._tcp."
SRV_LEGACY_PREFIX = "_matrix._tcp."


@dataclass(frozen=True)
class Target:
    """One place to connect to, with the Host header and certificate name to use there.

    ``host`` is what was dialled (an IP literal bare, no brackets; an SRV target; or the
    server name's hostname); ``addresses`` are its usable addresses (after the blocklist);
    ``source`` is one of ``ip_literal``, ``explicit_port``, ``srv``, ``legacy_srv``,
    ``default_port``.
    """

    host: str
    port: int
    addresses: tuple[str, ...]
    host_header: str
    tls_server_name: str
    source: str

    def to_json(self) -> dict[str, Any]:
        """As one of ``resolve --json``'s ``targets``."""
        return {
            "host": self.host,
            "port": self.port,
            "addresses": list(self.addresses),
            "host_header": self.host_header,
            "tls_server_name": self.tls_server_name,
            "source": self.source,
        }


@dataclass(frozen=True)
class AddressLookup:
    """The address lookup of one target host: found, blocked, or failed."""

    host: str
    addresses: tuple[str, ...] = ()
    blocked: tuple[str, ...] = ()
    error: str | None = None
    temporary: bool = False

    def to_json(self) -> dict[str, Any]:
        """As a JSON object."""
        return {
            "host": self.host,
            "addresses": list(self.addresses),
            "blocked": list(self.blocked),
            "error": self.error,
        }


@dataclass(frozen=True)
class Resolution:
    """The outcome of resolving a server name; ``error`` set when it cannot be reached.

    ``failed_step`` names the step that failed (``server_name``, ``srv``, ``addresses``);
    ``temporary`` whether a retry may help. ``steps`` lists the spec steps taken, e.g.
    ``("well_known", "3.3 srv")``.
    """

    server_name: str
    well_known: WellKnownResult | None = None
    delegated_server_name: str | None = None
    targets: tuple[Target, ...] = ()
    error: str | None = None
    failed_step: str | None = None
    temporary: bool = False
    srv_lookups: tuple[SrvLookup, ...] = ()
    address_lookups: tuple[AddressLookup, ...] = ()
    steps: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """True when there is a target with an address to try."""
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        """Exactly ``resolve --json`` (DESIGN.md)."""
        return {
            "server_name": self.server_name,
            "well_known": None if self.well_known is None else self.well_known.to_json(),
            "delegated_server_name": self.delegated_server_name,
            "targets": [t.to_json() for t in self.targets],
            "error": self.error,
        }

    def detail_json(self) -> dict[str, Any]:
        """The per-step detail (SRV lookups, address lookups, steps), for ``check``."""
        return {
            "steps": list(self.steps),
            "failed_step": self.failed_step,
            "srv_lookups": [s.to_json() for s in self.srv_lookups],
            "address_lookups": [a.to_json() for a in self.address_lookups],
        }


def direct_target(name: ServerName, default_port: int) -> Target | None:
    """Steps 1/2 (and 3.1/3.2 for a delegated name): the target of an IP literal or an
    explicit port, without addresses yet; None when the name needs more steps."""
    if name.ip is not None:
        ip = str(name.ip)
        return Target(
            host=ip,
            port=name.port if name.port is not None else default_port,
            addresses=(ip,),
            host_header=str(name),
            tls_server_name=ip,
            source=SOURCE_IP_LITERAL,
        )
    if name.port is not None:
        return Target(
            host=name.host,
            port=name.port,
            addresses=(),
            host_header=str(name),
            tls_server_name=name.host,
            source=SOURCE_EXPLICIT_PORT,
        )
    return None


def srv_targets(records: Sequence[SrvRecord], hostname: str, source: str) -> list[Target]:
    """Steps 3.3/3.4/4/5: one target per (ordered) SRV record; Host header and certificate
    name stay the (delegated) hostname, never the SRV target."""
    return [
        Target(
            host=r.target,
            port=r.port,
            addresses=(),
            host_header=hostname,
            tls_server_name=hostname,
            source=source,
        )
        for r in records
    ]


def default_target(hostname: str, default_port: int) -> Target:
    """Steps 3.5/6: the hostname on the default port."""
    return Target(
        host=hostname,
        port=default_port,
        addresses=(),
        host_header=hostname,
        tls_server_name=hostname,
        source=SOURCE_DEFAULT_PORT,
    )


class WellKnownSource(Protocol):
    """Where delegation comes from: :class:`stubserver.discovery.well_known.WellKnownResolver`."""

    def get_well_known(self, host: str) -> Deferred[WellKnownResult]:
        """The .well-known outcome for ``host``; never fails."""


class SrvSource(Protocol):
    """Where SRV answers come from: :class:`stubserver.discovery.srv.SrvResolver`."""

    def lookup(self, name: str) -> Deferred[SrvLookup]:
        """The SRV lookup of ``name``; never fails."""


class FederationResolver:
    """Resolves server names to targets (see the module docstring)."""

    def __init__(
        self,
        *,
        clock: IReactorTime,
        well_known: WellKnownSource,
        srv: SrvSource,
        addresses: AddressResolver,
        blocklist: IPBlocklist,
        rng: random.Random,
        default_port: int,
    ) -> None:
        self._clock = clock
        self._well_known = well_known
        self._srv = srv
        self._addresses = addresses
        self._blocklist = blocklist
        self._rng = rng
        self._default_port = default_port

    def resolve(self, server_name: str) -> Deferred[Resolution]:
        """Resolve ``server_name``; never fails (errors are in the result)."""
        return Deferred.fromCoroutine(self._resolve(server_name))

    async def _resolve(self, server_name: str) -> Resolution:
        try:
            name = parse_server_name(server_name)
        except InvalidServerName as e:
            return Resolution(server_name, error=str(e), failed_step="server_name")
        direct = direct_target(name, self._default_port)
        if direct is not None:
            step = "1 ip_literal" if direct.source == SOURCE_IP_LITERAL else "2 explicit_port"
            return await self._finish(Resolution(server_name, steps=(step,)), [direct])

        well_known = await self._well_known.get_well_known(name.host)
        resolution = Resolution(server_name, well_known=well_known, steps=("3 well_known",))
        hostname = name.host
        prefix = ""
        if well_known.m_server is not None:
            delegated = parse_server_name(well_known.m_server)
            resolution = _with(resolution, delegated_server_name=well_known.m_server)
            direct = direct_target(delegated, self._default_port)
            if direct is not None:
                step = (
                    "3.1 ip_literal" if direct.source == SOURCE_IP_LITERAL else "3.2 explicit_port"
                )
                return await self._finish(_add_step(resolution, step), [direct])
            hostname = delegated.host
            prefix = "3."

        srv_lookups: list[SrvLookup] = []
        for srv_prefix, source, number in (
            (SRV_FED_PREFIX, SOURCE_SRV, "3" if prefix else "4"),
            (SRV_LEGACY_PREFIX, SOURCE_LEGACY_SRV, "4" if prefix else "5"),
        ):
            lookup = await self._srv.lookup(srv_prefix + hostname)
            srv_lookups.append(lookup)
            resolution = _with(resolution, srv_lookups=tuple(srv_lookups))
            step = f"{prefix}{number} {source}"
            if lookup.error is not None:
                return _with(
                    _add_step(resolution, step),
                    error=f"SRV {lookup.name}: {lookup.error}",
                    failed_step="srv",
                    temporary=lookup.temporary,
                )
            if lookup.refused:
                return _with(
                    _add_step(resolution, step),
                    error=f"SRV {lookup.name}: the service is not available there"
                    " (single record with target '.')",
                    failed_step="srv",
                )
            if lookup.found:
                ordered = order_srv_records(lookup.records, self._rng)[:MAX_SRV_TARGETS]
                return await self._finish(
                    _add_step(resolution, step), srv_targets(ordered, hostname, source)
                )
        step = f"{prefix}{'5' if prefix else '6'} default_port"
        return await self._finish(
            _add_step(resolution, step), [default_target(hostname, self._default_port)]
        )

    async def _finish(self, resolution: Resolution, targets: list[Target]) -> Resolution:
        hosts = list(dict.fromkeys(t.host for t in targets))
        lookups = await gatherResults([Deferred.fromCoroutine(self._lookup(h)) for h in hosts])
        by_host = dict(zip(hosts, lookups, strict=True))
        final = tuple(
            Target(
                host=t.host,
                port=t.port,
                addresses=by_host[t.host].addresses,
                host_header=t.host_header,
                tls_server_name=t.tls_server_name,
                source=t.source,
            )
            for t in targets
        )
        resolution = _with(resolution, targets=final, address_lookups=tuple(lookups))
        if any(t.addresses for t in final):
            return resolution
        first = lookups[0]
        if first.blocked:
            error = str(BlockedAddress(first.blocked[0], first.host))
        else:
            error = first.error or f"no address for {first.host}"
        return _with(
            resolution,
            error=error,
            failed_step="addresses",
            temporary=any(lk.temporary for lk in lookups),
        )

    async def _lookup(self, host: str) -> AddressLookup:
        try:
            found = await self._addresses.resolve_addresses(host)
        except CancelledError:
            raise
        except AddressLookupError as e:
            return AddressLookup(host, error=str(e), temporary=e.temporary)
        except Exception as e:
            return AddressLookup(
                host, error=f"address lookup of {host} failed: {e}", temporary=True
            )
        usable, blocked = self._blocklist.filter_addresses(host, found)
        return AddressLookup(host, addresses=usable, blocked=blocked)


def _with(resolution: Resolution, **changes: Any) -> Resolution:
    import dataclasses  # noqa: PLC0415

    return dataclasses.replace(resolution, **changes)


def _add_step(resolution: Resolution, step: str) -> Resolution:
    return _with(resolution, steps=(*resolution.steps, step))
