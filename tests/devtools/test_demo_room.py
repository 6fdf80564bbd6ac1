"""The demo room's long-poll loop over a fake control API."""

from __future__ import annotations

from typing import Any

from stubserver.control.client import ControlAnswer
from stubserver.devtools.demo_room import ControlClient
from stubserver.devtools.demo_world import TRIO

ALPHA = TRIO[0]


class FakeFeed:
    """A control API whose events feed never gains anything; records each wait asked."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.waits: list[int] = []

    def __call__(self, method: str, path: str, body: Any, timeout: float) -> ControlAnswer:
        wait_ms = int(path.rpartition("wait_ms=")[2])
        self.waits.append(wait_ms)
        self.clock[0] += wait_ms / 1000  # the server held the poll this long
        return ControlAnswer(200, {"events": [], "next": 0})


def test_read_until_long_polls_until_the_deadline_then_gives_up() -> None:
    """With nothing arriving, the loop asks the server to wait (never sleeps itself), each
    wait at most the time left, and answers not-done at the deadline."""
    clock = [0.0]
    feed = FakeFeed(clock)
    client = ControlClient(ALPHA, feed, deadline=7.0, monotonic=lambda: clock[0])
    items, done = client.read_until("/rooms/!r/events", lambda items: False)
    assert (items, done) == ([], False)
    assert [w for w in feed.waits if w] == [5000, 2000]
    assert clock[0] == 7.0
