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
- **Connections**: at most :data:`MAX_CONCURRENT_CONNECTIONS` open at once over all
  listeners sharing a :class:`ConnectionCounter`, and at most
  :data:`MAX_CONNECTIONS_PER_ADDRESS` from one client address (an IPv6 client: one /64,
  see :func:`client_address_key`). A connection over its address's cap is aborted as it is
  accepted, before the TLS handshake. At the global cap, the connection idle longest (no
  request in progress or partly received) is aborted to make room; only when none is idle
  is the newcomer aborted instead. So 1,024 idle sockets lock nobody out (issue 12, row 8).
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
``HTTPChannel._handlingRequest``, ``_receivedHeaderSize``, ``_abortingCall``,
``_respondToBadRequestAndDisconnect``, ``totalHeadersSize``, ``LineReceiver._buffer``,
``MAX_LENGTH``, ``lineLengthExceeded`` and ``Request._handleStar`` (the ``*`` short cut
that :meth:`LimitedRequest.process` replaces).

Every refusal is a JSON body with ``Connection: close``; the connection is closed once
it is written and aborted :data:`ABORT_GRACE_SECONDS` later if the client does not read.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass
from io import BytesIO
from typing import Any, cast

from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITCPTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.resource import IResource

from stubserver.server.router import MAX_LARGE_BODY_BYTES, MAX_REQUEST_BODY_BYTES, SERVER_HEADER
from stubserver.signing.canonical_json import encode_json

#: A request's headers and body must be complete this long after its first byte, in seconds.
REQUEST_READ_DEADLINE_SECONDS = 30.0
#: Longest a handler (filters included) may take before the client gets 504, in seconds.
#: Above the outbound deadlines a handler may wait on (key fetch 10 s, requests 60 s... the
#: notary's fetches run in parallel under the 10 s key fetch deadline).
HANDLER_DEADLINE_SECONDS = 60.0
#: Longest an idle keep-alive connection stays open between requests, in seconds.
IDLE_TIMEOUT_SECONDS = 60
#: Most connections open at once over all listeners of one process.
MAX_CONCURRENT_CONNECTIONS = 1024
#: Most connections open at once from one client address (IPv4) or /64 (IPv6): a sixteenth
#: of the global cap, far above what a homeserver opens to a peer (Synapse: one per peer).
MAX_CONNECTIONS_PER_ADDRESS = 64
#: Prefix length under which IPv6 clients are counted together (one customer's network).
IPV6_CLIENT_PREFIX_LENGTH = 64
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


def body_cap_for(limits: ServerLimits, request_line: bytes) -> int:
    """The body cap for a request, from its request line (``METHOD TARGET VERSION``)."""
    parts = request_line.split(b" ")
    if len(parts) == 3:
        method, target = parts[0], parts[1]
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


def client_address_key(host: str) -> str:
    """The key a client's connections are counted under (pure).

    An IPv4 address counts alone (an IPv4-mapped IPv6 address as its IPv4 address); an IPv6
    address counts with its whole /64, since any client holds at least that many addresses.
    Anything else (a UNIX socket's path, say) counts as given.
    """
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_CLIENT_PREFIX_LENGTH), strict=False))
    return str(ip)


