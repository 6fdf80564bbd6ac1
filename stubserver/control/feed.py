"""Bounded, numbered in-memory feeds that a control client long-polls.

A :class:`LongPollFeed` keeps the last :attr:`~LongPollFeed.capacity` items it was given
(fewer when their weights pass ``max_weight``), each at an absolute position (0, 1, 2,
... since start-up). ``read(start, wait_ms)`` answers the items at positions ``>= start``
at once when there are any, else waits until one arrives or ``wait_ms`` pass on the
clock given (never a sleep), and answers
``(items, next)`` where ``next`` is the position to ask for next. A reader that is
cancelled (its client went away) leaves nothing behind: no waiter, no timer.

:class:`RequestFeed` is the feed of ``GET /_stubserver/v1/requests``: a
:class:`~stubserver.server.router.RequestObserver` on the federation listener that keeps
the request log's objects, built by the request log's own
:func:`~stubserver.server.request_log.log_entry` when a client reads them (it keeps what
they are built from, taken once per request for the log and the feed). Each keeps a body of at most
:data:`~stubserver.server.request_log.MAX_LOGGED_BODY_BYTES`, and the bodies kept weigh at
most :data:`MAX_FEED_BODY_BYTES` together (issue 22, row 1: the oldest entries go first).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Final, Generic, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.web.iweb import IRequest

from stubserver.server.request_log import MS_PER_SECOND, ObservedRequest, observed_request

#: Inbound requests kept for ``GET /_stubserver/v1/requests`` (the oldest are dropped).
MAX_FEED_REQUESTS: Final = 10_000
#: Most bytes of request bodies the request feed keeps together (as received): 256 bodies
#: of the 64 KiB kept at most, or thousands of ordinary transactions. Parsed JSON weighs
#: more in memory than on the wire (up to ~20x for bodies of empty objects), so this also
#: bounds the feed's memory to a few hundred MiB at worst.
MAX_FEED_BODY_BYTES: Final = 16 * 1024 * 1024
#: What an entry weighs besides its body, in bytes (its other fields, roughly).
FEED_ENTRY_WEIGHT: Final = 256
#: Most items one read answers; the client asks again from ``next`` for the rest.
MAX_ITEMS_PER_READ: Final = 1_000

_T = TypeVar("_T")
#: What a read answers: the items and the position to read from next.
FeedPage = tuple[list[_T], int]


class LongPollFeed(Generic[_T]):
    """The last ``capacity`` items appended, by absolute position, read with a long poll.

    Given ``max_weight``, the oldest items are also dropped while the weights given to
    :meth:`append` add up to more (the newest item is always kept).
    """

    def __init__(self, clock: IReactorTime, capacity: int, max_weight: int | None = None) -> None:
        self._clock = clock
        self.capacity = capacity
        self.max_weight = max_weight
        self._items: deque[_T] = deque()
        self._weights: deque[int] = deque()
        #: The sum of ``_weights``.
        self.weight = 0
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

    def append(self, item: _T, weight: int = 0) -> None:
        """Add ``item`` (dropping the oldest past capacity or weight) and answer the readers
        it fits."""
        self._items.append(item)
        self._weights.append(weight)
        self.weight += weight
        while len(self._items) > self.capacity or (
            self.max_weight is not None and self.weight > self.max_weight and len(self._items) > 1
        ):
            self._items.popleft()
            self.weight -= self._weights.popleft()
            self._first += 1
        if not self._waiters:
            return
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

    def __init__(
        self,
        clock: IReactorTime,
        capacity: int = MAX_FEED_REQUESTS,
        max_body_bytes: int = MAX_FEED_BODY_BYTES,
    ) -> None:
        self._clock = clock
        self.feed: LongPollFeed[ObservedRequest] = LongPollFeed(
            clock, capacity, max_weight=max_body_bytes + capacity * FEED_ENTRY_WEIGHT
        )

    def __call__(self, request: IRequest, status: int, body: Any) -> None:
        """The observer: keep what ``request``'s log object is built from (the object is
        built when a client reads it: most requests are never read; issue 22, the key
        endpoint)."""
        taken = observed_request(request, status, self._clock)
        if taken is not None:
            if taken.notes.get("content") is None:
                self.feed.append(taken, FEED_ENTRY_WEIGHT)  # no body kept (every GET)
            else:
                self.feed.append(taken, FEED_ENTRY_WEIGHT + taken.kept_body_bytes)

    def read(self, start: int, wait_ms: int) -> Deferred[dict[str, Any]]:
        """``{"requests": [...], "next": N}`` from ``start``, waiting up to ``wait_ms``."""
        return self.feed.read(start, wait_ms).addCallback(
            lambda page: {"requests": [taken.entry() for taken in page[0]], "next": page[1]}
        )
