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
import random
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReactorSSL, IReactorTCP, IReactorTime
from twisted.internet.ssl import CertificateOptions
from twisted.internet.task import deferLater
from twisted.logger import Logger

from stubserver.app.federation import FederationExtensions, build_federation_extensions
from stubserver.app.own_listeners import FEDERATION_RESOURCE, OwnFederationListeners
from stubserver.app.site import ListenerSite, build_site
from stubserver.config import CONTROL_RESOURCE, Config, ConfigError, ListenerConfig, load_config
from stubserver.logs.legacy import at_debug_level
from stubserver.logs.output import start_logging
from stubserver.reactor import IReactor, global_reactor
from stubserver.server.faults import ServerFaults
from stubserver.server.limits import LimitedSite
from stubserver.server.request_log import RequestLog
from stubserver.server.router import RequestObserver, Route
from stubserver.tls.server import server_tls_options

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
) -> list[CertificateOptions | None]:
    """Each listener's TLS options, loaded and checked now (ConfigError on any fault);
    None for a plain-HTTP (control) listener."""
    return [
        None
        if listener.tls_certificate_path is None or listener.tls_private_key_path is None
        else server_tls_options(
            listener.tls_certificate_path,
            listener.tls_private_key_path,
            cert_key=f"listeners[{i}].tls_certificate_path",
            key_key=f"listeners[{i}].tls_private_key_path",
        )
        for i, listener in enumerate(config_listeners)
    ]


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
    tls: CertificateOptions | None,
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
    options: Sequence[CertificateOptions | None],
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
                    raise ConfigError(
                        f"listeners[{i}].bind_addresses[{j}]",
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


def ready_line(server_name: str, bound: Sequence[BoundListener]) -> str:
    """The one JSON line printed once every listener is bound."""
    return json.dumps(
        {
            "ready": True,
            "server_name": server_name,
            "listeners": [b.ready_entry() for b in bound],
        }
    )


def serve(config_path: Path, *, verbose: bool = False) -> int:
    """The composition root of ``stubserver run`` (entry: ``stubserver.cli.run``): serve the
    config at ``config_path`` until SIGINT or SIGTERM; ConfigError propagates (exit 2).
    The log goes to stderr from the config's ``log_level`` (``verbose``: from debug).
    """
    config = load_config(config_path)
    options = tls_options_for(config.listeners)

    reactor = global_reactor()
    composed = compose(config, reactor)
    sites = composed.sites
    bound = bind_all(reactor, sites, options)

    def rebind(b: BoundListener) -> BoundListener:
        index = b.listener_index
        return replace(
            b, listening=listen(reactor, b.port, sites[index].site, options[index], b.address)
        )

    own = OwnFederationListeners(bound, rebind)
    if composed.faults is not None:
        composed.faults.attach_listeners(own)
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
        sys.stdout.write(ready_line(config.server_name, bound) + "\n")
        sys.stdout.flush()

    reactor.callWhenRunning(announce)
    request_log = composed.extensions.request_log
    # own.bound: the sockets bound at shutdown (fault injection's down closes and reopens some).
    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: shut_down(reactor, own.bound, sites, request_log)
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
    """What ``run`` serves: a site per listener, the extensions they share, and the
    server's faults (None without a control listener to switch them)."""

    extensions: FederationExtensions
    sites: tuple[ListenerSite, ...]
    faults: ServerFaults | None = None


def compose(
    config: Config, reactor: IReactor, service_factory: RoomServiceFactory | None = None
) -> Composition:
    """Every listener's site for ``config``, over one set of shared parts: one key document
    (served at ``/_matrix/key/v2/server`` and by the notary), one key fetcher, one request
    log, one room service. ``service_factory`` replaces the room service, for tests."""
    extensions = build_federation_extensions(config, reactor)
    parts = site_parts(config, reactor, extensions, service_factory)
    faults = parts.faults
    sites = build_site(
        config,
        reactor,
        keys=extensions.key_document,
        extra_routes=parts.extra_routes,
        # The faults act after the X-Matrix filter: the log shows who sent what they hit.
        filters=extensions.filters if faults is None else (*extensions.filters, faults.gate),
        observers=parts.observers,
        routes_by_resource=parts.routes_by_resource,
    )
    if faults is not None:
        faults.attach_sites(s.site for s in sites if FEDERATION_RESOURCE in s.listener.resources)
    return Composition(extensions, sites, faults)


@dataclass(frozen=True)
class SiteParts:
    """What ``build_site`` is given besides the filters."""

    extra_routes: tuple[Route, ...]
    observers: tuple[RequestObserver, ...]
    routes_by_resource: dict[str, Sequence[Route]]
    faults: ServerFaults | None = None


def site_parts(
    config: Config,
    reactor: IReactor,
    extensions: FederationExtensions,
    service_factory: RoomServiceFactory | None = None,
) -> SiteParts:
    """The routes and observers of every listener.

    With a ``control`` listener, rooms are served: the room service is built
    (``stubserver.app.rooms_wiring.build_rooms``; ``service_factory`` replaces the
    service, for tests), federation listeners gain the room routes, the media download
    over a media store and a feed of their requests, and the control listener serves the
    control API over all of them (and the profiles of ``extensions``). Without one,
    nothing drives rooms, so none are served. The control listener also switches the
    server's faults (``stubserver.server.faults``; none without one).
    """
    extra_routes = extensions.routes
    observers = extensions.observers
    routes_by_resource = _report_routes(reactor, config)
    faults = None
    if any(listener.is_control for listener in config.listeners):
        from stubserver.app.rooms_wiring import (  # noqa: PLC0415
            build_rooms,
            control_listener_routes,
        )
        from stubserver.control.feed import RequestFeed  # noqa: PLC0415

        if service_factory is None:
            rooms = build_rooms(config, reactor, extensions.key_fetcher)
        else:
            rooms = build_rooms(
                config, reactor, extensions.key_fetcher, service_factory=service_factory
            )
        from stubserver.media.download import media_routes  # noqa: PLC0415
        from stubserver.media.store import MediaStore  # noqa: PLC0415

        feed = RequestFeed(reactor)
        media = MediaStore()
        extra_routes = (*extra_routes, *rooms.federation_routes, *media_routes(media))
        observers = (*observers, feed)
        from stubserver.control.faults_api import fault_routes  # noqa: PLC0415

        faults = ServerFaults(reactor, random.Random())  # noqa: S311 - shares, not secrets
        routes_by_resource[CONTROL_RESOURCE] = [
            *control_listener_routes(
                config, rooms.service, feed, profiles=extensions.profiles, media=media
            ),
            *fault_routes(faults, config.control_token or ""),
        ]
    return SiteParts(extra_routes, observers, routes_by_resource, faults)


def _report_routes(reactor: IReactor, config: Config) -> dict[str, Sequence[Route]]:
    """The report resource's routes, imported only when a listener serves ``report``.

    The check machinery behind them costs about 40 ms and 3 MB at start-up; a server that
    does not serve reports should not pay for it.
    """
    if not any("report" in listener.resources for listener in config.listeners):
        return {}
    from stubserver.check.api import report_routes_for  # noqa: PLC0415

    return {"report": report_routes_for(reactor, config)}
