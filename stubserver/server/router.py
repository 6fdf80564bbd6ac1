"""JSON-over-HTTP plumbing and a small router for the federation listener.

Every response stubserver serves is JSON with ``Content-Type: application/json``;
errors are ``{"errcode": "M_...", "error": "..."}`` (contract: DESIGN.md, "HTTP
endpoints served"). This module holds the pieces every endpoint shares:

- :class:`JsonResponse`: what a handler returns (status, JSON body, extra headers).
- :class:`MatrixError`: raise it anywhere in a handler (or a filter) to answer with a
  Matrix error; ``MatrixError(403, "M_FORBIDDEN", "...")``.
- :class:`Route`: one entry of the route table, ``Route("GET", "/_matrix/key/v2/query/{serverName}",
  handler)``. ``{name}`` matches exactly one non-empty path segment. Matching runs on
  the raw, still-percent-encoded ``request.path`` (so the URI that an X-Matrix signature
  covers is exactly what arrived); the router percent-decodes each parameter (UTF-8)
  before passing it on. Literal segments compare byte for byte with the raw path.
- A handler is ``handler(request: IRequest, params: Mapping[str, str])`` returning a
  :class:`JsonResponse` or a ``Deferred[JsonResponse]``. An ``async def`` handler can be
  adapted with ``lambda r, p: Deferred.fromCoroutine(handler(r, p))``.
- :class:`FederationRouter`: the ``IResource`` serving one listener. It is built from a
  route table (no globals: pass every route in), an optional list of
  :class:`RequestFilter` run before routing on *every* request (including unknown
  paths), and a list of :class:`RequestObserver` told about every response.

Adding routes: build ``Route`` values and pass them in, for the federation listener
through ``stubserver.app.site.build_site(config, clock, extra_routes=[...])``. A path that
matches a route but not its method answers 405 ``M_UNRECOGNIZED`` (with ``Allow``); an
unmatched path answers 404 ``M_UNRECOGNIZED``. ``HEAD`` is served by the ``GET`` route
(Twisted drops the body), as Synapse does.

Filters (``filter(request) -> None | Deferred[None]``) run in order before routing;
raising :class:`MatrixError` (or failing the Deferred with one) rejects the request.
A filter is the place to check an ``Authorization: X-Matrix`` header on every request
and record what it found with :func:`request_annotations`
(``request_annotations(request)["origin"] = ...``) for handlers and observers to read.

Observers (``observer(request, status, body) -> None``) run once per request, after the
response is written: ``status`` is the status sent and ``body`` the JSON value sent (or
:data:`CLIENT_CLOSED_REQUEST` and None when the client went away first). They suit the
request log. An observer that raises is logged and otherwise ignored.

Asynchronous handlers: when the client disconnects first, the handler's Deferred is
cancelled. Given a ``clock`` and ``handler_deadline_seconds``, a request whose filters and
handler have not answered by then is cancelled and answered 504 ``M_UNKNOWN`` (the
listener's per-request handler deadline, ``stubserver.server.limits``). An unexpected
exception (including a ``CancelledError`` neither the client nor the deadline caused) is
logged and answered with 500 ``M_UNKNOWN``; so is a response that cannot be encoded (a
lone surrogate in its body, a header value outside latin-1). Either way the observers are
told, with the status and body actually sent: every request reaches the request log.
A request target that is not a path (``OPTIONS *``, asterisk-form) answers 400
``M_UNRECOGNIZED``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, cast
from urllib.parse import unquote_to_bytes

from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from stubserver import __version__
from stubserver.signing.canonical_json import (
    BadJson,
    Pause,
    encode_json,
    parse_json_bytes,
    parse_json_bytes_in_slices,
)

#: Largest request body accepted on most endpoints, in bytes (issue 7: 64 KiB).
#: The listener refuses larger bodies before reading them (``stubserver.server.limits``).
MAX_REQUEST_BODY_BYTES = 64 * 1024
#: Largest body of the requests that carry several PDUs (``/send``: 50 PDUs of 64 KiB and
#: 100 EDUs; ``send_join``, ``send_leave``, ``invite``), in bytes; the listener allows it on
#: those routes only (``stubserver.server.limits.LARGE_BODY_ROUTES``).
MAX_LARGE_BODY_BYTES = 8 * 1024 * 1024
#: Largest request body :func:`read_json_body` accepts by default, in bytes: the listener
#: has already applied the route's own cap, this is the backstop.
MAX_JSON_BODY_BYTES = MAX_LARGE_BODY_BYTES
#: The status observers see when the client closed the connection before the response
#: (nginx's and Synapse's convention; never sent on the wire).
CLIENT_CLOSED_REQUEST = 499
#: The ``Server`` header of every response (set by the listener's request,
#: ``stubserver.server.limits.LimitedRequest``, and its refusals).
SERVER_HEADER = f"stubserver/{__version__}".encode("ascii")

_PARAM_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}\Z")
_ANNOTATIONS_ATTRIBUTE = "_stubserver_annotations"

log = Logger()


@dataclass(frozen=True)
class JsonResponse:
    """A response: HTTP status, a JSON-encodable body and extra headers (name -> value)."""

    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)
    #: ``body`` already encoded, for bodies that do not change between requests (the key
    #: document, the version); None: encoded when sent.
    encoded: bytes | None = None


class MatrixError(Exception):
    """An error answered as ``{"errcode": errcode, "error": message}`` with ``status``."""

    def __init__(
        self,
        status: int,
        errcode: str,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {errcode}: {message}")
        self.status = status
        self.errcode = errcode
        self.message = message
        self.headers: Mapping[str, str] = dict(headers or {})

    def to_response(self) -> JsonResponse:
        """This error as a response."""
        return JsonResponse(
            self.status, {"errcode": self.errcode, "error": self.message}, self.headers
        )


def error_response(status: int, errcode: str, message: str) -> JsonResponse:
    """A Matrix error response: ``{"errcode": ..., "error": ...}``."""
    return JsonResponse(status, {"errcode": errcode, "error": message})


HandlerResult = JsonResponse | Deferred[JsonResponse]


class Handler(Protocol):
    """Answers one request; ``params`` holds the route's decoded ``{name}`` segments."""

    def __call__(self, request: IRequest, params: Mapping[str, str], /) -> HandlerResult: ...


