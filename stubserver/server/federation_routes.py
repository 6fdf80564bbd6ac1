"""Federation endpoints that need more than the key document: profile, notary, X-Matrix.

Plug into :class:`stubserver.server.router.FederationRouter` (through
``stubserver.server.site.build_site``):

- :class:`XMatrixFilter` (a ``RequestFilter``): on every ``/_matrix/...`` request but
  the key endpoints (``/_matrix/key/...``, unauthenticated), reads the JSON body (if
  any), and when X-Matrix credentials are given checks them with a
  :class:`stubserver.auth.authenticator.RequestAuthenticator`. Good credentials are noted
  in the request annotations (``origin``, ``authenticated``); bad ones answer 400/401
  ``M_UNAUTHORIZED`` at once, whatever the path. A request without credentials goes on
  (noted as ``auth_error``): endpoints that need authentication call
  :func:`require_origin`; unknown paths then answer the router's 404 ``M_UNRECOGNIZED``.
- :func:`profile_route`: ``GET /_matrix/federation/v1/query/profile`` for configured users.
- :func:`notary_routes`: ``GET /_matrix/key/v2/query/{serverName}`` and
  ``POST /_matrix/key/v2/query`` (spec: "Querying Keys Through Another Server").
- :func:`build_federation_extensions`: all of the above (and the request log) for a
  config, ready for ``build_site``.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from twisted.internet.defer import CancelledError, Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest

from stubserver.auth.authenticator import AuthResult
from stubserver.auth.xmatrix import (
    M_UNAUTHORIZED,
    AuthenticationFailed,
    is_xmatrix,
    select_authorization,
)
from stubserver.config import Config, ConfigError, UserProfile
from stubserver.discovery.server_name import InvalidServerName, parse_server_name
from stubserver.server.request_log import RequestLog
from stubserver.server.router import (
    JsonResponse,
    MatrixError,
    RequestFilter,
    RequestObserver,
    Route,
    query_arg,
    read_json_body,
    request_annotations,
)
from stubserver.signing.canonical_json import JsonDict
from stubserver.signing.keys import ServerSigningKey, sign_json

#: Paths whose X-Matrix credentials the filter checks (contract: "any other /_matrix/
#: path: X-Matrix checked and logged where given") ...
CHECKED_PREFIX = b"/_matrix/"
#: ... except the key endpoints, which need no authentication (as Synapse): checking there
#: would make every key request wait for a key fetch of its own.
UNCHECKED_PREFIX = b"/_matrix/key/"
#: Most servers one notary request may ask about.
MAX_NOTARY_SERVERS = 100
#: The profile fields the spec defines for ``field``.
PROFILE_FIELDS = ("displayname", "avatar_url")
MISSING_AUTH_MESSAGE = "Missing Authorization headers"
MS_PER_SECOND = 1000

if TYPE_CHECKING:
    from stubserver.client.backoff import DestinationBackoff
    from stubserver.server_keys.fetcher import ServerKeyFetcher, ServerKeys

log = Logger()


class Authenticator(Protocol):
    """What the filter needs: ``RequestAuthenticator.authenticate`` (auth/authenticator.py)."""

    def authenticate(
        self, method: bytes, uri: bytes, headers: Headers, content: Any
    ) -> Deferred[AuthResult]:
        """Authenticate one request, failing with an AuthenticationFailed."""


def _has_body(request: IRequest) -> bool:
    content = request.content
    if content is None:
        return False
    content.seek(0)
    first: bytes = content.read(1)
    content.seek(0)
    return bool(first)


class XMatrixFilter:
    """A ``RequestFilter`` checking X-Matrix credentials on federation paths (module doc)."""

    def __init__(
        self,
        authenticator: Authenticator,
        on_authenticated: Callable[[str], None] | None = None,
    ) -> None:
        self._authenticator = authenticator
        self._on_authenticated = on_authenticated

    def __call__(self, request: IRequest) -> Deferred[None] | None:
        """Annotate ``request``; fail with MatrixError when its credentials are bad."""
        notes = request_annotations(request)
        notes.update(origin=None, authenticated=False, auth_error=None, content=None)
        path: bytes = request.path
        if not path.startswith(CHECKED_PREFIX) or path.startswith(UNCHECKED_PREFIX):
            return None
        content = read_json_body(request) if _has_body(request) else None
        notes["content"] = content
        headers: Headers = request.requestHeaders
        raw = headers.getRawHeaders(b"authorization", [])
        if not any(is_xmatrix(v) for v in raw):
            notes["auth_error"] = MISSING_AUTH_MESSAGE
            return None
        d = self._authenticator.authenticate(request.method, request.uri, headers, content)

        def authenticated(result: AuthResult) -> None:
            notes.update(origin=result.origin, authenticated=True)
            if self._on_authenticated is not None:
                # A valid signed request shows the origin is up: end its backoff.
                self._on_authenticated(result.origin)

        def rejected(failure: Failure) -> Failure:
            error = failure.value
            if not isinstance(error, AuthenticationFailed):
                return failure
            with contextlib.suppress(AuthenticationFailed):
                notes["origin"] = select_authorization(raw).origin
            notes["auth_error"] = error.message
            log.info(
                "Rejected {method} {uri} from {origin}: {error}",
                method=request.method,
                uri=request.uri,
                origin=notes["origin"],
                error=error.message,
            )
            raise MatrixError(error.status, error.errcode, error.message)

        return d.addCallbacks(authenticated, rejected)


def require_origin(request: IRequest) -> str:
    """The authenticated origin of ``request``; MatrixError 401 when it has none."""
    notes = request_annotations(request)
    if not notes.get("authenticated"):
        raise MatrixError(401, M_UNAUTHORIZED, notes.get("auth_error") or MISSING_AUTH_MESSAGE)
    origin: str = notes["origin"]
    return origin


def profile_answer(
    server_name: str,
    users: Mapping[str, UserProfile],
    user_id: str | None,
    field: str | None,
) -> JsonDict:
    """The profile query's answer (pure); MatrixError for a bad or unknown user.

    Spec: Server-Server API, "Query" / profile. As Synapse: a user of another server is
    400, an unknown local user 404 ``M_NOT_FOUND``; fields without a value are left out.
    """
    if user_id is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing query parameter: user_id")
    if field is not None and field not in PROFILE_FIELDS:
        raise MatrixError(
            400, "M_INVALID_PARAM", f"field must be one of {', '.join(PROFILE_FIELDS)}"
        )
    if not user_id.startswith("@") or ":" not in user_id:
        raise MatrixError(400, "M_INVALID_PARAM", f"{user_id[:300]!r} is not a user ID")
    localpart, _, domain = user_id[1:].partition(":")
    try:
        parse_server_name(domain)
    except InvalidServerName as e:
        raise MatrixError(400, "M_INVALID_PARAM", f"{user_id[:300]!r}: {e}") from None
    if domain != server_name:
        raise MatrixError(
            400, "M_INVALID_PARAM", f"User {user_id!r} is not hosted on this server ({server_name})"
        )
    profile = users.get(localpart)
    if profile is None:
        raise MatrixError(404, "M_NOT_FOUND", f"Profile was not found: no user {user_id!r}")
    values = {"displayname": profile.displayname, "avatar_url": profile.avatar_url}
    wanted = (field,) if field is not None else PROFILE_FIELDS
    return {name: values[name] for name in wanted if values[name] is not None}


def profile_route(server_name: str, users: Mapping[str, UserProfile]) -> Route:
    """``GET /_matrix/federation/v1/query/profile`` (X-Matrix required)."""

    def handle(request: IRequest, params: Mapping[str, str]) -> JsonResponse:
        require_origin(request)
        body = profile_answer(
            server_name, users, query_arg(request, "user_id"), query_arg(request, "field")
        )
        return JsonResponse(200, body)

    return Route("GET", "/_matrix/federation/v1/query/profile", handle)


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


@dataclass(frozen=True)
class FederationExtensions:
    """What ``stubserver run`` adds to ``build_site``: routes, filters and observers.

    Pass them as ``build_site(config, reactor, extra_routes=ext.routes,
    filters=ext.filters, observers=ext.observers)``.
    """

    routes: tuple[Route, ...]
    filters: tuple[RequestFilter, ...]
    observers: tuple[RequestObserver, ...]
    request_log: RequestLog | None


class LazyKeyFetcher:
    """The key fetcher of ``run``, with the outbound stack built on the first fetch.

    Agent, DNS clients and connection pool cost about 40 ms and 3 MB at start-up, and a
    server that is never sent a signed request (or a notary query) never needs them.
    CA files are checked at start-up by the caller, so building cannot fail on them later.
    """

    def __init__(self, reactor: Any, config: Config, backoff: DestinationBackoff) -> None:
        self._reactor = reactor
        self._config = config
        self._backoff = backoff
        self._fetcher: ServerKeyFetcher | None = None

    @property
    def built(self) -> bool:
        """True once the outbound stack exists."""
        return self._fetcher is not None

    def _get(self) -> ServerKeyFetcher:
        if self._fetcher is None:
            from stubserver.client.agent import build_federation_client  # noqa: PLC0415

            context = build_federation_client(
                self._reactor, self._config.federation, backoff=self._backoff
            )
            self._fetcher = context.key_fetcher
        return self._fetcher

    def fetch(self, server_name: str) -> Deferred[ServerKeys]:
        """:meth:`ServerKeyFetcher.fetch`."""
        return self._get().fetch(server_name)

    def fetch_cached_or_fresh(self, server_name: str) -> Deferred[ServerKeys]:
        """:meth:`ServerKeyFetcher.fetch_cached_or_fresh`."""
        return self._get().fetch_cached_or_fresh(server_name)


def build_federation_extensions(config: Config, reactor: Any) -> FederationExtensions:
    """Profile, notary, X-Matrix checking and the request log for ``config``.

    ``reactor`` provides time, TCP, threads (for the log writer) and system event
    triggers (the log is flushed before shutdown). The outbound side (key fetches for
    authentication and the notary) uses ``config.federation``. Raises ConfigError for an
    unreadable CA file.
    """
    from stubserver.auth.authenticator import RequestAuthenticator  # noqa: PLC0415
    from stubserver.client.backoff import DestinationBackoff  # noqa: PLC0415
    from stubserver.server.request_log import reactor_thread_runner  # noqa: PLC0415
    from stubserver.server_keys.key_document import KeyDocumentSource  # noqa: PLC0415
    from stubserver.tls.client import CaFileError, load_ca_file  # noqa: PLC0415

    for index, ca_file in enumerate(config.federation.ca_files):
        try:
            load_ca_file(ca_file)
        except CaFileError as e:
            raise ConfigError(f"federation_custom_ca_list[{index}]", str(e)) from None
    backoff = DestinationBackoff(reactor, random.SystemRandom())
    fetcher = LazyKeyFetcher(reactor, config, backoff)
    own_keys = KeyDocumentSource(
        reactor,
        config.server_name,
        config.signing_keys,
        config.old_signing_keys,
        config.key_refresh_interval_ms,
    )
    notary: Notary[Any] = Notary(
        config.server_name,
        config.signing_key,
        own_keys=own_keys,
        fetch=fetcher.fetch_cached_or_fresh,
        refetch=fetcher.fetch,
        clock=reactor,
    )
    authenticator = RequestAuthenticator(config.server_name, fetcher, reactor)
    request_log = None
    observers: tuple[RequestObserver, ...] = ()
    if config.request_log_path is not None:
        # Closed by run's shutdown, after open connections are aborted (_run.shut_down).
        request_log = RequestLog(config.request_log_path, reactor, reactor_thread_runner(reactor))
        observers = (request_log,)
    return FederationExtensions(
        routes=(profile_route(config.server_name, config.users), *notary_routes(notary)),
        filters=(XMatrixFilter(authenticator, on_authenticated=backoff.reset),),
        observers=observers,
        request_log=request_log,
    )
