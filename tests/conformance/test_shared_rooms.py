"""Rooms several tests share (issue 20's time budget): ``Context.shared`` makes a room
once per key even when tests ask at once, tries again after a failed make, and the
join tests' shared rooms are one per (room version, which)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import pytest

from stubserver.conformance.context import Context
from stubserver.conformance.suite_membership import joins_room
from stubserver.testing import Homeserver, HomeserverUser, Peer


class CountingUser:
    """A homeserver user whose room creations are counted (and can be made to fail)."""

    def __init__(self, fail_first: int = 0) -> None:
        self.created: list[str] = []
        self.fail_first = fail_first
        self.lock = threading.Lock()

    def create_room(self, *, preset: str, room_version: str, **_: Any) -> str:
        with self.lock:
            if self.fail_first:
                self.fail_first -= 1
                raise RuntimeError("createRoom failed")
            room_id = f"!r{len(self.created)}-v{room_version}:hs.test"
            self.created.append(room_id)
            return room_id


def _context(user: CountingUser) -> Context:
    return Context(
        cast(Peer, object()),
        cast(Homeserver, object()),
        [cast(HomeserverUser, user)],
        "hs.test",
        Path("unused.yaml"),
    )


def test_tests_asking_at_once_share_one_room_per_version() -> None:
    """Twelve join tests asking for their room at once, six at a time, get one room per
    room version (the first that asks makes it; the others wait for it), and the test
    that needs a second room gets a different one."""
    user = CountingUser()
    ctx = _context(user)
    with ThreadPoolExecutor(max_workers=6) as pool:
        rooms = list(pool.map(lambda i: joins_room(ctx, ("10", "11")[i % 2]), range(12)))
    assert len(user.created) == 2
    for version in ("10", "11"):
        made = [r for r in user.created if r.endswith(f"-v{version}:hs.test")]
        assert [r for r in rooms if r.endswith(f"-v{version}:hs.test")] == made * 6
    second = joins_room(ctx, "10", "second")
    assert second not in rooms
    assert len(user.created) == 3


def test_a_failed_make_is_tried_again_by_the_next_test() -> None:
    """A room creation that failed fails the test that made it, and the next test that
    asks makes the room again (no failure is remembered for the others)."""
    user = CountingUser(fail_first=1)
    ctx = _context(user)
    with pytest.raises(RuntimeError, match="createRoom failed"):
        joins_room(ctx, "11")
    room = joins_room(ctx, "11")
    assert joins_room(ctx, "11") == room
    assert user.created == [room]