class ConnectionCounter:
    """Counts open connections against a global and a per-address cap; shared by every
    listener of a process, and keeps the idle ones in order so that the oldest can make room.
    """

    def __init__(self, limit: int, per_address_limit: int = MAX_CONNECTIONS_PER_ADDRESS) -> None:
        self.limit = limit
        self.per_address_limit = per_address_limit
        #: The counted connections and their address keys, so that shutdown can close them.
        self.channels: dict[http.HTTPChannel, str] = {}
        self._per_address: dict[str, int] = {}
        #: Idle counted connections, the one idle longest first.
        self._idle: OrderedDict[http.HTTPChannel, None] = OrderedDict()
        #: Channels holding a body over the ordinary cap (see MAX_CONCURRENT_LARGE_BODIES).
        self.large_bodies: set[http.HTTPChannel] = set()

    @property
    def open(self) -> int:
        """How many connections are counted."""
        return len(self.channels)

    def count_for(self, address_key: str) -> int:
        """How many connections are counted under ``address_key``."""
        return self._per_address.get(address_key, 0)

    def try_admit(self, channel: http.HTTPChannel, address_key: str) -> str | None:
        """Count ``channel`` (as idle), or say why not: None when admitted, else a reason.

        At the global cap the connection idle longest is aborted to make room.
        """
        if self.count_for(address_key) >= self.per_address_limit:
            return f"{self.per_address_limit} connections are open from {address_key}"
        if len(self.channels) >= self.limit and not self._evict_idle():
            return f"{self.limit} connections are open and none is idle"
        self.channels[channel] = address_key
        self._per_address[address_key] = self.count_for(address_key) + 1
        self._idle[channel] = None
        return None

    def _evict_idle(self) -> bool:
        if not self._idle:
            return False
        oldest = next(iter(self._idle))
        log.debug("At the connection cap: closing the connection idle longest")
        self.release(oldest)
        if oldest.transport is not None:
            cast(ITCPTransport, oldest.transport).abortConnection()
        return True

    def mark_idle(self, channel: http.HTTPChannel) -> None:
        """``channel`` has no request in progress: it may be closed to make room."""
        if channel in self.channels:
            self._idle[channel] = None
            self._idle.move_to_end(channel)

    def mark_busy(self, channel: http.HTTPChannel) -> None:
        """``channel`` started a request: it is not closed to make room."""
        self._idle.pop(channel, None)

    def is_idle(self, channel: http.HTTPChannel) -> bool:
        """Whether ``channel`` is counted as idle."""
        return channel in self._idle

    def try_hold_large_body(self, channel: http.HTTPChannel, limit: int) -> bool:
        """Let ``channel`` hold a body over the ordinary cap, if fewer than ``limit`` do."""
        if channel in self.large_bodies:
            return True
        if len(self.large_bodies) >= limit:
            return False
        self.large_bodies.add(channel)
        return True

    def release(self, channel: http.HTTPChannel) -> None:
        """Stop counting ``channel`` (idempotent)."""
        self.large_bodies.discard(channel)
        address_key = self.channels.pop(channel, None)
        if address_key is None:
            return
        self._idle.pop(channel, None)
        remaining = self._per_address[address_key] - 1
        if remaining:
            self._per_address[address_key] = remaining
        else:
            del self._per_address[address_key]

    def abort_all(self) -> int:
        """Abort every open connection (at shutdown); returns how many there were.

        Requests still in flight see their client go: their handlers are cancelled and the
        router's observers record them, so the request log can still write them out.
        """
        channels = list(self.channels)
        for channel in channels:
            if channel.transport is not None:
                cast(ITCPTransport, channel.transport).abortConnection()
        return len(channels)


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

    def process(self) -> None:
        """Process the request; an asterisk-form target (``OPTIONS *``) goes to the resource too.

        twisted.web answers ``*`` itself with an empty, non-JSON 200 (or 405); we let the
        resource answer it like any other target, so that every answer is JSON.
        """
        if self.path != b"*":
            super().process()  # type: ignore[no-untyped-call]
            return
        self.site = cast(LimitedHTTPChannel, self.channel).site
        self.prepath = []
        self.postpath = []
        try:
            self.render(self.site.resource)  # type: ignore[no-untyped-call]
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


