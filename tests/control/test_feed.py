"""The long-polled feed: positions, bounds, deadlines on the clock, cancellation."""

from __future__ import annotations

from io import BytesIO
from typing import Any

from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest

from stubserver.control.feed import (
    FEED_ENTRY_WEIGHT,
    MAX_FEED_BODY_BYTES,
    MAX_FEED_REQUESTS,
    MAX_ITEMS_PER_READ,
    LongPollFeed,
    RequestFeed,
)
from stubserver.server.request_log import (
    MAX_LOGGED_BODY_BYTES,
    ObservedRequest,
    observed_entry,
)
from stubserver.server.router import request_annotations
from tests.support import has_fired, result_now


def test_items_have_absolute_positions() -> None:
    """A read from N answers the items at positions >= N and the next position."""
    feed: LongPollFeed[str] = LongPollFeed(Clock(), 10)
    for item in "abc":
        feed.append(item)
    assert result_now(feed.read(1, 0)) == (["b", "c"], 3)
    assert result_now(feed.read(3, 0)) == ([], 3)


def test_the_oldest_items_are_dropped_past_capacity() -> None:
    """Past capacity the oldest go; a read from before what is kept starts at the oldest."""
    feed: LongPollFeed[int] = LongPollFeed(Clock(), 3)
    for item in range(5):
        feed.append(item)
    assert result_now(feed.read(0, 0)) == ([2, 3, 4], 5)


def test_one_read_answers_at_most_the_page_bound() -> None:
    """A read answers at most MAX_ITEMS_PER_READ items; next continues after them."""
    feed: LongPollFeed[int] = LongPollFeed(Clock(), MAX_ITEMS_PER_READ + 5)
    for item in range(MAX_ITEMS_PER_READ + 5):
        feed.append(item)
    items, after = result_now(feed.read(0, 0))
    assert (len(items), after) == (MAX_ITEMS_PER_READ, MAX_ITEMS_PER_READ)
    assert result_now(feed.read(after, 0)) == (
        list(range(MAX_ITEMS_PER_READ, after + 5)),
        after + 5,
    )


def test_a_waiting_read_answers_with_the_first_new_item() -> None:
    """A read waiting for position N answers when the item at N arrives and stops its timer."""
    clock = Clock()
    feed: LongPollFeed[str] = LongPollFeed(clock, 10)
    feed.append("old")
    d = feed.read(1, 2000)
    assert not has_fired(d)
    feed.append("new")
    assert result_now(d) == (["new"], 2)
    assert clock.getDelayedCalls() == []
    assert feed.waiting == 0


def test_a_waiting_read_answers_empty_at_its_deadline() -> None:
    """With nothing new, the read answers empty exactly when wait_ms pass on the clock."""
    clock = Clock()
    feed: LongPollFeed[str] = LongPollFeed(clock, 10)
    d = feed.read(0, 2000)
    clock.advance(1.999)
    assert not has_fired(d)
    clock.advance(0.001)
    assert result_now(d) == ([], 0)
    assert feed.waiting == 0


def test_a_cancelled_read_leaves_nothing_behind() -> None:
    """Cancelling a waiting read removes its waiter and its timer; later items are kept."""
    clock = Clock()
    feed: LongPollFeed[str] = LongPollFeed(clock, 10)
    d = feed.read(0, 2000)
    d.cancel()
    d.addErrback(lambda _: None)
    assert (feed.waiting, clock.getDelayedCalls()) == (0, [])
    feed.append("x")
    assert result_now(feed.read(0, 0)) == (["x"], 1)


def test_the_oldest_items_are_dropped_past_the_weight() -> None:
    """With a weight bound, items are dropped oldest first while the weights kept pass it;
    the newest item is kept even when it alone weighs more."""
    feed: LongPollFeed[int] = LongPollFeed(Clock(), 100, max_weight=10)
    for i in range(5):
        feed.append(i, 4)
    assert (result_now(feed.read(0, 0)), feed.weight) == (([3, 4], 5), 8)
    feed.append(5, 50)
    assert (result_now(feed.read(0, 0)), feed.weight) == (([5], 6), 50)


def test_the_request_feed_keeps_a_bounded_weight_of_bodies() -> None:
    """Issue 22, row 1: 1,000 requests with 64 KiB bodies leave the request feed holding at
    most :data:`MAX_FEED_BODY_BYTES` of them (it kept all 1,000: 64 MiB), newest first."""
    feed = RequestFeed(Clock())
    body = b"[0" + b" " * (MAX_LOGGED_BODY_BYTES - 3) + b"]"
    assert len(body) == MAX_LOGGED_BODY_BYTES
    for i in range(1_000):
        request: Any = DummyRequest([b"_matrix", b"federation", b"v1", b"send", str(i).encode()])
        request.path = request.uri = b"/_matrix/federation/v1/send/%d" % i
        request.content = BytesIO(body)
        request_annotations(request).update(content=[i], body_bytes=len(body))
        feed(request, 200, {})
    kept = result_now(feed.read(0, 0))["requests"]
    bound = MAX_FEED_BODY_BYTES + MAX_FEED_REQUESTS * FEED_ENTRY_WEIGHT
    assert len(kept) == bound // (MAX_LOGGED_BODY_BYTES + FEED_ENTRY_WEIGHT) == 293
    assert kept[-1]["content"] == [999]
    assert feed.feed.weight <= bound


def test_the_request_feed_builds_a_log_object_only_when_read() -> None:
    """Issue 22 (key endpoint): the feed keeps what a request's log object is built from,
    not the object; a read answers the object the request log writes, with the body's
    weight counted as before."""
    clock = Clock()
    clock.advance(7)
    feed = RequestFeed(clock)
    request: Any = DummyRequest([b"_matrix", b"federation", b"v1", b"send", b"1"])
    request.path = request.uri = b"/_matrix/federation/v1/send/1"
    request_annotations(request).update(
        origin="o.test", authenticated=True, content={"pdus": []}, body_bytes=11
    )
    feed(request, 200, {})
    (kept,), _ = feed.feed.page(0)
    assert isinstance(kept, ObservedRequest)
    assert feed.feed.weight == FEED_ENTRY_WEIGHT + 11
    (answered,) = result_now(feed.read(0, 0))["requests"]
    assert answered == observed_entry(request, 200, clock)
    assert answered["ts"] == 7000
    assert answered["content"] == {"pdus": []}
