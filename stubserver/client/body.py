"""Reading responses from other servers: bounded bodies and one-line failure descriptions.

- :func:`read_body_limited`: a response body, refused past a limit (:class:`BodyTooLarge`);
  every body we read from the network goes through it.
- :func:`describe_failure`: one line for a person, and whether the failure is temporary,
  for Twisted's connection, TLS and cancellation failures.
- :func:`raise_if_cancelled`: re-raise a cancellation hidden inside Twisted's wrappers
  before a broad ``except``.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import error as net_error
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import _newclient
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse

from stubserver.client.blocklist import BlockedAddress

log = Logger()


class BodyTooLarge(Exception):
    """A response body exceeded its limit; reading stopped there. Temporary."""

    temporary = True

    def __init__(self, limit: int) -> None:
        super().__init__(f"the body is larger than {limit} bytes")
        self.limit = limit


class _LimitedReader(Protocol):
    def __init__(self, finished: Deferred[bytes], limit: int) -> None:
        self._finished = finished
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0
        self._done = False

    def dataReceived(self, data: bytes) -> None:
        if self._done:
            return
        self._size += len(data)
        if self._size > self._limit:
            self._done = True
            self._parts.clear()
            assert self.transport is not None
            self.transport.stopProducing()  # type: ignore[attr-defined]
            self._finished.errback(BodyTooLarge(self._limit))
            return
        self._parts.append(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self._done:
            return
        self._done = True
        if reason is None or isinstance(reason.value, ResponseDone | PotentialDataLoss):
            self._finished.callback(b"".join(self._parts))
        else:
            self._finished.errback(reason)


def read_body_limited(response: IResponse, limit: int) -> Deferred[bytes]:
    """Read ``response``'s body, failing with :class:`BodyTooLarge` (and dropping the
    connection) as soon as more than ``limit`` bytes have arrived."""
    length = response.length
    if isinstance(length, int) and length > limit:
        deliver_body(response, DiscardBody())
        d: Deferred[bytes] = Deferred()
        d.errback(BodyTooLarge(limit))
        return d

    def cancel(d: Deferred[bytes]) -> None:
        transport = getattr(reader, "transport", None)
        if transport is not None:
            transport.stopProducing()

    finished: Deferred[bytes] = Deferred(cancel)
    reader = _LimitedReader(finished, limit)
    deliver_body(response, reader)
    return finished


class DiscardBody(Protocol):
    """A body protocol that stops the transport at once: the body is not wanted."""

    def makeConnection(self, transport: Any) -> None:
        transport.stopProducing()


def _unwrap(exc: BaseException) -> BaseException:
    """The innermost interesting reason of Twisted's wrapper exceptions."""
    seen = 0
    while isinstance(exc, _newclient._WrapperException) and exc.reasons and seen < 5:
        seen += 1
        inner = exc.reasons[0]
        # A TLS failure is more informative than the connection loss that follows it.
        for r in exc.reasons:
            if isinstance(r.value, SSL.Error | VerificationError):
                inner = r
        exc = inner.value if inner.value is not None else exc
    return exc


def raise_if_cancelled(exc: BaseException) -> None:
    """Re-raise a cancellation hidden inside Twisted's wrapper exceptions (a cancelled
    HTTP request fails with ResponseNeverReceived([CancelledError]))."""
    if isinstance(exc, CancelledError):
        raise exc
    if isinstance(exc, _newclient._WrapperException):
        for reason in exc.reasons:
            if isinstance(reason.value, CancelledError):
                raise reason.value
            if reason.value is not None:
                raise_if_cancelled(reason.value)


def describe_failure(exc: BaseException) -> tuple[str, bool]:
    """``(one line for a person, temporary)`` for a failed connection or request."""
    exc = _unwrap(exc)
    if isinstance(exc, BlockedAddress):
        return str(exc), False
    if isinstance(exc, VerificationError):
        names = []
        for mismatch in exc.errors:
            ident = getattr(mismatch, "mismatched_id", None)
            value = getattr(ident, "hostname", None) or getattr(ident, "ip", None) or ident
            # service_identity keeps DNS names as bytes: never show b'...' to a person.
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
            names.append(text)
        return f"TLS: the certificate is not valid for {', '.join(names)}", True
    if isinstance(exc, SSL.Error):
        details = []
        for item in exc.args[0] if exc.args and isinstance(exc.args[0], list) else []:
            if isinstance(item, tuple) and len(item) == 3:
                details.append(str(item[2]))
        detail = "; ".join(details) or str(exc)
        return f"TLS: {detail}", True
    if isinstance(exc, TimeoutError | net_error.TimeoutError):
        return "timed out", True
    if isinstance(exc, net_error.ConnectionRefusedError):
        return f"connection refused ({exc.osError or ''})".replace(" ()", ""), True
    if isinstance(exc, net_error.ConnectError):
        return f"cannot connect: {exc}", True
    if isinstance(exc, net_error.ConnectionDone | net_error.ConnectionLost):
        return "the connection closed before a response arrived", True
    if isinstance(exc, BodyTooLarge):
        return str(exc), True
    temporary = bool(getattr(exc, "temporary", True))
    text = str(exc) or type(exc).__name__
    return text, temporary


def deliver_body(response: IResponse, protocol: Protocol) -> None:
    """``response.deliverBody(protocol)``, typed."""
    response.deliverBody(protocol)  # type: ignore[no-untyped-call]
