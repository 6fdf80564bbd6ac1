"""One fetch in flight per key, its result handed to every caller that asked meanwhile."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from twisted.internet.defer import Deferred

T = TypeVar("T")


class SharedFetches(Generic[T]):
    """Joins callers asking for the same key onto one fetch (.well-known, server keys).

    ``start`` must return a Deferred that never fails (turn errors into results first).
    Cancelling one caller's Deferred drops only that caller; the fetch goes on for the rest.
    """

    def __init__(self) -> None:
        self._waiters: dict[str, list[Deferred[T]]] = {}

    def join(self, key: str, start: Callable[[], Deferred[T]]) -> Deferred[T]:
        """The result of the fetch for ``key``: the one in flight, or one ``start`` begins."""
        waiters = self._waiters.get(key)
        first = waiters is None
        if waiters is None:
            waiters = self._waiters[key] = []
        current = waiters

        def cancel(d: Deferred[T]) -> None:
            if d in current:
                current.remove(d)

        d: Deferred[T] = Deferred(cancel)
        waiters.append(d)
        if first:
            start().addCallback(self._deliver, key)
        return d

    def _deliver(self, result: T, key: str) -> None:
        for waiter in self._waiters.pop(key, []):
            waiter.callback(result)