class RequestFilter(Protocol):
    """Runs before routing on every request; raise :class:`MatrixError` to reject it."""

    def __call__(self, request: IRequest, /) -> Deferred[None] | None: ...


class RequestObserver(Protocol):
    """Told about every response after it is written (``body`` is the JSON value sent)."""

    def __call__(self, request: IRequest, status: int, body: Any, /) -> None: ...


@dataclass(frozen=True)
class _Segment:
    literal: bytes | None
    param: str | None


def _compile(pattern: str) -> tuple[_Segment, ...]:
    if not pattern.startswith("/"):
        raise ValueError(f"route pattern {pattern!r} must start with '/'")
    segments = []
    names: set[str] = set()
    for part in pattern[1:].split("/"):
        m = _PARAM_RE.match(part)
        if m:
            if m.group(1) in names:
                raise ValueError(f"route pattern {pattern!r} repeats {{{m.group(1)}}}")
            names.add(m.group(1))
            segments.append(_Segment(literal=None, param=m.group(1)))
        elif "{" in part or "}" in part:
            raise ValueError(f"route pattern {pattern!r}: bad segment {part!r}")
        else:
            segments.append(_Segment(literal=part.encode("ascii"), param=None))
    return tuple(segments)


def decode_path_segment(raw: bytes) -> str:
    """Percent-decode one raw path segment as UTF-8, or raise MatrixError 400."""
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise MatrixError(
            400, "M_INVALID_PARAM", "a path parameter is not valid UTF-8 once decoded"
        ) from None