class LimitedHTTPChannel(http.HTTPChannel):
    """An HTTP/1.1 channel enforcing :class:`ServerLimits` (see the module docstring)."""

    site: LimitedSite
    MAX_LENGTH = MAX_REQUEST_LINE_BYTES
    totalHeadersSize = MAX_HEADER_BLOCK_BYTES
    _refused = False
    _read_deadline: IDelayedCall | None = None
    #: The body cap of the request being received (set from its request line).
    _body_cap = MAX_REQUEST_BODY_BYTES
    #: True until the current request's request line has arrived.
    _awaiting_request_line = True

    @property
    def limits(self) -> ServerLimits:
        """The limits of the site this channel serves."""
        return self.site.limits

    def connectionMade(self) -> None:
        """Count the connection (abort it when over a cap) and start its read deadline."""
        super().connectionMade()  # type: ignore[no-untyped-call]
        peer = self.transport.getPeer()  # type: ignore[union-attr]
        address_key = client_address_key(str(getattr(peer, "host", peer)))
        refusal = self.site.connections.try_admit(self, address_key)
        if refusal is not None:
            self._refused = True
            log.debug("Refusing a connection: {reason}", reason=refusal)
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        self._arm_read_deadline()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        """Release the connection's place and cancel its timers."""
        self._cancel_read_deadline()
        self.site.connections.release(self)
        super().connectionLost(reason)  # type: ignore[no-untyped-call]

    def dataReceived(self, data: bytes) -> None:
        """Parse ``data`` unless the connection was refused; a new request starts its deadline."""
        if self._refused:
            return
        self.site.connections.mark_busy(self)
        if self._read_deadline is None and not self._handlingRequest:
            self._arm_read_deadline()
        super().dataReceived(data)  # type: ignore[no-untyped-call]

    def lineReceived(self, line: bytes) -> None:
        """Parse a request or header line unless refused; refuse a header block too large."""
        if self._refused:
            return
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self.refuse(
                431,
                "M_UNKNOWN",
                f"the request line and headers are longer than {self.totalHeadersSize} bytes",
            )
            return
        if self._awaiting_request_line and line:
            self._awaiting_request_line = False
            self._body_cap = body_cap_for(self.limits, line)
        super().lineReceived(line)  # type: ignore[no-untyped-call]

    def admit_body_size(self, size: int) -> bool:
        """Whether a body of ``size`` bytes may be received; refuses the request if not."""
        if size > self._body_cap:
            self.refuse(
                413, "M_TOO_LARGE", f"the request body is larger than {self._body_cap} bytes"
            )
            return False
        if size > self.limits.max_body_bytes and not self.site.connections.try_hold_large_body(
            self, self.limits.max_concurrent_large_bodies
        ):
            self.refuse(
                503, "M_LIMIT_EXCEEDED", "too many large request bodies at once; try again later"
            )
            return False
        return True

    def lineLengthExceeded(self, line: bytes) -> None:
        """A line passed :data:`MAX_REQUEST_LINE_BYTES`: 414 for the request line, else 431."""
        if self._receivedHeaderSize == 0:
            self.refuse(
                414, "M_UNKNOWN", f"the request line is longer than {self.MAX_LENGTH} bytes"
            )
        else:
            self.refuse(431, "M_UNKNOWN", f"a header line is longer than {self.MAX_LENGTH} bytes")

    def rawDataReceived(self, data: bytes) -> None:
        """Parse body bytes unless the connection was refused."""
        if not self._refused:
            super().rawDataReceived(data)

    def allHeadersReceived(self) -> None:
        """Refuse a declared length over the cap now, before reading (or 100-continuing) it."""
        if self._refused:
            return
        length: int | None = self.length
        if length is not None and not self.admit_body_size(length):
            return
        super().allHeadersReceived()  # type: ignore[no-untyped-call]

    def allContentReceived(self) -> None:
        """The request is complete: stop its read deadline and hand it over."""
        if self._refused:
            return
        self._cancel_read_deadline()
        self._awaiting_request_line = True
        super().allContentReceived()  # type: ignore[no-untyped-call]

    def requestDone(self, request: Any) -> None:
        """After a response: a partly received next request gets its read deadline now;
        a connection with nothing more received becomes idle (it may be closed to make room).
        """
        super().requestDone(request)  # type: ignore[no-untyped-call]
        self.site.connections.large_bodies.discard(self)
        if (
            self._refused
            or self._handlingRequest
            or self.transport is None
            or self.transport.disconnecting  # type: ignore[attr-defined]
        ):
            return
        if self._buffer or self._receivedHeaderSize:
            if self._read_deadline is None:
                self._arm_read_deadline()
        else:
            self.site.connections.mark_idle(self)

    def _respondToBadRequestAndDisconnect(self) -> None:
        """twisted.web's answer to bad framing, as a Matrix error."""
        self.refuse(400, "M_UNKNOWN", "malformed HTTP request")

    def refuse(self, status: int, errcode: str, message: str) -> None:
        """Answer ``status`` with a Matrix error, then close; nothing more is parsed."""
        if self._refused:
            return
        self._refused = True
        self._cancel_read_deadline()
        self.persistent = False
        self.transport.write(refusal_bytes(status, errcode, message))  # type: ignore[union-attr]
        self._close_with_grace()

    def _close_with_grace(self) -> None:
        self.loseConnection()  # type: ignore[no-untyped-call]
        if self._abortingCall is None and self.transport is not None:
            self._abortingCall = self.callLater(  # type: ignore[no-untyped-call]
                self.limits.abort_grace_seconds, self.forceAbortClient
            )

    def _arm_read_deadline(self) -> None:
        self._read_deadline = self.callLater(  # type: ignore[no-untyped-call]
            self.limits.read_deadline_seconds, self._read_deadline_passed
        )

    def _cancel_read_deadline(self) -> None:
        if self._read_deadline is not None:
            if self._read_deadline.active():
                self._read_deadline.cancel()
            self._read_deadline = None

    def _read_deadline_passed(self) -> None:
        self._read_deadline = None
        if self._refused or self._handlingRequest:
            return
        if self._buffer or self._receivedHeaderSize:
            self.refuse(
                408,
                "M_UNKNOWN",
                f"the request was not complete within {self.limits.read_deadline_seconds:g} s",
            )
        else:
            self._refused = True
            self._close_with_grace()


class LimitedSite(server.Site):
    """A ``Site`` whose connections enforce ``limits`` (see the module docstring).

    ``connections`` is shared by every site of a process so that the cap is global.
    """

    protocol = LimitedHTTPChannel  # type: ignore[assignment]
    requestFactory = LimitedRequest

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
        self.displayTracebacks = False
        self.noisy = False

    def log(self, request: object) -> None:
        """No per-request access-log line (twisted.web writes one by default).

        Formatting and writing it took 18 % of the key endpoint's time under load (py-spy,
        bench/README.md). Federation requests are recorded by the request log
        (``request_log_path``) instead, with what an operator needs: origin and auth result.
        """
