"""Many servers in one ``run`` process (issue 23): who answers a request.

Every server of the config (``Config.every_server``: the primary, then ``servers:``) is a
:class:`HostedServer`: its own key document, signing key, key fetcher, notary, X-Matrix
check, profiles, room service, media store and request feed, built on the first request
that reaches it (the primary's at start-up, as before). What the servers share is the
process's: the reactor, the outbound stack (agent, connection pool, resolvers:
``stubserver.app.federation.SharedOutbound``), the request log's writer, the connection
counters and the listeners. A server knows the keys of the others from their key
documents, without a request (``stubserver.server_keys.local_keys``): its key fetcher
asks the network only for servers the process does not serve, and for its own name.

A listener several servers share chooses the server by the request's ``Host`` header
(:class:`HostDispatch`: its host, without the port, compared case-insensitively with
each server's name and delegated name, ``stubserver.config.servers.dispatch_hosts``) and
the TLS certificate by SNI (``stubserver.tls.sni``). A Host that names none of them (an
IP address, an alias, no Host at all) is the primary's: Synapse ignores Host altogether,
and a config of one server must go on answering whatever Host its clients send, as it
always has. Every request is noted with the name of the server that answered it
(``server`` in the request log object).

The control listener serves every server with one token: the routes of DESIGN.md, as
they are, address the primary; the same routes under
``/_stubserver/v1/servers/{server_name}`` address any server (:func:`control_table`,
which derives them from the per-server control routes, so a route added there is served
under the prefix too); ``GET /_stubserver/v1/servers`` lists the servers; a name that is
none of them is 404 ``M_NOT_FOUND``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from zope.interface import implementer

from stubserver.app.federation import (
    FederationExtensions,
    ProcessParts,
    build_federation_extensions,
)
from stubserver.app.server_parts import SiteParts, site_parts
from stubserver.app.site import listener_router, routes_for
from stubserver.config import CONTROL_RESOURCE, Config
from stubserver.config.servers import dispatch_hosts
from stubserver.control.api import PREFIX, check_bearer
from stubserver.reactor import IReactor
from stubserver.server.faults import ListenerControl, ServerFaults
from stubserver.server.limits import LimitedSite, ServerLimits
from stubserver.server.router import (
    FederationRouter,
    Handler,
    HandlerResult,
    JsonResponse,
    MatrixError,
    Route,
    request_annotations,
)

if TYPE_CHECKING:
    from stubserver.app.rooms_wiring import RoomServiceFactory

#: The path of the server list, and the root of every server's control routes.
SERVERS_PATH: Final = f"{PREFIX}/servers"
#: The route parameter naming the server under :data:`SERVERS_PATH`.
SERVER_PARAM: Final = "server_name"
#: The request annotation naming the server that answered (the request log's ``server``).
SERVER_ANNOTATION: Final = "server"


def host_from_header(value: bytes | None) -> str | None:
    """The host a ``Host`` header names, lower-cased, without port or IPv6 brackets
    (pure); None for none or one that is not ASCII."""
    if not value:
        return None
    try:
        text = value.decode("ascii").strip().lower()
    except UnicodeDecodeError:
        return None
    if text.startswith("["):
        end = text.find("]")
        return text[1:end] if end > 0 else None
    host = text.rsplit(":", 1)[0] if text.count(":") == 1 else text
    return host.rstrip(".") or None


class HostedServer:
    """One server of the process: its config, and its parts built on first use."""

    def __init__(
        self,
        config: Config,
        reactor: IReactor,
        process: ProcessParts,
        limits: ServerLimits,
        *,
        serves_rooms: bool,
        service_factory: RoomServiceFactory | None = None,
    ) -> None:
        self.config = config
        self._reactor = reactor
        self._process = process
        self._limits = limits
        self._serves_rooms = serves_rooms
        self._service_factory = service_factory
        self._built: tuple[FederationExtensions, SiteParts] | None = None
        self._routers: dict[frozenset[str], FederationRouter] = {}
        self._control: dict[tuple[str, str], Handler] | None = None
        #: The federation sites and listeners that serve this server alone (its faults'
        #: ``down`` closes those listeners and resets those sites' connections; a server
        #: on shared listeners is down by its requests being reset: the faults' gate).
        self._own_sites: tuple[LimitedSite, ...] = ()
        self._own_listeners: ListenerControl | None = None

    @property
    def name(self) -> str:
        """The server name."""
        return self.config.server_name

    @property
    def built(self) -> bool:
        """True once its parts exist (a request reached it, or it is the primary)."""
        return self._built is not None

    def _parts(self) -> tuple[FederationExtensions, SiteParts]:
        if self._built is None:
            extensions = build_federation_extensions(self.config, self._reactor, self._process)
            parts = site_parts(
                self.config,
                self._reactor,
                extensions,
                self._service_factory,
                serves_rooms=self._serves_rooms,
            )
            self._built = (extensions, parts)
            self._attach_faults()
        return self._built

    def attach_own(
        self,
        *,
        sites: Sequence[LimitedSite] = (),
        listeners: ListenerControl | None = None,
    ) -> None:
        """The federation ``sites`` and ``listeners`` that serve this server alone (now, or
        on its first request when not yet built)."""
        if sites:
            self._own_sites = tuple(sites)
        if listeners is not None:
            self._own_listeners = listeners
        if self._built is not None:
            self._attach_faults()

    def _attach_faults(self) -> None:
        assert self._built is not None
        faults = self._built[1].faults
        if faults is None:
            return
        if self._own_sites:
            faults.attach_sites(self._own_sites)
            self._own_sites = ()
        if self._own_listeners is not None:
            faults.attach_listeners(self._own_listeners)
            self._own_listeners = None

    @property
    def faults(self) -> ServerFaults | None:
        """Its faults (built now if not yet); None when it serves no rooms."""
        return self._parts()[1].faults

    @property
    def extensions(self) -> FederationExtensions:
        """Its federation extensions (built now if not yet)."""
        return self._parts()[0]

    def router(self, resources: frozenset[str]) -> FederationRouter:
        """Its router for a (non-control) listener serving ``resources``."""
        router = self._routers.get(resources)
        if router is None:
            extensions, parts = self._parts()
            routes = routes_for(
                resources,
                self.config,
                extensions.key_document,
                parts.extra_routes,
                parts.routes_by_resource,
            )
            faults = parts.faults
            router = listener_router(
                routes,
                self._reactor,
                self._limits,
                control=False,
                # The faults act after the X-Matrix filter: the log shows who sent what
                # they hit.
                filters=extensions.filters
                if faults is None
                else (*extensions.filters, faults.gate),
                observers=parts.observers,
            )
            self._routers[resources] = router
        return router

    def control_routes(self) -> Sequence[Route]:
        """Its control routes, unprefixed (``/_stubserver/v1/...``); none without rooms."""
        return self._parts()[1].routes_by_resource.get(CONTROL_RESOURCE, ())

    def control_handler(self, method: str, pattern: str) -> Handler | None:
        """The handler of its control route ``method`` ``pattern``, or None."""
        if self._control is None:
            self._control = {(r.method, r.pattern): r.handler for r in self.control_routes()}
        return self._control.get((method, pattern))


@implementer(IResource)
class HostDispatch:
    """The resource of a listener: each request goes to the router of the server its
    ``Host`` names (``by_host``), else to ``default``'s (module doc)."""

    isLeaf = True

    def __init__(
        self,
        resources: frozenset[str],
        default: HostedServer,
        by_host: Mapping[str, HostedServer],
        *,
        note_server: bool = True,
    ) -> None:
        self._resources = resources
        self._default = default
        # A listener whose hosts all name its default server needs no Host parsing (the
        # usual single server: the key endpoint's hot path, issue 22).
        self._by_host = {} if all(s is default for s in by_host.values()) else dict(by_host)
        #: Whether requests are noted with the answering server's name (the request
        #: log's ``server``): only in a process serving several, so that one server's log
        #: keeps DESIGN.md's shape exactly.
        self._note_server = note_server

    @property
    def alone(self) -> HostedServer | None:
        """The server this listener serves alone (every request goes to it, whatever its
        Host), else None."""
        return None if self._by_host else self._default

    def server_for(self, request: IRequest) -> HostedServer:
        """The server that answers ``request``."""
        if not self._by_host:
            return self._default
        values = request.requestHeaders.getRawHeaders(b"host")
        host = host_from_header(values[0] if values else None)
        return self._default if host is None else self._by_host.get(host, self._default)

    def render(self, request: IRequest) -> bytes | int:
        """Answer ``request`` with its server's router."""
        server = self.server_for(request)
        if self._note_server:
            request_annotations(request)[SERVER_ANNOTATION] = server.name
        return server.router(self._resources).render(request)

    def getChildWithDefault(self, name: bytes, request: IRequest) -> IResource:
        """Never consulted (a leaf); answers with itself."""
        return self

    def putChild(self, path: bytes, child: IResource) -> None:
        """Children are not supported."""
        raise NotImplementedError("HostDispatch takes servers, not children")


