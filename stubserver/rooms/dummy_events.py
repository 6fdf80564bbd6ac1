"""Dummy events: how we cap a room's forward extremities (issue 22 row 4).

A hostile member can fork a room into thousands of forward extremities. Each event we
build cites only the 10 deepest (:data:`~stubserver.rooms.room.PREV_EVENTS_FOR_NEW_EVENT`),
so the rest would stay extremities for as long as nobody merges them. As Synapse does,
we merge them with ``org.matrix.dummy_event`` events of our own.

What Synapse does (``synapse/handlers/message.py``,
``_send_dummy_events_to_fill_extremities``; read for behaviour only): every 5 minutes it
takes up to 5 rooms holding more than ``dummy_events_threshold`` (10) extremities, most
first, and sends one dummy event (content ``{}``) into each, built like any event of its
own (prev_events: its 10 deepest extremities), from the first local joined user the auth
rules allow; it is not proactively sent to other servers (``proactively_send`` off: they
fetch it when a later event cites it). A room where no local user may send is left out
for ``_DUMMY_EVENT_ROOM_EXCLUSION_EXPIRY`` (7 days).

What we do, the same but for two choices: a dummy event cites the 20 deepest
extremities (:data:`DUMMY_PREV_EVENTS`: the spec's limit for prev_events in room
versions 4 and later, "Must contain less than or equal to 20 events"; Synapse accepts
20), so one merges 19 forks where Synapse's merges 9; and one run sends up to
:data:`MAX_DUMMY_EVENTS_PER_ROOM` into a room, until it holds at most
:data:`DUMMY_EVENTS_THRESHOLD`, where Synapse sends one: 2,000 forks are merged in 2
runs (10 minutes), not in 222 (18 hours). Each dummy event costs what any accepted event
costs (the tracker's work is its prev_events'; a resolution only when the distinct
states at the extremities change), and a run's work is bounded by the rooms and events
per run. Like Synapse's, ours are not sent to other servers: they reach them when a later
event of ours cites them (``get_missing_events``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from stubserver.rooms.builder import EventBuildError, EventSigner
from stubserver.rooms.create import EventRejected, add_own_event, build_in_room
from stubserver.rooms.room import Room, RoomError
from stubserver.rooms.store import RoomStore

#: The dummy event's type (Synapse's ``EventTypes.Dummy``); its content is ``{}``.
DUMMY_EVENT_TYPE: Final = "org.matrix.dummy_event"
#: Rooms with more forward extremities than this get dummy events (Synapse's
#: ``dummy_events_threshold`` default).
DUMMY_EVENTS_THRESHOLD: Final = 10
#: Seconds between two runs (Synapse's 5 minutes).
DUMMY_EVENTS_INTERVAL_S: Final = 5 * 60
#: Most rooms one run sends dummy events into, those with the most extremities first
#: (Synapse's ``limit=5``).
DUMMY_ROOMS_PER_RUN: Final = 5
#: Most dummy events one run sends into one room (Synapse: 1; see the module doc).
MAX_DUMMY_EVENTS_PER_ROOM: Final = 100
#: The extremities one dummy event cites, the deepest: the spec's limit for prev_events.
DUMMY_PREV_EVENTS: Final = 20
#: How long a room where none of our users may send a dummy event is left out, in
#: seconds (Synapse's ``_DUMMY_EVENT_ROOM_EXCLUSION_EXPIRY``, 7 days).
EXCLUSION_S: Final = 7 * 24 * 60 * 60

log = Logger()


class DummyEvents:
    """Sends dummy events into our rooms with too many forward extremities (module doc).

    ``now`` gives milliseconds since the epoch. :meth:`run` is one run; :meth:`start`
    repeats it every :data:`DUMMY_EVENTS_INTERVAL_S` on ``clock``.
    """

    def __init__(
        self,
        store: RoomStore,
        signer: EventSigner,
        now: Callable[[], int],
        clock: IReactorTime,
    ) -> None:
        self._store = store
        self._signer = signer
        self._now = now
        self._clock = clock
        # Room ID -> when (ms) no user of ours could send a dummy event into it.
        self._excluded: dict[str, int] = {}
        #: Dummy events sent, in all.
        self.sent = 0

    def start(self) -> LoopingCall:
        """Run every :data:`DUMMY_EVENTS_INTERVAL_S` seconds, the first after one
        interval; the running call (stop it to end the runs)."""
        loop = LoopingCall(self.run)
        loop.clock = self._clock
        loop.start(DUMMY_EVENTS_INTERVAL_S, now=False)
        return loop

    def run(self) -> int:
        """One run: dummy events into up to :data:`DUMMY_ROOMS_PER_RUN` rooms holding
        more than :data:`DUMMY_EVENTS_THRESHOLD` extremities. How many were sent."""
        now = self._now()
        expiry = now - EXCLUSION_S * 1000
        self._excluded = {r: t for r, t in self._excluded.items() if t >= expiry}
        crowded = [
            room
            for room in self._store
            if len(room.forward_extremities) > DUMMY_EVENTS_THRESHOLD
            and room.room_id not in self._excluded
        ]
        crowded.sort(key=lambda room: len(room.forward_extremities), reverse=True)
        sent = 0
        for room in crowded[:DUMMY_ROOMS_PER_RUN]:
            count = self._merge(room)
            if count == 0:
                log.info(
                    "No user of ours may send a dummy event into {room_id}: left out for "
                    "{days} days",
                    room_id=room.room_id,
                    days=EXCLUSION_S // 86_400,
                )
                self._excluded[room.room_id] = now
            sent += count
        self.sent += sent
        return sent

    def _merge(self, room: Room) -> int:
        """Dummy events into ``room`` until it holds at most the threshold (or the run's
        share is spent); how many were sent (0: none of our users may)."""
        users = sorted(
            user
            for user, membership in room.members.items()
            if membership == "join" and user.partition(":")[2] == self._signer.server_name
        )
        sent = 0
        while len(room.forward_extremities) > DUMMY_EVENTS_THRESHOLD and (
            sent < MAX_DUMMY_EVENTS_PER_ROOM
        ):
            if not self._send_one(room, users):
                break
            sent += 1
        return sent

    def _send_one(self, room: Room, users: list[str]) -> bool:
        """One dummy event from the first of ``users`` our rules allow; False if none."""
        prevs = room.extremity_tracker.deepest(DUMMY_PREV_EVENTS)
        for user in users:
            try:
                built = build_in_room(
                    room,
                    self._signer,
                    sender=user,
                    event_type=DUMMY_EVENT_TYPE,
                    content={},
                    now=self._now(),
                    prev_event_ids=prevs,
                )
                # Asked first, so that a dummy event our rules refuse is not kept.
                if room.check_against_current_state(built.event) is not None:
                    continue
                add_own_event(room, built, self._now(), self._signer.server_name)
            except EventRejected:
                continue
            except (EventBuildError, RoomError) as e:
                log.info("No dummy event in {room_id}: {error}", room_id=room.room_id, error=e)
                return False
            return True
        return False
