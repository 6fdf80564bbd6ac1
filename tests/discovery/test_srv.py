"""SRV: RFC 2782 ordering (pure) and the caching, stale-answer and refusal rules."""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.names import dns
from twisted.names import error as dns_error
from twisted.trial.unittest import SynchronousTestCase

from stubserver.discovery.srv import SrvRecord, SrvResolver, order_srv_records


class ScriptedRng(random.Random):
    """An RNG whose randint returns scripted values (clamped into range)."""

    def __init__(self, values: list[int]) -> None:
        super().__init__(0)
        self.values = values
        self.calls: list[tuple[int, int]] = []

    def randint(self, a: int, b: int) -> int:
        self.calls.append((a, b))
        return min(max(self.values.pop(0), a), b)


def rec(priority: int, weight: int, target: str, port: int = 8448) -> SrvRecord:
    return SrvRecord(priority, weight, port, target)


class OrderTests(SynchronousTestCase):
    def test_priority_first(self) -> None:
        """Lower priority values come first whatever the weights."""
        records = [rec(20, 100, "c"), rec(10, 0, "a"), rec(30, 5, "d"), rec(15, 1, "b")]
        ordered = order_srv_records(records, ScriptedRng([0, 0, 0, 0]))
        assert [r.target for r in ordered] == ["a", "b", "c", "d"]

    def test_weighted_pick_by_running_sum(self) -> None:
        """Within a priority the draw picks the first record whose running sum reaches it."""
        records = [rec(10, 10, "a"), rec(10, 30, "b"), rec(10, 60, "c")]
        # 45 → running sums 10, 40, 100 → "c"; then over a(10), b(30): 11 → "b"; then "a".
        rng = ScriptedRng([45, 11, 0])
        ordered = order_srv_records(records, rng)
        assert [r.target for r in ordered] == ["c", "b", "a"]
        assert rng.calls == [(0, 100), (0, 40), (0, 10)]

    def test_zero_weight_first_in_draw(self) -> None:
        """Weight-0 records go first in a draw, so a draw of 0 picks them."""
        records = [rec(10, 50, "heavy"), rec(10, 0, "zero")]
        ordered = order_srv_records(records, ScriptedRng([0, 0]))
        assert [r.target for r in ordered] == ["zero", "heavy"]

    def test_every_record_once(self) -> None:
        """The ordering is a permutation of the input."""
        records = [rec(p, w, f"t{p}{w}") for p in (1, 2) for w in (0, 1, 5)]
        ordered = order_srv_records(records, random.Random(7))
        assert sorted(ordered) == sorted(records)


def srv_answer(records: list[SrvRecord], ttl: int = 300) -> tuple[list[Any], list[Any], list[Any]]:
    answers = [
        dns.RRHeader(
            name=b"_matrix-fed._tcp.example.test",
            type=dns.SRV,
            ttl=ttl,
            payload=dns.Record_SRV(r.priority, r.weight, r.port, r.target.encode(), ttl),  # type: ignore[no-untyped-call]
        )
        for r in records
    ]
    return answers, [], []


class FakeDns:
    """lookupService answers from a script of results (or failures)."""

    def __init__(self) -> None:
        self.results: list[Any] = []
        self.queries: list[str] = []

    def lookupService(self, name: str, timeout: Any = None) -> Deferred[Any]:
        self.queries.append(name)
        result = self.results.pop(0)
        if isinstance(result, Exception):
            return fail(result)
        return succeed(result)


class ResolverTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.dns = FakeDns()
        self.resolver = SrvResolver(self.dns, self.clock)
        self.name = "_matrix-fed._tcp.example.test"

    def lookup(self) -> Any:
        return self.successResultOf(self.resolver.lookup(self.name))

    def test_records_returned(self) -> None:
        """An answer's records are returned with their fields."""
        self.dns.results.append(srv_answer([rec(10, 5, "srv.example.test", 8450)]))
        result = self.lookup()
        assert result.records == (SrvRecord(10, 5, 8450, "srv.example.test"),)
        assert result.found

    def test_cached_for_ttl(self) -> None:
        """An answer is served from the cache until its TTL passes, then asked again."""
        self.dns.results.append(srv_answer([rec(10, 5, "a")], ttl=300))
        self.dns.results.append(srv_answer([rec(10, 5, "b")], ttl=300))
        self.lookup()
        self.clock.advance(299)
        assert self.lookup().records[0].target == "a"
        assert len(self.dns.queries) == 1
        self.clock.advance(2)
        assert self.lookup().records[0].target == "b"
        assert len(self.dns.queries) == 2

    def test_nxdomain_is_not_found(self) -> None:
        """NXDOMAIN means no records and no error (the spec's next step)."""
        self.dns.results.append(dns_error.DNSNameError("nx"))
        result = self.lookup()
        assert (result.records, result.error, result.found) == ((), None, False)

    def test_empty_answer_is_not_found(self) -> None:
        """An empty answer means no records and no error."""
        self.dns.results.append(([], [], []))
        result = self.lookup()
        assert (result.records, result.error) == ((), None)

    def test_servfail_without_cache_is_an_error(self) -> None:
        """SERVFAIL with nothing cached is a temporary error naming the failure."""
        self.dns.results.append(dns_error.DNSServerError("servfail"))
        result = self.lookup()
        assert "SERVFAIL" in result.error
        assert result.temporary

    def test_timeout_uses_stale_answer(self) -> None:
        """A DNS timeout after the TTL uses the stale cached answer."""
        self.dns.results.append(srv_answer([rec(10, 5, "a")], ttl=60))
        self.dns.results.append(dns_error.DNSQueryTimeoutError(1))  # type: ignore[no-untyped-call]
        self.lookup()
        self.clock.advance(61)
        result = self.lookup()
        assert (result.records[0].target, result.stale, result.error) == ("a", True, None)

    def test_timeout_without_cache_is_an_error(self) -> None:
        """A DNS timeout with nothing cached is a temporary error."""
        self.dns.results.append(dns_error.DNSQueryTimeoutError(1))  # type: ignore[no-untyped-call]
        result = self.lookup()
        assert "timed out" in result.error
        assert result.temporary

    def test_dot_target_is_refused(self) -> None:
        """A single record with target '.' means the service is not available."""
        self.dns.results.append(srv_answer([rec(0, 0, "")]))
        result = self.lookup()
        assert result.refused
        assert not result.found

    def test_cache_never_exceeds_its_cap(self) -> None:
        """Inserting past the cap drops the least recently used name: the cache holds at
        most ``max_entries`` names, and the newest answer is still served from it."""
        resolver = SrvResolver(self.dns, self.clock, max_entries=3)
        for i in range(10):
            self.dns.results.append(srv_answer([rec(10, 5, f"t{i}")], ttl=300))
            self.successResultOf(resolver.lookup(f"_matrix-fed._tcp.n{i}.test"))
            assert resolver.cached_names <= 3
        assert resolver.cached_names == 3
        result = self.successResultOf(resolver.lookup("_matrix-fed._tcp.n9.test"))
        assert result.records[0].target == "t9"
        assert len(self.dns.queries) == 10
