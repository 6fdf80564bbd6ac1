"""What ``stubserver run`` adds to the site: the profile route, the notary, the X-Matrix
filter and the request log, with the outbound stack built on first use.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
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
from stubserver.server_keys.local_keys import LocalKeyLookup, LocalServerKeys, no_local_keys
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


class SharedOutbound:
    """The outbound stack of a process (agent, connection pool, resolvers and their caches,
    TLS policy), built on first use and shared by every server the process serves: what
    a server sends differs only in its signature (``stubserver.outbound.signed_request``).

    Agent, DNS clients and connection pool cost about 40 ms and 3 MB at start-up, and a
    process that never sends a request never needs them. CA files are checked at start-up
    (:func:`build_process_parts`), so building cannot fail on them later.
    """

    def __init__(self, reactor: IReactor, config: Config) -> None:
        self._reactor = reactor
        self._config = config
        self._context: FederationContext | None = None

    @property
    def built(self) -> bool:
        """True once the stack exists."""
        return self._context is not None

    def federation_context(self) -> FederationContext:
        """The outbound stack, built now if not yet."""
        if self._context is None:
            from stubserver.outbound.build import build_federation_client  # noqa: PLC0415

            self._context = build_federation_client(self._reactor, self._config.federation)
        return self._context


class LazyKeyFetcher:
    """A server's key fetcher in ``run``, over the process's outbound stack, built on the
    first fetch (:class:`SharedOutbound`: none is built for a server never sent a signed
    request nor a notary query). Each server keeps a key cache of its own, as a homeserver
    does (its fetches are its own to count).

    The keys of the other servers of the same process are not fetched: ``siblings`` gives
    them from their own key documents (:mod:`stubserver.server_keys.local_keys`), for
    every use (cached, fetched, fetched again).
    """

    def __init__(
        self,
        reactor: IReactor,
        config: Config,
        backoff: DestinationBackoff,
        outbound: SharedOutbound | None = None,
        siblings: LocalKeyLookup = no_local_keys,
    ) -> None:
        """``outbound`` None: a stack of its own (a process of one server)."""
        self._reactor = reactor
        self._outbound = outbound if outbound is not None else SharedOutbound(reactor, config)
        self._backoff = backoff
        self._siblings = siblings
        self._fetcher: ServerKeyFetcher | None = None
        #: On-demand fetches (an unknown key ID, a key a PDU names): once a minute per
        #: server, shared by the X-Matrix check and the room signature checks.
        self.refetch_limit = RefetchLimit(reactor)

    @property
    def built(self) -> bool:
        """True once the outbound stack exists."""
        return self._fetcher is not None

    def _get(self) -> ServerKeyFetcher:
        if self._fetcher is None:
            from stubserver.server_keys.fetcher import ServerKeyFetcher  # noqa: PLC0415

            self._fetcher = ServerKeyFetcher(self.federation_context().agent, self._reactor)
        return self._fetcher

    def federation_context(self) -> FederationContext:
        """The outbound stack (built now if not yet), shared with other outbound users."""
        return self._outbound.federation_context()

    def fetch(self, server_name: str) -> Deferred[ServerKeys]:
        """:meth:`ServerKeyFetcher.fetch` (a sibling's keys: known, not fetched)."""
        known = self._siblings(server_name)
        return succeed(known) if known is not None else self._get().fetch(server_name)

    def fetch_cached_or_fresh(self, server_name: str) -> Deferred[ServerKeys]:
        """:meth:`ServerKeyFetcher.fetch_cached_or_fresh` (a sibling's keys: known)."""
        known = self._siblings(server_name)
        if known is not None:
            return succeed(known)
        return self._get().fetch_cached_or_fresh(server_name)

    def cached(self, server_name: str) -> ServerKeys | None:
        """:meth:`ServerKeyFetcher.cached` (None while nothing was ever fetched); a
        sibling's keys are always there."""
        known = self._siblings(server_name)
        if known is not None:
            return known
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


class ProcessKeyDocuments:
    """The key document of every server of a process (``configs``), each made on first
    use (by its server's key endpoint and notary, or a sibling's key lookup) and then the
    one both use."""

    def __init__(self, clock: IReactorTime, configs: Sequence[Config]) -> None:
        self._clock = clock
        self._configs = {config.server_name: config for config in configs}
        self._sources: dict[str, KeyDocumentSource] = {}

    def source(self, server_name: str) -> KeyDocumentSource | None:
        """The key document of ``server_name``, or None when the process does not serve it."""
        source = self._sources.get(server_name)
        if source is None:
            config = self._configs.get(server_name)
            if config is None:
                return None
            source = self._sources[server_name] = key_document_source(config, self._clock)
        return source


@dataclass(frozen=True)
class ProcessParts:
    """What every server of a ``run`` process shares: the outbound stack (agent,
    connection pool, resolvers), the request log's writer, and the key documents of its
    servers (each server's own, and what its siblings know of its keys)."""

    outbound: SharedOutbound
    request_log: RequestLog | None
    key_documents: ProcessKeyDocuments
    #: The keys of the process's servers, read from ``key_documents``.
    local_keys: LocalServerKeys


def build_process_parts(config: Config, reactor: IReactor) -> ProcessParts:
    """The shared parts for ``config`` (the primary's: its process-wide settings).

    Raises ConfigError for an unreadable CA file (checked now, though the stack that
    uses it is built on first use).
    """
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
    request_log = None
    if config.request_log_path is not None:
        # Closed by run's shutdown, after open connections are aborted (_run.shut_down).
        request_log = RequestLog(
            config.request_log_path, reactor, WriterThread(reactor, FLUSH_DELAY_SECONDS)
        )
    documents = ProcessKeyDocuments(reactor, config.every_server)
    return ProcessParts(
        SharedOutbound(reactor, config),
        request_log,
        documents,
        LocalServerKeys(reactor, documents.source),
    )


def build_federation_extensions(
    config: Config, reactor: IReactor, process: ProcessParts | None = None
) -> FederationExtensions:
    """Profile, notary, X-Matrix checking and the request log for ``config``'s server.

    ``reactor`` provides time, TCP, threads (for the log writer) and system event
    triggers (the log is flushed before shutdown). ``process`` holds what the servers of
    one process share (None: built here, :func:`build_process_parts`, whose ConfigError
    for an unreadable CA file propagates).
    """
    from stubserver.auth.authenticator import RequestAuthenticator  # noqa: PLC0415
    from stubserver.client.backoff import DestinationBackoff  # noqa: PLC0415
    from stubserver.server.refusals import RefusalLog  # noqa: PLC0415

    if process is None:
        process = build_process_parts(config, reactor)
    backoff = DestinationBackoff(reactor, random.SystemRandom())
    fetcher = LazyKeyFetcher(
        reactor,
        config,
        backoff,
        process.outbound,
        siblings=process.local_keys.seen_from(config.server_name),
    )
    own_keys = process.key_documents.source(config.server_name)
    assert own_keys is not None, "the process's parts are built from every server's config"
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
    request_log = process.request_log
    observers: tuple[RequestObserver, ...] = (RefusalLog(),)
    if request_log is not None:
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
