"""The routes and observers of one server's listeners (``site_parts``): its federation
extensions, and with rooms served, its room service, media store, request feed and
control routes."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stubserver.app.federation import FederationExtensions
from stubserver.config import CONTROL_RESOURCE, Config
from stubserver.reactor import IReactor
from stubserver.server.faults import ServerFaults
from stubserver.server.router import RequestObserver, Route

if TYPE_CHECKING:
    from stubserver.app.rooms_wiring import RoomServiceFactory


@dataclass(frozen=True)
class SiteParts:
    """What ``build_site`` is given besides the filters."""

    extra_routes: tuple[Route, ...]
    observers: tuple[RequestObserver, ...]
    routes_by_resource: dict[str, Sequence[Route]]
    #: The server's faults (issue 23), switched on the control listener; None without
    #: rooms served (nothing could switch them).
    faults: ServerFaults | None = None


def site_parts(
    config: Config,
    reactor: IReactor,
    extensions: FederationExtensions,
    service_factory: RoomServiceFactory | None = None,
    *,
    serves_rooms: bool | None = None,
) -> SiteParts:
    """The routes and observers of every listener.

    With a ``control`` listener, rooms are served: the room service is built
    (``stubserver.app.rooms_wiring.build_rooms``; ``service_factory`` replaces the
    service, for tests), federation listeners gain the room routes, the media download
    over a media store and a feed of their requests, and the control listener serves the
    control API over all of them (and the profiles of ``extensions``) and the server's
    faults (``stubserver.server.faults``). Without one, nothing drives rooms, so none are
    served, and there are no faults. ``serves_rooms`` says it for a server of several,
    whose own listeners carry no control listener (None: from ``config``).
    """
    extra_routes = extensions.routes
    observers = extensions.observers
    routes_by_resource = _report_routes(reactor, config)
    faults = None
    if serves_rooms is None:
        serves_rooms = any(listener.is_control for listener in config.listeners)
    if serves_rooms:
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
