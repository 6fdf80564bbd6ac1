"""Inbound limits: what a hostile or broken client can make the federation listener do.

twisted.web alone is not enough for a server on the open internet: its idle timer is
reset by every byte and paused while a request is handled (a slowloris connection
trickling one byte a second lives for ever), it spools large bodies to temporary files,
and it parses form bodies into ``request.args``. :class:`LimitedSite` serves a resource
with these limits instead (each a named constant, collected in :class:`ServerLimits`):

- **Body size**: :data:`MAX_REQUEST_BODY_BYTES` (64 KiB; no federation request we serve
  needs more). A ``Content-Length`` above it is answered 413 ``M_TOO_LARGE`` as soon as
  the headers end, before one byte of the body is read (and without ``100 Continue``); a
  chunked body is cut off with the same answer the moment it passes the cap. Bodies are
  held in memory, never spooled to disk.
- **Large bodies**: the requests that carry several PDUs (``/send`` transactions: up to 50
  PDUs of 64 KiB and 100 EDUs; ``send_join``, ``send_leave`` and ``invite`` with their
  invite room state) may carry up to :data:`MAX_LARGE_BODY_BYTES`
  (:data:`LARGE_BODY_ROUTES`), and at most :data:`MAX_CONCURRENT_LARGE_BODIES` bodies over
  the 64 KiB cap are held at once over the whole process, so that their memory stays
  bounded (:data:`MAX_LARGE_BODY_BYTES` times that); one more is answered 503
  ``M_LIMIT_EXCEEDED``.
- **Read deadline**: a request's headers and body must arrive within
  :data:`REQUEST_READ_DEADLINE_SECONDS` of its first byte (for a connection's first
  request: of the connection itself, so that a slow TLS handshake counts too), however
  slowly they trickle. Past it the client gets 408 ``M_UNKNOWN`` (or, when it sent nothing,
  a plain close).
- **Idle keep-alive**: Twisted's idle timer, :data:`IDLE_TIMEOUT_SECONDS`, between requests.
- **Handler deadline**: a handler (with its filters) that has not answered within
  :data:`HANDLER_DEADLINE_SECONDS` is cancelled and the client gets 504 ``M_UNKNOWN``
  (enforced by :class:`stubserver.server.router.FederationRouter`, which is given the value).
- **Connections**: at most :data:`~stubserver.server.connections.MAX_CONCURRENT_CONNECTIONS`
  open at once, and at most
  :data:`~stubserver.server.connections.MAX_CONNECTIONS_PER_ADDRESS` from one client
  address, counted by :class:`~stubserver.server.connections.ConnectionCounter` (which
  says how idle connections make room). A connection over its address's cap is aborted as
  it is accepted, before the TLS handshake.
- **Line lengths**: a request line over :data:`MAX_REQUEST_LINE_BYTES` is answered 414
  ``M_UNKNOWN`` at once, a header line over it or a header block over
  :data:`MAX_HEADER_BLOCK_BYTES` 431 ``M_UNKNOWN`` (issue 12, row 15). twisted.web (and so
  Synapse) just drops the connection without an answer, and on TLS, with the channel still
  registered as the transport's producer, the drop waited for the read deadline. 414 rather
  than 400 for the request line: RFC 9110 section 15.5.15 names 414 for a request target
  longer than the server will interpret, the request line is almost all target, and nginx
  answers the same; 431 is RFC 6585 section 5's status for oversized header fields.
- **Framing**: what twisted.web refuses (two ``Content-Length`` headers,
  ``Content-Length`` with ``Transfer-Encoding``, a length that is not all ASCII digits,
  a malformed chunk, an unknown transfer coding, oversized headers) is answered 400
  ``M_UNKNOWN`` as JSON and the connection closed; nothing after the bad request on that
  connection is ever parsed or served.
- **Forms**: ``application/x-www-form-urlencoded`` and ``multipart/form-data`` bodies are
  never parsed (``request.args`` only ever holds the query string).
- **Every answer is JSON**: ``OPTIONS *`` (and any asterisk-form target) goes to the
  resource like any other request (the router answers 400 ``M_UNRECOGNIZED``) instead of
  twisted.web's empty 200, and an exception that escapes the resource is answered 500
  ``M_UNKNOWN`` as JSON instead of twisted.web's HTML page (issue 12, rows 6 and 15).

twisted.web internals this module relies on (private names, checked by
``tests/server/test_twisted_canary.py`` so that an upgrade that changes them fails loudly):
``HTTPChannel._handlingRequest``, ``_receivedHeaderSize``, ``_command``, ``_path``,
``_abortingCall``, ``_respondToBadRequestAndDisconnect``, ``totalHeadersSize``,
``LineReceiver._buffer``, ``MAX_LENGTH``, ``lineLengthExceeded`` and
``Request._handleStar`` (the ``*`` short cut
that :meth:`LimitedRequest.process` replaces).

Every refusal is a JSON body with ``Connection: close``; the connection is closed once
it is written and aborted :data:`ABORT_GRACE_SECONDS` later if the client does not read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from io import BytesIO
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import unquote_to_bytes as unquote

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.resource import IResource, _IEncodingResource

from stubserver.server.connections import (
    MAX_CONCURRENT_CONNECTIONS,
    MAX_CONNECTIONS_PER_ADDRESS,
    ConnectionCounter,
    client_address_key,
)
from stubserver.server.router import MAX_LARGE_BODY_BYTES, MAX_REQUEST_BODY_BYTES, SERVER_HEADER
from stubserver.signing.canonical_json import encode_json

if TYPE_CHECKING:
    from stubserver.server.faults import ServerFaults

#: A request's headers and body must be complete this long after its first byte, in seconds.
REQUEST_READ_DEADLINE_SECONDS = 30.0
#: Longest a handler (filters included) may take before the client gets 504, in seconds.
#: Above the outbound deadlines a handler may wait on (key fetch 10 s, requests 60 s... the
#: notary's fetches run in parallel under the 10 s key fetch deadline).
HANDLER_DEADLINE_SECONDS = 60.0
#: Longest an idle keep-alive connection stays open between requests, in seconds.
IDLE_TIMEOUT_SECONDS = 60
#: Longest request line or header line, in bytes (16 KiB, twisted.web's own line cap).
MAX_REQUEST_LINE_BYTES = 16 * 1024
#: The (method, path prefix) pairs whose bodies may pass MAX_REQUEST_BODY_BYTES.
LARGE_BODY_ROUTES: tuple[tuple[bytes, bytes], ...] = (
    (b"PUT", b"/_matrix/federation/v1/send/"),
    (b"PUT", b"/_matrix/federation/v2/send_join/"),
    (b"PUT", b"/_matrix/federation/v2/send_leave/"),
    (b"PUT", b"/_matrix/federation/v2/invite/"),
)
#: Most bodies over MAX_REQUEST_BODY_BYTES held at once by one process (so at most
#: 16 x 8 MiB = 128 MiB of them).
MAX_CONCURRENT_LARGE_BODIES = 16
#: Most bytes of request line and headers together, in bytes (twisted.web's default).
MAX_HEADER_BLOCK_BYTES = 16 * 1024
#: After a refusal is written, how long the client has to read it before the abort, in seconds.
ABORT_GRACE_SECONDS = 5.0

log = Logger()

_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    413: b"Payload Too Large",
    503: b"Service Unavailable",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
}


def body_cap_for_target(limits: ServerLimits, method: bytes, target: bytes) -> int:
    """The body cap for a request, from its method and request target."""
    for route_method, prefix in limits.large_body_routes:
        if method == route_method and target.startswith(prefix):
            return limits.max_large_body_bytes
    return limits.max_body_bytes


@dataclass(frozen=True)
class ServerLimits:
    """The inbound limits of one process (defaults: the module's constants)."""

    max_body_bytes: int = MAX_REQUEST_BODY_BYTES
    max_large_body_bytes: int = MAX_LARGE_BODY_BYTES
    large_body_routes: tuple[tuple[bytes, bytes], ...] = LARGE_BODY_ROUTES
    max_concurrent_large_bodies: int = MAX_CONCURRENT_LARGE_BODIES
    read_deadline_seconds: float = REQUEST_READ_DEADLINE_SECONDS
    handler_deadline_seconds: float = HANDLER_DEADLINE_SECONDS
    idle_timeout_seconds: int = IDLE_TIMEOUT_SECONDS
    max_connections: int = MAX_CONCURRENT_CONNECTIONS
    max_connections_per_address: int = MAX_CONNECTIONS_PER_ADDRESS
    abort_grace_seconds: float = ABORT_GRACE_SECONDS


def refusal_bytes(status: int, errcode: str, message: str) -> bytes:
    """A complete HTTP/1.1 response carrying a Matrix error, closing the connection."""
    body = encode_json({"errcode": errcode, "error": message})
    head = b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Error")),
            b"Content-Type: application/json\r\n",
            b"Content-Length: %d\r\n" % len(body),
            b"Connection: close\r\n",
            b"Server: " + SERVER_HEADER + b"\r\n\r\n",
        ]
    )
    return head + body


