"""The control API's long-polls (``events``, ``edus``): waiters woken by what they wait
for, with clock-driven deadlines, and the bounded log of received EDUs they read.

:class:`LongPolls` knows nothing of rooms: a waiter is keyed (a room ID, or ``None`` for
EDUs), asks ``ready()`` on every wake-up for its key, and answers with ``answer()`` when
ready or at its deadline. :class:`ReceivedEdus` keeps the newest EDUs with positions that
keep counting when the oldest are forgotten.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Final

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime

from stubserver.rooms.room import EventRecord
from stubserver.rooms.transaction import Edu
from stubserver.signing.canonical_json import JsonDict

#: Most received EDUs kept for the control API (the oldest are forgotten first; positions
#: keep counting).
MAX_RECEIVED_EDUS: Final = 10_000
#: Most bytes of EDU content (compact JSON) kept for the control API together (issue 22,
#: row 9): with each EDU at most ``MAX_EDU_CONTENT_BYTES``, the oldest are forgotten first.
MAX_RECEIVED_EDU_BYTES: Final = 16 * 1024 * 1024
#: Longest long-poll wait, in milliseconds.
MAX_WAIT_MS: Final = 10 * 60 * 1000
#: Most long-polls waiting at once (more: answered at once, empty).
MAX_WAITERS: Final = 1_000


class LongPolls:
    """Waiting long-polls, per key (a room ID, or ``None`` for EDUs), on ``clock``."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._waiters: dict[str | None, set[Callable[[], None]]] = {}

    def wait(
        self,
        key: str | None,
        ready: Callable[[], bool],
        answer: Callable[[], JsonDict],
        wait_ms: int,
    ) -> Deferred[JsonDict]:
        """``answer()`` at once when ``ready()``, else as soon as a wake-up for ``key``
        finds it ready, or at the deadline (``wait_ms``, clock-driven). Cancelling the
        result drops the waiter and its timer."""
        wait = min(max(wait_ms, 0), MAX_WAIT_MS)
        if ready() or wait == 0 or sum(map(len, self._waiters.values())) >= MAX_WAITERS:
            return succeed(answer())
        waiters = self._waiters.setdefault(key, set())

        def stop() -> None:
            waiters.discard(check)
            if timer.active():
                timer.cancel()

        def check() -> None:
            if ready() and not result.called:
                stop()
                result.callback(answer())

        def deadline() -> None:
            waiters.discard(check)
            if not result.called:
                result.callback(answer())

        result: Deferred[JsonDict] = Deferred(lambda _: stop())
        waiters.add(check)
        timer = self._clock.callLater(wait / 1000, deadline)
        return result

    def wake(self, key: str | None) -> None:
        """Let every waiter for ``key`` check whether it is ready."""
        for check in list(self._waiters.get(key, ())):
            check()


class ReceivedEdus:
    """The newest received EDUs, at most ``max_edus`` of them weighing at most
    ``max_bytes`` (their ``size``), at positions that keep counting."""

    def __init__(
        self, max_edus: int = MAX_RECEIVED_EDUS, max_bytes: int = MAX_RECEIVED_EDU_BYTES
    ) -> None:
        self._edus: deque[Edu] = deque()
        self._max_edus = max_edus
        self._max_bytes = max_bytes
        #: The sum of the kept EDUs' sizes.
        self.size = 0
        self._dropped = 0

    def extend(self, edus: Iterable[Edu]) -> None:
        """Keep ``edus``, forgetting the oldest beyond the bounds."""
        for edu in edus:
            self._edus.append(edu)
            self.size += edu.size
            while len(self._edus) > self._max_edus or (
                self.size > self._max_bytes and len(self._edus) > 1
            ):
                self.size -= self._edus.popleft().size
                self._dropped += 1

    def since(self, start: int) -> list[Edu]:
        """The EDUs kept from position ``start`` on."""
        skip = max(start, 0) - self._dropped
        return list(self._edus)[max(skip, 0) :]

    def answer(self, start: int) -> JsonDict:
        """The control API's ``edus`` answer from position ``start``."""
        found = self.since(start)
        first = max(start, 0, self._dropped)
        return {
            "edus": [
                {"origin": e.origin, "edu_type": e.edu_type, "content": e.content} for e in found
            ],
            "next": first + len(found),
        }


def event_json(record: EventRecord) -> JsonDict:
    """One event of the control API's ``events`` answer."""
    return {
        "event_id": record.event_id,
        "pdu": dict(record.event.pdu),
        "origin": record.origin,
        "outcome": record.outcome,
        "reason": record.reason,
    }
