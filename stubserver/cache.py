"""The one bounded cache: a time-to-live, least-recently-used map with a count and a size cap.

Everything that caches what the network told us (``.well-known`` answers, SRV records,
addresses, server keys, authentication failures) keeps it here, so that every cache is
bounded the same way: by entries, and where values differ widely in size, by an
estimated weight in bytes. Inserting into a full cache evicts the least recently used
entries (O(1) each); nothing is ever rebuilt or scanned.

An entry is *fresh* until its time-to-live runs out; it may be *retained* longer
(``retain_seconds``) for callers that fall back on a stale answer when a refresh fails
(``get_stale``), as the spec allows for ``.well-known`` and SRV. Past its retention it is
gone. Time comes from the clock passed in (an ``IReactorTime``), never the wall clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from twisted.internet.interfaces import IReactorTime

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True)
class CacheEntry(Generic[V]):
    """A cached value with the times (clock seconds) it is fresh until and kept until."""

    value: V
    fresh_until: float
    retain_until: float
    weight: int


class BoundedCache(Generic[K, V]):
    """A TTL + LRU cache bounded by ``max_entries`` and, optionally, ``max_weight``.

    ``weigh`` estimates a value's size (bytes); with ``max_weight`` set, the sum of the
    weights never exceeds it, and a single value heavier than ``max_weight`` is not cached.
    """

    def __init__(
        self,
        clock: IReactorTime,
        *,
        max_entries: int,
        max_weight: int | None = None,
        weigh: Callable[[V], int] | None = None,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        if (max_weight is None) != (weigh is None):
            raise ValueError("max_weight and weigh go together")
        self._clock = clock
        self._max_entries = max_entries
        self._max_weight = max_weight
        self._weigh = weigh
        self._entries: OrderedDict[K, CacheEntry[V]] = OrderedDict()
        self._weight = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def weight(self) -> int:
        """The summed weight of the entries held (0 when the cache is not weighed)."""
        return self._weight

    def entry(self, key: K) -> CacheEntry[V] | None:
        """The entry for ``key``, fresh or stale, while it is retained; marks it used."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock.seconds() >= entry.retain_until:
            self.pop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def get(self, key: K) -> V | None:
        """The value for ``key`` while it is fresh, else None."""
        entry = self.entry(key)
        if entry is None or self._clock.seconds() >= entry.fresh_until:
            return None
        return entry.value

    def get_stale(self, key: K) -> V | None:
        """The value for ``key``, fresh or past its time-to-live, while it is retained."""
        entry = self.entry(key)
        return None if entry is None else entry.value

    def set(
        self, key: K, value: V, ttl_seconds: float, *, retain_seconds: float | None = None
    ) -> None:
        """Cache ``value`` for ``ttl_seconds`` (kept ``retain_seconds`` for stale use)."""
        now = self._clock.seconds()
        weight = self._weigh(value) if self._weigh is not None else 0
        self.pop(key)
        if self._max_weight is not None and weight > self._max_weight:
            return
        retain = max(ttl_seconds, retain_seconds if retain_seconds is not None else ttl_seconds)
        self._entries[key] = CacheEntry(value, now + ttl_seconds, now + retain, weight)
        self._weight += weight
        while len(self._entries) > self._max_entries or (
            self._max_weight is not None and self._weight > self._max_weight
        ):
            _, evicted = self._entries.popitem(last=False)
            self._weight -= evicted.weight

    def pop(self, key: K) -> V | None:
        """Remove ``key``; its value, or None."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        self._weight -= entry.weight
        return entry.value

    def clear(self) -> None:
        """Remove everything."""
        self._entries.clear()
        self._weight = 0
