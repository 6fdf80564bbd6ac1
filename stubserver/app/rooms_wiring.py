"""How ``stubserver run`` puts rooms together: the room service, its federation routes and
the control API's routes.

:func:`build_rooms` is the one place that constructs the room service
(``stubserver.rooms.service.RoomService``, imported when called) from what ``run`` has:
the reactor, the config, and the key fetcher of the X-Matrix filter. Everything it hands
the service is built here: the event signer, the room store, a signed-request client
whose outbound stack is built on first use, :func:`verify_key_lookup` over the key
fetcher, and an RNG.

:func:`control_listener_routes` builds the routes of a ``control`` listener.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from nacl.signing import VerifyKey
from twisted.internet.defer import CancelledError, Deferred, DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from stubserver.config import Config
from stubserver.control.api import control_routes
from stubserver.control.feed import RequestFeed
from stubserver.server.router import Route

if TYPE_CHECKING:
    from stubserver.media.store import MediaStore
    from stubserver.outbound.build import FederationContext
    from stubserver.outbound.signed_request import FederationClient, FederationResponse
    from stubserver.profiles import ProfileTable
    from stubserver.rooms.builder import EventSigner
    from stubserver.rooms.hooks import HookRelay
    from stubserver.rooms.pdu_keys import FetchVerifyKey
    from stubserver.rooms.port import RoomControl
    from stubserver.rooms.store import RoomStore
    from stubserver.server_keys.fetcher import ServerKeys
    from stubserver.server_keys.refetch_limit import RefetchLimit

log = Logger()


class KeySource(Protocol):
    """What :func:`verify_key_lookup` needs of the key fetcher (``LazyKeyFetcher``)."""

    @property
    def refetch_limit(self) -> RefetchLimit:
        """The once-a-minute limit on fetches on demand, shared with the X-Matrix check."""

    def cached(self, server_name: str) -> ServerKeys | None:
        """The server's cached keys while fresh, or None."""

    def fetch(self, server_name: str) -> Deferred[ServerKeys]:
        """The server's keys, fetched now."""


class OutboundStack(Protocol):
    """What :class:`LazySignedClient` needs: the shared outbound stack, built on demand."""

    def federation_context(self) -> FederationContext:
        """The outbound stack (agent, resolver, key fetcher, ...)."""


class KeyFetcherStack(KeySource, OutboundStack, Protocol):
    """``run``'s ``LazyKeyFetcher``: the key fetcher over the outbound stack it builds."""


def key_valid_for(keys: ServerKeys, key_id: str, minimum_valid_until_ts: int) -> VerifyKey | None:
    """``key_id`` of ``keys`` when it is valid until at least ``minimum_valid_until_ts``
    (pure). A current key counts until ``valid_until_ts``; an old key until it expired.

    Spec: Server-Server API "Validating hashes and signatures on received events" (the key
    must be valid at the event's ``origin_server_ts``).
    """
    key = keys.verify_keys.get(key_id)
    if key is not None and keys.valid_until_ts >= minimum_valid_until_ts:
        return key
    old = keys.old_verify_keys.get(key_id)
    if old is not None and old[1] >= minimum_valid_until_ts:
        return old[0]
    return None


def verify_key_lookup(source: KeySource) -> FetchVerifyKey:
    """A ``fetch_verify_key(server, key_id, minimum_valid_until_ts)`` over ``source``.

    The cached keys first; when they lack the key (or it expires too early), one fetch,
    if ``source.refetch_limit`` allows it (once a minute per server, the X-Matrix path's
    limit, issue 22 row 6). Lookups toward one server run one at a time, so the ones a
    transaction starts together share what the first fetched (one request per server
    per transaction, as Synapse's keyring batches a request's lookups per server). A
    server whose keys cannot be fetched has no key (None): the PDU fails its check.
    """
    queues: dict[str, DeferredLock] = {}

    async def lookup(server: str, key_id: str, minimum: int) -> VerifyKey | None:
        cached = source.cached(server)
        key = None if cached is None else key_valid_for(cached, key_id, minimum)
        if key is not None or not source.refetch_limit.allow(server):
            return key
        try:
            keys = await source.fetch(server)
        except CancelledError:
            raise
        except Exception as e:
            log.info("No keys for {server}: {error}", server=server, error=str(e))
            return None
        return key_valid_for(keys, key_id, minimum)

    def done(result: VerifyKey | None, server: str, queue: DeferredLock) -> VerifyKey | None:
        if not queue.locked and not queue.waiting:
            queues.pop(server, None)
        return result

    def fetch_verify_key(server: str, key_id: str, minimum: int) -> Deferred[VerifyKey | None]:
        queue = queues.setdefault(server, DeferredLock())
        d = queue.run(lambda: Deferred.fromCoroutine(lookup(server, key_id, minimum)))
        return d.addCallback(done, server, queue)

    return fetch_verify_key


