"""The notary (spec: "Querying Keys Through Another Server").

``GET /_matrix/key/v2/query/{serverName}`` and ``POST /_matrix/key/v2/query``: the keys of
other servers as fetched by us, their signatures kept and ours added.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from twisted.internet.defer import CancelledError, Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from stubserver.discovery.server_name import InvalidServerName, parse_server_name
from stubserver.server.router import (
    JsonResponse,
    MatrixError,
    Route,
    query_arg,
    read_json_body,
    request_annotations,
)
from stubserver.signing.canonical_json import JsonDict
from stubserver.signing.keys import ServerSigningKey, sign_json

#: Most servers one notary request may ask about.
MAX_NOTARY_SERVERS = 100
MS_PER_SECOND = 1000

log = Logger()


class FetchedKeys(Protocol):
    """What the notary needs of a server's fetched keys."""

    @property
    def valid_until_ts(self) -> int:
        """Until when (ms) the keys may be used."""

    @property
    def response(self) -> Mapping[str, Any]:
        """The key document exactly as the server sent it (signatures included)."""


KeysT = TypeVar("KeysT", bound=FetchedKeys)


def parse_minimum_valid_until(value: str | None, now_ms: int) -> int:
    """``minimum_valid_until_ts`` from a query string; absent means now (spec)."""
    if value is None:
        return now_ms
    if not value.isdigit() or len(value) > 16:
        raise MatrixError(400, "M_INVALID_PARAM", "minimum_valid_until_ts must be an integer")
    return int(value)


def parse_notary_query(body: Any, now_ms: int) -> dict[str, int]:
    """The POST body as ``server name -> minimum_valid_until_ts`` (pure).

    Spec: ``{"server_keys": {server: {key_id: {"minimum_valid_until_ts": ts}}}}``; the
    strictest (largest) minimum of a server's criteria applies, and now when none is given.
    """
    if not isinstance(body, dict) or not isinstance(body.get("server_keys"), dict):
        raise MatrixError(400, "M_BAD_JSON", 'the body must be {"server_keys": {...}}')
    servers: dict[str, Any] = body["server_keys"]
    if len(servers) > MAX_NOTARY_SERVERS:
        raise MatrixError(
            400, "M_LIMIT_EXCEEDED", f"at most {MAX_NOTARY_SERVERS} servers per query"
        )
    wanted: dict[str, int] = {}
    for server, criteria in servers.items():
        _check_server_name(server)
        if not isinstance(criteria, dict):
            raise MatrixError(400, "M_BAD_JSON", f"server_keys.{server} must be an object")
        minimum = now_ms
        for key_id, c in criteria.items():
            if not isinstance(c, dict):
                raise MatrixError(
                    400, "M_BAD_JSON", f"server_keys.{server}.{key_id} must be an object"
                )
            ts = c.get("minimum_valid_until_ts")
            if ts is None:
                continue
            if isinstance(ts, bool) or not isinstance(ts, int):
                raise MatrixError(400, "M_BAD_JSON", "minimum_valid_until_ts must be an integer")
            minimum = max(minimum, ts)
        wanted[server] = minimum
    return wanted


def _check_server_name(server: str) -> None:
    try:
        parse_server_name(server)
    except InvalidServerName as e:
        raise MatrixError(400, "M_INVALID_PARAM", str(e)) from None


class KeyDocument(Protocol):
    """Our own key document (``stubserver.server_keys.key_document.KeyDocumentSource``)."""

    def current(self) -> JsonDict:
        """The signed document to serve now."""


class Notary(Generic[KeysT]):
    """Answers key queries: others' keys through the fetcher, countersigned; ours as served.

    ``fetch`` returns a server's keys (cached by the fetcher); ``refetch`` fetches them
    again, bypassing the cache, and is used when the cached keys expire before the
    requester's ``minimum_valid_until_ts``. A server whose keys cannot be fetched is left
    out (spec: "Servers which are offline and have no cached keys will not be included").
    """

    def __init__(
        self,
        server_name: str,
        signing_key: ServerSigningKey,
        *,
        own_keys: KeyDocument,
        fetch: Callable[[str], Deferred[KeysT]],
        refetch: Callable[[str], Deferred[KeysT]],
        clock: IReactorTime,
    ) -> None:
        self._server_name = server_name
        self._signing_key = signing_key
        self._own_keys = own_keys
        self._fetch = fetch
        self._refetch = refetch
        self._clock = clock

    def now_ms(self) -> int:
        """The current time in ms."""
        return int(self._clock.seconds() * MS_PER_SECOND)

    def query(self, wanted: Mapping[str, int]) -> Deferred[JsonResponse]:
        """``{"server_keys": [...]}`` for each server name with its minimum validity."""
        lookups = [self._one(server, minimum) for server, minimum in wanted.items()]
        gathered: Deferred[list[tuple[bool, JsonDict | None]]] = DeferredList(
            lookups, consumeErrors=True
        )

        def collect(results: list[tuple[bool, JsonDict | None]]) -> JsonResponse:
            return JsonResponse(
                200, {"server_keys": [doc for ok, doc in results if ok and doc is not None]}
            )

        return gathered.addCallback(collect)

    def _one(self, server: str, minimum: int) -> Deferred[JsonDict | None]:
        if server == self._server_name:
            return succeed(self._own_keys.current())
        return Deferred.fromCoroutine(self._fetch_and_countersign(server, minimum))

    async def _fetch_and_countersign(self, server: str, minimum: int) -> JsonDict | None:
        try:
            keys = await self._fetch(server)
            if keys.valid_until_ts < minimum:
                try:
                    keys = await self._refetch(server)
                except CancelledError:
                    raise
                except Exception as e:
                    # The server cannot be reached now: what we have beats nothing.
                    log.info("Notary: refetching {server} failed: {error}", server=server, error=e)
        except CancelledError:
            raise
        except Exception as e:
            log.info("Notary: no keys for {server}: {error}", server=server, error=e)
            return None
        return sign_json(dict(keys.response), self._server_name, self._signing_key)


def notary_routes(notary: Notary[Any]) -> list[Route]:
    """``GET /_matrix/key/v2/query/{serverName}`` and ``POST /_matrix/key/v2/query``."""

    def get(request: IRequest, params: Mapping[str, str]) -> Deferred[JsonResponse]:
        server = params["serverName"]
        _check_server_name(server)
        minimum = parse_minimum_valid_until(
            query_arg(request, "minimum_valid_until_ts"), notary.now_ms()
        )
        return notary.query({server: minimum})

    def post(request: IRequest, params: Mapping[str, str]) -> Deferred[JsonResponse]:
        body = read_json_body(request)
        request_annotations(request)["content"] = body
        return notary.query(parse_notary_query(body, notary.now_ms()))

    return [
        Route("GET", "/_matrix/key/v2/query/{serverName}", get),
        Route("POST", "/_matrix/key/v2/query", post),
    ]
