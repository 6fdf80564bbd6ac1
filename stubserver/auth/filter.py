"""The inbound X-Matrix filter: every ``/_matrix/...`` request but the key endpoints.

:class:`XMatrixFilter` (a ``RequestFilter`` of :class:`stubserver.server.router.FederationRouter`)
checks X-Matrix credentials, when given, with a
:class:`stubserver.auth.authenticator.RequestAuthenticator`. Good credentials are noted in
the request annotations (``origin``, ``authenticated``, and ``content``: the JSON body the
signature covered); bad ones answer 400/401 ``M_UNAUTHORIZED`` at once, whatever the path.
A request without credentials goes on (noted as ``auth_error``): endpoints that need
authentication call :func:`require_origin` before they read the body; unknown paths then
answer the router's 404 ``M_UNRECOGNIZED``.

Authentication before parsing (issue 22, row 1): the body is parsed only when the
authenticator asks for it, which is after the header was found well formed, for us, and
naming a key its origin publishes. A request without an X-Matrix header, with a malformed
one, or from an origin whose keys cannot be fetched never has its body parsed (Synapse's
``BaseFederationServlet`` likewise authenticates before its servlet reads the content).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
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
from stubserver.server.router import (
    MatrixError,
    body_length,
    read_json_body,
    read_json_body_in_slices,
    request_annotations,
)
from stubserver.slices import SMALL_BODY_BYTES, TimeSlices

#: Paths whose X-Matrix credentials the filter checks (contract: "any other /_matrix/
#: path: X-Matrix checked and logged where given") ...
CHECKED_PREFIX = b"/_matrix/"
#: ... except the key endpoints, which need no authentication (as Synapse): checking there
#: would make every key request wait for a key fetch of its own.
UNCHECKED_PREFIX = b"/_matrix/key/"
MISSING_AUTH_MESSAGE = "Missing Authorization headers"
#: Bodies larger than this, in bytes, are parsed in slices of time when the filter has a
#: clock (issue 22: a 4 MB /send held the reactor ~130 ms for its parse alone); an
#: ordinary /send of 50 PDUs is ~35 KB and parses in one go.
SLICED_PARSE_BYTES = SMALL_BODY_BYTES


class Authenticator(Protocol):
    """What the filter needs: ``RequestAuthenticator.authenticate`` (auth/authenticator.py)."""

    def authenticate(
        self, method: bytes, uri: bytes, headers: Headers, read_content: Callable[[], Any]
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


def _body_reader(
    request: IRequest, notes: dict[str, Any], clock: IReactorTime | None
) -> Callable[[], Any]:
    """Parses the body (None when empty) and notes it as ``content`` (and its size as
    ``body_bytes``, for the request log's cap), when called. With ``clock``, a body over
    :data:`SLICED_PARSE_BYTES` is parsed in slices of time: the call then answers a
    Deferred of the body."""

    def read() -> Any:
        if not _has_body(request):
            return None
        size = body_length(request)
        if clock is not None and size > SLICED_PARSE_BYTES:
            return Deferred.fromCoroutine(read_in_slices(clock, size))
        content = read_json_body(request)
        notes.update(content=content, body_bytes=size)
        return content

    async def read_in_slices(clock: IReactorTime, size: int) -> Any:
        content = await read_json_body_in_slices(request, TimeSlices(clock).pause)
        notes.update(content=content, body_bytes=size)
        return content

    return read


class XMatrixFilter:
    """A ``RequestFilter`` checking X-Matrix credentials on federation paths (module doc)."""

    def __init__(
        self,
        authenticator: Authenticator,
        on_authenticated: Callable[[str], None] | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        self._authenticator = authenticator
        self._on_authenticated = on_authenticated
        # With a clock, bodies of megabytes are parsed in slices (issue 22).
        self._clock = clock

    def __call__(self, request: IRequest) -> Deferred[None] | None:
        """Annotate ``request``; fail with MatrixError when its credentials are bad."""
        notes = request_annotations(request)
        notes.update(origin=None, authenticated=False, auth_error=None, content=None)
        path: bytes = request.path
        if not path.startswith(CHECKED_PREFIX) or path.startswith(UNCHECKED_PREFIX):
            return None
        headers: Headers = request.requestHeaders
        raw = headers.getRawHeaders(b"authorization", [])
        if not any(is_xmatrix(v) for v in raw):
            notes["auth_error"] = MISSING_AUTH_MESSAGE
            return None
        d = self._authenticator.authenticate(
            request.method, request.uri, headers, _body_reader(request, notes, self._clock)
        )

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
            # Its log line is the refusal's (stubserver.server.refusals): one per request.
            raise MatrixError(error.status, error.errcode, error.message)

        return d.addCallbacks(authenticated, rejected)


def request_content(request: IRequest) -> Any:
    """The JSON body of ``request``: the one this filter parsed when it authenticated the
    request (the signature covers it; parsed once for both), else read now
    (``read_json_body``: 413/400 when too big or not JSON)."""
    notes = request_annotations(request)
    content = notes.get("content")
    if content is None or not notes.get("authenticated"):
        return read_json_body(request)
    return content


def require_origin(request: IRequest) -> str:
    """The authenticated origin of ``request``; MatrixError 401 when it has none."""
    notes = request_annotations(request)
    if not notes.get("authenticated"):
        raise MatrixError(401, M_UNAUTHORIZED, notes.get("auth_error") or MISSING_AUTH_MESSAGE)
    origin: str = notes["origin"]
    return origin
