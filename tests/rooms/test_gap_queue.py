"""The gap-fill queue's bounds (issue 22 row 7): slots per origin, one job per room, a
global slot count, and caps on what waits."""

from __future__ import annotations

from twisted.internet.defer import Deferred

from stubserver.rooms.gap_fill import GapJob, RequestBudget
from stubserver.rooms.gap_queue import GapQueue
from stubserver.rooms.room import Room
from stubserver.rooms.versions import ROOM_VERSIONS


class Runs:
    """A ``run`` whose jobs finish when the test says."""

    def __init__(self) -> None:
        self.started: list[GapJob] = []
        self._pending: list[Deferred[None]] = []

    def __call__(self, job: GapJob) -> Deferred[None]:
        self.started.append(job)
        d: Deferred[None] = Deferred()
        self._pending.append(d)
        return d

    def finish(self, index: int) -> None:
        self._pending[index].callback(None)


def job(origin: str, room: str) -> GapJob:
    return GapJob(origin, Room(room, ROOM_VERSIONS["12"]), (), RequestBudget())


def test_one_origin_runs_at_most_its_slots_and_others_still_run() -> None:
    """With two slots per origin, a's third job waits while c's job runs."""
    runs = Runs()
    queue = GapQueue(runs, max_in_flight=8, max_per_origin=2)
    for n in range(3):
        assert queue.submit(job("a.test", f"!a{n}:x"))
    assert queue.submit(job("c.test", "!c:x"))
    assert [(j.origin, j.room.room_id) for j in runs.started] == [
        ("a.test", "!a0:x"),
        ("a.test", "!a1:x"),
        ("c.test", "!c:x"),
    ]
    runs.finish(0)
    assert runs.started[-1].room.room_id == "!a2:x"
    assert (queue.running, queue.queued) == (3, 0)


def test_one_job_per_room_at_a_time() -> None:
    """A second job for a room waits until the first one is done."""
    runs = Runs()
    queue = GapQueue(runs)
    queue.submit(job("a.test", "!r:x"))
    queue.submit(job("c.test", "!r:x"))
    assert len(runs.started) == 1
    runs.finish(0)
    assert [j.origin for j in runs.started] == ["a.test", "c.test"]


def test_the_queue_is_capped_in_all_and_per_origin() -> None:
    """Past max_queued_per_origin an origin's job is refused, while another origin's
    is still queued; past max_queued every job is refused."""
    runs = Runs()
    queue = GapQueue(runs, max_in_flight=1, max_queued=3, max_queued_per_origin=2)
    assert queue.submit(job("a.test", "!0:x"))  # runs
    assert queue.submit(job("a.test", "!1:x"))
    assert queue.submit(job("a.test", "!2:x"))
    assert not queue.submit(job("a.test", "!3:x"))
    assert queue.submit(job("c.test", "!4:x"))
    assert not queue.submit(job("d.test", "!5:x"))
    assert (queue.running, queue.queued) == (1, 3)
