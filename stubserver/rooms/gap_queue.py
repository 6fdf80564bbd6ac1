"""When gap fills run: :class:`GapQueue`, a bounded queue with slots per destination.

A gap fill (``stubserver.rooms.gap_fill``) asks the origin of a transaction for what its
events lack, and an origin may answer slowly or never (each request has a deadline of
its own). Before issue 22 row 7 four global slots served every room: a silent origin
held all four for minutes, and the queue behind them grew without bound. Now:

* at most :data:`MAX_GAP_FILLS_PER_ORIGIN` jobs per origin run at once, so a silent
  origin holds only its own slots and other origins' gaps are still filled;
* at most one job per room runs at once (they change the same graph; a second
  transaction's gaps often close once the first's are filled);
* at most :data:`MAX_GAP_FILLS_IN_FLIGHT` jobs run at all;
* at most :data:`MAX_QUEUED_GAP_FILLS` jobs wait, and at most
  :data:`MAX_QUEUED_GAP_FILLS_PER_ORIGIN` of one origin's: past either, a job is refused
  (its events are left out with a reason; the origin will send them again or a later
  event's gap brings them).

Synapse processes one event at a time per room and bounds its outbound requests per
destination (``synapse/handlers/federation_event.py``, read for behaviour only).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from typing import Final

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from stubserver.rooms.gap_fill import GapJob

#: Most gap fills running at once, in all.
MAX_GAP_FILLS_IN_FLIGHT: Final = 8
#: Most gap fills running at once toward one origin.
MAX_GAP_FILLS_PER_ORIGIN: Final = 2
#: Most gap fills waiting, in all and for one origin.
MAX_QUEUED_GAP_FILLS: Final = 1_000
MAX_QUEUED_GAP_FILLS_PER_ORIGIN: Final = 50

log = Logger()


class GapQueue:
    """Runs :class:`~stubserver.rooms.gap_fill.GapJob` s through ``run`` within the
    module's bounds (each a constructor argument for tests)."""

    def __init__(
        self,
        run: Callable[[GapJob], Deferred[None]],
        *,
        max_in_flight: int = MAX_GAP_FILLS_IN_FLIGHT,
        max_per_origin: int = MAX_GAP_FILLS_PER_ORIGIN,
        max_queued: int = MAX_QUEUED_GAP_FILLS,
        max_queued_per_origin: int = MAX_QUEUED_GAP_FILLS_PER_ORIGIN,
    ) -> None:
        self._run = run
        self._max_in_flight = max_in_flight
        self._max_per_origin = max_per_origin
        self._max_queued = max_queued
        self._max_queued_per_origin = max_queued_per_origin
        self._queued: deque[GapJob] = deque()
        self._queued_per_origin: Counter[str] = Counter()
        self._running_per_origin: Counter[str] = Counter()
        self._running_rooms: set[str] = set()

    @property
    def running(self) -> int:
        """Jobs running now."""
        return sum(self._running_per_origin.values())

    @property
    def queued(self) -> int:
        """Jobs waiting now."""
        return len(self._queued)

    def submit(self, job: GapJob) -> bool:
        """Queue ``job`` (it runs as soon as the bounds allow); False when refused."""
        if (
            len(self._queued) >= self._max_queued
            or self._queued_per_origin[job.origin] >= self._max_queued_per_origin
        ):
            return False
        self._queued.append(job)
        self._queued_per_origin[job.origin] += 1
        self._pump()
        return True

    def _may_start(self, job: GapJob) -> bool:
        return (
            self._running_per_origin[job.origin] < self._max_per_origin
            and job.room.room_id not in self._running_rooms
        )

    def _pump(self) -> None:
        """Start the oldest waiting jobs the bounds allow (one pass over the queue)."""
        if self.running >= self._max_in_flight:
            return
        kept: deque[GapJob] = deque()
        while self._queued:
            job = self._queued.popleft()
            if self.running >= self._max_in_flight or not self._may_start(job):
                kept.append(job)
                continue
            self._queued_per_origin[job.origin] -= 1
            if self._queued_per_origin[job.origin] <= 0:
                del self._queued_per_origin[job.origin]
            self._start(job)
        self._queued = kept

    def _start(self, job: GapJob) -> None:
        self._running_per_origin[job.origin] += 1
        self._running_rooms.add(job.room.room_id)
        d = self._run(job)
        d.addErrback(self._failed, job)
        d.addBoth(self._finished, job)

    @staticmethod
    def _failed(failure: Failure, job: GapJob) -> None:
        log.failure(
            "Filling gaps in {room_id} from {origin} failed",
            failure,
            room_id=job.room.room_id,
            origin=job.origin,
        )

    def _finished(self, _: object, job: GapJob) -> None:
        self._running_per_origin[job.origin] -= 1
        if self._running_per_origin[job.origin] <= 0:
            del self._running_per_origin[job.origin]
        self._running_rooms.discard(job.room.room_id)
        self._pump()
