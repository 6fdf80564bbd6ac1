"""The garbage collector on a timer (issue 22): start-up frozen, the automatic collector
off, each generation collected when its count is past its threshold, at most once per
its minimum interval, between reactor turns."""

from __future__ import annotations

import itertools

import pytest
from twisted.internet.task import Clock

from stubserver.app.gc_pacing import CHECK_SECONDS, MIN_SECONDS_BETWEEN, GcPacer, due_generation

THRESHOLDS = (700, 10, 10)


class FakeCollector:
    """The ``gc`` functions the pacer calls, over counts the test sets; records calls."""

    def __init__(self) -> None:
        self.counts = [0, 0, 0]
        self.calls: list[str] = []

    def get_count(self) -> tuple[int, int, int]:
        return self.counts[0], self.counts[1], self.counts[2]

    def get_threshold(self) -> tuple[int, int, int]:
        return THRESHOLDS

    def collect(self, generation: int = 2) -> int:
        self.calls.append(f"collect {generation}")
        for younger in range(generation + 1):
            self.counts[younger] = 0
        if generation < 2:
            self.counts[generation + 1] += 1
        return 0

    def disable(self) -> None:
        self.calls.append("disable")

    def freeze(self) -> None:
        self.calls.append("freeze")


@pytest.mark.parametrize(
    ("counts", "last", "now", "due"),
    [
        ((0, 0, 0), (0, 0, 0), 100.0, None),  # nothing past its threshold
        ((701, 0, 0), (0, 0, 0), 1.0, 0),  # young past 700, a second since
        ((701, 0, 0), (0.5, 0, 0), 1.0, None),  # ... but collected half a second ago
        ((701, 11, 0), (0, 0, 0), 10.0, 1),  # the middle one too, ten seconds since
        ((701, 11, 0), (0, 5, 0), 10.0, 0),  # the middle one not yet: the young one
        ((701, 11, 11), (0, 0, 0), 30.0, 2),  # all of them: the oldest
        ((701, 11, 11), (0, 0, 1), 30.0, 1),  # the oldest 29 s ago: the middle one
        ((0, 0, 11), (0, 0, 0), 30.0, 2),  # the oldest alone past its threshold
    ],
)
def test_the_oldest_generation_due_is_collected(
    counts: tuple[int, int, int], last: tuple[float, float, float], now: float, due: int | None
) -> None:
    """A generation is due when its count is past its threshold and its last collection
    at least its minimum interval (1, 10, 30 s) ago; the oldest due one is chosen."""
    assert due_generation(counts, THRESHOLDS, last, now) == due


def test_start_freezes_what_start_up_made_and_switches_automatic_collection_off() -> None:
    """start() collects everything once, freezes the survivors (start-up's objects, never
    scanned again), then disables the automatic collector; nothing more until the timer."""
    collector = FakeCollector()
    GcPacer(Clock(), collector).start()
    assert collector.calls == ["collect 2", "freeze", "disable"]


def collections_over(seconds: float, counts: tuple[int, int, int]) -> list[tuple[float, int]]:
    """(time, generation) of each collection a started pacer makes over ``seconds`` on a
    Clock, with the collector's counts set to ``counts`` before every check."""
    clock = Clock()
    collector = FakeCollector()
    GcPacer(clock, collector).start()
    collector.calls.clear()
    made: list[tuple[float, int]] = []
    for _ in range(round(seconds / CHECK_SECONDS)):
        collector.counts = list(counts)
        clock.advance(CHECK_SECONDS)
        made.extend((clock.seconds(), int(call.split()[1])) for call in collector.calls)
        collector.calls.clear()
    return made


@pytest.mark.parametrize("counts", [(701, 0, 0), (701, 11, 11)])
def test_collections_come_from_the_timer_at_most_once_per_interval(
    counts: tuple[int, int, int],
) -> None:
    """However much is allocated, the timer collects each generation no more often than
    its minimum interval (1, 10, 30 s): over 100 s with the young generation (or every
    generation) past its threshold at each check, at most 100 young, 10 middle and 3
    full collections, each generation's at least its interval apart."""
    made = collections_over(100.0, counts)
    for generation in (0, 1, 2):
        times = [t for t, g in made if g == generation]
        assert len(times) <= (100, 10, 3)[generation]
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert all(gap >= MIN_SECONDS_BETWEEN[generation] - 1e-9 for gap in gaps)
    assert len(made) >= 90  # and the young generation is collected about once a second


def test_a_full_collection_every_thirty_seconds_when_due() -> None:
    """With every generation past its threshold at each check, the oldest is collected
    every thirty seconds (3 times in 100 s), younger ones in between."""
    made = collections_over(100.0, (701, 11, 11))
    assert [round(t) for t, g in made if g == 2] == [30, 60, 90]
