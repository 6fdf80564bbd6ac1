"""``stubserver run -c CONFIG``: serve every configured TLS listener until SIGINT/SIGTERM.

Start-up order: parse the config, load every certificate and key, bind every address;
only then print the one ready line (contract: DESIGN.md, "Command line") and serve. Any
fault before that point is one line on stderr and exit status 2, with nothing served.

Binding follows Synapse: a listener without ``bind_addresses`` binds ``::`` and
``0.0.0.0``; when ``::`` is dual-stack the second bind fails with EADDRINUSE and is
ignored. Port 0 takes a free port for the listener's first address and reuses it for
the others, so that one listener answers on one port.
"""

from __future__ import annotations

import errno
import json
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IListeningPort,
    IReactorSSL,
    IReactorTCP,
    IReactorTime,
)
from twisted.internet.task import deferLater
from twisted.logger import Logger

from stubserver.app.federation import FederationExtensions, build_process_parts
from stubserver.app.gc_pacing import GcPacer
from stubserver.app.hosting import HostDispatch, HostedServer, control_table, hosts_of
from stubserver.app.own_listeners import FEDERATION_RESOURCE, OwnFederationListeners
from stubserver.app.site import ListenerSite, listener_router, router_giver
from stubserver.config import Config, ConfigError, ListenerConfig, load_config
from stubserver.config.servers import dispatch_hosts
from stubserver.logs.legacy import at_debug_level
from stubserver.logs.output import start_logging
from stubserver.reactor import IReactor, global_reactor
from stubserver.server.connections import MAX_CONTROL_CONNECTIONS, ConnectionCounter
from stubserver.server.faults import ServerFaults
from stubserver.server.limits import LimitedSite, ServerLimits
from stubserver.server.request_log import RequestLog
from stubserver.server.router import FederationRouter
from stubserver.tls.server import server_tls_options
from stubserver.tls.sni import ServerCertificate, ServerTlsOptions, SniContextFactory

EXIT_OK = 0
#: Backlog of each listening socket.
LISTEN_BACKLOG = 128
IPV6_ANY = "::"
IPV4_ANY = "0.0.0.0"  # noqa: S104 - binding every interface is what the admin asked for

if TYPE_CHECKING:
    from stubserver.app.rooms_wiring import RoomServiceFactory

log = Logger()


@dataclass(frozen=True)
class BoundListener:
    """One listening socket: the address and port it is bound to and what it serves."""

    address: str
    port: int
    resources: tuple[str, ...]
    listening: IListeningPort
    #: The index of the listener (and site) this socket serves.
    listener_index: int = 0

    def ready_entry(self) -> dict[str, Any]:
        """This socket as an entry of the ready line's ``listeners``."""
        return {"address": self.address, "port": self.port, "resources": list(self.resources)}


def ignorable_bind_failure(address: str, bound_here: Sequence[str], error_number: int) -> bool:
    """True when a failed bind is the expected clash of ``0.0.0.0`` with a dual-stack ``::``."""
    return address == IPV4_ANY and IPV6_ANY in bound_here and error_number == errno.EADDRINUSE


def tls_options_for(
    config_listeners: Sequence[ListenerConfig],
    by_host: Mapping[str, ServerCertificate] | None = None,
) -> list[ServerTlsOptions | None]:
    """Each listener's TLS options, loaded and checked now (ConfigError on any fault);
    None for a plain-HTTP (control) listener. With ``by_host`` (the certificates of the
    other servers sharing these listeners, by host), the one an SNI names is served
    instead of the listener's (``stubserver.tls.sni``)."""
    options: list[ServerTlsOptions | None] = []
    for i, listener in enumerate(config_listeners):
        where = listener.config_key or f"listeners[{i}]"
        if listener.tls_certificate_path is None or listener.tls_private_key_path is None:
            options.append(None)
            continue
        own = server_tls_options(
            listener.tls_certificate_path,
            listener.tls_private_key_path,
            cert_key=f"{where}.tls_certificate_path",
            key_key=f"{where}.tls_private_key_path",
        )
        options.append(SniContextFactory(own, by_host) if by_host else own)
    return options