class HttpDate:
    """The ``Date`` header as twisted.web formats it, made once per second (it names
    whole seconds; issue 22: formatting it took ~1 us of every key request). One per
    site."""

    def __init__(self) -> None:
        self._second: int | None = None
        self._value = b""

    def __call__(self, now: float | None = None) -> bytes:
        """The header for ``now`` (default: the system clock)."""
        second = int(time.time() if now is None else now)
        if second != self._second:
            self._value = http.datetimeToString(second)  # type: ignore[no-untyped-call]
            self._second = second
        return self._value


class LimitedRequest(server.Request):
    """A request whose body is held in memory and cut off at the site's body cap."""

    _body_bytes = 0

    def gotLength(self, length: int | None) -> None:
        """Keep the body in memory: the channel guarantees it is at most the cap."""
        self.content = BytesIO()

    def handleContentChunk(self, data: bytes) -> None:
        """Store a piece of the body, or refuse the request once it passes the cap."""
        channel = cast(LimitedHTTPChannel, self.channel)
        self._body_bytes += len(data)
        if not channel.admit_body_size(self._body_bytes):
            return
        super().handleContentChunk(data)  # type: ignore[no-untyped-call]

    @property
    def postpath(self) -> list[bytes]:
        """The path segments not yet consumed (twisted.web's ``postpath``), decoded from
        ``path`` when first read: our router, a leaf at the root, never reads them
        (issue 22, the key endpoint's hot path: four ``unquote`` calls a request)."""
        postpath = self._postpath
        if postpath is None:
            postpath = self._postpath = [unquote(s) for s in self.path[1:].split(b"/")]
        return postpath

    @postpath.setter
    def postpath(self, value: list[bytes]) -> None:
        self._postpath = value

    _postpath: list[bytes] | None = None

    def process(self) -> None:
        """Process the request as twisted.web does, but: our ``Server`` header, a ``Date``
        made once a second, no resource walk for a leaf at the root, and an asterisk-form
        target (``OPTIONS *``) goes to the resource too.

        twisted.web answers ``*`` itself with an empty, non-JSON 200 (or 405); we let the
        resource answer it like any other target, so that every answer is JSON.
        """
        site = cast(LimitedHTTPChannel, self.channel).site
        self.site = site
        self.setHeader(b"Server", SERVER_HEADER)  # type: ignore[no-untyped-call]
        self.setHeader(b"Date", site.http_date())  # type: ignore[no-untyped-call]
        self.prepath = []
        try:
            if self.path == b"*":
                self.postpath = []
                resource = site.resource
            elif site.resource_is_leaf:
                self.sitepath: list[bytes] = []
                resource = site.resource
            else:
                resource = site.getResourceFor(self)  # type: ignore[no-untyped-call]
            if _IEncodingResource.providedBy(resource):
                encoder = resource.getEncoder(self)  # type: ignore[no-untyped-call]
                if encoder is not None:
                    self._encoder = encoder
            self.render(resource)  # type: ignore[no-untyped-call]
        except BaseException:
            self.processingFailed(Failure())  # type: ignore[no-untyped-call]

    def processingFailed(self, reason: Failure) -> None:
        """An exception escaped the resource: answer 500 ``M_UNKNOWN`` as JSON, not HTML."""
        log.failure("Unhandled error serving {uri}", reason, uri=self.uri)
        if self.finished or self._disconnected:
            return
        if self.startedWriting:
            # Part of another answer is on the wire already: all we can do is close.
            self.channel.loseConnection()  # type: ignore[no-untyped-call]
            return
        body = encode_json({"errcode": "M_UNKNOWN", "error": "Internal server error"})
        self.setResponseCode(500)
        self.responseHeaders.setRawHeaders(b"Content-Type", [b"application/json"])
        self.responseHeaders.setRawHeaders(b"Content-Length", [b"%d" % len(body)])
        self.responseHeaders.setRawHeaders(b"Server", [SERVER_HEADER])
        self.write(body)  # type: ignore[no-untyped-call]
        self.finish()  # type: ignore[no-untyped-call]


