"""The bounded TTL cache: freshness, retention, LRU eviction by count and by weight."""

from __future__ import annotations

from twisted.internet.task import Clock

from stubserver.cache import BoundedCache


def _cache(**kwargs: object) -> tuple[Clock, BoundedCache[str, str]]:
    clock = Clock()
    return clock, BoundedCache(clock, **kwargs)  # type: ignore[arg-type]


def test_fresh_until_ttl_then_gone() -> None:
    """A value is returned until its time-to-live runs out, then not at all."""
    clock, cache = _cache(max_entries=10)
    cache.set("a", "x", 5)
    clock.advance(4.9)
    assert cache.get("a") == "x"
    clock.advance(0.1)
    assert cache.get("a") is None
    assert cache.get_stale("a") is None
    assert len(cache) == 0


def test_stale_value_kept_for_retention() -> None:
    """Past its TTL a value is stale: get() misses, get_stale() answers until retention ends."""
    clock, cache = _cache(max_entries=10)
    cache.set("a", "x", 5, retain_seconds=60)
    clock.advance(10)
    assert cache.get("a") is None
    assert cache.get_stale("a") == "x"
    clock.advance(50)
    assert cache.get_stale("a") is None


def test_count_bound_evicts_least_recently_used() -> None:
    """When full, inserting evicts the least recently used entry, not the newest."""
    _, cache = _cache(max_entries=2)
    cache.set("a", "1", 100)
    cache.set("b", "2", 100)
    assert cache.get("a") == "1"  # a is now more recently used than b
    cache.set("c", "3", 100)
    assert cache.get("b") is None
    assert cache.get("a") == "1"
    assert cache.get("c") == "3"
    assert len(cache) == 2


def test_weight_bound_in_bytes() -> None:
    """With a weight cap the summed weight never exceeds it; older entries go first."""
    _, cache = _cache(max_entries=1000, max_weight=10, weigh=len)
    cache.set("a", "xxxx", 100)
    cache.set("b", "yyyy", 100)
    cache.set("c", "zzzz", 100)
    assert cache.weight <= 10
    assert cache.get("a") is None
    assert cache.get("c") == "zzzz"


def test_value_heavier_than_the_cap_is_not_cached() -> None:
    """A single value heavier than the whole cap is not cached and evicts nothing."""
    _, cache = _cache(max_entries=10, max_weight=10, weigh=len)
    cache.set("a", "xx", 100)
    cache.set("big", "x" * 11, 100)
    assert cache.get("big") is None
    assert cache.get("a") == "xx"


def test_replacing_a_key_keeps_the_weight_right() -> None:
    """Setting a key again replaces its value and its weight."""
    _, cache = _cache(max_entries=10, max_weight=100, weigh=len)
    cache.set("a", "x" * 30, 100)
    cache.set("a", "x" * 5, 100)
    assert cache.weight == 5
    assert cache.pop("a") == "x" * 5
    assert cache.weight == 0