@dataclass(frozen=True)
class Route:
    """``method`` and a path ``pattern`` (``{name}`` = one segment) answered by ``handler``."""

    method: str
    pattern: str
    handler: Handler
    _segments: tuple[_Segment, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_segments", _compile(self.pattern))

    def match(self, raw_segments: Sequence[bytes]) -> dict[str, bytes] | None:
        """The raw (still encoded) parameters when ``raw_segments`` fit the pattern."""
        if len(raw_segments) != len(self._segments):
            return None
        params: dict[str, bytes] = {}
        for segment, raw in zip(self._segments, raw_segments, strict=True):
            if segment.param is not None:
                if not raw:
                    return None
                params[segment.param] = raw
            elif segment.literal != raw:
                return None
        return params


def _exact_paths(routes: Sequence[Route]) -> dict[tuple[bytes, bytes], Handler]:
    """``{(method, path): handler}`` for the routes without parameters that the table
    would choose for that method and path (no earlier route of the same method matches
    it): found without a walk over the table (issue 22, the key endpoint's hot path).
    Keyed by the method as it arrives (bytes), a ``GET`` route under ``HEAD`` too."""
    exact: dict[tuple[bytes, bytes], Handler] = {}
    for index, route in enumerate(routes):
        literals = [segment.literal for segment in route._segments]
        if any(literal is None for literal in literals):
            continue
        path = b"/" + b"/".join(cast(list[bytes], literals))
        segments = path[1:].split(b"/")
        earlier = routes[:index]
        if any(r.method == route.method and r.match(segments) is not None for r in earlier):
            continue
        if route.method == "HEAD":
            continue  # a HEAD request is served by the GET route (as the table does)
        method = route.method.encode("ascii")
        exact.setdefault((method, path), route.handler)
        if method == b"GET":
            exact.setdefault((b"HEAD", path), route.handler)
    return exact


def request_annotations(request: IRequest) -> dict[str, Any]:
    """A per-request dict where filters and handlers leave facts for observers.

    Conventional keys (for the request log): ``origin`` (str or None),
    ``authenticated`` (bool), ``auth_error`` (str or None).
    """
    found: dict[str, Any] | None = getattr(request, _ANNOTATIONS_ATTRIBUTE, None)
    if found is None:
        found = {}
        setattr(request, _ANNOTATIONS_ATTRIBUTE, found)
    return found


def query_arg(request: IRequest, name: str) -> str | None:
    """The first value of query parameter ``name`` decoded as UTF-8, or None when absent."""
    values = request.args.get(name.encode("ascii"))
    if not values:
        return None
    value: bytes = values[0]
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise MatrixError(
            400, "M_INVALID_PARAM", f"query parameter {name!r} is not valid UTF-8"
        ) from None


def read_json_body(request: IRequest, limit: int = MAX_JSON_BODY_BYTES) -> Any:
    """The request body parsed strictly as JSON; MatrixError 413/400 when too big or bad."""
    body = _body_within(request, limit)
    try:
        return parse_json_bytes(body)
    except BadJson as e:
        raise _bad_json(e) from None


async def read_json_body_in_slices(
    request: IRequest, pause: Pause, limit: int = MAX_JSON_BODY_BYTES
) -> Any:
    """:func:`read_json_body`, parsed in slices (``parse_json_bytes_in_slices``: ``pause``
    awaited between the elements of the body's arrays), for bodies of megabytes."""
    body = _body_within(request, limit)
    try:
        return await parse_json_bytes_in_slices(body, pause)
    except BadJson as e:
        raise _bad_json(e) from None


def _body_within(request: IRequest, limit: int) -> bytes:
    content = request.content
    if content is None:
        raise MatrixError(400, "M_NOT_JSON", "the request has no body")
    content.seek(0)
    body: bytes = content.read(limit + 1)
    if len(body) > limit:
        raise MatrixError(413, "M_TOO_LARGE", f"the request body is larger than {limit} bytes")
    return body


def _bad_json(e: BadJson) -> MatrixError:
    return MatrixError(400, "M_NOT_JSON" if e.not_json else "M_BAD_JSON", str(e))


def body_length(request: IRequest) -> int:
    """How many body bytes ``request`` carried, as received.

    Whoever parses a body notes it as ``content`` in :func:`request_annotations` with this
    as ``body_bytes``: the request log keeps bodies up to a size
    (``stubserver.server.request_log.MAX_LOGGED_BODY_BYTES``).
    """
    content = request.content
    if content is None:
        return 0
    length: int = content.seek(0, 2)
    return length


class _ResponseWriter(Protocol):
    """The part of ``twisted.web.server.Request`` we call (its methods are untyped)."""

    def setResponseCode(self, code: int, message: bytes | None = None) -> None: ...
    def setHeader(self, name: bytes, value: bytes) -> None: ...
    def write(self, data: bytes) -> None: ...
    def finish(self) -> None: ...
    def notifyFinish(self) -> Deferred[None]: ...


def encode_response(response: JsonResponse) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The body and extra headers of ``response`` as bytes (pure).

    Raises (``UnicodeEncodeError``, ``ValueError``, ``TypeError``) when the body is not
    encodable JSON or a header is not latin-1; nothing has been sent then.
    """
    body = response.encoded if response.encoded is not None else encode_json(response.body)
    if not response.headers:
        return body, []
    headers = [
        (name.encode("latin-1"), value.encode("latin-1"))
        for name, value in response.headers.items()
    ]
    return body, headers


def _write_encoded(
    request: IRequest, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]]
) -> None:
    writer = cast(_ResponseWriter, request)
    if getattr(writer, "code", None) != status:
        # twisted.web's Request starts at 200 (its ``code``): set only another status.
        writer.setResponseCode(status)
    writer.setHeader(b"Content-Type", b"application/json")
    writer.setHeader(b"Content-Length", b"%d" % len(body))
    for name, value in headers:
        writer.setHeader(name, value)
    writer.write(body)
    writer.finish()


_INTERNAL_ERROR = error_response(500, "M_UNKNOWN", "Internal server error")
#: The parameters of a route without any (shared: handlers only read them).
_NO_PARAMS: Mapping[str, str] = MappingProxyType({})


@implementer(IResource)
class FederationRouter:
    """The ``IResource`` of one listener: routes every path itself (a leaf at the root)."""

    isLeaf = True

    def __init__(
        self,
        routes: Iterable[Route],
        *,
        filters: Sequence[RequestFilter] = (),
        observers: Sequence[RequestObserver] = (),
        clock: IReactorTime | None = None,
        handler_deadline_seconds: float | None = None,
    ) -> None:
        """``clock`` and ``handler_deadline_seconds`` together bound every request's handling."""
        self._clock = clock
        self._deadline = handler_deadline_seconds
        self._routes = tuple(routes)
        self._filters = tuple(filters)
        self._observers = tuple(observers)
        self._exact = _exact_paths(self._routes)

    @property
    def routes(self) -> tuple[Route, ...]:
        """The route table, in matching order."""
        return self._routes

    def getChildWithDefault(self, name: bytes, request: IRequest) -> IResource:
        """Never consulted (a leaf); answers with itself."""
        return self

    def putChild(self, path: bytes, child: IResource) -> None:
        """Children are not supported: pass routes to the constructor instead."""
        raise NotImplementedError("FederationRouter takes routes, not children")

    def render(self, request: IRequest) -> bytes | int:
        """Answer ``request`` (now or later); always NOT_DONE_YET."""
        try:
            answer = self._answer(request)
        except Exception:
            self._fail(request, _RequestState(), Failure())  # type: ignore[no-untyped-call]
            return NOT_DONE_YET
        if not isinstance(answer, Deferred):
            # The fast path: no filter or handler waited on anything, so no coroutine, no
            # callbacks, no deadline timer and no per-request state (the client cannot
            # have gone: we are still in the call that delivered its request).
            self._send(request, _ANSWERED_NOW, answer)
            return NOT_DONE_YET
        state = _RequestState()
        d = answer

        def client_gone(reason: Failure) -> None:
            state.client_gone = True
            d.cancel()

        cast(_ResponseWriter, request).notifyFinish().addErrback(client_gone)
        if not d.called and self._clock is not None and self._deadline is not None:
            d.addTimeout(self._deadline, self._clock)
        d.addCallbacks(
            lambda response: self._send(request, state, response),
            lambda failure: self._fail(request, state, failure),
        )
        return NOT_DONE_YET

    def _answer(
        self, request: IRequest, filters: Sequence[RequestFilter] | None = None
    ) -> JsonResponse | Deferred[JsonResponse]:
        """The response now, or a Deferred from the first filter or handler that waits.

        ``filters`` are those still to run (all of them when None).
        """
        remaining = self._filters if filters is None else filters
        try:
            for index, request_filter in enumerate(remaining):
                filtered = request_filter(request)
                if filtered is not None:
                    return Deferred.fromCoroutine(
                        self._answer_after(request, filtered, remaining[index + 1 :])
                    )
            handler, params = self._dispatch(request)
            result = handler(request, params)
        except MatrixError as e:
            return e.to_response()
        if isinstance(result, Deferred):
            return Deferred.fromCoroutine(self._await_handler(result))
        return result

    async def _answer_after(
        self, request: IRequest, pending: Deferred[None], filters: Sequence[RequestFilter]
    ) -> JsonResponse:
        """Wait for a filter, then go on with the filters after it, routing and the handler."""
        try:
            await pending
        except MatrixError as e:
            return e.to_response()
        answer = self._answer(request, filters)
        return await answer if isinstance(answer, Deferred) else answer

    @staticmethod
    async def _await_handler(result: Deferred[JsonResponse]) -> JsonResponse:
        try:
            return await result
        except MatrixError as e:
            return e.to_response()

    def _dispatch(self, request: IRequest) -> tuple[Handler, Mapping[str, str]]:
        path: bytes = request.path
        exact = self._exact.get((request.method, path))
        if exact is not None:
            return exact, _NO_PARAMS
        method = request.method.decode("ascii", "replace")
        if method == "HEAD":
            method = "GET"
        if not path.startswith(b"/"):
            # Asterisk-form (OPTIONS *) or anything else that is not a path: nothing we serve.
            raise MatrixError(400, "M_UNRECOGNIZED", "the request target is not a path")
        raw_segments = path[1:].split(b"/")
        allowed: list[str] = []
        for route in self._routes:
            raw_params = route.match(raw_segments)
            if raw_params is None:
                continue
            if route.method != method:
                allowed.append(route.method)
                continue
            params = {k: decode_path_segment(v) for k, v in raw_params.items()}
            return route.handler, params
        if allowed:
            if "GET" in allowed:
                allowed.append("HEAD")
            raise MatrixError(
                405,
                "M_UNRECOGNIZED",
                "Unrecognized request",
                {"Allow": ", ".join(sorted(set(allowed)))},
            )
        raise MatrixError(404, "M_UNRECOGNIZED", "Unrecognized request")

    def _send(self, request: IRequest, state: _RequestState, response: JsonResponse) -> None:
        """Write ``response`` and tell the observers; never raises (it runs as a callback)."""
        if state.client_gone:
            self._observe(request, CLIENT_CLOSED_REQUEST, None)
            return
        try:
            body, headers = encode_response(response)
        except Exception:
            log.failure(
                "Cannot encode the answer to {method} {uri}", method=request.method, uri=request.uri
            )
            response = _INTERNAL_ERROR
            body, headers = encode_response(response)
        try:
            _write_encoded(request, response.status, body, headers)
        except Exception:
            log.failure(
                "Writing the answer to {method} {uri} failed",
                method=request.method,
                uri=request.uri,
            )
        self._observe(request, response.status, response.body)

    def _fail(self, request: IRequest, state: _RequestState, failure: Failure) -> None:
        if state.client_gone and isinstance(failure.value, CancelledError):
            self._observe(request, CLIENT_CLOSED_REQUEST, None)
            return
        if isinstance(failure.value, TimeoutError):
            log.warn(
                "No answer to {method} {uri} within {seconds} s",
                method=request.method,
                uri=request.uri,
                seconds=self._deadline,
            )
            message = f"the request was not handled within {self._deadline:g} s"
            self._send(request, state, error_response(504, "M_UNKNOWN", message))
            return
        log.failure(
            "Unhandled error answering {method} {uri}",
            failure,
            method=request.method,
            uri=request.uri,
        )
        self._send(request, state, _INTERNAL_ERROR)

    def _observe(self, request: IRequest, status: int, body: Any) -> None:
        for observer in self._observers:
            try:
                observer(request, status, body)
            except Exception:
                log.failure("Request observer {observer!r} failed", observer=observer)


@dataclass
class _RequestState:
    client_gone: bool = False


#: The state of every request answered within ``render`` (never changed: only a request
#: answered later can see its client go first).
_ANSWERED_NOW = _RequestState()