def _ignore(*args: object) -> None:
    """What a refused connection does with anything more it receives."""


#: The methods through which a channel parses what it receives (replaced once refused).
_RECEIVING_METHODS = (
    "dataReceived",
    "lineReceived",
    "rawDataReceived",
    "allHeadersReceived",
    "allContentReceived",
)


class LimitedHTTPChannel(http.HTTPChannel):
    """An HTTP/1.1 channel enforcing :class:`ServerLimits` (see the module docstring).

    The hot path (issue 22, the key endpoint) adds one method of ours per read and one per
    response to twisted.web's: request and header lines go to twisted.web's own
    ``lineReceived`` (its header-block check ends in :meth:`_respondToBadRequestAndDisconnect`,
    which answers 431 for it), the body cap is worked out only for a body over the
    ordinary cap, and a refused connection stops parsing by replacing its receiving
    methods (as twisted.web does for data after a non-persistent request), not by a check
    in each of them.
    """

    site: LimitedSite
    MAX_LENGTH = MAX_REQUEST_LINE_BYTES
    totalHeadersSize = MAX_HEADER_BLOCK_BYTES
    _refused = False
    #: The read deadline's call, kept across requests (moved with ``reset``, not made
    #: and cancelled per request: issue 22, the key endpoint); it counts only while
    #: ``_deadline_armed``.
    _read_deadline: IDelayedCall | None = None
    #: True from a request's first byte (or the connection's start) until its answer is
    #: done; past the read deadline it is cut only while not being handled.
    _deadline_armed = False
    #: True while the connection counter holds this connection as idle.
    _counted_idle = False

    @property
    def limits(self) -> ServerLimits:
        """The limits of the site this channel serves."""
        return self.site.limits

    def connectionMade(self) -> None:
        """Count the connection (abort it when over a cap) and start its read deadline."""
        super().connectionMade()  # type: ignore[no-untyped-call]
        faults = self.site.faults
        if faults is not None and not faults.admits_connection(self.transport):
            self._refused = True  # the server is down (fault injection): reset, not counted
            return
        peer = self.transport.getPeer()  # type: ignore[union-attr]
        address_key = client_address_key(str(getattr(peer, "host", peer)))
        refusal = self.site.connections.try_admit(self, address_key)
        if refusal is not None:
            self._stop_receiving()
            log.debug("Refusing a connection: {reason}", reason=refusal)
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        self._counted_idle = True
        self._arm_read_deadline()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        """Release the connection's place and cancel its timers."""
        self._cancel_read_deadline()
        if self._read_deadline is not None and self._read_deadline.active():
            self._read_deadline.cancel()
        self._read_deadline = None
        self.site.connections.release(self)
        super().connectionLost(reason)  # type: ignore[no-untyped-call]

    def dataReceived(self, data: bytes) -> None:
        """Parse ``data``; the first byte of a request makes the connection busy and starts
        the request's read deadline."""
        if self._counted_idle:
            self._counted_idle = False
            self.site.connections.mark_busy(self)
        if not self._deadline_armed and not self._handlingRequest:
            self._arm_read_deadline()
        super().dataReceived(data)  # type: ignore[no-untyped-call]

    def admit_body_size(self, size: int) -> bool:
        """Whether a body of ``size`` bytes may be received; refuses the request if not."""
        limits = self.site.limits
        if size <= limits.max_body_bytes and size <= limits.max_large_body_bytes:
            return True  # within every cap (the hot path: no body at all)
        cap = self._body_cap()
        if size > cap:
            self.refuse(413, "M_TOO_LARGE", f"the request body is larger than {cap} bytes")
            return False
        if size > limits.max_body_bytes and not self.site.connections.try_hold_large_body(
            self, limits.max_concurrent_large_bodies
        ):
            self.refuse(
                503, "M_LIMIT_EXCEEDED", "too many large request bodies at once; try again later"
            )
            return False
        return True

    def _body_cap(self) -> int:
        """The body cap of the request being received (its request line has been parsed)."""
        return body_cap_for_target(self.limits, self._command, self._path)

    def lineLengthExceeded(self, line: bytes) -> None:
        """A line passed :data:`MAX_REQUEST_LINE_BYTES`: 414 for the request line, else 431."""
        if self._receivedHeaderSize == 0:
            self.refuse(
                414, "M_UNKNOWN", f"the request line is longer than {self.MAX_LENGTH} bytes"
            )
        else:
            self.refuse(431, "M_UNKNOWN", f"a header line is longer than {self.MAX_LENGTH} bytes")

    def allHeadersReceived(self) -> None:
        """Refuse a declared length over the cap now, before reading (or 100-continuing) it."""
        length: int | None = self.length
        if length and not self.admit_body_size(length):
            return
        super().allHeadersReceived()  # type: ignore[no-untyped-call]

    def requestDone(self, request: Any) -> None:
        """After a response: a partly received next request gets its read deadline now;
        a connection with nothing more received becomes idle (it may be closed to make room).
        """
        self._deadline_armed = False
        super().requestDone(request)  # type: ignore[no-untyped-call]
        self.site.connections.large_bodies.discard(self)
        if (
            self._refused
            or self._handlingRequest
            or self._deadline_armed
            or self.transport is None
            or self.transport.disconnecting  # type: ignore[attr-defined]
        ):
            return
        if self._buffer or self._receivedHeaderSize:
            self._arm_read_deadline()
        else:
            self._counted_idle = True
            self.site.connections.mark_idle(self)

    def _respondToBadRequestAndDisconnect(self) -> None:
        """twisted.web's answer to bad framing, as a Matrix error; to a header block over
        :data:`MAX_HEADER_BLOCK_BYTES` (which twisted.web's ``lineReceived`` counts, then
        calls this), 431."""
        if self._receivedHeaderSize > self.totalHeadersSize:
            self.refuse(
                431,
                "M_UNKNOWN",
                f"the request line and headers are longer than {self.totalHeadersSize} bytes",
            )
            return
        self.refuse(400, "M_UNKNOWN", "malformed HTTP request")

    def refuse(self, status: int, errcode: str, message: str) -> None:
        """Answer ``status`` with a Matrix error, then close; nothing more is parsed."""
        if self._refused:
            return
        self._stop_receiving()
        self._cancel_read_deadline()
        self.persistent = False
        self.transport.write(refusal_bytes(status, errcode, message))  # type: ignore[union-attr]
        self._close_with_grace()

    def _stop_receiving(self) -> None:
        """Nothing more received on this connection is parsed (refused): its receiving
        methods are replaced (the lines of a read still being split included)."""
        self._refused = True
        for name in _RECEIVING_METHODS:
            setattr(self, name, _ignore)

    def _close_with_grace(self) -> None:
        self.loseConnection()  # type: ignore[no-untyped-call]
        if self._abortingCall is None and self.transport is not None:
            self._abortingCall = self.callLater(  # type: ignore[no-untyped-call]
                self.limits.abort_grace_seconds, self.forceAbortClient
            )

    def _arm_read_deadline(self) -> None:
        self._deadline_armed = True
        call = self._read_deadline
        if call is not None and call.active():
            call.reset(self.limits.read_deadline_seconds)
        else:
            self._read_deadline = self.callLater(  # type: ignore[no-untyped-call]
                self.limits.read_deadline_seconds, self._read_deadline_passed
            )

    def _cancel_read_deadline(self) -> None:
        # Disarmed only: the call stays, to be moved by the next request's ``reset``
        # (cancelled for good when the connection is lost).
        self._deadline_armed = False

    def _read_deadline_passed(self) -> None:
        self._read_deadline = None
        if not self._deadline_armed:
            return
        if self._refused or self._handlingRequest:
            return  # complete and being handled: the handler deadline applies now
        self._deadline_armed = False
        if self._buffer or self._receivedHeaderSize:
            self.refuse(
                408,
                "M_UNKNOWN",
                f"the request was not complete within {self.limits.read_deadline_seconds:g} s",
            )
        else:
            self._stop_receiving()
            self._close_with_grace()


