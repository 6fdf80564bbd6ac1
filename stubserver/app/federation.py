"""What ``stubserver run`` adds to the site: the profile route, the notary, the X-Matrix
filter and the request log, with the outbound stack built on first use.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from stubserver.app.profile import profile_route
from stubserver.auth.filter import XMatrixFilter
from stubserver.config import Config, ConfigError
from stubserver.profiles import ProfileTable
from stubserver.reactor import IReactor
from stubserver.server.request_log import RequestLog
from stubserver.server.router import (
    RequestFilter,
    RequestObserver,
    Route,
)
from stubserver.server_keys.key_document import KeyDocumentSource
from stubserver.server_keys.notary import Notary, notary_routes
from stubserver.server_keys.refetch_limit import RefetchLimit

if TYPE_CHECKING:
    from stubserver.client.backoff import DestinationBackoff
    from stubserver.outbound.build import FederationContext
    from stubserver.server_keys.fetcher import ServerKeyFetcher, ServerKeys

log = Logger()


@dataclass(frozen=True)
class FederationExtensions:
    """What ``stubserver run`` adds to ``build_site``: routes, filters, observers and our
    key document (:func:`stubserver.app.run.compose` passes them on).
    """

    routes: tuple[Route, ...]
    filters: tuple[RequestFilter, ...]
    observers: tuple[RequestObserver, ...]
    request_log: RequestLog | None
    #: The key fetcher the X-Matrix filter uses (the room service verifies PDUs with it).
    key_fetcher: LazyKeyFetcher
    #: Our key document, the one ``/_matrix/key/v2/server`` serves and the notary answers
    #: with for our own name (one source, so that both sign the same ``valid_until_ts``).
    key_document: KeyDocumentSource
    #: Our users' profiles: the config's, and those the control API sets.
    profiles: ProfileTable


class LazyKeyFetcher:
    """The key fetcher of ``run``, with the outbound stack built on the first fetch.

    Agent, DNS clients and connection pool cost about 40 ms and 3 MB at start-up, and a
    server that is never sent a signed request (or a notary query) never needs them.
    CA files are checked at start-up by the caller, so building cannot fail on them later.
    """

    def __init__(self, reactor: IReactor, config: Config, backoff: DestinationBackoff) -> None:
        self._reactor = reactor
        self._config = config
        self._backoff = backoff
        self._fetcher: ServerKeyFetcher | None = None
        self._context: FederationContext | None = None
        #: On-demand fetches (an unknown key ID, a key a PDU names): once a minute per
        #: server, shared by the X-Matrix check and the room signature checks.
        self.refetch_limit = RefetchLimit(reactor)

    @property
    def built(self) -> bool:
        """True once the outbound stack exists."""
        return self._fetcher is not None

    def _get(self) -> ServerKeyFetcher:
        if self._fetcher is None:
            self._fetcher = self.federation_context().key_fetcher
        return self._fetcher

    def federation_context(self) -> FederationContext:
        """The outbound stack (built now if not yet), shared with other outbound users."""
        if self._context is None:
            from stubserver.outbound.build import build_federation_client  # noqa: PLC0415

            self._context = build_federation_client(
                self._reactor, self._config.federation, backoff=self._backoff
            )
        return self._context

    def fetch(self, server_name: str) -> Deferred[ServerKeys]:
        """:meth:`ServerKeyFetcher.fetch`."""
        return self._get().fetch(server_name)

    def fetch_cached_or_fresh(self, server_name: str) -> Deferred[ServerKeys]:
        """:meth:`ServerKeyFetcher.fetch_cached_or_fresh`."""
        return self._get().fetch_cached_or_fresh(server_name)

    def cached(self, server_name: str) -> ServerKeys | None:
        """:meth:`ServerKeyFetcher.cached` (None while nothing was ever fetched)."""
        return None if self._fetcher is None else self._fetcher.cached(server_name)


def key_document_source(config: Config, clock: IReactorTime) -> KeyDocumentSource:
    """Our key document for ``config``: built once per process and shared by every listener
    and by the notary."""
    return KeyDocumentSource(
        clock,
        config.server_name,
        config.signing_keys,
        config.old_signing_keys,
        config.key_refresh_interval_ms,
    )


def build_federation_extensions(config: Config, reactor: IReactor) -> FederationExtensions:
    """Profile, notary, X-Matrix checking and the request log for ``config``.

    ``reactor`` provides time, TCP, threads (for the log writer) and system event
    triggers (the log is flushed before shutdown). The outbound side (key fetches for
    authentication and the notary) uses ``config.federation``. Raises ConfigError for an
    unreadable CA file.
    """
    from stubserver.auth.authenticator import RequestAuthenticator  # noqa: PLC0415
    from stubserver.client.backoff import DestinationBackoff  # noqa: PLC0415
    from stubserver.server.refusals import RefusalLog  # noqa: PLC0415
    from stubserver.server.request_log import (  # noqa: PLC0415
        FLUSH_DELAY_SECONDS,
        WriterThread,
    )
    from stubserver.tls.client import CaFileError, load_ca_file  # noqa: PLC0415

    for index, ca_file in enumerate(config.federation.ca_files):
        try:
            load_ca_file(ca_file)
        except CaFileError as e:
            raise ConfigError(f"federation_custom_ca_list[{index}]", str(e)) from None
    backoff = DestinationBackoff(reactor, random.SystemRandom())
    fetcher = LazyKeyFetcher(reactor, config, backoff)
    own_keys = key_document_source(config, reactor)
    notary: Notary[Any] = Notary(
        config.server_name,
        config.signing_key,
        own_keys=own_keys,
        fetch=fetcher.fetch_cached_or_fresh,
        refetch=fetcher.fetch,
        clock=reactor,
    )
    authenticator = RequestAuthenticator(
        config.server_name, fetcher, reactor, refetch_limit=fetcher.refetch_limit
    )
    request_log = None
    observers: tuple[RequestObserver, ...] = (RefusalLog(),)
    if config.request_log_path is not None:
        # Closed by run's shutdown, after open connections are aborted (_run.shut_down).
        request_log = RequestLog(
            config.request_log_path, reactor, WriterThread(reactor, FLUSH_DELAY_SECONDS)
        )
        observers = (request_log, *observers)
    profiles = ProfileTable(config.users)
    return FederationExtensions(
        routes=(profile_route(config.server_name, profiles), *notary_routes(notary)),
        filters=(XMatrixFilter(authenticator, on_authenticated=backoff.reset, clock=reactor),),
        observers=observers,
        request_log=request_log,
        key_fetcher=fetcher,
        key_document=own_keys,
        profiles=profiles,
    )