def server_certificates(config: Config) -> dict[str, ServerCertificate]:
    """``{host: certificate}`` of the servers of ``config.servers`` that share the
    top-level listeners, each checked now (one per pair of files)."""
    by_files: dict[tuple[Path, Path], ServerCertificate] = {}
    by_host: dict[str, ServerCertificate] = {}
    for server in config.servers:
        if server.own_listeners:
            continue
        cert, key = server.tls_certificate_path, server.tls_private_key_path
        assert cert is not None and key is not None  # required of every server entry
        certificate = by_files.get((cert, key))
        if certificate is None:
            certificate = ServerCertificate(
                cert,
                key,
                cert_key=f"servers[{server.server_name}].tls_certificate_path",
                key_key=f"servers[{server.server_name}].tls_private_key_path",
            )
            by_files[(cert, key)] = certificate
        for host in dispatch_hosts(server):
            by_host[host] = certificate
    return by_host


def _describe_socket_error(error: CannotListenError) -> str:
    socket_error = error.socketError
    if isinstance(socket_error, OSError) and socket_error.errno == errno.EADDRINUSE:
        return "address already in use"
    if isinstance(socket_error, OSError) and socket_error.strerror:
        return socket_error.strerror.lower()
    return str(socket_error)


def listen(
    reactor: IReactorSSL,
    port: int,
    factory: LimitedSite,
    tls: ServerTlsOptions | None,
    address: str,
) -> IListeningPort:
    """Listen on ``address``:``port`` for ``factory`` (TLS, or plain TCP where ``tls`` is
    None); raises CannotListenError."""
    # Twisted's "<site> starting on N" at debug: "Listening on" says it.
    if tls is None:
        listening: IListeningPort = at_debug_level(
            IReactorTCP(reactor).listenTCP, port, factory, LISTEN_BACKLOG, address
        )
    else:
        listening = at_debug_level(reactor.listenSSL, port, factory, tls, LISTEN_BACKLOG, address)
    return listening


def bind_all(
    reactor: IReactorSSL,
    sites: Sequence[ListenerSite],
    options: Sequence[ServerTlsOptions | None],
) -> list[BoundListener]:
    """Bind every listener's addresses (TLS, or plain TCP where ``options`` has None); on a
    failure close what was bound and raise ConfigError."""
    bound: list[BoundListener] = []
    try:
        for i, (entry, tls) in enumerate(zip(sites, options, strict=True)):
            listener = entry.listener
            port = listener.port
            bound_here: list[str] = []
            for j, address in enumerate(listener.bind_addresses):
                try:
                    listening = listen(reactor, port, entry.site, tls, address)
                except CannotListenError as e:
                    number = getattr(e.socketError, "errno", None) or 0
                    if ignorable_bind_failure(address, bound_here, number):
                        log.debug(
                            "Not binding {address}:{port}: [::] is dual-stack and covers it",
                            address=address,
                            port=port,
                        )
                        continue
                    shown = f"[{address}]" if ":" in address else address
                    where = listener.config_key or f"listeners[{i}]"
                    raise ConfigError(
                        f"{where}.bind_addresses[{j}]",
                        f"cannot listen on {shown}:{port}: {_describe_socket_error(e)}",
                    ) from None
                port = listening.getHost().port  # type: ignore[attr-defined]
                bound_here.append(address)
                bound.append(
                    BoundListener(address, port, tuple(sorted(listener.resources)), listening, i)
                )
    except BaseException:
        for b in bound:
            b.listening.stopListening()
        raise
    return bound


def close_all(bound: Sequence[BoundListener]) -> Deferred[Any]:
    """Stop every listening socket; fires when all are closed."""
    closing = []
    for b in bound:
        d = b.listening.stopListening()
        if isinstance(d, Deferred):
            closing.append(d)
    return DeferredList(closing, consumeErrors=True)