class LimitedSite(server.Site):
    """A ``Site`` whose connections enforce ``limits`` (see the module docstring).

    ``connections`` is shared by every site of a process so that the cap is global.
    """

    protocol = LimitedHTTPChannel  # type: ignore[assignment]
    requestFactory = LimitedRequest
    #: The faults of the server this site serves (``stubserver.server.faults``), consulted
    #: as each connection is accepted; None: no fault injection.
    faults: ServerFaults | None = None

    def __init__(
        self,
        resource: IResource,
        clock: IReactorTime,
        limits: ServerLimits,
        connections: ConnectionCounter,
    ) -> None:
        super().__init__(  # type: ignore[no-untyped-call]
            resource,
            reactor=clock,
            timeout=limits.idle_timeout_seconds,
            parsePOSTFormSubmission=False,
        )
        self.limits = limits
        self.connections = connections
        #: Whether ``resource`` answers every path itself (no walk over children).
        self.resource_is_leaf = bool(getattr(resource, "isLeaf", False))
        #: The ``Date`` header of this site's answers.
        self.http_date = HttpDate()
        self.displayTracebacks = False
        self.noisy = False

    def log(self, request: object) -> None:
        """No per-request access-log line (twisted.web writes one by default).

        Formatting and writing it took 18 % of the key endpoint's time under load (py-spy,
        bench/README.md). Federation requests are recorded by the request log
        (``request_log_path``) instead, with what an operator needs: origin and auth result.
        """
