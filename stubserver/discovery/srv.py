"""DNS SRV for federation (``_matrix-fed._tcp`` and the deprecated ``_matrix._tcp``).

- :func:`order_srv_records` is the pure RFC 2782 ordering: by priority, then a weighted
  random pick with an injected RNG (weight-0 records first in each draw, as the RFC says).
- :class:`SrvResolver` looks names up and caches answers for their TTL. NXDOMAIN or an
  empty answer means "no SRV records" (the spec's next step). Other DNS errors use a stale
  cached answer when we have one (Synapse does the same), else they are an error. A single
  record whose target is ``.`` means "the service is decidedly not available" (RFC 2782).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.names import dns

from stubserver.cache import BoundedCache
from stubserver.discovery.dns import DNS_QUERY_TIMEOUTS_SECONDS, describe_dns_error, is_name_error

#: SRV answers are cached for their TTL, but never longer than this, in seconds.
MAX_SRV_CACHE_SECONDS = 24 * 3600
#: Most SRV names cached at once; past this, the least recently used is dropped.
MAX_SRV_CACHE_ENTRIES = 100_000
#: How long an expired SRV answer is kept to stand in when a refresh fails, in seconds.
SRV_STALE_RETAIN_SECONDS = 24 * 3600

log = Logger()


@dataclass(frozen=True, order=True)
class SrvRecord:
    """One SRV answer."""

    priority: int
    weight: int
    port: int
    target: str

    def to_json(self) -> dict[str, Any]:
        """As a JSON object."""
        return {
            "priority": self.priority,
            "weight": self.weight,
            "port": self.port,
            "target": self.target,
        }


@dataclass(frozen=True)
class SrvLookup:
    """The outcome of looking up one SRV name.

    ``records`` are as received (not ordered); ``error`` is set when the lookup failed
    and no stale answer could stand in; ``stale`` when a stale cached answer was used
    after a DNS error; ``refused`` when the answer is the single ``.`` record.
    """

    name: str
    records: tuple[SrvRecord, ...] = ()
    error: str | None = None
    temporary: bool = False
    stale: bool = False

    @property
    def refused(self) -> bool:
        """True for the RFC 2782 "service not available" answer (one record, target ``.``)."""
        return len(self.records) == 1 and self.records[0].target in ("", ".")

    @property
    def found(self) -> bool:
        """True when there are records to use."""
        return bool(self.records) and not self.refused and self.error is None

    def to_json(self) -> dict[str, Any]:
        """As a JSON object."""
        return {
            "name": self.name,
            "records": [r.to_json() for r in self.records],
            "error": self.error,
            "stale": self.stale,
        }


def order_srv_records(records: Sequence[SrvRecord], rng: random.Random) -> list[SrvRecord]:
    """RFC 2782 order: ascending priority; within a priority, repeated weighted draws."""
    ordered: list[SrvRecord] = []
    for priority in sorted({r.priority for r in records}):
        remaining = [r for r in records if r.priority == priority]
        # Weight-0 records go first so that they have a (small) chance of being picked.
        remaining.sort(key=lambda r: r.weight != 0)
        while remaining:
            total = sum(r.weight for r in remaining)
            pick = rng.randint(0, total)
            running = 0
            for index, record in enumerate(remaining):
                running += record.weight
                if running >= pick:
                    ordered.append(remaining.pop(index))
                    break
    return ordered


def records_from_answers(name: str, answers: Sequence[Any]) -> tuple[tuple[SrvRecord, ...], int]:
    """SRV records (and their smallest TTL) from a twisted.names answer section."""
    records: list[SrvRecord] = []
    ttl = MAX_SRV_CACHE_SECONDS
    for rr in answers:
        if rr.type != dns.SRV:
            continue
        payload = rr.payload
        target = payload.target.name.decode("ascii", "replace").rstrip(".") or "."
        records.append(SrvRecord(payload.priority, payload.weight, payload.port, target))
        ttl = min(ttl, rr.ttl)
    return tuple(records), max(ttl, 0)


class SrvResolver:
    """SRV lookups through a twisted.names ``IResolver``, cached for the answers' TTL."""

    def __init__(
        self, dns_resolver: Any, clock: IReactorTime, *, max_entries: int = MAX_SRV_CACHE_ENTRIES
    ) -> None:
        self._dns = dns_resolver
        self._clock = clock
        self._cache: BoundedCache[str, tuple[SrvRecord, ...]] = BoundedCache(
            clock, max_entries=max_entries
        )

    @property
    def cached_names(self) -> int:
        """How many SRV names the cache holds (never more than its cap)."""
        return len(self._cache)

    def lookup(self, name: str) -> Deferred[SrvLookup]:
        """Look up ``name`` (e.g. ``_matrix-fed._tcp.example.com``); never fails."""
        key = name.lower()
        cached = self._cache.get(key)
        if cached is not None:
            d: Deferred[SrvLookup] = Deferred()
            d.callback(SrvLookup(name=name, records=cached))
            return d
        return Deferred.fromCoroutine(self._lookup(name, key))

    async def _lookup(self, name: str, key: str) -> SrvLookup:
        try:
            answers, _authority, _additional = await self._dns.lookupService(
                name, timeout=DNS_QUERY_TIMEOUTS_SECONDS
            )
        except CancelledError:
            raise
        except Exception as e:
            if is_name_error(e):
                self._cache.pop(key)
                return SrvLookup(name=name)
            reason, temporary = describe_dns_error(e)
            stale = self._cache.get_stale(key)
            if stale is not None:
                log.info("SRV {name}: {reason}; using the stale answer", name=name, reason=reason)
                return SrvLookup(name=name, records=stale, stale=True)
            return SrvLookup(name=name, error=reason, temporary=temporary)
        records, ttl = records_from_answers(name, answers)
        if records:
            self._cache.set(key, records, ttl, retain_seconds=ttl + SRV_STALE_RETAIN_SECONDS)
        else:
            self._cache.pop(key)
        return SrvLookup(name=name, records=records)
