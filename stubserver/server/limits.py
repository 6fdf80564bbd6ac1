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
  listeners sharing a :class:`ConnectionCounter`; a connection over the cap is aborted
  as it is accepted, before the TLS handshake.
- **Framing**: what twisted.web refuses (two ``Content-Length`` headers,
  ``Content-Length`` with ``Transfer-Encoding``, a length that is not all ASCII digits,
  a malformed chunk, an unknown transfer coding, oversized headers) is answered 400
  ``M_UNKNOWN`` as JSON and the connection closed; nothing after the bad request on that
  connection is ever parsed or served.
- **Forms**: ``application/x-www-form-urlencoded`` and ``multipart/form-data`` bodies are
  never parsed (``request.args`` only ever holds the query string).

Every refusal is a JSON body with ``Connection: close``; the connection is closed once
it is written and aborted :data:`ABORT_GRACE_SECONDS` later if the client does not read.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO
from typing import Any, cast

from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITCPTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.resource import IResource

from stubserver.server.router import MAX_REQUEST_BODY_BYTES, SERVER_HEADER
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
#: After a refusal is written, how long the client has to read it before the abort, in seconds.
ABORT_GRACE_SECONDS = 5.0

log = Logger()

_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    413: b"Payload Too Large",
}


@dataclass(frozen=True)
class ServerLimits:
    """The inbound limits of one process (defaults: the module's constants)."""

    max_body_bytes: int = MAX_REQUEST_BODY_BYTES
    read_deadline_seconds: float = REQUEST_READ_DEADLINE_SECONDS
    handler_deadline_seconds: float = HANDLER_DEADLINE_SECONDS
    idle_timeout_seconds: int = IDLE_TIMEOUT_SECONDS
    max_connections: int = MAX_CONCURRENT_CONNECTIONS
    abort_grace_seconds: float = ABORT_GRACE_SECONDS


class ConnectionCounter:
    """Counts open connections against a cap; shared by every listener of a process."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        #: The counted connections themselves, so that shutdown can close them.
        self.channels: set[http.HTTPChannel] = set()

    def try_acquire(self) -> bool:
        """Count one more connection; False (nothing counted) when at the cap."""
        if self.open >= self.limit:
            return False
        self.open += 1
        return True

    def release(self) -> None:
        """Count one connection fewer."""
        self.open -= 1

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
        if self._body_bytes > channel.limits.max_body_bytes:
            channel.refuse(
                413,
                "M_TOO_LARGE",
                f"the request body is larger than {channel.limits.max_body_bytes} bytes",
            )
            return
        super().handleContentChunk(data)  # type: ignore[no-untyped-call]


class LimitedHTTPChannel(http.HTTPChannel):
    """An HTTP/1.1 channel enforcing :class:`ServerLimits` (see the module docstring)."""

    site: LimitedSite
    _refused = False
    _counted = False
    _read_deadline: IDelayedCall | None = None

    @property
    def limits(self) -> ServerLimits:
        """The limits of the site this channel serves."""
        return self.site.limits

    def connectionMade(self) -> None:
        """Count the connection (abort it when over the cap) and start its read deadline."""
        super().connectionMade()  # type: ignore[no-untyped-call]
        if not self.site.connections.try_acquire():
            self._refused = True
            log.debug("Refusing a connection: {limit} are open", limit=self.site.connections.limit)
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        self._counted = True
        self.site.connections.channels.add(self)
        self._arm_read_deadline()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        """Release the connection's place and cancel its timers."""
        self._cancel_read_deadline()
        if self._counted:
            self._counted = False
            self.site.connections.release()
            self.site.connections.channels.discard(self)
        super().connectionLost(reason)  # type: ignore[no-untyped-call]

    def dataReceived(self, data: bytes) -> None:
        """Parse ``data`` unless the connection was refused; a new request starts its deadline."""
        if self._refused:
            return
        if self._read_deadline is None and not self._handlingRequest:
            self._arm_read_deadline()
        super().dataReceived(data)  # type: ignore[no-untyped-call]

    def lineReceived(self, line: bytes) -> None:
        """Parse a request or header line unless the connection was refused."""
        if not self._refused:
            super().lineReceived(line)  # type: ignore[no-untyped-call]

    def rawDataReceived(self, data: bytes) -> None:
        """Parse body bytes unless the connection was refused."""
        if not self._refused:
            super().rawDataReceived(data)

    def allHeadersReceived(self) -> None:
        """Refuse a declared length over the cap now, before reading (or 100-continuing) it."""
        if self._refused:
            return
        length: int | None = self.length
        if length is not None and length > self.limits.max_body_bytes:
            self.refuse(
                413,
                "M_TOO_LARGE",
                f"the request body is larger than {self.limits.max_body_bytes} bytes",
            )
            return
        super().allHeadersReceived()  # type: ignore[no-untyped-call]

    def allContentReceived(self) -> None:
        """The request is complete: stop its read deadline and hand it over."""
        if self._refused:
            return
        self._cancel_read_deadline()
        super().allContentReceived()  # type: ignore[no-untyped-call]

    def requestDone(self, request: Any) -> None:
        """After a response: a partly received next request gets its read deadline now."""
        super().requestDone(request)  # type: ignore[no-untyped-call]
        if (
            not self._refused
            and not self._handlingRequest
            and self._read_deadline is None
            and self.transport is not None
            and not self.transport.disconnecting  # type: ignore[attr-defined]
            and (self._buffer or self._receivedHeaderSize)
        ):
            self._arm_read_deadline()

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
