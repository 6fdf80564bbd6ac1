"""The HTTP sites stubserver serves, one per configured listener.

A listener's ``resources`` choose its routes: ``federation`` (our key document, the
version endpoint and whatever ``extra_routes`` add: profile, notary, ...) and
``well_known`` (``/.well-known/matrix/server``). Everything else answers JSON 404.

A ``control`` listener (plain HTTP, a listener of its own) serves only the routes given
for it, under the same limits, but without the federation filters and observers (its
requests carry a bearer token, not X-Matrix, and are not federation requests to log) and
with a handler deadline of :data:`CONTROL_HANDLER_DEADLINE_SECONDS` and a connection budget
of its own (``MAX_CONTROL_CONNECTIONS``, in all and from one address: its clients are the
tests driving the peer, whose long polls from one address would otherwise use up the
federation listeners' per-address cap; issue 22, row 10).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from stubserver import __version__
from stubserver.config import Config, ListenerConfig
from stubserver.server.connections import MAX_CONTROL_CONNECTIONS, ConnectionCounter
from stubserver.server.limits import LimitedSite, ServerLimits
from stubserver.server.router import (
    FederationRouter,
    JsonResponse,
    MatrixError,
    RequestFilter,
    RequestObserver,
    Route,
)
from stubserver.server_keys.key_document import KeyDocumentSource, server_key_route
from stubserver.signing.canonical_json import encode_json

#: How long clients may cache our /.well-known/matrix/server answer, in seconds. The spec
#: asks clients to clamp to their own bounds; Synapse clamps to 5 minutes .. 48 hours.
WELL_KNOWN_MAX_AGE_SECONDS = 86400
#: The name in the version endpoint's answer.
SERVER_SOFTWARE_NAME = "stubserver"
#: The handler deadline of a control listener, in seconds: above the longest long poll
#: (``stubserver.control.api.MAX_WAIT_MS``) and a remote join's chain of requests.
CONTROL_HANDLER_DEADLINE_SECONDS = 300.0


@dataclass(frozen=True)
class ListenerSite:
    """A listener's configuration and the site that serves it.

    ``router`` is the listener's router for its (first) server; on a listener several
    servers share, the site's resource chooses among their routers by Host
    (``stubserver.app.hosting``).
    """

    listener: ListenerConfig
    site: LimitedSite
    #: Gives :attr:`router` (built on first use for a server other than the primary).
    router_of: Callable[[], FederationRouter]

    @property
    def router(self) -> FederationRouter:
        """The listener's router for its first server."""
        return self.router_of()


def version_route() -> Route:
    """``GET /_matrix/federation/v1/version``."""

    body = {"server": {"name": SERVER_SOFTWARE_NAME, "version": __version__}}
    answer = JsonResponse(200, body, encoded=encode_json(body))

    def handle(request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        return answer

    return Route("GET", "/_matrix/federation/v1/version", handle)


def well_known_route(m_server: str | None) -> Route:
    """``GET /.well-known/matrix/server``: ``{"m.server": ...}`` or 404 when not configured."""

    def handle(request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        if m_server is None:
            raise MatrixError(404, "M_NOT_FOUND", "No .well-known/matrix/server configured")
        return JsonResponse(
            200,
            {"m.server": m_server},
            {"Cache-Control": f"max-age={WELL_KNOWN_MAX_AGE_SECONDS}"},
        )

    return Route("GET", "/.well-known/matrix/server", handle)


def routes_for(
    resources: frozenset[str],
    config: Config,
    keys: KeyDocumentSource,
    extra_routes: Sequence[Route] = (),
    routes_by_resource: Mapping[str, Sequence[Route]] | None = None,
) -> list[Route]:
    """The route table of a listener serving ``resources``."""
    routes: list[Route] = []
    if "federation" in resources:
        routes += [server_key_route(keys), version_route(), *extra_routes]
    if "well_known" in resources:
        routes.append(well_known_route(config.serve_server_wellknown))
    for resource, more in (routes_by_resource or {}).items():
        if resource in resources:
            routes += more
    return routes


def build_site(
    config: Config,
    clock: IReactorTime,
    *,
    keys: KeyDocumentSource,
    extra_routes: Sequence[Route] = (),
    routes_by_resource: Mapping[str, Sequence[Route]] | None = None,
    filters: Sequence[RequestFilter] = (),
    observers: Sequence[RequestObserver] = (),
    limits: ServerLimits | None = None,
) -> tuple[ListenerSite, ...]:
    """One site per configured listener.

    ``keys`` is our key document (``stubserver.app.federation.key_document_source``): one
    per process, so that every listener and the notary serve the same document.
    Every site enforces ``limits`` (default: ``stubserver.server.limits``'s constants), with
    one connection cap shared by all federation (and well-known, report) listeners; control
    listeners share another (module doc).

    ``extra_routes`` join every ``federation`` listener; ``routes_by_resource`` adds
    routes to listeners serving the named resource (e.g. ``{"report": [...]}``).
    ``filters`` and ``observers`` apply to every listener (see ``stubserver.server.router``).
    """
    limits = limits if limits is not None else ServerLimits()
    connections = ConnectionCounter(limits.max_connections, limits.max_connections_per_address)
    control_connections = ConnectionCounter(MAX_CONTROL_CONNECTIONS, MAX_CONTROL_CONNECTIONS)
    sites = []
    for listener in config.listeners:
        control = listener.is_control
        router = listener_router(
            routes_for(listener.resources, config, keys, extra_routes, routes_by_resource),
            clock,
            limits,
            control=control,
            filters=filters,
            observers=observers,
        )
        site = LimitedSite(router, clock, limits, control_connections if control else connections)
        sites.append(ListenerSite(listener=listener, site=site, router_of=router_giver(router)))
    return tuple(sites)


def _same(router: FederationRouter) -> FederationRouter:
    return router


def router_giver(router: FederationRouter) -> Callable[[], FederationRouter]:
    """A :attr:`ListenerSite.router_of` giving ``router``, built already."""
    return partial(_same, router)


def listener_router(
    routes: Sequence[Route],
    clock: IReactorTime,
    limits: ServerLimits,
    *,
    control: bool,
    filters: Sequence[RequestFilter] = (),
    observers: Sequence[RequestObserver] = (),
) -> FederationRouter:
    """The router of a listener over ``routes``: a control listener's without the
    federation ``filters`` and ``observers`` and with its own handler deadline (module doc)."""
    return FederationRouter(
        routes,
        filters=() if control else filters,
        observers=() if control else observers,
        clock=clock,
        handler_deadline_seconds=CONTROL_HANDLER_DEADLINE_SECONDS
        if control
        else limits.handler_deadline_seconds,
    )
