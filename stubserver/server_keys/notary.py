"""The notary (spec: "Querying Keys Through Another Server").

``GET /_matrix/key/v2/query/{serverName}`` and ``POST /_matrix/key/v2/query``: the keys of
other servers as fetched by us, their signatures kept and ours added.

Bounded work per request (issue 12, rows 4 and 14): a query names at most
:data:`MAX_NOTARY_SERVERS` servers and :data:`MAX_NOTARY_KEY_IDS` key IDs per server (else
400); at most :data:`MAX_NOTARY_FETCHES_IN_FLIGHT` of its servers are fetched at once; the
answer stops growing at :data:`MAX_NOTARY_ANSWER_BYTES` (servers past it are left out, as
the spec lets a notary leave out servers it has no keys for). ``minimum_valid_until_ts`` is
clamped to :data:`MAX_MINIMUM_VALID_UNTIL_MS` ahead, and a server's keys are fetched again
for it at most once per :data:`NOTARY_REFETCH_INTERVAL_SECONDS` (the fetcher shares a fetch
in flight), so the notary cannot be made a relay that hammers a key endpoint. Synapse does
not clamp (a minimum past the cached ``valid_until_ts`` is a cache miss, refetched each
time); we clamp because keys count for at most 7 days ahead anyway (spec, room v5 signing
rules), and rate-limit refetches, which is what actually bounds the relaying.
A server whose fetch failed is not asked again for :data:`NOTARY_FAILURE_MEMORY_SECONDS`.

Every error path ends in an answer (row 5): a server whose keys cannot be fetched, or
whose document cannot be countersigned, is left out; the request is answered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    DeferredSemaphore,
    succeed,
)
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from stubserver.cache import BoundedCache
from stubserver.discovery.server_name import InvalidServerName, parse_server_name
from stubserver.server.router import (
    JsonResponse,
    MatrixError,
    Route,
    body_length,
    query_arg,
    read_json_body,
    request_annotations,
)
from stubserver.signing.canonical_json import JsonDict, encode_json
from stubserver.signing.keys import ServerSigningKey, sign_json

#: Most servers one notary request may ask about (was 100). A homeserver asks a notary for
#: the servers whose keys it lacks for one batch of events, usually a handful; 20 keeps such
#: batches whole while 20 x 64 KiB documents already pass the answer cap below.
MAX_NOTARY_SERVERS = 20
#: Most key IDs one query may name per server (servers publish one or two keys).
MAX_NOTARY_KEY_IDS = 16
#: Longest key ID accepted in a query, in characters.
MAX_KEY_ID_LENGTH = 255
#: Largest answer, in bytes of JSON: servers past it are left out (a 2.6 KB query was
#: answered with 6 MB).
MAX_NOTARY_ANSWER_BYTES = 256 * 1024
#: Most servers of one query whose keys are being fetched at once.
MAX_NOTARY_FETCHES_IN_FLIGHT = 4
#: ``minimum_valid_until_ts`` is clamped to now plus this, in milliseconds (7 days: keys
#: count for at most 7 days ahead, spec).
MAX_MINIMUM_VALID_UNTIL_MS = 7 * 24 * 3600 * 1000
#: Least time between two refetches of one server's keys for minimum_valid_until_ts, in s.
NOTARY_REFETCH_INTERVAL_SECONDS = 60
#: How long a failed fetch of a server's keys is remembered, in seconds (against floods
#: naming a server that is down; short, so that a server back up is served again soon).
NOTARY_FAILURE_MEMORY_SECONDS = 5
#: Most servers whose last refetch or failure is remembered.
MAX_REMEMBERED_SERVERS = 10_000
#: Longest minimum_valid_until_ts accepted in a query string, in digits.
MAX_TS_DIGITS = 16
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
    # ASCII digits only: str.isdigit and int() also take other scripts' digits ("²", "٣").
    if not value.isascii() or not value.isdigit() or len(value) > MAX_TS_DIGITS:
        raise MatrixError(400, "M_INVALID_PARAM", "minimum_valid_until_ts must be an integer")
    return int(value)


def clamp_minimum_valid_until(minimum: int, now_ms: int) -> int:
    """``minimum`` no further ahead than :data:`MAX_MINIMUM_VALID_UNTIL_MS` (module doc)."""
    return min(minimum, now_ms + MAX_MINIMUM_VALID_UNTIL_MS)


def _check_key_id(server: str, key_id: str) -> None:
    try:
        key_id.encode("utf-8")
    except UnicodeEncodeError:
        raise MatrixError(
            400, "M_INVALID_PARAM", f"a key ID of {server} is not valid Unicode"
        ) from None
    if len(key_id) > MAX_KEY_ID_LENGTH:
        raise MatrixError(400, "M_INVALID_PARAM", f"a key ID of {server} is too long")


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
        if len(criteria) > MAX_NOTARY_KEY_IDS:
            raise MatrixError(
                400, "M_LIMIT_EXCEEDED", f"at most {MAX_NOTARY_KEY_IDS} key IDs per server"
            )
        minimum = now_ms
        for key_id, c in criteria.items():
            _check_key_id(server, key_id)
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
        server.encode("utf-8")
        parse_server_name(server)
    except UnicodeEncodeError:
        raise MatrixError(400, "M_INVALID_PARAM", "the server name is not valid Unicode") from None
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
        # server -> True while a refetch for minimum_valid_until_ts is not allowed again
        self._refetched: BoundedCache[str, bool] = BoundedCache(
            clock, max_entries=MAX_REMEMBERED_SERVERS
        )
        # server -> why its last fetch failed, for NOTARY_FAILURE_MEMORY_SECONDS
        self._failed: BoundedCache[str, str] = BoundedCache(
            clock, max_entries=MAX_REMEMBERED_SERVERS
        )

    def now_ms(self) -> int:
        """The current time in ms."""
        return int(self._clock.seconds() * MS_PER_SECOND)

    def query(self, wanted: Mapping[str, int]) -> Deferred[JsonResponse]:
        """``{"server_keys": [...]}`` for each server name with its minimum validity.

        At most :data:`MAX_NOTARY_FETCHES_IN_FLIGHT` servers are looked up at once; the
        documents are kept in query order while the answer stays within
        :data:`MAX_NOTARY_ANSWER_BYTES`.
        """
        now_ms = self.now_ms()
        semaphore = DeferredSemaphore(MAX_NOTARY_FETCHES_IN_FLIGHT)
        lookups = [
            semaphore.run(self._one, server, clamp_minimum_valid_until(minimum, now_ms))
            for server, minimum in wanted.items()
        ]
        gathered: Deferred[list[tuple[bool, JsonDict | None]]] = DeferredList(
            lookups, consumeErrors=True
        )
        return gathered.addCallback(_collect)

    def _one(self, server: str, minimum: int) -> Deferred[JsonDict | None]:
        if server == self._server_name:
            return succeed(self._own_keys.current())
        return Deferred.fromCoroutine(self._fetch_and_countersign(server, minimum))

    async def _fetch_and_countersign(self, server: str, minimum: int) -> JsonDict | None:
        """The countersigned document of ``server``, or None (left out)."""
        failed = self._failed.get(server)
        if failed is not None:
            log.debug(
                "Notary: no keys for {server} (failed recently: {error})",
                server=server,
                error=failed,
            )
            return None
        try:
            keys = await self._fetch(server)
        except CancelledError:
            raise
        except Exception as e:
            self._failed.set(server, str(e) or type(e).__name__, NOTARY_FAILURE_MEMORY_SECONDS)
            log.info("Notary: no keys for {server}: {error}", server=server, error=e)
            return None
        if keys.valid_until_ts < minimum and self._refetched.get(server) is None:
            self._refetched.set(server, True, NOTARY_REFETCH_INTERVAL_SECONDS)
            try:
                keys = await self._refetch(server)
            except CancelledError:
                raise
            except Exception as e:
                # The server cannot be reached now: what we have beats nothing.
                log.info("Notary: refetching {server} failed: {error}", server=server, error=e)
        try:
            return sign_json(dict(keys.response), self._server_name, self._signing_key)
        except Exception:
            # Only a bug can land here (fetched documents passed the strict parser): leave
            # the server out rather than leave the request unanswered.
            log.failure("Notary: cannot countersign the keys of {server}", server=server)
            return None


def _collect(results: list[tuple[bool, JsonDict | None]]) -> JsonResponse:
    """The answer: the documents found, in query order, within MAX_NOTARY_ANSWER_BYTES."""
    documents: list[JsonDict] = []
    size = 0
    for ok, doc in results:
        if not ok or doc is None:
            continue
        size += len(encode_json(doc)) + 1  # one encoding per document, at most 20 of them
        if size > MAX_NOTARY_ANSWER_BYTES:
            log.info(
                "Notary: the answer reached {cap} bytes; later servers left out",
                cap=MAX_NOTARY_ANSWER_BYTES,
            )
            break
        documents.append(doc)
    return JsonResponse(200, {"server_keys": documents})


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
        request_annotations(request).update(content=body, body_bytes=body_length(request))
        return notary.query(parse_notary_query(body, notary.now_ms()))

    return [
        Route("GET", "/_matrix/key/v2/query/{serverName}", get),
        Route("POST", "/_matrix/key/v2/query", post),
    ]