def shut_down(
    reactor: IReactorTime,
    bound: Sequence[BoundListener],
    sites: Sequence[ListenerSite],
    request_log: RequestLog | None,
) -> Deferred[Any]:
    """Stop listening, abort open connections, then write the request log out.

    The order matters for "nothing lost": a request still in flight is answered to its
    observers as abandoned when its connection is aborted, and that happens on the next
    reactor turn (``abortConnection``), so the log is closed only after that turn.
    """
    d = close_all(bound)
    for counter in {id(s.site.connections): s.site.connections for s in sites}.values():
        counter.abort_all()
    d.addCallback(lambda _: deferLater(reactor, 0, lambda: None))
    if request_log is not None:
        log_writer = request_log
        d.addCallback(lambda _: log_writer.close())
    return d


def ready_line(
    server_name: str, bound: Sequence[BoundListener], servers: Sequence[str] = ()
) -> str:
    """The one JSON line printed once every listener is bound; ``servers`` (every server
    name, the primary's first) is added when there are more than one."""
    line: dict[str, Any] = {
        "ready": True,
        "server_name": server_name,
        "listeners": [b.ready_entry() for b in bound],
    }
    if len(servers) > 1:
        line["servers"] = list(servers)
    return json.dumps(line)


def serve(config_path: Path, *, verbose: bool = False) -> int:
    """The composition root of ``stubserver run`` (entry: ``stubserver.cli.run``): serve the
    config at ``config_path`` until SIGINT or SIGTERM; ConfigError propagates (exit 2).
    The log goes to stderr from the config's ``log_level`` (``verbose``: from debug).
    """
    config = load_config(config_path)
    options = tls_options_for(config.listeners, server_certificates(config)) + [
        option
        for server in config.servers
        if server.own_listeners
        for option in tls_options_for(server.listeners)
    ]

    reactor = global_reactor()
    composed = compose(config, reactor)
    sites = composed.sites
    bound = bind_all(reactor, sites, options)

    def rebind(b: BoundListener) -> BoundListener:
        index = b.listener_index
        return replace(
            b, listening=listen(reactor, b.port, sites[index].site, options[index], b.address)
        )

    # Each server's listeners of its own go down with it (fault injection); the rest stay.
    owners = composed.owners
    fixed = [b for b in bound if owners[b.listener_index] is None]
    owns: list[OwnFederationListeners[BoundListener]] = []
    for server in composed.servers:
        mine = [b for b in bound if owners[b.listener_index] is server]
        if mine:
            own = OwnFederationListeners(mine, rebind)
            owns.append(own)
            server.attach_own(listeners=own)
    # Logging starts only once every socket is bound: until then a fault must show as the
    # one line stubserver.cli.main prints. Twisted buffers earlier events and replays them now.
    start_logging(sys.stderr, "debug" if verbose else config.log_level)
    for b in bound:
        log.info(
            "Listening on {address} port {port} for {resources}",
            address=b.address,
            port=b.port,
            resources=",".join(b.resources),
        )

    def announce() -> None:
        names = [server.server_name for server in config.every_server]
        sys.stdout.write(ready_line(config.server_name, bound, names) + "\n")
        sys.stdout.flush()

    reactor.callWhenRunning(announce)
    # The garbage collector runs on a timer from here on (issue 22: full collections
    # inside requests), once start-up's objects are frozen.
    reactor.callWhenRunning(GcPacer(reactor).start)
    request_log = composed.request_log
    # The sockets bound at shutdown (fault injection's down closes and reopens some).
    reactor.addSystemEventTrigger(
        "before",
        "shutdown",
        lambda: shut_down(
            reactor, [*fixed, *(b for o in owns for b in o.bound)], sites, request_log
        ),
    )
    # SIGINT stops us whatever we inherited (DESIGN.md: "serves until SIGINT or SIGTERM"). A
    # shell starts a background job (`stubserver run &`, as CI scripts do) with SIGINT
    # ignored; Python then leaves it ignored, and Twisted only takes over a SIGINT that
    # still has Python's default handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    reactor.run()
    log.info("Stopped")
    return EXIT_OK