class LazySignedClient:
    """A signed-request client (``FederationClient``) built on its first request, over the
    outbound stack shared with the key fetcher."""

    def __init__(self, clock: IReactorTime, config: Config, stack: OutboundStack) -> None:
        self._clock = clock
        self._config = config
        self._stack = stack
        self._client: FederationClient | None = None

    def request(
        self, method: str, destination: str, path_and_query: str, content: Any = None
    ) -> Deferred[FederationResponse]:
        """:meth:`FederationClient.request`."""
        if self._client is None:
            from stubserver.outbound.signed_request import (  # noqa: PLC0415
                FederationClient,
                FederationIdentity,
            )

            agent = self._stack.federation_context().agent
            identity = FederationIdentity(self._config.server_name, self._config.signing_key)
            self._client = FederationClient(agent, identity, self._clock)
        return self._client.request(method, destination, path_and_query, content)


@dataclass(frozen=True)
class RoomParts:
    """What the room service is built from (all built by :func:`build_rooms`)."""

    reactor: IReactorTime
    server_name: str
    signer: EventSigner
    store: RoomStore
    client: LazySignedClient
    fetch_verify_key: FetchVerifyKey
    rng: random.Random
    default_room_version: str
    #: Told by the federation room endpoints; the service attaches its hooks to it.
    hooks: HookRelay


#: Builds the room service from its parts; the default is :func:`room_service_from_parts`.
RoomServiceFactory = Callable[[RoomParts], "RoomControl"]


@dataclass(frozen=True)
class Rooms:
    """The room service and the room routes of the federation listeners."""

    service: RoomControl
    federation_routes: tuple[Route, ...]


def room_service_from_parts(parts: RoomParts) -> RoomControl:
    """``stubserver.rooms.service.RoomService`` over ``parts``.

    The service takes its server name from the signer and its clock from the reactor;
    its inbound hooks are attached to ``parts.hooks``; its dummy events (the cap on
    forward extremities) run every 5 minutes on the reactor.
    """
    from stubserver.rooms.service import RoomService  # noqa: PLC0415

    service = RoomService(
        clock=parts.reactor,
        signer=parts.signer,
        store=parts.store,
        client=parts.client,
        fetch_verify_key=parts.fetch_verify_key,
        rng=parts.rng,
        default_room_version=parts.default_room_version,
    )
    parts.hooks.attach(service.inbound)
    service.dummy_events.start()
    return service


def build_rooms(
    config: Config,
    reactor: IReactorTime,
    key_fetcher: KeyFetcherStack,
    *,
    service_factory: RoomServiceFactory = room_service_from_parts,
    rng: random.Random | None = None,
) -> Rooms:
    """The room service of ``config`` and the federation room routes over its store.

    ``key_fetcher`` is ``run``'s ``LazyKeyFetcher`` (a :class:`KeySource` and an
    :class:`OutboundStack`). The routes tell ``RoomParts.hooks`` about transactions and
    invites; the service factory attaches the service's hooks there.
    """
    from stubserver.rooms.builder import EventSigner  # noqa: PLC0415
    from stubserver.rooms.hooks import HookRelay  # noqa: PLC0415
    from stubserver.rooms.routes import room_routes  # noqa: PLC0415
    from stubserver.rooms.store import RoomStore  # noqa: PLC0415
    from stubserver.rooms.transaction import TransactionMemory  # noqa: PLC0415

    key = config.signing_key
    signer = EventSigner(config.server_name, key.key_id, key.key)
    store = RoomStore(config.server_name, TransactionMemory(reactor))
    fetch_verify_key = verify_key_lookup(key_fetcher)
    parts = RoomParts(
        reactor=reactor,
        server_name=config.server_name,
        signer=signer,
        store=store,
        client=LazySignedClient(reactor, config, key_fetcher),
        fetch_verify_key=fetch_verify_key,
        rng=rng if rng is not None else random.SystemRandom(),
        default_room_version=config.default_room_version,
        hooks=HookRelay(),
    )
    service = service_factory(parts)
    routes = room_routes(
        store,
        signer,
        fetch_verify_key,
        reactor,
        invites_accept=config.invites_accept,
        hooks=parts.hooks,
    )
    return Rooms(service=service, federation_routes=tuple(routes))


def control_listener_routes(
    config: Config,
    service: RoomControl,
    feed: RequestFeed,
    *,
    profiles: ProfileTable | None = None,
    media: MediaStore | None = None,
) -> list[Route]:
    """The routes of a ``control`` listener (config parsing guarantees the token exists)."""
    if config.control_token is None:
        raise ValueError("a control listener needs control_token")
    return control_routes(service, config.control_token, feed, profiles=profiles, media=media)
