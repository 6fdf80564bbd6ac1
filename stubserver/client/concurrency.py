"""A cap on concurrent outbound requests: in all, and per destination.

Every outbound federation request holds a slot from before its resolution until its
response body has been delivered (or the request failed), so that one inbound request
fanning out to many servers (the notary, key fetches) cannot exhaust file descriptors:
at a 1,024-descriptor limit, a dozen notary POSTs used to (issue 12, row 13).

A request over either cap waits in a bounded FIFO queue: bursts are normal (a notary
query naming twenty servers) and waiting a moment costs the caller less than a failure.
Unbounded waiting would only move the exhaustion from descriptors to memory, so past
:data:`MAX_QUEUED_OUTBOUND_REQUESTS` a request fails at once with :class:`OutboundBusy`
(temporary: a retry may succeed). Callers must read or discard every response body
(everything in stubserver does, through :mod:`stubserver.client.body`).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.iweb import IResponse
from zope.interface import implementer

#: Most outbound requests in flight at once (each holds at most one socket).
MAX_CONCURRENT_OUTBOUND_REQUESTS = 256
#: Most outbound requests in flight to one destination at once.
MAX_CONCURRENT_PER_DESTINATION = 8
#: Most requests waiting for a slot; past this a request fails with OutboundBusy.
MAX_QUEUED_OUTBOUND_REQUESTS = 1024


class OutboundBusy(Exception):
    """Too many outbound requests are in flight and waiting; temporary."""

    temporary = True

    def __init__(self, destination: str, queued: int) -> None:
        super().__init__(
            f"not contacting {destination}: {queued} outbound requests are already waiting"
        )
        self.destination = destination


class OutboundLimiter:
    """Slots for outbound requests: at most ``max_total`` in flight, ``max_per_destination``
    per destination, and ``max_queued`` waiting (see the module docstring)."""

    def __init__(
        self,
        *,
        max_total: int = MAX_CONCURRENT_OUTBOUND_REQUESTS,
        max_per_destination: int = MAX_CONCURRENT_PER_DESTINATION,
        max_queued: int = MAX_QUEUED_OUTBOUND_REQUESTS,
    ) -> None:
        self._max_total = max_total
        self._max_per_destination = max_per_destination
        self._max_queued = max_queued
        self._active: dict[str, int] = {}
        self._total = 0
        self._queue: deque[tuple[str, Deferred[None]]] = deque()

    @property
    def in_flight(self) -> int:
        """Slots held now."""
        return self._total

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot now."""
        return len(self._queue)

    def _free_for(self, destination: str) -> bool:
        return (
            self._total < self._max_total
            and self._active.get(destination, 0) < self._max_per_destination
        )

    def _take(self, destination: str) -> None:
        self._total += 1
        self._active[destination] = self._active.get(destination, 0) + 1

    def acquire(self, destination: str) -> Deferred[None]:
        """Fires once a slot for ``destination`` is held; fails with :class:`OutboundBusy`
        when the queue is full. Cancelling a waiting Deferred leaves the queue."""
        if self._free_for(destination):
            self._take(destination)
            return succeed(None)
        if len(self._queue) >= self._max_queued:
            return _failed(OutboundBusy(destination, len(self._queue)))

        def cancel(d: Deferred[None]) -> None:
            if (destination, d) in self._queue:
                self._queue.remove((destination, d))

        waiter: Deferred[None] = Deferred(cancel)
        self._queue.append((destination, waiter))
        return waiter

    def release(self, destination: str) -> None:
        """Give back a slot of ``destination``; the first waiter that fits takes it."""
        count = self._active.get(destination, 0) - 1
        if count > 0:
            self._active[destination] = count
        else:
            self._active.pop(destination, None)
        self._total -= 1
        for index, (waiting_for, waiter) in enumerate(self._queue):
            if self._free_for(waiting_for):
                del self._queue[index]
                self._take(waiting_for)
                waiter.callback(None)
                return


def _failed(exc: Exception) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    d.errback(exc)
    return d


class _ReleasingProtocol(Protocol):
    """Forwards a response body to ``inner``; calls ``done`` once when it ends."""

    def __init__(self, inner: IProtocol, done: Any) -> None:
        self._inner = inner
        self._done = done

    def makeConnection(self, transport: Any) -> None:
        self._inner.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        self._inner.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._done()
        self._inner.connectionLost(reason)


@implementer(IResponse)
class ReleasingResponse:
    """An ``IResponse`` that calls ``done`` once its body has been delivered."""

    def __init__(self, response: IResponse, done: Any) -> None:
        self._response = response
        self._done = done

    def __getattr__(self, name: str) -> Any:
        return getattr(self._response, name)

    def deliverBody(self, protocol: IProtocol) -> None:
        """Deliver the body to ``protocol``, releasing the slot when it ends."""
        self._response.deliverBody(_ReleasingProtocol(protocol, self._done))  # type: ignore[no-untyped-call]
