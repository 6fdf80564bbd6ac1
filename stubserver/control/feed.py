"""Bounded, numbered in-memory feeds that a control client long-polls.

A :class:`LongPollFeed` keeps the last :attr:`~LongPollFeed.capacity` items it was given,
each at an absolute position (0, 1, 2, ... since start-up). ``read(start, wait_ms)``
answers the items at positions ``>= start`` at once when there are any, else waits until
one arrives or ``wait_ms`` pass on the clock given (never a sleep), and answers
``(items, next)`` where ``next`` is the position to ask for next. A reader that is
cancelled (its client went away) leaves nothing behind: no waiter, no timer.

:class:`RequestFeed` is the feed of ``GET /_stubserver/v1/requests``: a
:class:`~stubserver.server.router.RequestObserver` on the federation listener that keeps
the request log's objects, built by the request log's own
:func:`~stubserver.server.request_log.log_entry`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any, Final, Generic, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.web.iweb import IRequest

from stubserver.server.request_log import MS_PER_SECOND, observed_entry

#: Inbound requests kept for ``GET /_stubserver/v1/requests`` (the oldest are dropped).
MAX_FEED_REQUESTS: Final = 10_000
#: Most items one read answers; the client asks again from ``next`` for the rest.
MAX_ITEMS_PER_READ: Final = 1_000

_T = TypeVar("_T")
#: What a read answers: the items and the position to read from next.
FeedPage = tuple[list[_T], int]


class LongPollFeed(Generic[_T]):
    """The last ``capacity`` items appended, by absolute position, read with a long poll."""

    def __init__(self, clock: IReactorTime, capacity: int) -> None:
        self._clock = clock
        self.capacity = capacity
        self._items: deque[_T] = deque(maxlen=capacity)
        #: The position of ``_items[0]``.
        self._first = 0
        self._waiters: list[tuple[int, Deferred[FeedPage[_T]]]] = []

    @property
    def end(self) -> int:
        """The position the next item appended will have."""
        return self._first + len(self._items)

    @property
    def waiting(self) -> int:
        """How many reads are waiting (for tests and diagnostics)."""
        return len(self._waiters)

    def append(self, item: _T) -> None:
        """Add ``item`` (dropping the oldest past capacity) and answer the readers it fits."""
        if len(self._items) == self.capacity:
            self._first += 1
        self._items.append(item)
        waiters, self._waiters = self._waiters, []
        for start, d in waiters:
            if start < self.end:
                d.callback(self.page(start))
            else:
                self._waiters.append((start, d))

    def page(self, start: int) -> FeedPage[_T]:
        """The items at positions ``>= start`` (at most :data:`MAX_ITEMS_PER_READ`), now.

        A ``start`` older than what is kept reads from the oldest item kept.
        """
        begin = max(start, self._first)
        offset = begin - self._first
        stop = min(len(self._items), offset + MAX_ITEMS_PER_READ)
        items = [self._items[i] for i in range(offset, stop)]
        return items, begin + len(items)

    def read(self, start: int, wait_ms: int) -> Deferred[FeedPage[_T]]:
        """The items from ``start`` now, or once one arrives within ``wait_ms`` (else none)."""
        items, after = self.page(start)
        if items or wait_ms <= 0:
            return succeed((items, after))
        timer: IDelayedCall | None = None

        def forget(d: Deferred[FeedPage[_T]]) -> None:
            self._waiters = [(s, w) for s, w in self._waiters if w is not d]
            if timer is not None and timer.active():
                timer.cancel()

        waiter: Deferred[FeedPage[_T]] = Deferred(forget)

        def timed_out() -> None:
            self._waiters = [(s, w) for s, w in self._waiters if w is not waiter]
            waiter.callback(self.page(start))

        def stop_timer(result: FeedPage[_T]) -> FeedPage[_T]:
            if timer is not None and timer.active():
                timer.cancel()
            return result

        timer = self._clock.callLater(wait_ms / MS_PER_SECOND, timed_out)
        waiter.addCallback(stop_timer)
        self._waiters.append((start, waiter))
        return waiter


class RequestFeed:
    """The inbound federation requests as the request log has them, for the control API.

    A :class:`~stubserver.server.router.RequestObserver`: put it among the federation
    listener's observers. Logs the same requests as the request log (Matrix paths only).
    """

    def __init__(self, clock: IReactorTime, capacity: int = MAX_FEED_REQUESTS) -> None:
        self._clock = clock
        self.feed: LongPollFeed[Mapping[str, Any]] = LongPollFeed(clock, capacity)

    def __call__(self, request: IRequest, status: int, body: Any) -> None:
        """The observer: keep ``request``'s log object."""
        entry = observed_entry(request, status, self._clock)
        if entry is not None:
            self.feed.append(entry)

    def read(self, start: int, wait_ms: int) -> Deferred[dict[str, Any]]:
        """``{"requests": [...], "next": N}`` from ``start``, waiting up to ``wait_ms``."""
        return self.feed.read(start, wait_ms).addCallback(
            lambda page: {"requests": page[0], "next": page[1]}
        )
