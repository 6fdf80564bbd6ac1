"""Building the outbound federation client: agent, resolver, key fetcher, from settings.

The one place that wires the outbound stack together (used by ``run``'s lazily built key
fetcher, the diagnostic commands and ``check``), so that the agent and the key fetcher do
not need to know each other.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.web.client import Agent
from twisted.web.iweb import IAgent

from stubserver.client.blocklist import IPBlocklist
from stubserver.discovery.dns import build_dns_clients
from stubserver.discovery.resolution import FederationResolver
from stubserver.discovery.srv import SrvResolver
from stubserver.discovery.well_known import WellKnownResolver
from stubserver.logs.quiet import QuietHTTPConnectionPool
from stubserver.tls.client import FederationTlsPolicy

if TYPE_CHECKING:
    from stubserver.client.backoff import DestinationBackoff
    from stubserver.config import FederationSettings

from stubserver.outbound.agent import (
    BlocklistingEndpointFactory,
    MatrixFederationAgent,
)
from stubserver.reactor import IReactor
from stubserver.server_keys.fetcher import ServerKeyFetcher


@dataclass(frozen=True)
class FederationContext:
    """Everything outbound federation needs, built once by :func:`build_federation_client`.

    ``agent`` (``matrix-federation://``), ``resolver`` (``resolve(name)``),
    ``key_fetcher`` (:class:`~stubserver.server_keys.fetcher.ServerKeyFetcher`), ``https_agent``
    (blocklisting, verifying ``https://`` agent), ``well_known``, ``srv``, ``tls``,
    ``blocklist`` and the ``settings`` they were built from.
    """

    agent: MatrixFederationAgent
    resolver: FederationResolver
    key_fetcher: ServerKeyFetcher
    https_agent: IAgent
    well_known: WellKnownResolver
    srv: SrvResolver
    tls: FederationTlsPolicy
    blocklist: IPBlocklist
    settings: FederationSettings


def build_federation_client(
    reactor: IReactor,
    settings: FederationSettings,
    *,
    rng: random.Random | None = None,
    dns: Any = None,
    backoff: DestinationBackoff | None = None,
) -> FederationContext:
    """Build the agent, resolver and key fetcher from ``settings``.

    ``reactor`` provides TCP, time and (for the system resolver) ``nameResolver``;
    ``dns`` overrides the DNS clients (a :class:`~stubserver.discovery.dns.DnsClients`), for tests.
    ``backoff`` (Synapse's schedule, :mod:`stubserver.client.backoff`) is accepted from
    ``run`` but key fetches ignore it, as Synapse's do: a peer that was down once must be
    able to authenticate to us as soon as it is back (issue 12).
    Raises :class:`~stubserver.tls.client.CaFileError` for an unreadable CA file.
    """

    rng = rng if rng is not None else random.SystemRandom()
    dns_clients = dns if dns is not None else build_dns_clients(reactor, settings.dns_servers)
    tls = FederationTlsPolicy(settings.ca_files, verify_certificates=settings.verify_certificates)
    blocklist = IPBlocklist.from_settings(settings.ip_range_blocklist, settings.ip_range_allowlist)
    pool = QuietHTTPConnectionPool(reactor, persistent=True)  # type: ignore[no-untyped-call]
    pool.retryAutomatically = False
    https_agent = Agent.usingEndpointFactory(  # type: ignore[no-untyped-call]
        reactor,
        BlocklistingEndpointFactory(reactor, dns_clients.addresses, tls, blocklist),
        pool=pool,
    )
    well_known = WellKnownResolver(https_agent, reactor, rng, port=settings.well_known_port)
    srv = SrvResolver(dns_clients.srv, reactor)
    resolver = FederationResolver(
        clock=reactor,
        well_known=well_known,
        srv=srv,
        addresses=dns_clients.addresses,
        blocklist=blocklist,
        rng=rng,
        default_port=settings.default_port,
    )
    agent = MatrixFederationAgent(reactor, resolver, tls, blocklist)
    return FederationContext(
        agent=agent,
        resolver=resolver,
        # Key fetches ignore the destination backoff, as Synapse's (ignore_backoff=True):
        # a backed-off origin would otherwise be locked out of authenticating (issue 12).
        key_fetcher=ServerKeyFetcher(agent, reactor),
        https_agent=https_agent,
        well_known=well_known,
        srv=srv,
        tls=tls,
        blocklist=blocklist,
        settings=settings,
    )