@dataclass(frozen=True)
class Composition:
    """What ``run`` serves: a site per listener, over the servers of the config."""

    #: The primary server's extensions.
    extensions: FederationExtensions
    sites: tuple[ListenerSite, ...]
    #: Every server (the primary first), built on first use but the primary.
    servers: tuple[HostedServer, ...]
    #: The request log's writer, shared by every server (None: no ``request_log_path``).
    request_log: RequestLog | None
    #: For each site, the server it serves alone (its faults' ``down`` acts on it), or
    #: None (the control listener, or a listener servers share).
    owners: tuple[HostedServer | None, ...] = ()

    @property
    def faults(self) -> ServerFaults | None:
        """The primary server's faults (None: no control listener to switch them)."""
        return self.servers[0].faults


def per_address_cap(limits: ServerLimits, servers: int) -> int:
    """The cap on connections from one address over every listener of a process serving
    ``servers`` servers (pure): the one-server cap for each, within the global cap. A
    homeserver holds a connection per peer, so to N servers of ours N connections from
    its one address (issue 23: a room of 100 of them)."""
    return min(limits.max_connections, limits.max_connections_per_address * servers)


def compose(
    config: Config, reactor: IReactor, service_factory: RoomServiceFactory | None = None
) -> Composition:
    """Every listener's site for ``config``: the top-level listeners, shared by the
    primary and every server without listeners of its own (chosen by Host,
    ``stubserver.app.hosting``), then the listeners of the servers that have their own.
    Each server has one key document (served at ``/_matrix/key/v2/server`` and by the
    notary), one key fetcher and one room service; all share the request log and the
    outbound stack. ``service_factory`` replaces the room service, for tests."""
    process = build_process_parts(config, reactor)
    limits = ServerLimits()
    serves_rooms = any(listener.is_control for listener in config.listeners)
    servers = tuple(
        HostedServer(
            server_config,
            reactor,
            process,
            limits,
            serves_rooms=serves_rooms,
            service_factory=service_factory,
        )
        for server_config in config.every_server
    )
    primary = servers[0]
    shared_hosts = hosts_of([s for s in servers if not s.config.own_listeners])
    connections = ConnectionCounter(limits.max_connections, per_address_cap(limits, len(servers)))
    control_connections = ConnectionCounter(MAX_CONTROL_CONNECTIONS, MAX_CONTROL_CONNECTIONS)
    sites: list[ListenerSite] = []
    owners: list[HostedServer | None] = []
    served = [(listener, primary, shared_hosts) for listener in config.listeners] + [
        (listener, server, {})
        for server in servers[1:]
        if server.config.own_listeners
        for listener in server.config.listeners
    ]
    for listener, server, by_host in served:
        router_of: Callable[[], FederationRouter]
        if listener.is_control:
            assert config.control_token is not None  # config parsing requires it
            control = listener_router(
                control_table(servers, config.control_token), reactor, limits, control=True
            )
            site = LimitedSite(control, reactor, limits, control_connections)
            router_of = router_giver(control)
        else:
            dispatch = HostDispatch(
                listener.resources, server, by_host, note_server=len(servers) > 1
            )
            site = LimitedSite(dispatch, reactor, limits, connections)
            router_of = partial(server.router, listener.resources)
        sites.append(ListenerSite(listener=listener, site=site, router_of=router_of))
        owners.append(None if listener.is_control else dispatch.alone)
    for server in servers:
        server.attach_own(
            sites=[
                entry.site
                for entry, owner in zip(sites, owners, strict=True)
                if owner is server and FEDERATION_RESOURCE in entry.listener.resources
            ]
        )
    return Composition(
        primary.extensions, tuple(sites), servers, process.request_log, tuple(owners)
    )
