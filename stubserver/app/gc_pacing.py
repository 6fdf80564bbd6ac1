"""The garbage collector on a timer, between reactor turns (issue 22).

CPython collects its youngest generation after 700 new container objects, the middle one
after 10 of those, and all of memory whenever the objects that survived into the oldest
generation reach a quarter of it. A server that keeps its rooms in memory (~8 containers
per stored event) pays for the last in the middle of whatever request allocated the
object that tipped it: in the throughput benchmark the receiver's full collections took
55-77 ms each with ~15,000 events (11-15 us per received PDU), and a /send body of a
million small objects triggers collections while it is parsed.

As Synapse does (read for behaviour, not copied): the automatic collector is switched
off and a timer looks every :data:`CHECK_SECONDS` for the oldest generation whose count
is past its threshold and whose last collection is at least
:data:`MIN_SECONDS_BETWEEN` of that generation ago, and collects it (with the younger
ones, as ``gc.collect(generation)`` does). The objects made at start-up are frozen
first (``gc.freeze``): they live as long as the process, and no full collection scans
them again. Cyclic garbage then waits up to a second (young) and longer for the older
generations; garbage without cycles is freed at once, as before.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from typing import Final, Protocol

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

#: Shortest time between two collections of each generation (0, 1, 2), in seconds.
MIN_SECONDS_BETWEEN: Final = (1.0, 10.0, 30.0)
#: How often the timer looks at the collector's counts, in seconds.
CHECK_SECONDS: Final = 0.1


class Collector(Protocol):
    """The parts of the ``gc`` module the pacer uses (the module itself in ``run``)."""

    def get_count(self) -> tuple[int, int, int]: ...
    def get_threshold(self) -> tuple[int, int, int]: ...
    def collect(self, generation: int = 2) -> int: ...
    def disable(self) -> None: ...
    def freeze(self) -> None: ...


def due_generation(
    counts: Sequence[int], thresholds: Sequence[int], last: Sequence[float], now: float
) -> int | None:
    """The oldest generation to collect at ``now``: its count past its threshold, and its
    last collection (``last``, seconds) at least :data:`MIN_SECONDS_BETWEEN` ago; else None."""
    for generation in (2, 1, 0):
        if (
            counts[generation] > thresholds[generation]
            and now - last[generation] >= MIN_SECONDS_BETWEEN[generation]
        ):
            return generation
    return None


class GcPacer:
    """Runs ``collector``'s collections on ``clock``'s timer (module docstring);
    ``collections`` counts them per generation."""

    def __init__(self, clock: IReactorTime, collector: Collector | None = None) -> None:
        self._clock = clock
        self._collector: Collector = collector if collector is not None else gc
        self._last = [clock.seconds()] * 3
        self.collections = [0, 0, 0]

    def start(self) -> LoopingCall:
        """Freeze what start-up made, switch the automatic collector off, start the timer."""
        self._collector.collect(2)
        self._collector.freeze()
        self._collector.disable()
        loop = LoopingCall(self.check)
        loop.clock = self._clock
        loop.start(CHECK_SECONDS, now=False)
        return loop

    def check(self) -> None:
        """Collect the generation that is due, if any."""
        now = self._clock.seconds()
        collector = self._collector
        generation = due_generation(
            collector.get_count(), collector.get_threshold(), self._last, now
        )
        if generation is None:
            return
        collector.collect(generation)
        self.collections[generation] += 1
        for collected in range(generation + 1):
            self._last[collected] = now