def hosts_of(servers: Sequence[HostedServer]) -> dict[str, HostedServer]:
    """``{host: server}`` for the Host headers and SNI names of ``servers`` (config
    parsing made them unique)."""
    return {host: server for server in servers for host in dispatch_hosts(server.config)}


def control_table(servers: Sequence[HostedServer], token: str) -> list[Route]:
    """The control listener's routes: the primary's (``servers[0]``) as they are, the
    server list, and every control route of a server under its prefix (module doc)."""
    primary = servers[0]
    template = list(primary.control_routes())
    by_name = {server.name: server for server in servers}
    token_bytes = token.encode("utf-8")

    def listing(request: IRequest, params: Mapping[str, str]) -> HandlerResult:
        check_bearer(request, token_bytes)
        return JsonResponse(
            200,
            {
                "servers": [
                    {"server_name": server.name, "primary": server is primary} for server in servers
                ]
            },
        )

    def forwarding(method: str, pattern: str) -> Handler:
        def forward(request: IRequest, params: Mapping[str, str]) -> HandlerResult:
            check_bearer(request, token_bytes)
            name = params[SERVER_PARAM]
            server = by_name.get(name)
            if server is None:
                raise MatrixError(404, "M_NOT_FOUND", f"no server {name[:300]!r} here")
            handler = server.control_handler(method, pattern)
            if handler is None:
                raise MatrixError(404, "M_UNRECOGNIZED", "Unrecognized request")
            rest = {k: v for k, v in params.items() if k != SERVER_PARAM}
            return handler(request, rest)

        return forward

    prefixed = [
        Route(
            route.method,
            f"{SERVERS_PATH}/{{{SERVER_PARAM}}}{route.pattern[len(PREFIX) :]}",
            forwarding(route.method, route.pattern),
        )
        for route in template
        if route.pattern.startswith(PREFIX + "/")
    ]
    return [*template, Route("GET", SERVERS_PATH, listing), *prefixed]
